"""The flat-record Avro reader (the event messages' decoder) and the record writer (the
CDR messages' encoder) against fastavro."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.avro_flat import flat_reader, record_writer
from streams.cdr import Cdr, CodeEntry, LegSummary
from streams.deadletter import DeadLetter, Origin
from streams.errors import SerializationError
from streams.serialization import (
    CALL_EVENT_SCHEMA,
    CDR_SCHEMA,
    DEAD_LETTER_SCHEMA,
    DTMF_EVENT_SCHEMA,
    cdr_to_avro,
    decode_cdr_message,
    decode_event_message,
    decode_single_object,
    encode_cdr_message,
    encode_single_object,
    schema_document,
    schema_fingerprint,
)

TEXT = st.text(max_size=40)
LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT = st.integers(min_value=-(2**31), max_value=2**31 - 1)
SCHEMA = {
    "type": "record",
    "name": "Flat",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "l", "type": "long"},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "i", "type": "int"},
        {"name": "b", "type": "boolean"},
        {"name": "d", "type": "double"},
        {"name": "ns", "type": ["null", "string"]},
        {"name": "sn", "type": ["string", "null"]},
        {"name": "nl", "type": ["null", "long"]},
    ],
}
PLAIN = fastavro.parse_schema(
    {**SCHEMA, "fields": [
        {**field, "type": "long"} if isinstance(field["type"], dict) else field
        for field in SCHEMA["fields"]
    ]}
)
RECORDS = st.fixed_dictionaries({
    "s": TEXT, "l": LONG, "t": LONG, "i": INT, "b": st.booleans(),
    "d": st.floats(allow_nan=False), "ns": st.none() | TEXT, "sn": st.none() | TEXT,
    "nl": st.none() | LONG,
})


def write(record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, PLAIN, record)
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(RECORDS)
def test_reads_what_fastavro_writes(record: dict[str, Any]) -> None:
    reader = flat_reader(SCHEMA)
    assert reader is not None
    data = b"head" + write(record)
    assert reader.read(data, 4) == fastavro.schemaless_reader(io.BytesIO(data[4:]), PLAIN, None)


@settings(max_examples=300, deadline=None)
@given(RECORDS, st.data())
def test_a_damaged_datum_is_an_error_never_a_crash(record: dict[str, Any], data: Any) -> None:
    reader = flat_reader(SCHEMA)
    assert reader is not None
    good = write(record)
    cut = data.draw(st.integers(min_value=0, max_value=len(good) - 1))
    with pytest.raises(SerializationError):
        reader.read(good[:cut], 0)  # truncated anywhere
    with pytest.raises(SerializationError, match="after the record"):
        reader.read(good + b"\x00", 0)
    flipped = bytearray(good)
    flipped[cut] ^= data.draw(st.integers(min_value=1, max_value=255))
    with contextlib.suppress(SerializationError):  # may still be a record, else an error
        reader.read(bytes(flipped), 0)


def test_bad_union_branch_and_utf8_and_overlong_varint() -> None:
    reader = flat_reader({"type": "record", "name": "R", "fields": [
        {"name": "x", "type": ["null", "string"]}]})
    assert reader is not None
    assert reader.read(b"\x00", 0) == {"x": None}
    assert reader.read(b"\x02\x02a", 0) == {"x": "a"}
    with pytest.raises(SerializationError, match="union branch 2"):
        reader.read(b"\x04", 0)
    with pytest.raises(SerializationError, match="not UTF-8"):
        reader.read(b"\x02\x02\xff", 0)
    with pytest.raises(SerializationError, match="varint"):
        reader.read(b"\x80" * 11 + b"\x01", 0)
    with pytest.raises(SerializationError, match="past the end"):
        reader.read(b"\x02\x09ab", 0)


def test_the_event_schemas_are_flat_and_the_cdr_is_not() -> None:
    for name in (CALL_EVENT_SCHEMA, DTMF_EVENT_SCHEMA, DEAD_LETTER_SCHEMA):
        assert flat_reader(schema_document(name)) is not None, name
    assert flat_reader(schema_document(CDR_SCHEMA)) is None  # arrays: fastavro reads it
    assert flat_reader({"type": "record", "name": "R", "fields": [
        {"name": "m", "type": {"type": "map", "values": "string"}}]}) is None
    assert flat_reader({"type": "record", "name": "R", "fields": [
        {"name": "u", "type": ["null", "string", "long"]}]}) is None


def test_event_messages_decode_as_fastavro_reads_them() -> None:
    record = {
        "event_id": "sw1:a1:0", "type": "call_started", "ts": 1_795_528_800_000,
        "switch_id": "sw1", "user_id": "alice@smithlaw.example", "group_id": "smith-law",
        "call_id": "a1", "seq": 0, "direction": "inbound", "calling_number": "+12125550100",
        "called_number": "+12125550199", "network_call_id": None, "related_call_id": None,
        "related_reason": None, "user_timezone": "America/New_York", "call_category": None,
        "cause": None, "releasing_party": None,
    }
    message = encode_single_object(CALL_EVENT_SCHEMA, record)
    name, decoded = decode_single_object(message)
    assert (name, decoded) == (CALL_EVENT_SCHEMA, record)
    damaged = decode_event_message(message[:-3], Origin("call-events", 0, 7))
    assert isinstance(damaged, DeadLetter)
    assert damaged.reason.startswith("bad Avro cdrstream.CallEvent record")
    assert message[2:10] == schema_fingerprint(CALL_EVENT_SCHEMA)


MILLIS = st.integers(min_value=0, max_value=2**62)
MAYBE_TEXT = st.none() | TEXT
ENTRIES = st.builds(
    CodeEntry, MAYBE_TEXT, st.booleans(), st.sampled_from(["pre_dial", "second_line"]), TEXT,
    MILLIS,
)
LEG_SUMMARIES = st.builds(
    LegSummary, TEXT, MAYBE_TEXT, st.booleans(), st.none() | MILLIS, st.none() | MILLIS
)
CDRS = st.builds(
    Cdr,
    TEXT, INT, st.sampled_from(["call", "code_entry"]), TEXT, TEXT, TEXT, TEXT, MAYBE_TEXT,
    TEXT, MAYBE_TEXT, MAYBE_TEXT, MAYBE_TEXT, MILLIS, st.none() | MILLIS, MILLIS,
    st.booleans(), LONG, LONG, LONG, TEXT, MAYBE_TEXT, MAYBE_TEXT, TEXT, st.booleans(),
    st.lists(ENTRIES, max_size=4).map(tuple), MAYBE_TEXT, st.none() | st.booleans(),
    MAYBE_TEXT, st.lists(LEG_SUMMARIES, max_size=4).map(tuple), TEXT, TEXT, st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(CDRS)
def test_writes_a_cdr_as_fastavro_does(cdr: Cdr) -> None:
    message = encode_cdr_message(cdr, "avro")
    assert message == encode_single_object(CDR_SCHEMA, cdr_to_avro(cdr))
    assert decode_cdr_message(message) == cdr


def test_the_writer_refuses_what_the_schema_does_not_hold() -> None:
    writer = record_writer({"type": "record", "name": "R", "fields": [
        {"name": "s", "type": "string"}, {"name": "n", "type": ["null", "long"]},
        {"name": "d", "type": "double"}, {"name": "b", "type": "boolean"}]})
    assert writer is not None

    class Row:
        def __init__(self, s: object, n: object, d: object = 0.5, b: object = True) -> None:
            self.s, self.n, self.d, self.b = s, n, d, b

    assert writer.write(Row("a", None)) == write_plain(
        {"s": "a", "n": None, "d": 0.5, "b": True}, writer_schema())
    assert writer.write(Row("", -1, 2, False))[1:3] == b"\x02\x01"
    for row, problem in [
        (Row(None, 1), "s: None where the schema has no null"),
        (Row(5, 1), "s: not a string"),
        (Row("a", "1"), "n: not an integer"),
        (Row("a", True), "n: not an integer"),
        (Row("a", 2**63), "does not fit in an Avro long"),
        (Row("a", 1, "x"), "d: not a number"),
        (Row("a", 1, 0.5, 1), "b: not a boolean"),
    ]:
        with pytest.raises(SerializationError, match=problem):
            writer.write(row)


def test_an_array_field_must_hold_a_list() -> None:
    writer = record_writer({"type": "record", "name": "R", "fields": [
        {"name": "a", "type": {"type": "array", "items": {
            "type": "record", "name": "I", "fields": [{"name": "x", "type": "long"}]}}}]})
    assert writer is not None

    class Item:
        x = 3

    class Row:
        def __init__(self, a: object) -> None:
            self.a = a

    assert writer.write(Row((Item(), Item()))) == b"\x04\x06\x06\x00"
    assert writer.write(Row([])) == b"\x00"
    with pytest.raises(SerializationError, match="a: not a list"):
        writer.write(Row("xy"))


def writer_schema() -> Any:
    return fastavro.parse_schema({"type": "record", "name": "R", "fields": [
        {"name": "s", "type": "string"}, {"name": "n", "type": ["null", "long"]},
        {"name": "d", "type": "double"}, {"name": "b", "type": "boolean"}]})


def write_plain(record: dict[str, Any], schema: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def test_the_writer_takes_flat_fields_and_arrays_of_flat_records_only() -> None:
    assert record_writer(schema_document(CDR_SCHEMA)) is not None
    assert record_writer({"type": "record", "name": "R", "fields": [
        {"name": "m", "type": {"type": "map", "values": "string"}}]}) is None
    assert record_writer({"type": "record", "name": "R", "fields": [
        {"name": "a", "type": {"type": "array", "items": "string"}}]}) is None
    nested = {"type": "record", "name": "N", "fields": [
        {"name": "a", "type": {"type": "array", "items": {"type": "record", "name": "I", "fields": [
            {"name": "m", "type": {"type": "array", "items": "long"}}]}}}]}
    assert record_writer(nested) is None
