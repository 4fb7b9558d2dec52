"""The worker's logic without Kafka: per-partition event time over the two topics."""

from __future__ import annotations

import io

import fastavro
import pytest

from streams.cdr import Cdr
from streams.deadletter import DeadLetter, Origin
from streams.engine import run_events
from streams.events import DTMF
from streams.serialization import (
    CALL_EVENT_SCHEMA,
    CDR_SCHEMA,
    DEAD_LETTER_SCHEMA,
    DTMF_EVENT_SCHEMA,
    SINGLE_OBJECT_MARKER,
    cdr_to_avro,
    decode_cdr_message,
    decode_single_object,
    encode_cdr_message,
    encode_dead_letter_message,
    encode_event_message,
    event_to_avro,
    latest_versions,
    schema,
    schema_fingerprint,
)
from streams.settings import Settings, load_settings
from streams.simulate import SimulationOptions, iter_events
from streams.stream_processor import (
    TOPIC_QUIET_SECONDS,
    Message,
    PartitionClock,
    StreamProcessor,
)
from tests.builders import LegScript, code_entry_leg, events_of, settings

CALLS, DIGITS = "call-events", "dtmf-events"


def test_event_time_is_the_largest_ts_of_caught_up_quiet_topics() -> None:
    clock = PartitionClock(read_up_to={CALLS: 10_000, DIGITS: 2_000},
                           read_at={CALLS: 100.0, DIGITS: 99.5})

    def caught_up(topic: str, partition: int) -> bool:
        return False

    def digits_waiting(topic: str, partition: int) -> bool:
        return topic == DIGITS

    assert clock.event_time((CALLS, DIGITS), 0, caught_up, 100.2) == 2_000  # DTMF just came
    later = 99.5 + TOPIC_QUIET_SECONDS
    assert clock.event_time((CALLS, DIGITS), 0, caught_up, later) == 10_000
    assert clock.event_time((CALLS, DIGITS), 0, digits_waiting, later) == 2_000
    fresh = PartitionClock(read_up_to={CALLS: 10_000}, read_at={CALLS: 100.0})
    assert fresh.event_time((CALLS, DIGITS), 0, digits_waiting, 200.0) is None
    assert fresh.event_time((CALLS, DIGITS), 0, caught_up, 200.0) == 10_000


def test_digits_a_moment_behind_their_call_events_still_count() -> None:
    """The call topic is read up to long after the second line ended while its digits,
    produced at the same moment, are still on their way in the other topic (whose last
    fetch said it was caught up). The code must still go to the held call, in version 1."""
    config, calls, digits = second_line_day()
    processor = StreamProcessor(config)
    processor.restore([0], {}, wall=0.0)
    out = processor.handle(digits[:1], wall=100.0)  # the first digit
    out += processor.handle(calls, wall=100.1)  # every call event, up to 900 s
    out += processor.handle(digits[1:], wall=100.4)  # the other digits, a moment later
    out += processor.idle_flush(wall=200.0)
    check(out)


def test_digits_behind_their_call_events_when_a_quiet_feed_resumes() -> None:
    """The feed was quiet (both topics caught up); it resumes, and the call topic's
    messages show first: the digits of the same moment still count."""
    config, calls, digits = second_line_day()
    processor = StreamProcessor(config)
    processor.restore([0], {}, wall=0.0)
    out = processor.handle(calls[:3], wall=100.0)  # the held call starts and is answered
    out += processor.handle(calls[3:], wall=110.0)  # after 10 s of quiet: the rest of them
    out += processor.handle(digits, wall=110.5)  # the digits, half a second later
    out += processor.idle_flush(wall=200.0)
    check(out)


def second_line_day() -> tuple[Settings, list[Message], list[Message]]:
    config = settings()
    config = config.model_copy(update={"kafka": config.kafka.model_copy(
        update={"call_events_topic": CALLS, "dtmf_events_topic": DIGITS})})
    held = LegScript("a1").inbound(0).answer(2).hold(60).retrieve(70).release(300)
    later = LegScript("b1").outbound(400).dial(402).answer(405).release(900)
    events = events_of(held, code_entry_leg("a2", 61, "*712002"), later)
    messages = [
        Message(DIGITS if e.type == DTMF else CALLS, 0, n, encode_event_message(e, "json"))
        for n, e in enumerate(events)
    ]
    return (config, [m for m in messages if m.topic == CALLS],
            [m for m in messages if m.topic == DIGITS])


