"""The streaming worker on a real Kafka broker (SPEC section 5, issue 3).

Each test gets its own topics and consumer group. A simulated day with re-sent and
out-of-order events is published as a switch would; the worker's final CDR set on the
`cdr` topic must be exactly file mode's on the same events.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from streams.cdr import Cdr
from streams.deadletter import DeadLetter
from streams.engine import run_events
from streams.kafka_io import read_latest_cdrs
from streams.serialization import latest_versions, read_events
from streams.settings import Settings, load_settings
from tests.worker_harness import (
    WorkerProcess,
    all_cdr_versions,
    cli,
    dead_letters,
    free_port,
    wait_for,
    wait_for_cdrs,
    write_config,
)

pytestmark = pytest.mark.kafka
FINAL_TIMEOUT = 120


def simulate(path: Path, users: int, seed: int, *extra: str) -> Path:
    cli(
        "simulate",
        "--users",
        str(users),
        "--seed",
        str(seed),
        "--resend-rate",
        "0.02",
        "--disorder-ms",
        "2000",
        "--output",
        str(path),
        *extra,
    )
    return path


def file_mode_final(settings: Settings, events: Path) -> dict[str, Cdr]:
    stream = (
        (item, origin) for item, origin in read_events(events) if not isinstance(item, DeadLetter)
    )
    return latest_versions(out for out in run_events(settings, stream) if isinstance(out, Cdr))


@pytest.fixture
def setup(tmp_path: Path, kafka_bootstrap: str, kafka_topic_prefix: str):
    config = tmp_path / "config.toml"
    settings = write_config(config, kafka_bootstrap, kafka_topic_prefix)
    cli("topics", "create", "--config", str(config))
    workers: list[WorkerProcess] = []

    def start(name: str = "worker", web_port: int | None = None) -> WorkerProcess:
        worker = WorkerProcess(config, tmp_path / f"{name}.log", web_port)
        workers.append(worker)
        return worker

    yield config, settings, start
    for worker in workers:
        worker.ensure_stopped()


def publish(config: Path, events: Path, *extra: str) -> None:
    cli("publish", "--config", str(config), "--input", str(events), *extra)


def split_file(events: Path, at: float) -> tuple[Path, Path]:
    lines = events.read_bytes().splitlines(keepends=True)
    cut = int(len(lines) * at)
    first, second = events.with_suffix(".part1.jsonl"), events.with_suffix(".part2.jsonl")
    first.write_bytes(b"".join(lines[:cut]))
    second.write_bytes(b"".join(lines[cut:]))
    return first, second


def assert_same_final(got: dict[str, Cdr], expected: dict[str, Cdr], worker: WorkerProcess) -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    differing = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    detail = ""
    if differing:
        want, have = expected[differing[0]], got[differing[0]]
        detail = str(
            {
                name: (getattr(want, name), getattr(have, name))
                for name in want.__dataclass_fields__
                if getattr(want, name) != getattr(have, name)
            }
        )
    assert not (missing or extra or differing), (
        f"missing {missing[:5]}, extra {extra[:5]}, differing {differing[:5]} {detail}\n"
        f"{worker.tail()}"
    )


def assert_versions_idempotent(settings: Settings) -> None:
    """Re-published versions (after a crash) are identical to the first publication."""
    seen: dict[tuple[str, int], Cdr] = {}
    for cdr in all_cdr_versions(settings):
        first = seen.setdefault((cdr.cdr_id, cdr.version), cdr)
        assert first == cdr, f"{cdr.cdr_id} v{cdr.version} was published with two contents"


def test_worker_matches_file_mode(setup, tmp_path: Path) -> None:
    config, settings, start = setup
    events = simulate(tmp_path / "day.jsonl", users=6, seed=3)
    expected = file_mode_final(settings, events)
    assert len(expected) > 50
    publish(config, events)
    worker = start()
    got = wait_for_cdrs(settings, expected, FINAL_TIMEOUT)
    assert_same_final(got, expected, worker)
    assert dead_letters(settings) == []
    assert_versions_idempotent(settings)
    assert worker.terminate() == 0


def test_restart_after_sigkill_mid_stream(setup, tmp_path: Path) -> None:
    config, settings, start = setup
    events = simulate(tmp_path / "day.jsonl", users=6, seed=5)
    expected = file_mode_final(settings, events)
    first, second = split_file(events, 0.6)
    publish(config, first)
    worker = start("first")
    wait_for(lambda: len(all_cdr_versions(settings)) > 10 or None, FINAL_TIMEOUT, "first CDRs")
    publish(config, second)  # more traffic arrives while it works, then it is killed
    time.sleep(0.5)
    worker.kill()
    restarted = start("restarted")
    got = wait_for_cdrs(settings, expected, FINAL_TIMEOUT)
    assert_same_final(got, expected, restarted)
    # No check that re-published versions repeat the first publication here: after a
    # SIGKILL a re-issued intermediate version can differ (known limitation, see
    # docs/decisions.md); the final CDR set, checked above, does not.


def test_restart_after_sigterm(setup, tmp_path: Path) -> None:
    config, settings, start = setup
    events = simulate(tmp_path / "day.jsonl", users=6, seed=8)
    expected = file_mode_final(settings, events)
    publish(config, events)
    worker = start("first")
    wait_for(lambda: len(all_cdr_versions(settings)) > 5 or None, FINAL_TIMEOUT, "first CDRs")
    assert worker.terminate() == 0, worker.tail()
    restarted = start("restarted")
    got = wait_for_cdrs(settings, expected, FINAL_TIMEOUT)
    assert_same_final(got, expected, restarted)
    assert_versions_idempotent(settings)


def test_rocksdb_store_restart_after_sigterm_and_after_sigkill(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic_prefix: str
) -> None:
    """The deployed configuration keeps the table in RocksDB (deploy/k8s): the worker
    writes it and its changelog directly, a restarted worker reads its own RocksDB (and
    the changelog past it). Stopped cleanly, then killed, then restarted: file mode's
    final CDRs."""
    config = tmp_path / "config.toml"
    settings = write_config(config, kafka_bootstrap, kafka_topic_prefix, store="rocksdb://")
    cli("topics", "create", "--config", str(config))
    events = simulate(tmp_path / "day.jsonl", users=6, seed=21)
    expected = file_mode_final(settings, events)
    first, second = split_file(events, 0.5)
    publish(config, first)
    workers: list[WorkerProcess] = []
    try:
        workers.append(WorkerProcess(config, tmp_path / "first.log", None))
        wait_for(lambda: len(all_cdr_versions(settings)) > 5 or None, FINAL_TIMEOUT, "CDRs")
        assert workers[-1].terminate() == 0, workers[-1].tail()
        assert any((tmp_path / "worker-data").rglob("*.sst")) or any(
            (tmp_path / "worker-data").rglob("CURRENT")
        ), "no RocksDB store was written"
        workers.append(WorkerProcess(config, tmp_path / "second.log", None))
        publish(config, second)
        wait_for(lambda: len(all_cdr_versions(settings)) > len(expected) // 2 or None,
                 FINAL_TIMEOUT, "more CDRs")
        workers[-1].kill()
        workers.append(WorkerProcess(config, tmp_path / "third.log", None))
        got = wait_for_cdrs(settings, expected, FINAL_TIMEOUT)
        assert_same_final(got, expected, workers[-1])
    finally:
        for worker in workers:
            worker.ensure_stopped()


def test_paused_feed_is_flushed_when_idle_then_resumes(setup, tmp_path: Path) -> None:
    """The switch stops sending mid-day: after settle_seconds of idle wall-clock time the
    worker issues what it has (SPEC C8). When the rest arrives, the final CDRs are file
    mode's; a call the idle flush issued early may carry one more version."""
    config, settings, start = setup
    events = simulate(tmp_path / "day.jsonl", users=4, seed=9)
    expected = file_mode_final(settings, events)
    first, second = split_file(events, 0.5)
    publish(config, first)
    worker = start()
    # file mode closes the calls still up at the cut; the idle flush issues all the others
    at_cut = len(file_mode_final(settings, first))
    wait_for(
        lambda: True if len(read_latest_cdrs(settings)) >= at_cut * 0.8 else None,
        FINAL_TIMEOUT,
        "the idle flush to issue the calls released before the pause",
    )
    publish(config, second)
    def final() -> dict[str, Cdr] | None:
        latest = read_latest_cdrs(settings)
        return latest if _without_versions(latest) == _without_versions(expected) else None

    got = wait_for(final, FINAL_TIMEOUT, "the final CDR set")
    assert set(got) == set(expected)
    assert worker.terminate() == 0, worker.tail()


