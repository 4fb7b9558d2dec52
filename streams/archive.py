"""The event archive: the event topics copied into per-day Avro container files, so that
replays and audits reach back past Kafka's retention.

Layout of an archive folder:

    manifest.json
    2026-11-24/call-events.p000.r0001.avro
    2026-11-24/dtmf-events.p000.r0001.avro
    ...

One file per UTC day (of the Kafka record timestamp), topic, partition and archive run,
each an Avro object container file (deflate) of `cdrstream.ArchivedEvent` records in
offset order: the message's topic, partition, offset, timestamp and key, and the event
it carried (or, where it was not a valid event, its raw value, so a replay sends it to
the dead letters again). Files are written once and never changed.

`manifest.json` lists every file with its record count, offset and timestamp ranges,
size and SHA-256; and, per topic-partition, `archived_through`, the first offset not yet
archived. Each run continues from there, so the archive of a topic-partition is one
contiguous run of offsets; a run archives what is older than `before` (by default the
start of the current UTC day, so that days are archived whole) and never records twice.
Records that retention deleted before they were archived are refused, or, when accepted,
written down in the manifest as a gap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import heapq
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

import orjson

from streams.deadletter import Origin
from streams.errors import AuditError
from streams.events import Event
from streams.progress import Progress
from streams.replay import (
    EventDecoder,
    Report,
    SourceRecord,
    TopicFetcher,
    avro_file_records,
    default_jobs,
    event_topics,
    kafka_consumer,
    run_parallel,
    topic_partitions,
)
from streams.serialization import avro_writer
from streams.settings import Settings
from streams.timefmt import Millis, format_iso

ARCHIVE_FORMAT = "cdrstream-archive/1"
ARCHIVE_SCHEMA = "cdrstream.ArchivedEvent"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".archive.lock"
CODEC = "deflate"
EVENT_BODY = "cdrstream.archive.ArchivedEventBody"


def utc_day(ms: Millis) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One archive file as the manifest describes it (`path` relative to the archive)."""

    path: str
    day: str
    topic: str
    partition: int
    run: int
    records: int
    first_offset: int
    last_offset: int
    min_timestamp: Millis
    max_timestamp: Millis
    bytes: int
    sha256: str

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json_dict(raw: dict[str, Any]) -> ArchiveFile:
        try:
            return ArchiveFile(**raw)
        except TypeError as error:
            raise AuditError(f"archive manifest: bad file entry {raw!r}: {error}") from None


