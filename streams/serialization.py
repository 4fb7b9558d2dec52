"""Reading and writing events, CDRs and dead letters: JSON Lines, CSV and Avro.

The Avro schemas in `avro/` (shipped in the package as `streams/_avro`) are the single
source of the wire format. Files are chosen by extension: `.avro` is an Avro object
container file, anything else JSON Lines (CDRs may also be CSV). Kafka messages use
Avro single-object encoding (marker C3 01, the schema's CRC-64-AVRO fingerprint, then the
binary record) or JSON, see `encode_message` and `decode_message`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import IO, Any, Literal, cast

import fastavro
import orjson
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

import streams
from streams.avro_flat import FlatRecordReader, RecordWriter, flat_reader, record_writer
from streams.cdr import CDR_FIELDS, Cdr, CodeEntry, LegSummary
from streams.deadletter import DeadLetter, Origin, raw_text
from streams.errors import EventDecodeError, SerializationError
from streams.events import DTMF, Event, decode_event
from streams.timefmt import Millis, parse_iso

CdrFormat = Literal["jsonl", "csv", "avro"]
EVENT_SCHEMA = "cdrstream.SwitchEvent"
CALL_EVENT_SCHEMA = "cdrstream.CallEvent"
DTMF_EVENT_SCHEMA = "cdrstream.DtmfEvent"
CDR_SCHEMA = "cdrstream.Cdr"
DEAD_LETTER_SCHEMA = "cdrstream.DeadLetter"
SINGLE_OBJECT_MARKER = b"\xc3\x01"


def schema_dir() -> Path:
    """The folder of `.avsc` files: the checkout's `avro/`, or the installed copy."""
    package = Path(str(streams.__file__)).resolve().parent  # not this module's: it may be
    checkout = package.parent / "avro"  # compiled (streams/native.py)
    if checkout.is_dir():
        return checkout
    return package / "_avro"


@cache
def _named_schemas() -> dict[str, Any]:
    named: dict[str, Any] = {}
    pending = sorted(schema_dir().glob("*.avsc"))
    if not pending:
        raise SerializationError(f"no Avro schemas found in {schema_dir()}")
    documents = {path.stem: orjson.loads(path.read_bytes()) for path in pending}
    # records first, so that a union (a file holding a JSON array) can name them
    for name, document in sorted(documents.items(), key=lambda item: isinstance(item[1], list)):
        parsed = parse_schema(document, named_schemas=named)
        if isinstance(document, list):
            named[name] = parsed
    return named


@cache
def schema(name: str) -> Any:
    """The parsed Avro schema `name` (e.g. `cdrstream.Cdr`)."""
    try:
        return _named_schemas()[name]
    except KeyError:
        raise SerializationError(f"no Avro schema named {name!r} in {schema_dir()}") from None


def _without_logical_types(document: Any) -> Any:
    if isinstance(document, dict):
        return {k: _without_logical_types(v) for k, v in document.items() if k != "logicalType"}
    if isinstance(document, list):
        return [_without_logical_types(item) for item in document]
    return document


@cache
def _plain_reader_schema(name: str) -> Any:
    """The schema `name` without logical types: the same binary encoding, read (and
    written) about twice as fast by fastavro, with timestamps as the epoch milliseconds
    cdrstream uses anyway."""
    document = orjson.loads((schema_dir() / f"{name}.avsc").read_bytes())
    return parse_schema(_without_logical_types(document), named_schemas={})


@cache
def schema_fingerprint(name: str) -> bytes:
    """The schema's CRC-64-AVRO fingerprint, little-endian (as single-object encoding uses)."""
    value = int(fingerprint(to_parsing_canonical_form(schema(name)), "CRC-64-AVRO"), 16)
    return struct.pack("<Q", value)


def event_file_schema() -> list[Any]:
    """The schema of an events container file: the union of both event records (the
    named union `cdrstream.SwitchEvent`, expanded so fastavro needs no name lookup)."""
    return [schema(CALL_EVENT_SCHEMA), schema(DTMF_EVENT_SCHEMA)]


def sync_marker(name: str) -> bytes:
    """A fixed Avro sync marker for a file: Avro writers pick a random one, which would
    make two runs over the same events (replays, archives) differ byte for byte."""
    return hashlib.sha256(f"cdrstream:{name}".encode()).digest()[:16]


