"""The worker's logic without Kafka: per-partition event time over the two topics."""

from __future__ import annotations

import asyncio
import io
import types
from collections.abc import Iterable
from typing import Any

import fastavro
import pytest
from faust.types import TP

from streams.cdr import Cdr
from streams.deadletter import DeadLetter, Origin
from streams.engine import run_events
from streams.events import DTMF, Event
from streams.partitioner import partition_for_key
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
from streams.state_codec import WATERMARK_PREFIX, StateBuilder, user_of
from streams.stream_processor import (
    RESUME_HOLD_SECONDS,
    TOPIC_QUIET_SECONDS,
    Message,
    PartitionClock,
    StreamProcessor,
)
from tests.builders import LegScript, code_entry_leg, events_of, settings, state_fields

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


def test_digits_seconds_behind_a_bulk_burst_still_count() -> None:
    """A quiet feed resumes with many minutes of events at once (a file published in bulk)
    and the digits of the same moment reach the broker 1.5 s after the call events, with
    more call events read meanwhile: event time runs past the quiet digit topic no faster
    than the wall clock from the burst's first event, so the code still goes to the held
    call in version 1."""
    config, calls, digits = second_line_day()
    processor = StreamProcessor(config)
    processor.restore([0], {}, wall=0.0)
    out = processor.handle(calls[:3] + digits[:1], wall=100.0)  # up to the first digit
    out += processor.handle(calls[3:-2], wall=110.0)  # after 10 s of quiet: a burst
    out += processor.handle(calls[-2:-1], wall=110.6)  # more of it, in the first second
    out += processor.handle(calls[-1:], wall=111.2)  # and after it
    out += processor.handle(digits[1:], wall=111.5)  # the digits, 1.5 s behind
    out += processor.idle_flush(wall=200.0)
    check(out)


def test_a_quiet_topic_holds_event_time_to_the_wall_clock_early_in_a_burst() -> None:
    """A burst whose first event had ts 61 s, read up to 900 s a second and a half
    later: event time 62.5 s while the digits (read up to 60 s) are quiet."""
    bulk = PartitionClock(read_up_to={CALLS: 900_000, DIGITS: 60_000},
                          read_at={CALLS: 110.0, DIGITS: 100.0}, burst_at=110.0, burst_ts=61_000)

    def caught_up(topic: str, partition: int) -> bool:
        return False

    at = 111.5  # past TOPIC_QUIET_SECONDS into the burst
    assert bulk.event_time((CALLS, DIGITS), 0, caught_up, at) == 61_000 + 1_500
    assert bulk.event_time((CALLS, DIGITS), 0, caught_up, at, idle=True) == 900_000
    assert bulk.event_time((CALLS, DIGITS), 0, caught_up, 110.0 + RESUME_HOLD_SECONDS) == (
        900_000
    )
    # live traffic: the burst began at ts 898.9 s, and the ts keep pace with the clock
    live = PartitionClock(read_up_to={CALLS: 900_000, DIGITS: 890_000},
                          read_at={CALLS: 111.4, DIGITS: 100.0}, burst_at=110.0, burst_ts=898_900)
    assert live.event_time((CALLS, DIGITS), 0, caught_up, at) == 900_000
    assert PartitionClock(read_up_to={CALLS: 900_000}, burst_at=110.0).event_time(
        (CALLS, DIGITS), 0, caught_up, at
    ) is None  # no event read in this burst yet
    sparse = PartitionClock(read_up_to={CALLS: 900_000}, read_at={CALLS: 111.5},
                            burst_at=110.0, burst_ts=898_500)
    assert sparse.event_time((CALLS, DIGITS), 0, caught_up, at) == 900_000  # no digits at all


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


def faulty_day(seed: int) -> tuple[Settings, list[Event], dict[str, Cdr]]:
    """A simulated day of 6 users with re-sent and disordered events, and file mode's
    final CDRs for it."""
    config = load_settings(None, environ={})
    events = list(iter_events(config, SimulationOptions(users=6, seed=seed, resend_rate=0.02,
                                                         disorder_ms=2000)))
    expected = latest_versions(
        item for item in run_events(config, ((e, None) for e in events)) if isinstance(item, Cdr)
    )
    return config, events, expected


@pytest.mark.parametrize("cut", [0.2, 0.5, 1.0])
def test_a_restart_from_the_table_gives_the_same_cdrs(cut: float) -> None:
    """One processor reads part of a day and persists its state; a new one restores it
    from the table writes, reads the rest (or nothing), then goes idle: the final CDRs are
    file mode's."""
    config, events, expected = faulty_day(seed=8)
    kafka = config.kafka
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