@dataclass(slots=True)
class Manifest:
    """What an archive holds (see the module docstring)."""

    topics: dict[str, int] = field(default_factory=dict)  # topic -> partition count
    through: dict[str, dict[int, int]] = field(default_factory=dict)
    files: list[ArchiveFile] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def files_of(self, topic: str, partition: int) -> list[ArchiveFile]:
        found = [f for f in self.files if f.topic == topic and f.partition == partition]
        return sorted(found, key=attrgetter("first_offset", "run", "path"))

    def archived_through(self, topic: str, partition: int) -> int | None:
        return self.through.get(topic, {}).get(partition)

    def days(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for item in sorted(self.files, key=attrgetter("day", "topic", "partition", "run")):
            day = out.setdefault(item.day, {"records": 0, "files": 0, "bytes": 0, "by_topic": {}})
            day["records"] += item.records
            day["files"] += 1
            day["bytes"] += item.bytes
            day["by_topic"][item.topic] = day["by_topic"].get(item.topic, 0) + item.records
        return out

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "format": ARCHIVE_FORMAT,
            "schema": ARCHIVE_SCHEMA,
            "codec": CODEC,
            "day": "UTC date of the Kafka record timestamp",
            "topics": dict(sorted(self.topics.items())),
            "archived_through": {
                topic: {str(p): offset for p, offset in sorted(parts.items())}
                for topic, parts in sorted(self.through.items())
            },
            "records": sum(f.records for f in self.files),
            "days": self.days(),
            "runs": self.runs,
            "gaps": self.gaps,
            "files": [
                f.to_json_dict()
                for f in sorted(self.files, key=attrgetter("day", "topic", "partition", "run"))
            ],
        }

    @staticmethod
    def from_json_dict(raw: dict[str, Any]) -> Manifest:
        if raw.get("format") != ARCHIVE_FORMAT:
            raise AuditError(
                f"archive manifest: format {raw.get('format')!r}, expected {ARCHIVE_FORMAT!r}"
            )
        try:
            return Manifest(
                topics={str(t): int(n) for t, n in raw["topics"].items()},
                through={
                    str(t): {int(p): int(o) for p, o in parts.items()}
                    for t, parts in raw["archived_through"].items()
                },
                files=[ArchiveFile.from_json_dict(f) for f in raw["files"]],
                runs=list(raw.get("runs", [])),
                gaps=list(raw.get("gaps", [])),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise AuditError(f"archive manifest: not readable: {error!r}") from None


def load_manifest(root: str | Path, missing_ok: bool = False) -> Manifest:
    path = Path(root) / MANIFEST_NAME
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        if missing_ok:
            return Manifest()
        raise AuditError(f"{root}: not an archive (no {MANIFEST_NAME})") from None
    except (OSError, orjson.JSONDecodeError) as error:
        raise AuditError(f"{path}: cannot read: {error}") from None
    return Manifest.from_json_dict(raw)


def save_manifest(root: str | Path, manifest: Manifest) -> None:
    """Write the manifest atomically (a temporary file renamed over the old one)."""
    path = Path(root) / MANIFEST_NAME
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(orjson.dumps(manifest.to_json_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_NAME, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AuditError(f"{root}: another archive run is writing to it") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- reading


def select_files(
    files: Sequence[ArchiveFile], start_ms: Millis | None, end_ms: Millis | None
) -> list[ArchiveFile]:
    """The files of one topic-partition that can hold records of the offset range that
    offsets-for-times gives for [start_ms, end_ms) (the replay filters the records)."""
    keep = list(files)
    if start_ms is not None:
        holding = [f for f in files if f.max_timestamp >= start_ms]
        if not holding:
            return []
        lowest = min(f.first_offset for f in holding)
        keep = [f for f in keep if f.last_offset >= lowest]
    if end_ms is not None:
        ending = [f for f in files if f.max_timestamp >= end_ms]
        if ending:
            highest = min(f.last_offset for f in ending)
            keep = [f for f in keep if f.first_offset <= highest]
    return keep


def _file_records(root: Path, item: ArchiveFile) -> Iterator[SourceRecord]:
    path = root / item.path
    try:
        actual = sha256_of(path)
    except OSError as error:
        raise AuditError(f"archive file {path}: cannot read: {error.strerror}") from None
    if actual != item.sha256:
        raise AuditError(
            f"archive file {path}: checksum differs from the manifest (changed or damaged)"
        )
    count = 0
    make_event = Event
    with open(path, "rb") as handle:
        for record in avro_file_records(handle):
            count += 1
            event = record["event"]
            yield SourceRecord(
                record["timestamp"], record["topic"], record["partition"], record["offset"],
                record["key"], record["raw"], None if event is None else make_event(**event),
            )
    if count != item.records:
        raise AuditError(f"archive file {path}: {count} records, the manifest says {item.records}")


def read_files(root: str | Path, files: Sequence[ArchiveFile]) -> Iterator[SourceRecord]:
    """The records of one topic-partition's archive files, in offset order. Files whose
    offset ranges overlap (days split where timestamps go back and forth) are merged."""
    base = Path(root)
    ordered = sorted(files, key=attrgetter("first_offset", "run", "path"))
    group: list[ArchiveFile] = []
    reach = -1
    for item in [*ordered, None]:
        if item is None or (group and item.first_offset > reach):
            if len(group) == 1:
                yield from _file_records(base, group[0])
            elif group:
                yield from heapq.merge(
                    *(_file_records(base, f) for f in group), key=attrgetter("offset")
                )
            group, reach = [], -1
        if item is not None:
            group.append(item)
            reach = max(reach, item.last_offset)


# ---------------------------------------------------------------- writing


@dataclass(frozen=True, slots=True)
class ArchiveTask:
    settings: Settings
    root: str
    run: int
    partition: int
    ranges: tuple[tuple[str, int, int], ...]  # (topic, start, end) for this partition

    @property
    def records(self) -> int:
        return sum(end - start for _topic, start, end in self.ranges)


class _DayWriter:
    """One archive file being written: records of one day, topic and partition."""

    def __init__(self, root: Path, day: str, topic: str, partition: int, run: int):
        self.relative = f"{day}/{topic}.p{partition:03d}.r{run:04d}.avro"
        self.path = root / self.relative
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.temporary = self.path.with_name(self.path.name + ".tmp")
        self.handle = open(self.temporary, "wb")
        self.writer = avro_writer(self.handle, ARCHIVE_SCHEMA, self.relative)
        self.day, self.topic, self.partition, self.run = day, topic, partition, run
        self.records = 0
        self.first_offset = self.last_offset = -1
        self.min_ts = self.max_ts = 0

    def write(self, record: SourceRecord, event: Event | None) -> None:
        self.writer.write({
            "topic": record.topic, "partition": record.partition, "offset": record.offset,
            "timestamp": record.timestamp, "key": record.key,
            # (branch, value): the union's branch named, so the writer need not find it
            "event": None if event is None else (EVENT_BODY, event.as_dict()),
            "raw": None if event is not None else record.value,
        })
        if not self.records:
            self.first_offset = record.offset
            self.min_ts = self.max_ts = record.timestamp
        self.records += 1
        self.last_offset = record.offset
        self.min_ts = min(self.min_ts, record.timestamp)
        self.max_ts = max(self.max_ts, record.timestamp)

    def close(self) -> ArchiveFile:
        self.writer.flush()
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temporary, self.path)
        return ArchiveFile(
            self.relative, self.day, self.topic, self.partition, self.run, self.records,
            self.first_offset, self.last_offset, self.min_ts, self.max_ts,
            self.path.stat().st_size, sha256_of(self.path),
        )

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(OSError):
            self.temporary.unlink()


def archive_partition(task: ArchiveTask, report: Report | None = None) -> list[ArchiveFile]:
    """Copy one partition's records of both event topics into day files."""
    root = Path(task.root)
    wanted = {(topic, task.partition): (start, end) for topic, start, end in task.ranges}
    if not any(start < end for start, end in wanted.values()):
        return []
    decode = EventDecoder().decode
    writers: dict[tuple[str, str], _DayWriter] = {}
    done = 0
    fetcher = TopicFetcher(task.settings.kafka, wanted)
    try:
        for topic, partition in sorted(wanted):
            for record in fetcher.records(topic, partition):
                item = decode(record.value, Origin(record.topic, record.partition, record.offset))
                event = item if type(item) is Event else None
                day = utc_day(record.timestamp)
                writer = writers.get((day, topic))
                if writer is None:
                    writer = _DayWriter(root, day, topic, partition, task.run)
                    writers[(day, topic)] = writer
                writer.write(record, event)
                done += 1
                if report is not None and done % 8192 == 0:
                    report(done)
        files = [writers[key].close() for key in sorted(writers)]
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    finally:
        fetcher.close()
    if report is not None:
        report(done)
    return files


def _pool_archive(job: tuple[int, ArchiveTask]) -> list[ArchiveFile]:
    from streams.replay import _reporter

    slot, task = job
    return archive_partition(task, _reporter(slot))


@dataclass(slots=True)
class ArchiveRun:
    run: int
    records: int
    files: list[ArchiveFile]
    seconds: float
    before: Millis
    gaps: list[dict[str, Any]]

    def summary(self, root: str | Path) -> str:
        if not self.records:
            return f"nothing new to archive before {format_iso(self.before)} in {root}"
        days = sorted({f.day for f in self.files})
        size = sum(f.bytes for f in self.files)
        rate = self.records / self.seconds if self.seconds else 0.0
        text = (
            f"archive run {self.run}: {self.records:,} records before {format_iso(self.before)} "
            f"in {len(self.files)} files ({size / 1e6:,.1f} MB) for {len(days)} day(s) "
            f"{days[0]}..{days[-1]} in {root}, {self.seconds:.1f} s ({rate:,.0f}/s)"
        )
        if self.gaps:
            text += f"; {len(self.gaps)} gap(s) recorded in the manifest"
        return text


def archive_topics(
    settings: Settings,
    root: str | Path,
    before_ms: Millis,
    *,
    jobs: int | None = None,
    progress: bool | None = None,
    accept_gaps: bool = False,
) -> ArchiveRun:
    """Archive every event record older than `before_ms` not archived yet."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    started = time.monotonic()
    base = Path(root)
    with _locked(base):
        manifest = load_manifest(base, missing_ok=True)
        topics = event_topics(settings)
        if manifest.topics and set(manifest.topics) != set(topics):
            raise AuditError(
                f"{root} archives topics {sorted(manifest.topics)}, the config names "
                f"{sorted(topics)}: use another folder"
            )
        consumer = kafka_consumer(settings.kafka)
        try:
            counts = {topic: len(topic_partitions(consumer, topic)) for topic in topics}
            if len(set(counts.values())) != 1:
                raise AuditError(f"the event topics have different partition counts {counts}")
            tps = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
            beginning = consumer.beginning_offsets(tps)
            ends = consumer.end_offsets(tps)
            cut = consumer.offsets_for_times(dict.fromkeys(tps, before_ms))
        except KafkaError as error:
            raise AuditError(f"reading offsets from Kafka: {error}") from None
        finally:
            consumer.close()
        run = len(manifest.runs) + 1
        gaps: list[dict[str, Any]] = []
        ranges: dict[int, list[tuple[str, int, int]]] = {}
        for tp in tps:
            through = manifest.archived_through(tp.topic, tp.partition)
            start = beginning[tp] if through is None else through
            if through is not None and beginning[tp] > through:
                gap = {"topic": tp.topic, "partition": tp.partition,
                       "first_offset": through, "last_offset": beginning[tp] - 1, "run": run}
                if not accept_gaps:
                    raise AuditError(
                        f"{tp.topic}[{tp.partition}]: offsets {through} to {beginning[tp] - 1} "
                        "were deleted by retention before they were archived; run with "
                        "--accept-gaps to archive the rest and record the gap"
                    )
                gaps.append(gap)
                start = beginning[tp]
            found = cut.get(tp)
            end = ends[tp] if found is None else min(ends[tp], found.offset)
            ranges.setdefault(tp.partition, []).append((tp.topic, start, max(start, end)))
        tasks = [
            ArchiveTask(settings, str(base), run, partition, tuple(sorted(parts)))
            for partition, parts in sorted(ranges.items())
        ]
        total = sum(task.records for task in tasks)
        used = jobs if jobs is not None else default_jobs(total, len(tasks))
        try:
            with Progress("archive", total, enabled=progress) as bar:
                results = run_parallel(_pool_archive, archive_partition, tasks, used, bar)
        except BaseException:
            for stale in base.glob(f"*/*.r{run:04d}.avro*"):
                stale.unlink(missing_ok=True)
            raise
        files = [item for result in results for item in result]
        records = sum(f.records for f in files)
        if records or gaps:
            manifest.topics = counts
            for partition, parts in ranges.items():
                for topic, _start, end in parts:
                    manifest.through.setdefault(topic, {})[partition] = end
            manifest.files.extend(files)
            manifest.gaps.extend(gaps)
            manifest.runs.append({
                "run": run,
                "archived_at": format_iso(round(time.time() * 1000)),
                "before": format_iso(before_ms),
                "records": records,
                "files": len(files),
                "offsets": {
                    topic: {str(p): [start, end] for p, parts in sorted(ranges.items())
                            for t, start, end in parts if t == topic}
                    for topic in sorted(topics)
                },
            })
            save_manifest(base, manifest)
    return ArchiveRun(run, records, files, time.monotonic() - started, before_ms, gaps)


# ---------------------------------------------------------------- verifying


def verify_archive(root: str | Path, progress: bool | None = None) -> tuple[int, list[str]]:
    """Check every file against the manifest: present, same size and SHA-256, the record
    count, offsets and timestamps it lists, the day, no offset archived twice, nothing at
    or past `archived_through`. Returns (records checked, problems)."""
    base = Path(root)
    manifest = load_manifest(base)
    problems: list[str] = []
    seen: dict[tuple[str, int], set[int]] = {}
    checked = 0
    total = sum(f.records for f in manifest.files)
    listed = {f.path for f in manifest.files}
    for path in sorted(base.glob("*/*.avro")):
        relative = path.relative_to(base).as_posix()
        if relative not in listed:
            problems.append(f"{relative}: not in the manifest")
    with Progress("verify", total, unit="records", enabled=progress) as bar:
        for item in sorted(manifest.files, key=attrgetter("day", "topic", "partition", "run")):
            path = base / item.path
            if not path.is_file():
                problems.append(f"{item.path}: missing")
                continue
            if path.stat().st_size != item.bytes:
                size = path.stat().st_size
                problems.append(f"{item.path}: {size} bytes, the manifest says {item.bytes}")
            if sha256_of(path) != item.sha256:
                problems.append(f"{item.path}: SHA-256 differs from the manifest")
                continue
            offsets = seen.setdefault((item.topic, item.partition), set())
            through = manifest.archived_through(item.topic, item.partition)
            count = 0
            previous = -1
            bad: list[str] = []
            with open(path, "rb") as handle:
                for record in avro_file_records(handle):
                    count += 1
                    offset, ts = record["offset"], record["timestamp"]
                    if record["topic"] != item.topic or record["partition"] != item.partition:
                        where = f"{record['topic']}[{record['partition']}]"
                        bad.append(f"offset {offset} is of {where}")
                    if offset <= previous:
                        bad.append(f"offset {offset} after {previous}")
                    if offset in offsets:
                        bad.append(f"offset {offset} archived twice")
                    if through is None or offset >= through:
                        bad.append(f"offset {offset} is past archived_through {through}")
                    if not (item.first_offset <= offset <= item.last_offset):
                        span = f"{item.first_offset}..{item.last_offset}"
                        bad.append(f"offset {offset} outside {span}")
                    in_span = item.min_timestamp <= ts <= item.max_timestamp
                    if not in_span or utc_day(ts) != item.day:
                        bad.append(f"offset {offset}: timestamp {format_iso(ts)} not of {item.day}")
                    if record["event"] is None and record["raw"] is None and record["key"] is None:
                        pass  # a message without key or value: kept as it was
                    offsets.add(offset)
                    previous = offset
                    checked += 1
                    if checked % 8192 == 0:
                        bar.update(checked)
            if count != item.records:
                bad.append(f"{count} records, the manifest says {item.records}")
            problems.extend(f"{item.path}: {text}" for text in bad[:5])
            if len(bad) > 5:
                problems.append(f"{item.path}: ... and {len(bad) - 5} more problems")
    return checked, problems


def describe(root: str | Path) -> Iterable[str]:
    """A few readable lines about an archive."""
    manifest = load_manifest(root)
    records = sum(f.records for f in manifest.files)
    yield (f"{root}: {records:,} records in {len(manifest.files)} files, "
           f"{len(manifest.runs)} run(s)")
    for day, info in manifest.days().items():
        topics = ", ".join(f"{t} {n:,}" for t, n in sorted(info["by_topic"].items()))
        yield (f"  {day}: {info['records']:,} records ({topics}), {info['files']} files, "
               f"{info['bytes'] / 1e6:,.1f} MB")
    for gap in manifest.gaps:
        yield (f"  gap: {gap['topic']}[{gap['partition']}] offsets {gap['first_offset']}.."
               f"{gap['last_offset']} were never archived")
