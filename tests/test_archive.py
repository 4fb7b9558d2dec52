"""`cdrstream archive`: the event topics in per-day Avro files with a manifest, read by
replay like the topics (issue: replay and audit).

The unit tests write archive files directly; those marked `kafka` archive real topics.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from streams.archive import (
    ArchiveFile,
    Manifest,
    _DayWriter,
    load_manifest,
    read_files,
    save_manifest,
    select_files,
    verify_archive,
)
from streams.errors import AuditError
from streams.kafka_io import create_topics, publish_file
from streams.replay import SourceRecord
from streams.serialization import read_events
from streams.timefmt import parse_iso
from tests.builders import LegScript
from tests.worker_harness import cli, write_config

# ---------------------------------------------------------------- files, no Kafka


def archive_file(first: int, last: int, min_ts: int, max_ts: int, run: int = 1) -> ArchiveFile:
    return ArchiveFile(f"f{first}-{last}.avro", "2026-11-24", "t", 0, run, last - first + 1,
                       first, last, min_ts, max_ts, 0, "")


def test_select_files_keeps_every_file_that_can_hold_the_range() -> None:
    a = archive_file(0, 99, 0, 1000)
    b = archive_file(100, 199, 990, 2000)  # timestamps overlap a's
    c = archive_file(200, 299, 2000, 3000)
    files = [a, b, c]
    assert select_files(files, None, None) == files
    assert select_files(files, 1500, None) == [b, c]
    assert select_files(files, 995, None) == [a, b, c]  # the range may start in a
    assert select_files(files, 3001, None) == []
    assert select_files(files, None, 1000) == [a]  # it ends at the first ts >= 1000, in a
    assert select_files(files, None, 1001) == [a, b]
    assert select_files(files, None, 500) == [a]
    assert select_files(files, 2100, 2500) == [c]


def write_file(root: Path, day: str, records: list[tuple[int, int]], run: int = 1) -> ArchiveFile:
    """An archive file of (offset, timestamp) records, each carrying a dtmf event."""
    writer = _DayWriter(root, day, "call-events", 0, run)
    leg = LegScript("a1")
    for offset, ts in records:
        leg.key("1", offset)
        writer.write(SourceRecord(ts, "call-events", 0, offset, b"k", None), leg.events[-1])
    return writer.close()


def test_files_are_read_in_offset_order_and_checked(tmp_path: Path) -> None:
    # Timestamps go back over midnight: offsets 2 and 4 are of the first day, 3 of the next.
    midnight = parse_iso("2026-11-25T00:00:00Z")
    late = write_file(tmp_path, "2026-11-25", [(3, midnight + 1), (5, midnight + 2)])
    early = write_file(tmp_path, "2026-11-24", [(0, midnight - 1000), (1, midnight - 500),
                                                 (2, midnight - 1), (4, midnight - 2)])
    records = list(read_files(tmp_path, [late, early]))
    assert [r.offset for r in records] == [0, 1, 2, 3, 4, 5]
    assert all(r.event is not None and r.event.digit == "1" and r.value is None for r in records)
    assert records[0].key == b"k"
    assert early.path == "2026-11-24/call-events.p000.r0001.avro"
    assert early.sha256 == hashlib.sha256((tmp_path / early.path).read_bytes()).hexdigest()

    manifest = Manifest({"call-events": 1}, {"call-events": {0: 6}}, [early, late])
    save_manifest(tmp_path, manifest)
    assert load_manifest(tmp_path).files_of("call-events", 0) == [early, late]
    assert verify_archive(tmp_path, progress=False) == (6, [])

    data = bytearray((tmp_path / late.path).read_bytes())
    data[-20] ^= 0xFF
    (tmp_path / late.path).write_bytes(bytes(data))
    with pytest.raises(AuditError, match="checksum differs"):
        list(read_files(tmp_path, [late]))
    _checked, problems = verify_archive(tmp_path, progress=False)
    assert problems == [f"{late.path}: SHA-256 differs from the manifest"]


def test_a_folder_without_manifest_is_no_archive(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="not an archive"):
        load_manifest(tmp_path)


# ---------------------------------------------------------------- real topics

pytest_kafka = pytest.mark.kafka


@pytest.fixture
def setup(tmp_path: Path, kafka_bootstrap: str, kafka_topic_prefix: str):
    config = tmp_path / "config.toml"
    settings = write_config(config, kafka_bootstrap, kafka_topic_prefix)
    create_topics(settings)
    return config, settings


def simulate(path: Path, users: int, seed: int, switches: str) -> Path:
    cli("simulate", "--users", str(users), "--seed", str(seed), "--resend-rate", "0.02",
        "--disorder-ms", "2000", "--switches", switches, "--output", str(path))
    return path


def replay(config: Path, out: Path, *source: str) -> bytes:
    cli("replay", "--config", str(config), "--output", str(out), *source)
    return out.read_bytes()


def count(path: Path) -> int:
    return sum(1 for _ in read_events(path))


@pytest_kafka
def test_a_replay_of_the_archive_equals_a_replay_of_the_topics(setup, tmp_path: Path) -> None:
    config, settings = setup
    events = simulate(tmp_path / "day.jsonl", 5, 7, "sw1,sw2")
    publish_file(settings, str(events))
    archive = tmp_path / "archive"
    result = cli("archive", str(archive), "--config", str(config), "--before", "now")
    assert f"{count(events):,} records" in result.stderr
    manifest = load_manifest(archive)
    assert sum(f.records for f in manifest.files) == count(events)
    kafka = settings.kafka
    assert set(manifest.topics) == {kafka.call_events_topic, kafka.dtmf_events_topic}
    raw = json.loads((archive / "manifest.json").read_text())
    assert raw["format"] == "cdrstream-archive/1" and raw["records"] == count(events)
    assert all(len(f["sha256"]) == 64 and f["records"] > 0 for f in raw["files"])
    for item in manifest.files:
        assert item.path.startswith(item.day + "/") and item.path.endswith(".r0001.avro")

    verify = cli("archive", str(archive), "--verify")
    assert "the archive matches its manifest" in verify.stderr

    from_topics = replay(config, tmp_path / "topics.jsonl")
    from_archive = replay(config, tmp_path / "archive.jsonl", "--archive", str(archive))
    both = replay(config, tmp_path / "both.jsonl", "--archive", str(archive), "--topics")
    assert from_archive == from_topics == both
    assert len(from_topics.splitlines()) > 100

    # explain reads the archive too, with the events' places in Kafka
    cdr_id = json.loads(from_topics.splitlines()[0])["cdr_id"]
    via_topics = json.loads(cli("explain", cdr_id, "--config", str(config), "--json").stdout)
    via_archive = json.loads(cli("explain", cdr_id, "--config", str(config), "--json",
                                 "--archive", str(archive)).stdout)
    assert via_archive["events"] == via_topics["events"]
    assert via_archive["events"][0]["origin"]["topic"] in manifest.topics

    # nothing twice; and the same records make the same files
    again = cli("archive", str(archive), "--config", str(config), "--before", "now")
    assert "nothing new" in again.stderr
    twin = tmp_path / "twin"
    cli("archive", str(twin), "--config", str(config), "--before", "now")
    assert {f.path: f.sha256 for f in load_manifest(twin).files} == {
        f.path: f.sha256 for f in manifest.files
    }


@pytest_kafka
def test_archive_runs_continue_and_the_topics_follow_the_archive(setup, tmp_path: Path) -> None:
    config, settings = setup
    parts = [simulate(tmp_path / f"part{n}.jsonl", 2, n, f"sw{n}") for n in (1, 2, 3)]
    archive = tmp_path / "archive"
    publish_file(settings, str(parts[0]))
    time.sleep(0.3)
    cut = round(time.time() * 1000)
    time.sleep(0.3)
    publish_file(settings, str(parts[1]))
    from streams.timefmt import format_iso

    cli("archive", str(archive), "--config", str(config), "--before", format_iso(cut))
    assert sum(f.records for f in load_manifest(archive).files) == count(parts[0])
    cli("archive", str(archive), "--config", str(config), "--before", "now")
    manifest = load_manifest(archive)
    assert [run["run"] for run in manifest.runs] == [1, 2]
    assert sum(f.records for f in manifest.files) == count(parts[0]) + count(parts[1])
    assert {f.run for f in manifest.files} == {1, 2}
    publish_file(settings, str(parts[2]))  # not archived yet

    from_topics = replay(config, tmp_path / "topics.jsonl")
    both = replay(config, tmp_path / "both.jsonl", "--archive", str(archive), "--topics")
    assert both == from_topics
    archived_only = replay(config, tmp_path / "archive.jsonl", "--archive", str(archive))
    assert archived_only != from_topics
    assert "sw3:" not in archived_only.decode() and "sw3:" in from_topics.decode()
    assert cli("archive", str(archive), "--verify").returncode == 0


@pytest_kafka
def test_records_lost_before_archiving_are_refused_or_recorded(setup, tmp_path: Path) -> None:
    from kafka import KafkaAdminClient, TopicPartition

    config, settings = setup
    archive = tmp_path / "archive"
    publish_file(settings, str(simulate(tmp_path / "a.jsonl", 2, 1, "sw1")))
    cli("archive", str(archive), "--config", str(config), "--before", "now")
    publish_file(settings, str(simulate(tmp_path / "b.jsonl", 2, 2, "sw2")))
    topic = settings.kafka.call_events_topic
    through = load_manifest(archive).through[topic]
    partition = max(through, key=lambda p: through[p])
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:  # retention deletes records that were never archived
        admin.delete_records({TopicPartition(topic, partition): through[partition] + 3})
    finally:
        admin.close()
    refused = cli("archive", str(archive), "--config", str(config), "--before", "now", check=False)
    assert refused.returncode == 2 and "deleted by retention" in refused.stderr
    replayed = cli("replay", "--config", str(config), "--archive", str(archive), "--topics",
                   "--output", str(tmp_path / "r.jsonl"), check=False)
    assert replayed.returncode == 2 and "neither the archive nor the topic" in replayed.stderr
    cli("archive", str(archive), "--config", str(config), "--before", "now", "--accept-gaps")
    [gap] = load_manifest(archive).gaps
    assert (gap["topic"], gap["partition"]) == (topic, partition)
    assert gap["last_offset"] - gap["first_offset"] == 2