def check(out: list[Cdr | DeadLetter]) -> None:
    cdrs = {item.cdr_id: item for item in out if isinstance(item, Cdr)}
    assert [item for item in out if not isinstance(item, Cdr)] == []
    assert (cdrs["sw1:a1"].account_code, cdrs["sw1:a1"].version) == ("2002", 1)
    assert cdrs["sw1:a2"].account_code_status == "applied"


@pytest.mark.parametrize("cut", [0.2, 0.5, 1.0])
def test_a_restart_from_the_table_gives_the_same_cdrs(cut: float) -> None:
    """One processor reads part of a day and persists its state; a new one restores it
    from the table writes, reads the rest (or nothing), then goes idle: the final CDRs are
    file mode's."""
    config = load_settings(None, environ={})
    kafka = config.kafka
    events = list(iter_events(config, SimulationOptions(users=6, seed=8, resend_rate=0.02,
                                                         disorder_ms=2000)))
    expected = latest_versions(
        item for item in run_events(config, ((e, None) for e in events)) if isinstance(item, Cdr)
    )
    offsets: dict[tuple[str, int], int] = {}
    messages = []
    for event in events:
        topic = kafka.dtmf_events_topic if event.type == DTMF else kafka.call_events_topic
        partition = sum(event.user_id.encode()) % 3
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        messages.append(Message(topic, partition, offset, encode_event_message(event, "json")))
    table: dict[bytes, bytes] = {}

    def persist(processor: StreamProcessor) -> None:
        for write in processor.state_writes():
            if write.value is None:
                table.pop(write.key, None)
            else:
                table[write.key] = write.value

    out: list[object] = []
    wall = 100.0
    first = StreamProcessor(config)
    first.restore([0, 1, 2], {}, wall)
    split = int(len(messages) * cut)
    for start in range(0, split, 500):
        out += first.handle(messages[start:min(start + 500, split)], wall)
        persist(first)
        wall += 0.01
    second = StreamProcessor(config)
    second.restore([0, 1, 2], table, wall)
    for start in range(split, len(messages), 500):
        out += second.handle(messages[start:start + 500], wall)
        persist(second)
        wall += 0.01
    for _ in range(10):
        wall += 1
        out += second.idle_flush(wall)
    assert latest_versions(item for item in out if isinstance(item, Cdr)) == expected


def test_kafka_messages_are_the_avro_schemas_encoding() -> None:
    """Messages are written with the schemas' plain form (no logical types, which fastavro
    writes twice as slowly): the bytes are those of the schemas as written, and read back
    the same."""
    config = load_settings(None, environ={})
    events = list(iter_events(config, SimulationOptions(users=4, seed=5)))
    cdrs = [item for item in run_events(config, ((e, None) for e in events))
            if isinstance(item, Cdr)]
    assert any(cdr.legs for cdr in cdrs) and any(cdr.account_code_entries for cdr in cdrs)
    for cdr in cdrs:
        message = encode_cdr_message(cdr, "avro")
        out = io.BytesIO()
        out.write(SINGLE_OBJECT_MARKER + schema_fingerprint(CDR_SCHEMA))
        fastavro.schemaless_writer(out, schema(CDR_SCHEMA), cdr_to_avro(cdr))
        assert message == out.getvalue()
        assert decode_cdr_message(message) == cdr
    for event in events[:200]:
        name = DTMF_EVENT_SCHEMA if event.type == DTMF else CALL_EVENT_SCHEMA
        out = io.BytesIO()
        out.write(SINGLE_OBJECT_MARKER + schema_fingerprint(name))
        fastavro.schemaless_writer(out, schema(name), event_to_avro(event))
        assert encode_event_message(event, "avro") == out.getvalue()
    letter = DeadLetter("bad", Origin(CALLS, 2, 7), {"x": 1}, "e1")
    name, record = decode_single_object(encode_dead_letter_message(letter, "avro"))
    assert (name, record["offset"], record["payload"]) == (DEAD_LETTER_SCHEMA, 7, '{"x":1}')