def test_a_checkpoint_encoded_while_batches_go_on_persists_the_state_it_took() -> None:
    """As the worker's background checkpoint does: changes are taken, more batches are
    handled, and only then are the taken changes encoded into the table. The table then
    holds each user exactly as it was when the changes were taken; and a processor
    restored from it, reading again from the offsets handled by then (a crash before the
    next checkpoint), ends with file mode's CDRs."""
    config, events, expected = faulty_day(seed=4)
    kafka = config.kafka
    messages = []
    for offset, event in enumerate(events):
        topic = kafka.dtmf_events_topic if event.type == DTMF else kafka.call_events_topic
        messages.append(Message(topic, 0, offset, encode_event_message(event, "json")))
    table: dict[bytes, bytes] = {}
    first = StreamProcessor(config)
    first.restore([0], {}, 100.0)
    out: list[object] = []
    handled_at_take = 0
    cut = int(len(messages) * 0.6)
    for start in range(0, cut, 300):
        taken, taken_at = first.take_changes(), start  # what was handled before `start`
        as_taken = dict(first.engines[0].users)  # immutable values: a snapshot
        out += first.handle(messages[start:start + 300], 100.0 + start / 1000)
        for change in taken:  # encoded after another batch was handled
            for write in [w for writes in first.writes_for(change) for w in writes]:
                if write.value is None:
                    table.pop(write.key, None)
                else:
                    table[write.key] = write.value
        handled_at_take = taken_at
        builder = StateBuilder()
        for key, value in table.items():
            if not key.startswith(WATERMARK_PREFIX):
                builder.add(key, value)
        states = builder.build()[0]
        assert {user: state_fields(state) for user, state in states.items()} == {
            user: state_fields(state) for user, state in as_taken.items()
        }
    second = StreamProcessor(config)  # the crash: everything after the last encoded take
    second.restore([0], table, 200.0)
    for start in range(handled_at_take, len(messages), 300):
        out += second.handle(messages[start:start + 300], 200.0 + start / 1000)
    for step in range(10):
        out += second.idle_flush(300.0 + step)
    assert latest_versions(item for item in out if isinstance(item, Cdr)) == expected


def _one_partition(config: Settings, events: list[Event]) -> list[Message]:
    kafka = config.kafka
    offsets = {kafka.call_events_topic: -1, kafka.dtmf_events_topic: -1}
    messages = []
    for event in events:
        topic = kafka.dtmf_events_topic if event.type == DTMF else kafka.call_events_topic
        offsets[topic] += 1
        messages.append(Message(topic, 0, offsets[topic], encode_event_message(event, "json")))
    return messages


@pytest.mark.parametrize("torn", [False, True])
def test_a_restart_reading_again_hours_of_events_the_table_already_has(torn: bool) -> None:
    """The committed offsets can be far behind the table: a checkpoint persists the state
    and only the next commit takes its offsets, and reading a backlog moves event time on
    by hours between two commits. A crash there (or part-way through the checkpoint's
    writes: `torn`) makes the restarted worker read those hours again, long after the
    table's tombstones of those calls expired. It must not take them for new calls: the
    table says which offsets each user's state (and the partition) already has."""
    config, events, expected = faulty_day(seed=5)
    messages = _one_partition(config, events)
    table: dict[bytes, bytes] = {}

    def apply(writes: list[Any]) -> None:
        for write in writes:
            if write.value is None:
                table.pop(write.key, None)
            else:
                table[write.key] = write.value

    first = StreamProcessor(config)
    first.restore([0], {}, 100.0)
    out: list[object] = []
    committed = len(messages) // 4  # the last commit, hours of event time back
    cut = int(len(messages) * 0.7)
    out += first.handle(messages[:committed], 100.0)
    apply([w for change in first.take_changes() for ws in first.writes_for(change) for w in ws])
    out += first.handle(messages[committed:cut], 100.5)
    writes = [w for change in first.take_changes() for ws in first.writes_for(change) for w in ws]
    assert first.engines[0].watermark is not None
    span_ms = first.engines[0].watermark - events[committed].ts
    assert span_ms > 2 * config.redelivery_horizon_seconds * 1000  # tombstones expired
    if torn:  # the crash came after some users were written, before the watermark
        writes = writes[: len(writes) // 2]
    apply(writes)
    second = StreamProcessor(config)
    second.restore([0], table, 200.0)
    for start in range(committed, len(messages), 300):
        out += second.handle(messages[start:start + 300], 200.0 + start / 1000)
    for step in range(10):
        out += second.idle_flush(300.0 + step)
    def letters(items: Iterable[object]) -> list[tuple[str, str | None]]:
        return sorted((i.reason, i.event_id) for i in items if isinstance(i, DeadLetter))

    assert letters(out) == letters(run_events(config, ((e, None) for e in events)))
    assert latest_versions(item for item in out if isinstance(item, Cdr)) == expected


def test_events_read_again_after_a_seek_back_are_passed_over() -> None:
    """Faust seeks back to the committed offsets at the end of a table recovery and after
    a rebalance, while the engine keeps what it read: the events it reads again (hours of
    event time back, their calls long out of memory) change nothing."""
    config, events, expected = faulty_day(seed=5)
    messages = _one_partition(config, events)
    processor = StreamProcessor(config)
    processor.restore([0], {}, 100.0)
    out: list[object] = []
    half = len(messages) // 2
    out += processor.handle(messages[:half], 100.0)
    positions = dict(processor.positions)
    out += processor.handle(messages[: half + 100], 100.5)  # from the start again, and on
    assert processor.counters.events == half + 100
    assert processor.positions != positions
    out += processor.handle(messages[half + 100:], 101.0)
    for step in range(10):
        out += processor.idle_flush(200.0 + step)
    assert [item for item in out if isinstance(item, DeadLetter)] == []
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


# ---------------------------------------------------------------- the worker's batch handler


class _FakeRecordBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: None) -> object:
        self.records.append((key, value))
        return object()


