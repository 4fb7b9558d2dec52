"""Replay: rebuild the CDRs from the event log with the same engine (SPEC section 5).

Sources: the event topics (from the beginning, or a time range found with
offsets-for-times), an archive made by `cdrstream archive` (see `streams.archive`), the
archive followed by the topics from where it ends, or plain event files (JSON Lines or
Avro, like file mode).

Order. A replay does what the worker does: the event topics are co-partitioned by
user_id, and each partition number has its own engine, fed from partition p of both
topics (SPEC C8: "event time ... per partition when streaming"). Within a partition the
two topics' records are merged by record timestamp, and records with the same timestamp
are put in order of event time, topic and offset (`replay_order`); each topic-partition is
read in offset order from its start offset to its end offset as of the start of the
replay. An archive keeps the same records with the same topic, partition, offset,
timestamp and event, so it gives the same order, and the same CDRs. Every engine is finished at the
end, as in file mode. Partitions are independent, so they are replayed in parallel
processes; the output does not depend on how many (`jobs`).

Output. The final CDR set (latest version of each cdr_id) sorted by cdr_id, or, with
`all_versions`, every version issued, partition by partition in issue order. Both are
deterministic: two replays of the same records give identical files.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import fastavro

from streams.cdr import CDR_FIELDS, Cdr, CodeEntry, LegSummary
from streams.deadletter import DeadLetter, Origin
from streams.engine import Engine, Output
from streams.errors import AuditError
from streams.events import Event
from streams.progress import Progress
from streams.serialization import (
    CdrFormat,
    CdrWriter,
    DeadLetterWriter,
    decode_event_message,
    latest_versions,
    read_events,
)
from streams.settings import KafkaSettings, Settings
from streams.timefmt import Millis, format_iso, parse_iso

if TYPE_CHECKING:
    from streams.archive import ArchiveFile

T = TypeVar("T")
R = TypeVar("R")

# Below this many records a replay runs in this process: starting workers costs more.
PARALLEL_THRESHOLD = 50_000
POLL_MAX_RECORDS = 50_000
FETCH_TIMEOUT_S = 60.0
PROGRESS_EVERY = 8192


# ---------------------------------------------------------------- records and order


class SourceRecord(NamedTuple):
    """One message of an event topic, from Kafka or from an archive.

    `event` is set where the message was decoded already (an archive keeps events
    decoded); else `value` is the message value as it was (None: no value)."""

    timestamp: Millis
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    event: Event | None = None


def parse_when(text: str, now_ms: Millis | None = None) -> Millis:
    """`now`, a UTC date `YYYY-MM-DD` (its midnight), or an ISO 8601 time with a zone."""
    text = text.strip()
    if text == "now":
        return now_ms if now_ms is not None else round(time.time() * 1000)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return round(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        return parse_iso(text)
    except ValueError as error:
        raise AuditError(
            f"not a time: {text!r} (use YYYY-MM-DD for a UTC day, an ISO 8601 time with a "
            f"zone such as 2026-11-24T14:00:00Z, or now): {error}"
        ) from None


# ---------------------------------------------------------------- decoding


def avro_file_records(handle: Any) -> Iterator[dict[str, Any]]:
    """The records of an Avro container file (fastavro's reader, typed for callers)."""
    return cast(Iterator[dict[str, Any]], iter(fastavro.reader(handle)))


class EventDecoder:
    """A message value of an event topic to an Event, or a dead letter saying why:
    `decode_event_message`, and a message without a value is a dead letter too (as in
    the worker)."""

    def decode(self, value: bytes | None, origin: Origin) -> Event | DeadLetter:
        if value is None:
            return DeadLetter("message has no value", origin, "")
        return decode_event_message(value, origin)


# ---------------------------------------------------------------- Kafka


def kafka_consumer(kafka: KafkaSettings, **extra: Any) -> Any:
    """A kafka-python consumer for offsets and metadata (no group, no commits)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from streams.kafka_io import client_options

    try:
        return KafkaConsumer(
            **client_options(kafka), enable_auto_commit=False, group_id=None,
            auto_offset_reset="earliest", **extra,
        )
    except KafkaError as error:
        raise AuditError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {error}") from None


def topic_partitions(consumer: Any, topic: str, wait_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + wait_s
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        if time.monotonic() > deadline:
            raise AuditError(f"topic {topic!r} does not exist")
        time.sleep(0.2)


def _aiokafka_options(kafka: KafkaSettings) -> dict[str, Any]:
    """The connection settings of `[kafka]` in aiokafka's terms: kafka-python's, with the
    TLS files as an SSL context."""
    from streams.kafka_io import client_options

    options = {
        name: value for name, value in client_options(kafka).items() if not name.startswith("ssl_")
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(
            cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile, keyfile=kafka.ssl_keyfile
        )
    return options


class TopicFetcher:
    """Bulk reading of a few topic-partitions, each from a start offset up to (without)
    an end offset; `records(topic, partition)` yields one of them in offset order.

    On aiokafka, whose record parsing and CRC checks are compiled (kafka-python's are
    pure Python, and several times slower than the whole replay), driven by a private
    event loop so that callers stay synchronous."""

    def __init__(self, kafka: KafkaSettings, ranges: Mapping[tuple[str, int], tuple[int, int]]):
        self.kafka = kafka
        self.ranges = dict(ranges)
        self.loop = asyncio.new_event_loop()
        self.consumer: Any = None
        try:
            self.consumer = self.loop.run_until_complete(self._start())
        except BaseException:
            self.close()
            raise

    async def _start(self) -> Any:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        consumer = AIOKafkaConsumer(
            **_aiokafka_options(self.kafka), group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=100,
            fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
            check_crcs=True,
        )
        try:
            await consumer.start()
        except KafkaError as error:
            servers = self.kafka.bootstrap_servers
            raise AuditError(f"cannot reach Kafka at {servers}: {error}") from None
        active = {
            TopicPartition(topic, partition): start
            for (topic, partition), (start, end) in self.ranges.items() if start < end
        }
        consumer.assign(list(active))
        for tp, start in active.items():
            consumer.seek(tp, start)
        return consumer

    def records(self, topic: str, partition: int) -> Iterator[SourceRecord]:
        from aiokafka import TopicPartition
        from aiokafka.errors import KafkaError

        start, end = self.ranges[(topic, partition)]
        if start >= end:
            return
        tp = TopicPartition(topic, partition)
        run = self.loop.run_until_complete
        getmany = self.consumer.getmany
        waited_since = time.monotonic()
        while True:
            try:
                batch = run(getmany(tp, timeout_ms=1000, max_records=POLL_MAX_RECORDS))
            except KafkaError as error:
                raise AuditError(f"reading {topic}[{partition}]: {error}") from None
            records = batch.get(tp)
            if records:
                yield from [
                    SourceRecord(r.timestamp, topic, partition, r.offset, r.key, r.value)
                    for r in records if r.offset < end
                ]
                if records[-1].offset >= end - 1:
                    return
                waited_since = time.monotonic()
            elif run(self.consumer.position(tp)) >= end:
                return
            elif time.monotonic() - waited_since > FETCH_TIMEOUT_S:
                raise AuditError(
                    f"reading {topic}[{partition}]: no records for {FETCH_TIMEOUT_S:.0f} s "
                    f"before its end offset {end}"
                )

    def close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.consumer.stop())
            self.consumer = None
        self.loop.close()


def read_topic(kafka: KafkaSettings, topic: str) -> Iterator[SourceRecord]:
    """Every record of `topic` up to its end offsets as of now, partition by partition."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    consumer = kafka_consumer(kafka)
    try:
        partitions = topic_partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        beginning = consumer.beginning_offsets(tps)
        ends = consumer.end_offsets(tps)
    except KafkaError as error:
        raise AuditError(f"reading offsets of {topic}: {error}") from None
    finally:
        consumer.close()
    fetcher = TopicFetcher(kafka, {(topic, tp.partition): (beginning[tp], ends[tp]) for tp in tps})
    try:
        for partition in partitions:
            yield from fetcher.records(topic, partition)
    finally:
        fetcher.close()


# ---------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class ReplaySource:
    """What to replay: the topics, an archive, both (the archive, then the topics from
    where it ends), or event files; optionally a time range of record timestamps."""

    topics: bool = True
    archive: str | None = None
    inputs: tuple[str, ...] = ()
    start_ms: Millis | None = None
    end_ms: Millis | None = None

    def check(self) -> None:
        if self.inputs and (self.topics or self.archive):
            raise AuditError("replay event files, or the topics and/or an archive, not both")
        if not (self.inputs or self.topics or self.archive):
            raise AuditError("nothing to replay: give the topics, an archive or event files")
        if self.inputs and (self.start_ms is not None or self.end_ms is not None):
            raise AuditError("a time range (--from/--to) needs the topics or an archive")
        if self.start_ms is not None and self.end_ms is not None and self.start_ms >= self.end_ms:
            raise AuditError("the time range is empty (--from is not before --to)")

    def describe(self) -> str:
        if self.inputs:
            return "event files " + ", ".join(self.inputs)
        parts = []
        if self.archive:
            parts.append(f"archive {self.archive}")
        if self.topics:
            parts.append("event topics" + (" after the archive" if self.archive else ""))
        text = " + ".join(parts)
        if self.start_ms is not None or self.end_ms is not None:
            start = "the beginning" if self.start_ms is None else format_iso(self.start_ms)
            end = "the end" if self.end_ms is None else format_iso(self.end_ms)
            text += f", records from {start} to {end}"
        return text


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """Where one topic-partition's records come from: archive files, then the topic from
    `topic_start` to `topic_end` (exclusive; nothing where start >= end)."""

    topic: str
    partition: int
    archive_files: tuple[ArchiveFile, ...] = ()
    topic_start: int = 0
    topic_end: int = 0

    @property
    def reads_topic(self) -> bool:
        return self.topic_start < self.topic_end

    @property
    def estimated_records(self) -> int:
        archived = sum(f.records for f in self.archive_files)
        return archived + max(0, self.topic_end - self.topic_start)


@dataclass(frozen=True, slots=True)
class PartitionTask:
    """One partition number's replay: its topic-partitions, the range, what to return."""

    settings: Settings
    partition: int
    streams: tuple[StreamSpec, ...]
    start_ms: Millis | None = None
    end_ms: Millis | None = None
    archive_root: str | None = None
    all_versions: bool = False

    @property
    def estimated_records(self) -> int:
        return sum(spec.estimated_records for spec in self.streams)


@dataclass(slots=True)
class ReplayPlan:
    source: ReplaySource
    tasks: list[PartitionTask]
    warnings: list[str] = field(default_factory=list)

    @property
    def estimated_records(self) -> int:
        return sum(task.estimated_records for task in self.tasks)

    def offsets(self) -> dict[str, dict[str, Any]]:
        """What is read, per topic and partition (for reports)."""
        out: dict[str, dict[str, Any]] = {}
        for task in self.tasks:
            for spec in task.streams:
                entry: dict[str, Any] = {}
                if spec.archive_files:
                    entry["archive_files"] = len(spec.archive_files)
                    entry["archive_records"] = sum(f.records for f in spec.archive_files)
                if spec.reads_topic:
                    entry["topic_offsets"] = [spec.topic_start, spec.topic_end]
                out.setdefault(spec.topic, {})[str(spec.partition)] = entry
        return out


def event_topics(settings: Settings) -> tuple[str, str]:
    return settings.kafka.call_events_topic, settings.kafka.dtmf_events_topic


def plan_replay(
    settings: Settings, source: ReplaySource, all_versions: bool = False
) -> ReplayPlan:
    """The partitions to replay and where each topic-partition's records come from."""
    source.check()
    if source.inputs:
        return ReplayPlan(source, [])
    from streams import archive as arc

    manifest = arc.load_manifest(source.archive) if source.archive else None
    warnings: list[str] = []
    if manifest is not None:
        topics = tuple(manifest.topics)
        if source.topics and set(topics) != set(event_topics(settings)):
            raise AuditError(
                f"the archive holds topics {sorted(topics)}, the config names "
                f"{sorted(event_topics(settings))}: replay them separately"
            )
        counts = dict(manifest.topics)
    else:
        topics = event_topics(settings)
        counts = {}
    topic_ranges: dict[tuple[str, int], tuple[int, int]] = {}
    if source.topics:
        topic_ranges, counts, topic_warnings = _plan_topics(settings, source, manifest)
        warnings += topic_warnings
    partition_counts = {counts[topic] for topic in topics}
    if len(partition_counts) != 1:
        raise AuditError(
            f"the event topics have different partition counts {counts}: they must be "
            "co-partitioned by user_id"
        )
    tasks = []
    for partition in range(partition_counts.pop()):
        streams = []
        for topic in sorted(topics):
            files: tuple[ArchiveFile, ...] = ()
            if manifest is not None:
                files = tuple(arc.select_files(
                    manifest.files_of(topic, partition), source.start_ms, source.end_ms
                ))
            start, end = topic_ranges.get((topic, partition), (0, 0))
            streams.append(StreamSpec(topic, partition, files, start, end))
        tasks.append(PartitionTask(
            settings, partition, tuple(streams), source.start_ms, source.end_ms,
            source.archive, all_versions,
        ))
    return ReplayPlan(source, tasks, warnings)


def _plan_topics(
    settings: Settings, source: ReplaySource, manifest: Any
) -> tuple[dict[tuple[str, int], tuple[int, int]], dict[str, int], list[str]]:
    """Per topic-partition: the offsets to read from the topic, as of now."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    warnings: list[str] = []
    consumer = kafka_consumer(settings.kafka)
    try:
        counts = {topic: len(topic_partitions(consumer, topic)) for topic in event_topics(settings)}
        tps = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
        beginning = consumer.beginning_offsets(tps)
        ends = consumer.end_offsets(tps)
        starts_at = ends_at = None
        if source.start_ms is not None:
            starts_at = consumer.offsets_for_times(dict.fromkeys(tps, source.start_ms))
        if source.end_ms is not None:
            ends_at = consumer.offsets_for_times(dict.fromkeys(tps, source.end_ms))
    except KafkaError as error:
        raise AuditError(f"reading offsets from Kafka: {error}") from None
    finally:
        consumer.close()
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for tp in tps:
        first, end = beginning[tp], ends[tp]
        through = None if manifest is None else manifest.archived_through(tp.topic, tp.partition)
        if through is not None:
            if first > through:
                raise AuditError(
                    f"{tp.topic}[{tp.partition}]: offsets {through} to {first - 1} are in "
                    "neither the archive nor the topic (deleted by retention before they "
                    "were archived)"
                )
            start = through
        else:
            start = first
            if first > 0 and source.start_ms is None:
                warnings.append(
                    f"{tp.topic}[{tp.partition}]: offsets 0 to {first - 1} are no longer on "
                    "the topic (retention); replay an archive for them"
                )
        archived = [] if manifest is None else manifest.files_of(tp.topic, tp.partition)
        if source.start_ms is not None and not any(
            f.max_timestamp >= source.start_ms for f in archived
        ):
            found = None if starts_at is None else starts_at.get(tp)
            start = end if found is None else max(start, found.offset)
        if ends_at is not None:
            found = ends_at.get(tp)
            if found is not None:
                end = min(end, found.offset)
        ranges[(tp.topic, tp.partition)] = (start, max(start, end))
    return ranges, counts, warnings


# ---------------------------------------------------------------- reading a partition


def _in_range(records: Iterable[SourceRecord], start: Millis | None, end: Millis | None
              ) -> Iterator[SourceRecord]:
    """The offset range that offsets-for-times gives: from the first record whose
    timestamp is at or after `start` up to (without) the first at or after `end`."""
    records = iter(records)
    if start is not None:
        for record in records:
            if record.timestamp >= start:
                if end is not None and record.timestamp >= end:
                    return
                yield record
                break
    if end is None:
        yield from records
        return
    for record in records:
        if record.timestamp >= end:
            return
        yield record


Item = tuple[SourceRecord, "Event | DeadLetter", Origin]


Decode = Callable[[bytes | None, Origin], "Event | DeadLetter"]


def _decoded(records: Iterable[SourceRecord], decode: Decode) -> Iterator[Item]:
    for record in records:
        origin = Origin(record.topic, record.partition, record.offset)
        event = record.event
        yield record, (event if event is not None else decode(record.value, origin)), origin


def _tie_key(item: Item) -> tuple[int, str, int]:
    record, decoded = item[0], item[1]
    ts = decoded.ts if type(decoded) is Event else record.timestamp
    return ts, record.topic, record.offset


def replay_order(streams: Sequence[Iterator[Item]]) -> Iterator[Item]:
    """Merge a partition's topic-partition streams (each in offset order) by record
    timestamp; records with the same timestamp (a producer sends many in a millisecond,
    and nothing orders the two topics within it) go in order of event time, topic and
    offset."""
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_record_time)
    bucket: list[Item] = []
    current = None
    for item in merged:
        stamp = item[0].timestamp
        if stamp != current:
            if len(bucket) > 1:
                bucket.sort(key=_tie_key)
            yield from bucket
            bucket = [item]
            current = stamp
        else:
            bucket.append(item)
    if len(bucket) > 1:
        bucket.sort(key=_tie_key)
    yield from bucket


def _record_time(item: Item) -> int:
    return item[0].timestamp


def _raw_streams(task: PartitionTask, fetcher: TopicFetcher | None) -> list[Iterator[SourceRecord]]:
    """One stream per topic-partition: archive files, then the topic; in offset order,
    cut to the task's time range."""
    from streams import archive as arc

    streams: list[Iterator[SourceRecord]] = []
    for spec in task.streams:
        parts: list[Iterable[SourceRecord]] = []
        if spec.archive_files:
            assert task.archive_root is not None
            parts.append(arc.read_files(task.archive_root, spec.archive_files))
        if fetcher is not None and spec.reads_topic:
            parts.append(fetcher.records(spec.topic, spec.partition))
        stream: Iterator[SourceRecord] = chain.from_iterable(parts)
        if task.start_ms is not None or task.end_ms is not None:
            stream = _in_range(stream, task.start_ms, task.end_ms)
        streams.append(stream)
    return streams


@contextlib.contextmanager
def _task_fetcher(task: PartitionTask) -> Iterator[TopicFetcher | None]:
    wanted = {
        (spec.topic, spec.partition): (spec.topic_start, spec.topic_end)
        for spec in task.streams if spec.reads_topic
    }
    fetcher = TopicFetcher(task.settings.kafka, wanted) if wanted else None
    try:
        yield fetcher
    finally:
        if fetcher is not None:
            fetcher.close()


def raw_records(task: PartitionTask) -> Iterator[SourceRecord]:
    """The records of one partition, topic by topic (not in replay order), undecoded."""
    with _task_fetcher(task) as fetcher:
        for stream in _raw_streams(task, fetcher):
            yield from stream


def partition_items(task: PartitionTask) -> Iterator[Item]:
    """The records of one partition number, both topics, decoded, in replay order."""
    decode = EventDecoder().decode
    with _task_fetcher(task) as fetcher:
        streams = [_decoded(stream, decode) for stream in _raw_streams(task, fetcher)]
        yield from replay_order(streams)


# ---------------------------------------------------------------- replaying a partition


@dataclass(slots=True)
class PartitionResult:
    partition: int | None
    records: int = 0
    events: int = 0
    cdrs: list[Cdr] = field(default_factory=list)  # final, or every version in issue order
    dead_letters: list[DeadLetter] = field(default_factory=list)
    by_topic: dict[str, int] = field(default_factory=dict)
    rows: list[tuple[Any, ...]] | None = None  # `cdrs` packed for another process


Report = Callable[[int], None]


def replay_partition(task: PartitionTask, report: Report | None = None) -> PartitionResult:
    """Feed one partition's records to a fresh engine, then finish it."""
    result = PartitionResult(task.partition)
    engine = Engine(task.settings)
    feed = engine.feed
    outputs: list[Output] = []
    records = events = 0
    by_topic: dict[str, int] = {}
    for record, item, origin in partition_items(task):
        records += 1
        by_topic[record.topic] = by_topic.get(record.topic, 0) + 1
        if isinstance(item, DeadLetter):
            outputs.append(item)
        else:
            events += 1
            issued = feed(item, origin)
            if issued:
                outputs.extend(issued)
        if report is not None and records % PROGRESS_EVERY == 0:
            report(records)
    outputs.extend(engine.finish())
    if report is not None:
        report(records)
    result.records, result.events, result.by_topic = records, events, by_topic
    _collect(result, outputs, task.all_versions)
    return result


def _collect(result: PartitionResult, outputs: Iterable[Output], all_versions: bool) -> None:
    cdrs: list[Cdr] = []
    for item in outputs:
        if isinstance(item, Cdr):
            cdrs.append(item)
        else:
            result.dead_letters.append(item)
    if all_versions:
        result.cdrs = cdrs
    else:
        latest = latest_versions(cdrs)
        result.cdrs = [latest[cdr_id] for cdr_id in sorted(latest)]


def replay_files(settings: Settings, paths: Sequence[str], all_versions: bool = False,
                 report: Report | None = None) -> PartitionResult:
    """Event files (JSON Lines or Avro) in the order given through one engine, like file
    mode; origins are file and line."""
    result = PartitionResult(None)
    engine = Engine(settings)
    outputs: list[Output] = []
    records = events = 0
    for path in paths:
        for item, origin in read_events(path):
            records += 1
            if isinstance(item, DeadLetter):
                outputs.append(item)
            else:
                events += 1
                outputs.extend(engine.feed(item, origin))
            if report is not None and records % PROGRESS_EVERY == 0:
                report(records)
    outputs.extend(engine.finish())
    result.records, result.events = records, events
    result.by_topic = {"files": records}
    _collect(result, outputs, all_versions)
    return result


# ---------------------------------------------------------------- processes

_ENTRIES = CDR_FIELDS.index("account_code_entries")
_LEGS = CDR_FIELDS.index("legs")


def pack_cdr(cdr: Cdr) -> tuple[Any, ...]:
    """A CDR as plain tuples: cheaper to send between processes than the dataclasses."""
    row = [getattr(cdr, name) for name in CDR_FIELDS]
    row[_ENTRIES] = tuple(
        (e.code, e.complete, e.via, e.entry_call_id, e.entered_at) for e in cdr.account_code_entries
    )
    row[_LEGS] = tuple(
        (leg.call_id, leg.called_number, leg.answered, leg.answer_time, leg.release_time)
        for leg in cdr.legs
    )
    return tuple(row)


def unpack_cdr(row: Sequence[Any]) -> Cdr:
    values = list(row)
    values[_ENTRIES] = tuple(CodeEntry(*entry) for entry in values[_ENTRIES])
    values[_LEGS] = tuple(LegSummary(*leg) for leg in values[_LEGS])
    return Cdr(*values)


_WORKER: dict[str, Any] = {}  # this worker process's shared progress counters


def _init_worker(counters: Any) -> None:
    _WORKER["counters"] = counters


def _reporter(slot: int) -> Report:
    def report(count: int) -> None:
        counters = _WORKER.get("counters")
        if counters is not None:
            counters[slot] = count

    return report


def _pool_replay(job: tuple[int, PartitionTask]) -> PartitionResult:
    slot, task = job
    result = replay_partition(task, _reporter(slot))
    result.rows = [pack_cdr(cdr) for cdr in result.cdrs]
    result.cdrs = []
    return result


def default_jobs(records: int, tasks: int) -> int:
    if records < PARALLEL_THRESHOLD or tasks <= 1:
        return 1
    return max(1, min(os.cpu_count() or 1, tasks))


class _Slotted:
    """Picklable wrapper for a pool: returns (slot, result), so that unordered results can
    be put back in task order."""

    def __init__(self, function: Callable[[tuple[int, Any]], Any]):
        self.function = function

    def __call__(self, job: tuple[int, Any]) -> tuple[int, Any]:
        return job[0], self.function(job)


class _LocalReport:
    """Progress of tasks run one after the other in this process."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.base = 0
        self.last = 0

    def __call__(self, count: int) -> None:
        self.last = count
        if self.progress is not None:
            self.progress.update(self.base + count)

    def next_task(self) -> None:
        self.base += self.last
        self.last = 0


def run_parallel(
    function: Callable[[tuple[int, T]], R],
    local: Callable[[T, Report], R],
    tasks: Sequence[T],
    jobs: int,
    progress: Progress | None,
) -> list[R]:
    """Run `tasks` in `jobs` worker processes (`function`, a picklable module-level
    function given (slot, task)) or, with one job, here (`local`, given the task and a
    progress callback). Results come back in task order."""
    if jobs <= 1 or len(tasks) <= 1:
        report = _LocalReport(progress)
        results = []
        for task in tasks:
            results.append(local(task, report))
            report.next_task()
        return results
    context = multiprocessing.get_context("spawn")
    counters = context.Array("q", len(tasks), lock=False)
    ordered: dict[int, R] = {}
    with context.Pool(min(jobs, len(tasks)), _init_worker, (counters,)) as pool:
        pending = pool.imap_unordered(_Slotted(function), list(enumerate(tasks)), chunksize=1)
        while True:
            try:
                slot, result = pending.next(timeout=0.2)
            except multiprocessing.TimeoutError:
                if progress is not None:
                    progress.update(sum(counters))
                continue
            except StopIteration:
                break
            ordered[slot] = result
            if progress is not None:
                progress.update(sum(counters))
    return [ordered[slot] for slot in range(len(tasks))]


# ---------------------------------------------------------------- the whole replay


@dataclass(slots=True)
class ReplayResult:
    source: ReplaySource
    cdrs: list[Cdr]
    final: dict[str, Cdr]
    dead_letters: list[DeadLetter]
    records: int
    events: int
    seconds: float
    jobs: int
    warnings: list[str] = field(default_factory=list)
    offsets: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_topic: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        return (
            f"replayed {self.records:,} records ({self.events:,} events) from "
            f"{self.source.describe()} in {self.seconds:.1f} s ({rate:,.0f}/s, {self.jobs} "
            f"process{'es' if self.jobs > 1 else ''}): {len(self.final):,} CDRs, "
            f"{len(self.dead_letters):,} dead letters"
        )


def run_replay(
    settings: Settings,
    source: ReplaySource,
    *,
    all_versions: bool = False,
    jobs: int | None = None,
    progress: bool | None = None,
    plan: ReplayPlan | None = None,
) -> ReplayResult:
    """Rebuild the CDRs of `source`. `progress`: None shows it where stderr is a terminal."""
    started = time.monotonic()
    plan = plan or plan_replay(settings, source, all_versions)
    total = plan.estimated_records or None
    with Progress("replay", total, enabled=None if progress is None else progress) as bar:
        if source.inputs:
            results = [replay_files(settings, source.inputs, all_versions, bar.update)]
            used = 1
        else:
            used = jobs or default_jobs(plan.estimated_records, len(plan.tasks))
            results = run_parallel(
                _pool_replay, replay_partition, plan.tasks, used, bar
            )
    cdrs: list[Cdr] = []
    letters: list[DeadLetter] = []
    records = events = 0
    by_topic: dict[str, int] = {}
    for result in results:
        if result.rows is not None:
            result.cdrs = [unpack_cdr(row) for row in result.rows]
            result.rows = None
        cdrs.extend(result.cdrs)
        letters.extend(result.dead_letters)
        records += result.records
        events += result.events
        for topic, count in result.by_topic.items():
            by_topic[topic] = by_topic.get(topic, 0) + count
    final = latest_versions(cdrs)
    if not all_versions:
        cdrs = [final[cdr_id] for cdr_id in sorted(final)]
    return ReplayResult(
        source, cdrs, final, letters, records, events, time.monotonic() - started, used,
        plan.warnings, plan.offsets(), by_topic,
    )


def write_replay(result: ReplayResult, output: str | Path, fmt: CdrFormat) -> tuple[int, Path]:
    """Write the CDRs, and the dead letters beside them (`OUTPUT.dlq.jsonl`)."""
    from streams.filemode import dead_letter_path

    letters_path = dead_letter_path(output)
    with CdrWriter(output, fmt) as writer:
        for cdr in result.cdrs:
            writer.write(cdr)
    with DeadLetterWriter(letters_path) as letters:
        for letter in result.dead_letters:
            letters.write(letter)
    return len(result.cdrs), letters_path