@cache
def schema_document(name: str) -> Any:
    """The `.avsc` document as written. Avro writers put the schema in the file header;
    given fastavro's parsed form they write its keys in an order that changes from run to
    run, given the document they write it as it is."""
    return orjson.loads((schema_dir() / f"{name}.avsc").read_bytes())


def avro_writer(handle: IO[bytes], name: str, marker: str) -> Any:
    """A reproducible Avro container writer (deflate): same records, same bytes."""
    return fastavro.write.Writer(
        handle, schema_document(name), codec="deflate", sync_marker=sync_marker(marker)
    )


def is_avro_path(path: str | Path) -> bool:
    return str(path).endswith(".avro")


# ---------------------------------------------------------------- events


def event_to_avro(event: Event) -> dict[str, Any]:
    """The Avro record of an event (timestamps as epoch milliseconds)."""
    record = event.as_dict()
    if event.type == DTMF:
        return {name: record[name] for name in _dtmf_fields()}
    del record["digit"]
    return record


@cache
def _dtmf_fields() -> tuple[str, ...]:
    return tuple(field["name"] for field in schema(DTMF_EVENT_SCHEMA)["fields"])


def _decode_or_letter(raw: Any, origin: Origin, text: bytes | str | None) -> Event | DeadLetter:
    try:
        return decode_event(raw)
    except EventDecodeError as error:
        payload: dict[str, Any] | str
        if isinstance(raw, Mapping):
            payload = {key: _jsonable(value) for key, value in raw.items()}
        else:
            payload = "" if text is None else raw_text(text)
        event_id = raw.get("event_id") if isinstance(raw, Mapping) else None
        known_id = event_id if isinstance(event_id, str) else None
        return DeadLetter(error.reason, origin, payload, known_id)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def decode_json_event(line: bytes | str, origin: Origin) -> Event | DeadLetter:
    """One JSON event (a line or a message value) to an Event, or a dead letter saying why."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return DeadLetter(f"not valid JSON: {error}", origin, raw_text(line))
    return _decode_or_letter(raw, origin, line)


def open_events(path: str | Path) -> IO[bytes]:
    """An events file opened for reading, or a SerializationError naming it."""
    try:
        return open(path, "rb")
    except OSError as error:
        raise SerializationError(f"{path}: cannot read: {error.strerror}") from None


def read_events(path: str | Path) -> Iterator[tuple[Event | DeadLetter, Origin]]:
    """Events of a JSON Lines or Avro file, in file order, each with its origin.

    A line or record that is not a valid event comes out as a DeadLetter."""
    name = str(path)
    with open_events(path) as handle:
        if is_avro_path(path):
            try:
                records = fastavro.reader(handle)
            except Exception as error:
                raise SerializationError(f"{name}: not an Avro container file: {error}") from None
            for number, record in enumerate(records, start=1):
                origin = Origin(name, None, number)
                yield _decode_or_letter(record, origin, None), origin
            return
        for number, line in enumerate(handle, start=1):
            origin = Origin(name, None, number)
            item = decode_json_line(line, origin)
            if item is not None:
                yield item, origin


def decode_json_line(line: bytes, origin: Origin) -> Event | DeadLetter | None:
    """One line of a JSON Lines events file: its event, a dead letter saying why it is
    not one, or None for a blank line (skipped)."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError:
        if line.strip():
            return decode_json_event(line, origin)
        return None
    try:
        return decode_event(raw)
    except EventDecodeError:
        return _decode_or_letter(raw, origin, line)


USER_ID_AT = b'"user_id":"'


def claimed_user(line: bytes) -> bytes | None:
    """The bytes of the first `"user_id":"...` value in a JSON Lines event line, found
    without decoding the line: for a well-formed event, its user (UTF-8, as written);
    None where there is none such. Only a hint: a line may spell its user otherwise
    (escapes, spaces, the key twice, a nested object), so whoever decodes the line must
    check the user it finds."""
    at = line.find(USER_ID_AT)
    if at < 0:
        return None
    start = at + len(USER_ID_AT)
    end = line.find(b'"', start)
    if end < 0:
        return None
    return line[start:end]