class _FakeAioProducer:
    """aiokafka's producer as the worker's record batches use it: deliveries stay pending
    until `deliver`, and are immediate after it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, _FakeRecordBatch]] = []
        self.pending: list[tuple[asyncio.Future[Any], Any]] = []
        self.client = self
        self._metadata = self
        self.delivering = False

    async def _wait_on_metadata(self, topic: str) -> None:
        return None

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def _partition(self, *args: Any) -> int:  # (topic, partition, key, value, key bytes, ...)
        return 0  # a record without a key (the worker partitions the others itself)

    def create_batch(self) -> _FakeRecordBatch:
        return _FakeRecordBatch()

    async def send_batch(self, batch: _FakeRecordBatch, topic: str, *,
                         partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, batch))
        future = asyncio.get_running_loop().create_future()
        metadata = types.SimpleNamespace(
            topic=topic, partition=partition, offset=len(self.sent) * 1000
        )
        self.pending.append((future, metadata))
        if self.delivering:
            self.deliver()
        return future

    def deliver(self) -> None:
        self.delivering = True
        for future, metadata in self.pending:
            if not future.done():
                future.set_result(metadata)

    def records_to(self, topic: str) -> list[tuple[int, bytes | None, bytes | None]]:
        return [(partition, key, value) for to, partition, batch in self.sent if to == topic
                for key, value in batch.records]

    # Faust's Producer around it
    def _ensure_producer(self) -> _FakeAioProducer:
        return self


def _worker_app(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, _FakeAioProducer, list[Any]]:
    """The worker's Faust app, not started: a fake producer (which the worker's own
    changelog batches go to), Faust's own changelog path recorded (it must stay unused),
    no checkpoint due until asked for."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from streams.worker import TABLE_NAME, create_app

    config = load_settings(None, environ={})
    config = config.model_copy(update={"worker": config.worker.model_copy(
        update={"commit_interval_seconds": 600.0})})
    app = create_app(config)
    producer = _FakeAioProducer()
    monkeypatch.setattr(type(app), "producer", property(lambda self: producer))
    table = app.tables[TABLE_NAME]
    changelog: list[Any] = []

    def send_changelog(partition: int, key: bytes, value: bytes | None, *_: Any) -> Any:
        changelog.append((partition, key, value))
        return types.SimpleNamespace(message=types.SimpleNamespace(partition=partition))

    monkeypatch.setattr(table, "send_changelog", send_changelog)

    async def revoked(self: Any, revoked: set[TP]) -> None:
        return None

    monkeypatch.setattr(faust_aiokafka.Consumer, "on_partitions_revoked", revoked)
    return app, producer, changelog


def _batch(config: Settings, partition: int) -> list[tuple[TP, list[Any]]]:
    """A day's events of a few users on one partition of both topics, as aiokafka's
    consumer records."""
    kafka = config.kafka
    batch: dict[str, list[Any]] = {kafka.call_events_topic: [], kafka.dtmf_events_topic: []}
    for event in iter_events(config, SimulationOptions(users=3, seed=4)):
        records = batch[kafka.dtmf_events_topic if event.type == DTMF else kafka.call_events_topic]
        records.append(types.SimpleNamespace(
            topic=kafka.dtmf_events_topic if event.type == DTMF else kafka.call_events_topic,
            partition=partition, offset=len(records), key=event.user_id.encode(),
            value=encode_event_message(event, "avro")))
    return [(TP(topic, partition), records) for topic, records in batch.items()]