def _without_versions(cdrs: dict[str, Cdr]) -> dict[str, Cdr]:
    return {key: dataclasses.replace(cdr, version=0) for key, cdr in cdrs.items()}


def test_two_workers_share_the_partitions(setup, tmp_path: Path) -> None:
    import urllib.request

    config, settings, start = setup
    events = simulate(tmp_path / "day.jsonl", users=12, seed=13)  # users on all 3 partitions
    expected = file_mode_final(settings, events)
    ports = [free_port(), free_port()]
    workers = [start("a", ports[0]), start("b", ports[1])]

    def metric(port: int, name: str) -> float:
        try:
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        except OSError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in page.read().decode().splitlines()
            if line.startswith(name)
        )

    def shared() -> list[float] | None:
        counts = [metric(port, "cdrstream_assigned_partitions ") for port in ports]
        return counts if all(counts) and sum(counts) == settings.kafka.partitions else None

    wait_for(shared, FINAL_TIMEOUT, "both workers to have partitions")
    publish(config, events)
    got = wait_for_cdrs(settings, expected, FINAL_TIMEOUT)
    assert_same_final(got, expected, workers[0])
    counts = [metric(port, "cdrstream_events_in_total") for port in ports]
    assert all(count > 0 for count in counts), f"one worker got no partitions: {counts}"
    batches = [metric(port, "cdrstream_batches_total") for port in ports]
    assert all(0 < b <= count for b, count in zip(batches, counts, strict=True)), batches