def write_events(path: str | Path, events: Iterable[Event], lines: Iterable[bytes] = ()) -> int:
    """Write events as JSON Lines or an Avro container file (by extension); `lines` are
    extra raw JSON Lines (malformed input, for tests and the simulator). Returns the count."""
    count = 0
    if is_avro_path(path):
        with open(path, "wb") as handle:
            records = []
            for event in events:
                records.append(event_to_avro(event))
                count += 1
            fastavro.writer(
                handle, event_file_schema(), records, codec="deflate",
                sync_marker=sync_marker(EVENT_SCHEMA),
            )
        return count
    with open(path, "wb") as handle:
        for event in events:
            handle.write(orjson.dumps(event.to_json_dict()) + b"\n")
            count += 1
        for line in lines:
            handle.write(line.rstrip(b"\n") + b"\n")
            count += 1
    return count


# ---------------------------------------------------------------- CDRs


def cdr_to_avro(cdr: Cdr) -> dict[str, Any]:
    record = {name: getattr(cdr, name) for name in CDR_FIELDS}
    record["account_code_entries"] = [
        {"code": e.code, "complete": e.complete, "via": e.via,
         "entry_call_id": e.entry_call_id, "entered_at": e.entered_at}
        for e in cdr.account_code_entries
    ]
    record["legs"] = [
        {"call_id": leg.call_id, "called_number": leg.called_number, "answered": leg.answered,
         "answer_time": leg.answer_time, "release_time": leg.release_time}
        for leg in cdr.legs
    ]
    return record


def _millis(value: Any) -> Millis | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return parse_iso(value)
    return round(float(value.timestamp()) * 1000)


def cdr_from_dict(raw: Mapping[str, Any]) -> Cdr:
    """A CDR from its JSON, CSV-row or Avro form."""
    try:
        values = {name: raw[name] for name in CDR_FIELDS}
        entries = values["account_code_entries"]
        legs = values["legs"]
        if isinstance(entries, str):
            entries = orjson.loads(entries)
        if isinstance(legs, str):
            legs = orjson.loads(legs)
        for name in ("start_time", "release_time"):
            values[name] = _millis(values[name])
        values["answer_time"] = _millis(values["answer_time"])
        values["account_code_entries"] = tuple(
            CodeEntry(
                e["code"], e["complete"], e["via"], e["entry_call_id"],
                _millis(e["entered_at"]),  # type: ignore[arg-type]
            )
            for e in entries
        )
        values["legs"] = tuple(
            LegSummary(leg["call_id"], leg["called_number"], leg["answered"],
                       _millis(leg["answer_time"]), _millis(leg["release_time"]))
            for leg in legs
        )
        return Cdr(**values)
    except (KeyError, TypeError, ValueError) as error:
        raise SerializationError(f"not a CDR: {error!r}") from None


def cdr_to_csv_row(cdr: Cdr) -> list[str]:
    row = []
    for name, value in cdr.to_json_dict().items():
        if isinstance(value, bool):
            row.append("true" if value else "false")
        elif value is None:
            row.append("")
        elif isinstance(value, list):
            row.append(orjson.dumps(value).decode())
        else:
            row.append(str(value))
        del name
    return row


_CSV_BOOL = {"true": True, "false": False, "": None}
_CSV_INT = ("version", "duration_ms", "talk_ms", "hold_ms")
_CSV_BOOLS = ("answered", "account_code_required", "code_known", "billable")


