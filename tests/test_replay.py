"""`cdrstream replay`: the CDRs rebuilt from the event log (issue: replay and audit).

Unit tests need nothing; those marked `kafka` read real topics (SPEC section 5: a replay
of the topics gives the final CDR set of file mode on the same events).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from streams.cdr import Cdr
from streams.deadletter import DeadLetter, Origin
from streams.engine import run_events
from streams.errors import AuditError
from streams.events import Event
from streams.kafka_io import create_topics, publish_file
from streams.progress import Progress, format_duration, progress_wanted
from streams.replay import (
    EventDecoder,
    ReplaySource,
    SourceRecord,
    _in_range,
    pack_cdr,
    parse_when,
    replay_order,
    run_replay,
    unpack_cdr,
)
from streams.serialization import (
    encode_event_message,
    encode_single_object,
    latest_versions,
    read_cdrs,
    read_events,
)
from streams.settings import Settings, load_settings
from streams.timefmt import format_iso, parse_iso
from tests.worker_harness import cli, write_config

# ---------------------------------------------------------------- helpers


def simulate(
    path: Path, users: int = 4, seed: int = 3, day: str = "2026-11-24", switches: str = "sw1,sw2"
) -> Path:
    cli("simulate", "--users", str(users), "--seed", str(seed), "--resend-rate", "0.02",
        "--disorder-ms", "2000", "--date", day, "--switches", switches, "--output", str(path))
    return path


def file_mode(settings: Settings, events: Path) -> dict[str, Cdr]:
    stream = ((e, o) for e, o in read_events(events) if not isinstance(e, DeadLetter))
    return latest_versions(out for out in run_events(settings, stream) if isinstance(out, Cdr))


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- progress


def test_progress_is_quiet_in_pipes_and_ci() -> None:
    assert not progress_wanted(io.StringIO(), environ={})
    assert not progress_wanted(FakeTty(), environ={"CI": "true"})
    assert not progress_wanted(FakeTty(), environ={"TERM": "dumb"})
    assert progress_wanted(FakeTty(), environ={"CI": "false", "TERM": "xterm"})
    pipe = io.StringIO()
    with Progress("replay", 100, stream=pipe) as progress:
        for n in range(100):
            progress.update(n)
    assert pipe.getvalue() == ""


def test_progress_shows_rate_and_time_left_rate_limited() -> None:
    clock, tty = Clock(), FakeTty()
    progress = Progress("replay", 1000, stream=tty, enabled=True, interval=0.5, clock=clock)
    clock.now += 1
    progress.update(100)
    progress.update(150)  # within the interval: not drawn
    assert tty.getvalue().count("\r") == 1
    assert "100/1,000 events (10%)" in tty.getvalue()
    assert "100 events/s" in tty.getvalue()
    assert "about 0:09 left" in tty.getvalue()
    clock.now += 1
    progress.update(400)
    assert tty.getvalue().count("\r") == 2
    progress.close()
    assert tty.getvalue().endswith("\r")
    assert format_duration(3725) == "1:02:05"


# ---------------------------------------------------------------- pieces


def test_parse_when() -> None:
    assert parse_when("2026-11-24") == parse_iso("2026-11-24T00:00:00Z")
    assert parse_when("2026-11-24T09:00:00-05:00") == parse_iso("2026-11-24T14:00:00Z")
    assert parse_when("now", now_ms=1234) == 1234
    with pytest.raises(AuditError):
        parse_when("2026-11-24T09:00:00")  # no zone
    with pytest.raises(AuditError):
        parse_when("yesterday")


def test_event_decoder_gives_what_the_canonical_one_gives(tmp_path: Path) -> None:
    from streams.serialization import decode_event_message

    events = [e for e, _ in read_events(simulate(tmp_path / "d.jsonl", users=1))]
    assert all(isinstance(e, Event) for e in events)
    messages: list[bytes | None] = []
    for event in events[:300]:
        assert isinstance(event, Event)
        messages += [encode_event_message(event, "avro"), encode_event_message(event, "json")]
    good = encode_event_message(events[1], "avro")  # type: ignore[arg-type]
    bad_digit = dict(events[1].as_dict())  # type: ignore[union-attr]
    bad_digit["digit"] = "X"
    bad_digit = {k: bad_digit[k] for k in ("event_id", "type", "ts", "switch_id", "user_id",
                                           "group_id", "call_id", "seq", "digit")}
    messages += [
        good[:-3],  # truncated
        good[:2] + b"\x00" * 8 + good[10:],  # unknown fingerprint
        b"\xc3\x01abc",  # too short
        b"not json",
        b'{"type": "call_teleported"}',
        encode_single_object("cdrstream.DtmfEvent", bad_digit),
        good[:10] + b"\x00" + good[11:],  # damaged datum
    ]
    decoder = EventDecoder()
    for number, message in enumerate(messages):
        origin = Origin("t", 0, number)
        assert message is not None
        assert decoder.decode(message, origin) == decode_event_message(message, origin), number
    letter = decoder.decode(None, Origin("t", 0, 1))
    assert isinstance(letter, DeadLetter) and letter.reason == "message has no value"


def record(ts: int, offset: int, topic: str = "a") -> SourceRecord:
    return SourceRecord(ts, topic, 0, offset, None, None)


def test_time_range_is_the_offset_range_of_offsets_for_times() -> None:
    # Timestamps go back and forth: the range starts at the first record at or after
    # `start` and ends before the first at or after `end`, whatever follows.
    stream = [record(ts, offset) for offset, ts in enumerate([5, 9, 12, 8, 15, 11, 20, 13])]
    picked = [r.offset for r in _in_range(stream, 10, 20)]
    assert picked == [2, 3, 4, 5]
    assert [r.offset for r in _in_range(stream, None, 9)] == [0]
    assert [r.offset for r in _in_range(stream, 30, None)] == []
    assert [r.offset for r in _in_range(stream, 20, 20)] == []


def test_ties_on_the_record_timestamp_go_in_event_time_order() -> None:
    def item(ts: int, topic: str, offset: int, event_ts: int) -> tuple[SourceRecord, Event, Origin]:
        event = Event(f"e{topic}{offset}", "dtmf", event_ts, "sw", "u", "g", "c", offset, digit="1")
        origin = Origin(topic, 0, offset)
        return SourceRecord(ts, topic, 0, offset, None, None, event), event, origin

    calls = [
        item(100, "call-events", 0, 900),
        item(100, "call-events", 1, 950),
        item(101, "call-events", 2, 10),
    ]
    digits = [item(99, "dtmf-events", 0, 5), item(100, "dtmf-events", 1, 920)]
    order = [(i[0].topic[0], i[0].offset) for i in replay_order([iter(calls), iter(digits)])]
    assert order == [("d", 0), ("c", 0), ("d", 1), ("c", 1), ("c", 2)]


def test_packed_cdrs_come_back_equal(tmp_path: Path) -> None:
    events = simulate(tmp_path / "d.jsonl", users=2)
    out = tmp_path / "cdrs.jsonl"
    cli("process", "--input", str(events), "--output", str(out))
    cdrs = list(read_cdrs(out))
    assert any(c.account_code_entries for c in cdrs)
    assert any(c.legs for c in cdrs)
    assert [unpack_cdr(pack_cdr(c)) for c in cdrs] == cdrs


# ---------------------------------------------------------------- event files


def test_replay_of_event_files_is_file_mode_and_deterministic(tmp_path: Path) -> None:
    events = simulate(tmp_path / "day.jsonl", users=3, seed=11)
    process_out = tmp_path / "process.jsonl"
    cli("process", "--input", str(events), "--output", str(process_out))
    all_versions = tmp_path / "all.jsonl"
    cli("replay", "--input", str(events), "--output", str(all_versions), "--all-versions")
    assert all_versions.read_bytes() == process_out.read_bytes()
    for fmt in ("jsonl", "csv", "avro"):
        first, second = tmp_path / f"r1.{fmt}", tmp_path / f"r2.{fmt}"
        cli("replay", "--input", str(events), "--output", str(first))
        cli("replay", "--input", str(events), "--output", str(second))
        assert first.read_bytes() == second.read_bytes(), fmt
        rebuilt = list(read_cdrs(first))
        assert [c.cdr_id for c in rebuilt] == sorted(c.cdr_id for c in rebuilt)
        assert {c.cdr_id: c for c in rebuilt} == latest_versions(read_cdrs(process_out))


def test_sources_are_checked() -> None:
    with pytest.raises(AuditError):
        ReplaySource(topics=True, inputs=("x.jsonl",)).check()
    with pytest.raises(AuditError):
        ReplaySource(topics=False).check()
    with pytest.raises(AuditError):
        ReplaySource(topics=False, inputs=("x.jsonl",), start_ms=1).check()
    with pytest.raises(AuditError):
        ReplaySource(start_ms=5, end_ms=5).check()
    result = cli("replay", "--input", "x.jsonl", "--topics", "--output", "/dev/null", check=False)
    assert result.returncode == 2 and "not both" in result.stderr


# ---------------------------------------------------------------- the topics


@pytest.fixture
def kafka_setup(tmp_path: Path, kafka_bootstrap: str, kafka_topic_prefix: str):
    config = tmp_path / "config.toml"
    settings = write_config(config, kafka_bootstrap, kafka_topic_prefix)
    create_topics(settings)
    return config, settings


@pytest.mark.kafka
def test_replay_of_the_topics_is_file_mode_for_any_number_of_processes(
    kafka_setup: tuple[Path, Settings], tmp_path: Path
) -> None:
    config, settings = kafka_setup
    events = simulate(tmp_path / "day.jsonl", users=6, seed=5)
    publish_file(settings, str(events))
    outputs = []
    for jobs in ("1", "2", "3"):
        out = tmp_path / f"replay-{jobs}.jsonl"
        result = cli("replay", "--config", str(config), "--output", str(out), "--jobs", jobs)
        assert "0 dead letters" in result.stderr
        assert "\r" not in result.stderr  # no progress line in a pipe
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    rebuilt = {c.cdr_id: c for c in read_cdrs(tmp_path / "replay-1.jsonl")}
    assert rebuilt == file_mode(settings, events)
    assert len(rebuilt) > 100


@pytest.mark.kafka
def test_replay_of_a_time_range(kafka_setup: tuple[Path, Settings], tmp_path: Path) -> None:
    config, settings = kafka_setup
    first = simulate(tmp_path / "first.jsonl", users=2, seed=1, day="2026-11-24")
    second = simulate(tmp_path / "second.jsonl", users=2, seed=2, day="2026-11-25", switches="sw3")
    publish_file(settings, str(first))
    time.sleep(0.3)
    cut = round(time.time() * 1000)
    time.sleep(0.3)
    publish_file(settings, str(second))
    config_settings = load_settings(config, environ={})
    before = run_replay(config_settings, ReplaySource(end_ms=cut), progress=False)
    after = run_replay(config_settings, ReplaySource(start_ms=cut), progress=False)
    whole = run_replay(config_settings, ReplaySource(), progress=False)
    assert before.records == sum(1 for _ in read_events(first))
    assert after.records == sum(1 for _ in read_events(second))
    assert before.final == file_mode(settings, first)
    assert after.final == file_mode(settings, second)
    assert whole.final == before.final | after.final
    out = tmp_path / "range.jsonl"
    cli("replay", "--config", str(config), "--output", str(out),
        "--from", "2000-01-01", "--to", format_iso(cut))
    assert {c.cdr_id: c for c in read_cdrs(out)} == before.final