def test_malformed_messages_go_to_the_dead_letter_topic(setup, tmp_path: Path) -> None:
    config, settings, start = setup
    events = simulate(tmp_path / "day.jsonl", users=3, seed=21)
    expected = file_mode_final(settings, events)
    bad_lines = [
        b"this is not json",
        b'{"event_id": "bad-1", "type": "call_teleported", "ts": "2026-11-24T14:00:00.000Z"}',
        b'{"event_id": "bad-2", "type": "dtmf", "ts": "2026-11-24T14:00:00.000Z", '
        b'"switch_id": "sw1",'
        b' "user_id": "u@x", "group_id": "g", "call_id": "c", "seq": 1, "digit": "X"}',
    ]
    lines = events.read_bytes().splitlines(keepends=True)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"".join(lines[:40]) + b"\n".join(bad_lines) + b"\n" + b"".join(lines[40:]))
    publish(config, mixed, "--send-malformed")
    worker = start()
    got = wait_for_cdrs(settings, expected, FINAL_TIMEOUT)
    assert_same_final(got, expected, worker)
    letters = wait_for(lambda: dead_letters(settings) or None, 30, "dead letters")
    assert len(letters) == 3
    reasons = sorted(str(letter["reason"]) for letter in letters)
    assert any("not valid JSON" in r for r in reasons)
    assert any("unknown event type 'call_teleported'" in r for r in reasons)
    assert any("'digit'" in r for r in reasons)
    for letter in letters:
        assert letter["source"] == settings.kafka.call_events_topic
        assert letter["partition"] is not None and letter["offset"] is not None


def test_worker_exports_the_daily_files_when_enabled(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic_prefix: str
) -> None:
    """Issue 5: with `[export] worker_enabled` the worker's leader writes each group's
    finished day (here to the local output directory; SFTP delivery is tested on its own),
    catching up the days it missed, and revises a day when its CDRs change."""
    config = tmp_path / "config.toml"
    write_config(config, kafka_bootstrap, kafka_topic_prefix)
    daily = tmp_path / "daily"
    config.write_text(
        config.read_text()
        + f"""
[export]
formats = ["csv"]
output_dir = "{daily}"
worker_enabled = true
worker_check_seconds = 2
"""
    )
    settings = load_settings(config, environ={})
    cli("topics", "create", "--config", str(config))
    events = simulate(tmp_path / "day.jsonl", users=3, seed=4)
    expected = file_mode_final(settings, events)
    wanted = sum(
        1
        for cdr in expected.values()
        if cdr.group_id == "smith-law" and cdr.local_date == "2026-11-24"
    )
    publish(config, events)
    worker = WorkerProcess(config, tmp_path / "worker.log")
    try:
        got = wait_for_cdrs(settings, expected, FINAL_TIMEOUT)
        assert_same_final(got, expected, worker)

        def complete_file() -> Path | None:
            for path in sorted(daily.glob("smith-law_2026-11-24*.csv")):
                if len(path.read_text().splitlines()) == wanted + 1:  # header + rows
                    return path
            return None

        path = wait_for(complete_file, 60, "the day's complete file")
        assert path.read_text().splitlines()[0].startswith("cdr_id,version,record_type")
    finally:
        worker.ensure_stopped()