def _csv_row_to_dict(row: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {name: (row[name] if row[name] != "" else None) for name in CDR_FIELDS}
    for name in _CSV_INT:
        out[name] = int(row[name])
    for name in _CSV_BOOLS:
        out[name] = _CSV_BOOL[row[name]]
    return out


def read_cdrs(path: str | Path) -> Iterator[Cdr]:
    """Every CDR version in a JSON Lines, CSV or Avro file, in file order."""
    name = str(path)
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise SerializationError(f"{name}: cannot read: {error.strerror}") from None
    with handle:
        if is_avro_path(path):
            for record in fastavro.reader(handle):
                yield cdr_from_dict(cast("Mapping[str, Any]", record))
        elif name.endswith(".csv"):
            with io.TextIOWrapper(handle, "utf-8", newline="") as text:
                for row in csv.DictReader(text):
                    yield cdr_from_dict(_csv_row_to_dict(row))
        else:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield cdr_from_dict(orjson.loads(line))
                    except (orjson.JSONDecodeError, SerializationError) as error:
                        raise SerializationError(f"{name}:{number}: {error}") from None


def latest_versions(cdrs: Iterable[Cdr]) -> dict[str, Cdr]:
    """The latest version of each cdr_id (the final CDR set, SPEC section 5)."""
    latest: dict[str, Cdr] = {}
    for cdr in cdrs:
        known = latest.get(cdr.cdr_id)
        if known is None or cdr.version >= known.version:
            latest[cdr.cdr_id] = cdr
    return latest


def format_for(path: str | Path, requested: str | None = None) -> CdrFormat:
    if requested:
        if requested not in ("jsonl", "csv", "avro"):
            raise SerializationError(f"unknown CDR format {requested!r} (jsonl, csv or avro)")
        return requested  # type: ignore[return-value]
    name = str(path)
    if name.endswith(".avro"):
        return "avro"
    if name.endswith(".csv"):
        return "csv"
    return "jsonl"


class _CsvRow:
    """A CDR as its CSV row's text (the csv module's default dialect, as `CdrWriter`)."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer)

    def __call__(self, cdr: Cdr) -> str:
        buffer = self._buffer
        buffer.seek(0)
        buffer.truncate()
        self._csv.writerow(cdr_to_csv_row(cdr))
        return buffer.getvalue()


def _cdr_json_line(cdr: Cdr) -> bytes:
    return orjson.dumps(cdr.to_json_dict(), option=orjson.OPT_APPEND_NEWLINE)


def cdr_encoder(fmt: CdrFormat) -> Callable[[Cdr], Any]:
    """A CDR as `CdrWriter.write_encoded` takes it in `fmt`: a JSON line (bytes), a CSV
    row (text) or an Avro record (a dict). Sharded file mode encodes in the shards."""
    if fmt == "csv":
        return _CsvRow()
    if fmt == "avro":
        return cdr_to_avro
    return _cdr_json_line


class CdrWriter:
    """Writes CDRs to a file as JSON Lines, CSV (header row: SPEC field order) or Avro."""

    def __init__(self, path: str | Path, fmt: CdrFormat = "jsonl"):
        self.path = Path(path)
        self.format = fmt
        self.count = 0
        self.first_versions = 0  # CDRs written as version 1: the records of the input
        self._handle: IO[bytes] = open(self.path, "wb")
        self._text: io.TextIOWrapper | None = None
        self._avro: Any = None
        self._encode = cdr_encoder(fmt)
        if fmt == "csv":
            self._text = io.TextIOWrapper(self._handle, "utf-8", newline="")
            csv.writer(self._text).writerow(CDR_FIELDS)
        elif fmt == "avro":
            self._avro = avro_writer(self._handle, CDR_SCHEMA, CDR_SCHEMA)

    def write(self, cdr: Cdr) -> None:
        self.write_encoded(self._encode(cdr), cdr.version == 1)

    def write_encoded(self, encoded: Any, first: bool) -> None:
        """Write a CDR as `cdr_encoder` of this writer's format gave it; `first`: it is a
        first version."""
        self.count += 1
        self.first_versions += first
        if self._text is not None:
            self._text.write(encoded)
        elif self._avro is not None:
            self._avro.write(encoded)
        else:
            self._handle.write(encoded)

    def close(self) -> None:
        if self._avro is not None:
            self._avro.flush()
        if self._text is not None:
            self._text.flush()
            self._text.detach()
        self._handle.close()

    def __enter__(self) -> CdrWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_dead_letter_line(letter: DeadLetter) -> bytes:
    """A dead letter as its line of a dead-letter file."""
    return orjson.dumps(letter.to_json_dict(), option=orjson.OPT_APPEND_NEWLINE)


class DeadLetterWriter:
    """Writes dead letters as JSON Lines, opening the file only when there is one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.count = 0
        self._handle: IO[bytes] | None = None

    def write(self, letter: DeadLetter) -> None:
        self.write_encoded(encode_dead_letter_line(letter))

    def write_encoded(self, line: bytes) -> None:
        if self._handle is None:
            self._handle = open(self.path, "wb")
        self._handle.write(line)
        self.count += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        elif self.path.exists():
            self.path.unlink()  # a stale file of an earlier run would mislead

    def __enter__(self) -> DeadLetterWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- Kafka messages


def encode_single_object(name: str, record: Mapping[str, Any]) -> bytes:
    """Avro single-object encoding: C3 01, 8-byte fingerprint, binary datum (timestamps
    as epoch milliseconds: written with the schema's plain form, the same bytes)."""
    out = io.BytesIO()
    out.write(SINGLE_OBJECT_MARKER)
    out.write(schema_fingerprint(name))
    datum = record if isinstance(record, dict) else dict(record)
    fastavro.schemaless_writer(out, _plain_reader_schema(name), datum)
    return out.getvalue()


@cache
def _schemas_by_fingerprint() -> dict[bytes, str]:
    return {
        schema_fingerprint(name): name
        for name in (CALL_EVENT_SCHEMA, DTMF_EVENT_SCHEMA, CDR_SCHEMA, DEAD_LETTER_SCHEMA)
    }


def decode_single_object(data: bytes) -> tuple[str, dict[str, Any]]:
    """(schema name, record) of a single-object encoded message."""
    if data[:2] != SINGLE_OBJECT_MARKER or len(data) < 10:
        raise SerializationError("not Avro single-object encoded (no C3 01 marker)")
    name = _schemas_by_fingerprint().get(data[2:10])
    if name is None:
        raise SerializationError(f"unknown Avro schema fingerprint {data[2:10].hex()}")
    reader = _flat_reader(name)
    try:
        if reader is not None:
            return name, reader.read(data, 10)
        record = fastavro.schemaless_reader(io.BytesIO(data[10:]), _plain_reader_schema(name), None)
    except Exception as error:
        raise SerializationError(f"bad Avro {name} record: {error}") from None
    return name, record  # type: ignore[return-value]


@cache
def _flat_reader(name: str) -> FlatRecordReader | None:
    """The fast reader of a flat record schema (the events'), else None (fastavro)."""
    return flat_reader(schema_document(name))


def encode_event_message(event: Event, encoding: str) -> bytes:
    if encoding == "json":
        return orjson.dumps(event.to_json_dict())
    name = DTMF_EVENT_SCHEMA if event.type == DTMF else CALL_EVENT_SCHEMA
    return encode_single_object(name, event_to_avro(event))


def decode_event_message(data: bytes, origin: Origin) -> Event | DeadLetter:
    """A message value from an event topic: Avro single-object (by its marker) or JSON."""
    if data[:2] == SINGLE_OBJECT_MARKER:
        try:
            _, record = decode_single_object(data)
        except SerializationError as error:
            return DeadLetter(str(error), origin, data.hex())
        return _decode_or_letter(record, origin, None)
    return decode_json_event(data, origin)


def encode_cdr_message(cdr: Cdr, encoding: str) -> bytes:
    if encoding == "json":
        return orjson.dumps(cdr.to_json_dict())
    prefix, writer = _cdr_writer()
    return prefix + writer.write(cdr)


@cache
def _cdr_writer() -> tuple[bytes, RecordWriter]:
    """The single-object header of a CDR message and the CDR's record writer (the same
    bytes as `encode_single_object` of `cdr_to_avro`, several times faster)."""
    writer = record_writer(schema_document(CDR_SCHEMA))
    if writer is None:
        raise SerializationError(f"{CDR_SCHEMA} is not a schema the record writer writes")
    return SINGLE_OBJECT_MARKER + schema_fingerprint(CDR_SCHEMA), writer


def decode_cdr_message(data: bytes) -> Cdr:
    if data[:2] == SINGLE_OBJECT_MARKER:
        _, record = decode_single_object(data)
        return cdr_from_dict(record)
    try:
        return cdr_from_dict(orjson.loads(data))
    except orjson.JSONDecodeError as error:
        raise SerializationError(f"not a CDR message: {error}") from None


def encode_dead_letter_message(letter: DeadLetter, encoding: str) -> bytes:
    if encoding == "json":
        return orjson.dumps(letter.to_json_dict())
    origin = letter.origin
    payload = (
        letter.payload if isinstance(letter.payload, str)
        else orjson.dumps(letter.payload).decode()
    )
    return encode_single_object(DEAD_LETTER_SCHEMA, {
        "reason": letter.reason,
        "source": None if origin is None else origin.source,
        "partition": None if origin is None else origin.partition,
        "offset": None if origin is None else origin.offset,
        "event_id": letter.event_id,
        "payload": payload,
    })