def test_a_batch_fetched_before_a_revocation_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, producer, changelog = _worker_app(monkeypatch)
    consumer = app.batch_consumer
    batch = _batch(app.cdrstream_processor.settings, 0)
    tp = batch[0][0]

    async def run() -> None:
        fetched_at = consumer.revocations
        await consumer.on_partitions_revoked({tp})  # a rebalance between fetch and handling
        assert consumer.revocations == fetched_at + 1
        await app.batch_handler(batch, fetched_at)
        assert app.cdrstream_processor.counters.events == 0
        assert producer.sent == [] and changelog == []
        await app.batch_on_stop()  # a checkpoint: nothing of that batch is committable
        assert consumer._processed == {}
        await app.batch_handler(batch, consumer.revocations)  # fetched again, after it
        assert app.cdrstream_processor.counters.events == sum(len(r) for _, r in batch)

    asyncio.run(run())


def test_the_checkpoint_at_stop_persists_and_then_marks_the_offsets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between checkpoints a batch's CDRs are sent (one record batch per partition) but
    nothing is persisted or committable; at stop, once every delivery is done, each
    changed user is written and only then are the offsets handled committable."""
    from streams.worker import TABLE_NAME

    app, producer, changelog = _worker_app(monkeypatch)
    consumer = app.batch_consumer
    processor = app.cdrstream_processor
    batch = _batch(processor.settings, 1)
    ends = {tp: records[-1].offset + 1 for tp, records in batch}
    monkeypatch.setattr(consumer, "highwater", ends.__getitem__)  # read to the end

    async def run() -> None:
        await app.batch_handler(batch, consumer.revocations)
        assert processor.counters.cdrs > 0
        sent = [record for _, _, batch in producer.sent for record in batch.records]
        assert len(sent) == processor.counters.cdrs
        assert len(producer.sent) == len({(topic, p) for topic, p, _ in producer.sent})
        cdrs = producer.records_to(processor.settings.kafka.cdr_topic)
        assert cdrs and all(  # where the Java client's default partitioner puts its key
            key is not None and partition == partition_for_key(key, 3)
            for partition, key, _ in cdrs
        )
        assert changelog == [] and consumer._processed == {}
        table = app.tables[TABLE_NAME]
        topic = table.changelog_topic.get_topic_name()
        stopping = asyncio.ensure_future(app.batch_on_stop())
        await asyncio.sleep(0.01)
        assert not stopping.done() and producer.records_to(topic) == []  # waits for CDRs
        assert consumer._processed == {}
        producer.deliver()
        await stopping
        records = producer.records_to(topic)
        assert changelog == []  # not Faust's per-message path
        assert {p for p, _, _ in records} == {1}
        users = {record.key.decode() for _, records in batch for record in records}
        written = {user_of(key)[0] for _, key, _ in records if not key.startswith(b"\x00")}
        assert written and written <= users
        assert all(table.data[key] == value for _, key, value in records if value is not None)
        assert consumer._processed == ends

    asyncio.run(run())


def test_the_workers_consumer_lets_the_broker_gather_each_fetch() -> None:
    """`[worker] fetch_min_bytes` and `fetch_max_wait_seconds` reach the aiokafka consumer
    that fetches the events (Faust leaves them at 1 byte: a fetch per record or two when
    traffic is light, about 1 ms of CPU each). aiokafka's fetcher reads these two
    attributes when the consumer starts: if aiokafka renames them, this fails."""
    from streams.worker import create_app

    config = load_settings(None, environ={})
    assert (config.worker.fetch_min_bytes, config.worker.fetch_max_wait_seconds) == (65_536, 0.05)
    config = config.model_copy(update={"worker": config.worker.model_copy(
        update={"fetch_min_bytes": 12_345, "fetch_max_wait_seconds": 0.07})})

    async def consumer_of_the_events() -> Any:
        app = create_app(config)
        consumer = app.consumer._thread._create_consumer(loop=asyncio.get_running_loop())
        try:
            return (
                consumer._fetch_min_bytes, consumer._fetch_max_wait_ms, consumer._max_poll_records
            )
        finally:
            await consumer.stop()

    assert asyncio.run(consumer_of_the_events()) == (12_345, 70, config.worker.batch_size)
