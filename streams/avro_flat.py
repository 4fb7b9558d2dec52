"""Avro binary decoding of flat records: the event messages' hot path.

fastavro reads any schema by walking its parsed form for every datum: about 7 us for a
call event's 18 fields, the largest single cost of the worker after the engine. The event
records are flat (strings, ints, longs, booleans, doubles, and unions of null with one of
those), so this module turns such a schema, as the `.avsc` file gives it, into a list of
field readers once, and reads a datum with them in about a microsecond when compiled
(streams/native.py). `flat_reader` returns None for any other schema, which fastavro
reads as before; a test checks this reader against fastavro on generated records.

Stricter than fastavro in one way: bytes left over after the record are an error (a
message that is more than its record is not what the schema says).

`record_writer` does the other direction for records of such fields and arrays of flat
records (the CDR): fastavro took about 18 us to write a CDR from the dict it needs, the
worker's largest cost after the engine and the checkpoint; the writer takes the values
straight from the object's attributes and writes the bytes fastavro writes (a test
checks them against fastavro on generated CDRs).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

from streams.errors import SerializationError

_STRING: Final = 0
_LONG: Final = 1  # int and long: the same zig-zag varint
_BOOLEAN: Final = 2
_DOUBLE: Final = 3
_KINDS: Final = {"string": _STRING, "long": _LONG, "int": _LONG, "boolean": _BOOLEAN,
                 "double": _DOUBLE}
_DOUBLE_FORMAT: Final = struct.Struct("<d")
_ARRAY: Final = 4  # of flat records (writing only)


class FlatRecordReader:
    """Reads the binary datum of one flat record schema."""

    names: Final[list[str]]
    kinds: Final[list[int]]
    null_index: Final[list[int]]  # per field: the union branch of null, or -1 (no union)

    def __init__(self, names: list[str], kinds: list[int], null_index: list[int]) -> None:
        self.names = names
        self.kinds = kinds
        self.null_index = null_index

    def read(self, data: bytes, start: int) -> dict[str, Any]:
        """The record whose datum is `data[start:]`, as fastavro would give it."""
        record: dict[str, Any] = {}
        position = start
        end = len(data)
        names = self.names
        kinds = self.kinds
        nulls = self.null_index
        for index in range(len(names)):
            null = nulls[index]
            if null >= 0:
                branch, position = _read_long(data, position, end)
                if branch == null:
                    record[names[index]] = None
                    continue
                if branch != 1 - null:
                    raise SerializationError(f"field {names[index]}: no union branch {branch}")
            kind = kinds[index]
            if kind == _STRING:
                size, position = _read_long(data, position, end)
                if size < 0 or position + size > end:
                    raise SerializationError(f"field {names[index]}: string runs past the end")
                try:
                    record[names[index]] = data[position:position + size].decode()
                except UnicodeDecodeError:
                    raise SerializationError(f"field {names[index]}: not UTF-8") from None
                position += size
            elif kind == _LONG:
                record[names[index]], position = _read_long(data, position, end)
            elif kind == _BOOLEAN:
                if position >= end:
                    raise SerializationError(f"field {names[index]}: truncated")
                record[names[index]] = data[position] != 0
                position += 1
            else:
                if position + 8 > end:
                    raise SerializationError(f"field {names[index]}: truncated")
                record[names[index]] = _DOUBLE_FORMAT.unpack_from(data, position)[0]
                position += 8
        if position != end:
            raise SerializationError(f"{end - position} bytes after the record")
        return record


def _read_long(data: bytes, position: int, end: int) -> tuple[int, int]:
    """A zig-zag varint (Avro int or long) at `position`; the value and the next position."""
    value = 0
    shift = 0
    while True:
        if position >= end:
            raise SerializationError("truncated")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), position
        shift += 7
        if shift > 63:
            raise SerializationError("a varint longer than 10 bytes")


def flat_reader(document: Any) -> FlatRecordReader | None:
    """A reader for a record schema document (logical types ignored: their base type is
    read), or None where a field is not a primitive or a union of null and one."""
    if not isinstance(document, dict) or document.get("type") != "record":
        return None
    names: list[str] = []
    kinds: list[int] = []
    nulls: list[int] = []
    for field in document.get("fields", []):
        kind, null = _field_kind(field.get("type"))
        if kind is None:
            return None
        names.append(str(field["name"]))
        kinds.append(kind)
        nulls.append(null)
    return FlatRecordReader(names, kinds, nulls)


def _field_kind(declared: Any) -> tuple[int | None, int]:
    if isinstance(declared, str):
        return _KINDS.get(declared), -1
    if isinstance(declared, dict):
        base = declared.get("type")
        return (_KINDS.get(base), -1) if isinstance(base, str) else (None, -1)
    if isinstance(declared, list) and len(declared) == 2 and "null" in declared:
        null = declared.index("null")
        other, inner = _field_kind(declared[1 - null])
        return (other, null) if other is not None and inner == -1 else (None, -1)
    return None, -1


class RecordWriter:
    """Writes the binary datum of a record schema whose fields are flat (as the reader's)
    or arrays of flat records, taking each field from the attribute of that name."""

    names: Final[list[str]]
    kinds: Final[list[int]]
    null_index: Final[list[int]]
    items: Final[list[RecordWriter | None]]  # per field: the writer of an array's records

    def __init__(
        self,
        names: list[str],
        kinds: list[int],
        null_index: list[int],
        items: list[RecordWriter | None],
    ) -> None:
        self.names = names
        self.kinds = kinds
        self.null_index = null_index
        self.items = items

    def write(self, value: object) -> bytes:
        """The datum of `value` (any object with the fields as attributes)."""
        out = bytearray()
        self.write_into(out, value)
        return bytes(out)

    def write_into(self, out: bytearray, value: object) -> None:
        names = self.names
        kinds = self.kinds
        nulls = self.null_index
        for index in range(len(names)):
            field = getattr(value, names[index])
            null = nulls[index]
            if null >= 0:
                if field is None:
                    _write_long(out, null)
                    continue
                _write_long(out, 1 - null)
            elif field is None:
                raise SerializationError(f"field {names[index]}: None where the schema has no null")
            kind = kinds[index]
            if kind == _STRING:
                if not isinstance(field, str):
                    raise SerializationError(f"field {names[index]}: not a string")
                encoded = field.encode()
                _write_long(out, len(encoded))
                out += encoded
            elif kind == _LONG:
                if not isinstance(field, int) or isinstance(field, bool):
                    raise SerializationError(f"field {names[index]}: not an integer")
                _write_long(out, field)
            elif kind == _BOOLEAN:
                if not isinstance(field, bool):
                    raise SerializationError(f"field {names[index]}: not a boolean")
                out.append(1 if field else 0)
            elif kind == _DOUBLE:
                if not isinstance(field, (int, float)) or isinstance(field, bool):
                    raise SerializationError(f"field {names[index]}: not a number")
                out += _DOUBLE_FORMAT.pack(float(field))
            else:
                self._write_array(out, index, field)

    def _write_array(self, out: bytearray, index: int, field: object) -> None:
        writer = self.items[index]
        assert writer is not None
        if not isinstance(field, (list, tuple)):
            raise SerializationError(f"field {self.names[index]}: not a list")
        elements: Sequence[object] = field
        if elements:  # one block of all the items, then the empty block (as fastavro)
            _write_long(out, len(elements))
            for element in elements:
                writer.write_into(out, element)
        out.append(0)


def _write_long(out: bytearray, value: int) -> None:
    """Append `value` as a zig-zag varint (Avro int or long)."""
    if not -(2**63) <= value < 2**63:
        raise SerializationError(f"{value} does not fit in an Avro long")
    encoded = (value << 1) ^ (value >> 63)
    while encoded > 0x7F:
        out.append((encoded & 0x7F) | 0x80)
        encoded >>= 7
    out.append(encoded)


def record_writer(document: Any) -> RecordWriter | None:
    """A writer for a record schema document whose fields are flat or arrays of flat
    records, else None."""
    if not isinstance(document, dict) or document.get("type") != "record":
        return None
    names: list[str] = []
    kinds: list[int] = []
    nulls: list[int] = []
    items: list[RecordWriter | None] = []
    for field in document.get("fields", []):
        declared = field.get("type")
        kind, null = _field_kind(declared)
        item: RecordWriter | None = None
        if kind is None:
            if not (isinstance(declared, dict) and declared.get("type") == "array"):
                return None
            item = record_writer(declared.get("items"))
            if item is None or _ARRAY in item.kinds:  # arrays of flat records only
                return None
            kind = _ARRAY
        names.append(str(field["name"]))
        kinds.append(kind)
        nulls.append(null)
        items.append(item)
    return RecordWriter(names, kinds, nulls, items)
