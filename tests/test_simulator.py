"""The simulator (streams/simulate.py): determinism, well-formed events, and the simulated
day through the engine against the script's ground truth, with and without faults."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import events as ev
from streams.cdr import Cdr
from streams.cli import main
from streams.deadletter import DeadLetter, Origin
from streams.engine import run_events
from streams.errors import EventDecodeError
from streams.events import Event, decode_event
from streams.filemode import process_file
from streams.serialization import (
    decode_json_event,
    latest_versions,
    read_cdrs,
    read_events,
)
from streams.settings import Settings, load_settings, settings_from_mapping
from streams.simulate import (
    ScriptedCall,
    SimulationError,
    SimulationOptions,
    SimulationStats,
    iter_calls,
    iter_events,
    iter_items,
    malformed_line,
    roster,
    write_day,
)
from streams.timefmt import zone

SEED = 5
USERS = 24  # about 6,500 events: every scenario shows up several times

# The worked-example configuration of the SPEC (no correction window, two registry codes).
EXAMPLE_CONFIG = {
    "feature_access_code": "*71", "settle_seconds": 5, "correction_window_seconds": 0,
    "max_call_hours": 24, "digit_timeout_seconds": 5, "default_timezone": "America/New_York",
    "default_group": {"code_digits": 4, "usage": "optional"},
    "groups": {"smith-law": {
        "code_digits": 4, "usage": "mandatory", "exempt_users": ["reception@smithlaw.example"],
        "allow_without_code": ["internal", "toll_free"],
    }},
    "client_codes": {"smith-law": {"1001": "Jones v. Acme Corp", "2002": "Estate of Miller"}},
}
# Another firm: another FAC, a short digit timeout, codes of 5 digits, no registry.
OTHER_CONFIG = {
    "feature_access_code": "#88", "settle_seconds": 3, "correction_window_seconds": 60,
    "digit_timeout_seconds": 2, "default_timezone": "Europe/London",
    "default_group": {"code_digits": 6, "usage": "mandatory"},
    "groups": {
        "law-firm": {"code_digits": 5, "usage": "mandatory", "allow_without_code": ["internal"]},
        "other-co": {"code_digits": 3, "usage": "optional"},
    },
}


@dataclasses.dataclass(frozen=True)
class Day:
    settings: Settings
    options: SimulationOptions
    events: list[Event]
    truth: dict[str, ScriptedCall]
    stats: SimulationStats


def _simulate(settings: Settings, options: SimulationOptions) -> Day:
    stats = SimulationStats()
    events = list(iter_events(settings, options, stats))
    truth = {record.cdr_id: record for record in iter_calls(settings, options)}
    assert len(truth) == stats.calls + stats.code_entry_legs
    return Day(settings, options, events, truth, stats)


def _engine(settings: Settings, events: Iterable[Event]) -> tuple[dict[str, Cdr], list[DeadLetter]]:
    outputs = list(run_events(settings, ((event, None) for event in events)))
    letters = [item for item in outputs if isinstance(item, DeadLetter)]
    return latest_versions(item for item in outputs if isinstance(item, Cdr)), letters


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(None)


@pytest.fixture(scope="module")
def day(settings: Settings) -> Day:
    return _simulate(settings, SimulationOptions(seed=SEED, users=USERS))


@pytest.fixture(scope="module")
def final(day: Day) -> dict[str, Cdr]:
    cdrs, letters = _engine(day.settings, day.events)
    assert letters == []
    return cdrs


def _legs(events: Iterable[Event]) -> dict[tuple[str, str], list[Event]]:
    legs: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for event in events:
        legs[event.switch_id, event.call_id].append(event)
    return legs


def _mismatches(expected: ScriptedCall, cdr: Cdr) -> dict[str, tuple[Any, Any]]:
    """Fields where the engine's CDR differs from what the script meant."""
    pairs = {
        "record_type": (expected.record_type, cdr.record_type),
        "user_id": (expected.user_id, cdr.user_id),
        "group_id": (expected.group_id, cdr.group_id),
        "direction": (expected.direction, cdr.direction),
        "call_category": (expected.call_category, cdr.call_category),
        "start_time": (expected.start_time, cdr.start_time),
        "answer_time": (expected.answer_time, cdr.answer_time),
        "release_time": (expected.release_time, cdr.release_time),
        "duration_ms": (expected.duration_ms, cdr.duration_ms),
        "talk_ms": (expected.talk_ms, cdr.talk_ms),
        "hold_ms": (expected.hold_ms, cdr.hold_ms),
        "cause": (expected.cause, cdr.cause),
        "answered": (expected.answer_time is not None, cdr.answered),
        "account_code": (expected.account_code, cdr.account_code),
        "account_code_status": (expected.account_code_status, cdr.account_code_status),
        "account_code_required": (expected.account_code_required, cdr.account_code_required),
        "account_code_entries": (
            [dataclasses.astuple(entry) for entry in expected.account_code_entries],
            [
                (e.code, e.complete, e.via, e.entry_call_id, e.entered_at)
                for e in cdr.account_code_entries
            ],
        ),
        "applied_to_cdr_id": (expected.applied_to_cdr_id, cdr.applied_to_cdr_id),
        "legs": (sorted(expected.ring_legs), sorted(leg.call_id for leg in cdr.legs)),
        "user_timezone": (expected.user_timezone, cdr.user_timezone),
        "local_date": (expected.local_date, cdr.local_date),
        "billable": (
            expected.record_type == "call" and expected.answer_time is not None, cdr.billable
        ),
    }
    return {name: pair for name, pair in pairs.items() if pair[0] != pair[1]}


def _assert_matches_truth(truth: dict[str, ScriptedCall], final: dict[str, Cdr]) -> None:
    assert sorted(final) == sorted(truth)
    wrong = {
        cdr_id: (truth[cdr_id].scenario, diff)
        for cdr_id in truth
        if (diff := _mismatches(truth[cdr_id], final[cdr_id]))
    }
    assert wrong == {}


def _same_final_set(expected: dict[str, Cdr], actual: dict[str, Cdr]) -> None:
    assert sorted(actual) == sorted(expected)
    differing = [key for key in expected if not expected[key].same_content(actual[key])]
    assert differing == []


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_events_and_a_different_seed_others(settings: Settings) -> None:
    options = SimulationOptions(seed=11, users=6)
    first = list(iter_events(settings, options))
    assert first == list(iter_events(settings, options))
    other = list(iter_events(settings, dataclasses.replace(options, seed=12)))
    assert other != first
    faulty = dataclasses.replace(options, resend_rate=0.1, disorder_ms=3000, malformed_rate=0.05)
    assert list(iter_items(settings, faulty)) == list(iter_items(settings, faulty))


def test_same_arguments_write_byte_identical_files(tmp_path: Path, settings: Settings) -> None:
    options = SimulationOptions(
        seed=3, users=5, resend_rate=0.05, disorder_ms=2000, malformed_rate=0.02
    )
    write_day(tmp_path / "a.jsonl", settings, options)
    write_day(tmp_path / "b.jsonl", settings, options)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_a_user_s_day_does_not_depend_on_the_number_of_users(settings: Settings) -> None:
    small = list(iter_events(settings, SimulationOptions(seed=4, users=3)))
    large = list(iter_events(settings, SimulationOptions(seed=4, users=7)))
    first_three = {user.user_id for user in roster(settings, SimulationOptions(seed=4, users=3))}
    assert [event for event in large if event.user_id in first_three] == small
    assert len(large) > 2 * len(small)


# ---------------------------------------------------------------- the events


def test_every_event_decodes_to_itself(day: Day) -> None:
    for number, event in enumerate(day.events):
        assert decode_event(event.to_json_dict()) == event
        line = orjson.dumps(event.to_json_dict())
        assert decode_json_event(line, Origin("day", None, number)) == event


def test_events_come_in_time_order_with_unique_ids(day: Day) -> None:
    assert all(a.ts <= b.ts for a, b in pairwise(day.events))
    ids = [event.event_id for event in day.events]
    assert len(set(ids)) == len(ids) == day.stats.events
    assert all(
        event.event_id == f"{event.switch_id}-{event.call_id}-{event.seq}" for event in day.events
    )
    assert {event.switch_id for event in day.events} == {"sw1", "sw2"}


def test_every_leg_runs_from_call_started_to_call_released(day: Day) -> None:
    legs = _legs(day.events)
    assert len(legs) == day.stats.legs
    for key, events in legs.items():
        by_seq = sorted(events, key=lambda event: event.seq)
        assert [event.seq for event in by_seq] == list(range(len(events))), key
        assert by_seq[0].type == ev.CALL_STARTED, key
        assert by_seq[-1].type == ev.CALL_RELEASED, key
        assert [event.type for event in by_seq].count(ev.CALL_RELEASED) == 1, key
        assert all(a.ts <= b.ts for a, b in pairwise(by_seq)), key
        assert len({(event.user_id, event.group_id) for event in events}) == 1, key


def test_calls_fall_in_business_hours_and_do_not_overlap(day: Day) -> None:
    users = {user.user_id: user for user in roster(day.settings, day.options)}
    calls: dict[str, list[ScriptedCall]] = defaultdict(list)
    for record in day.truth.values():
        user_zone = zone(users[record.user_id].zone_name)
        local = datetime.fromtimestamp(record.start_time / 1000, user_zone)
        assert local.date() == day.options.day
        if record.record_type == "call" or record.applied_to_cdr_id is None:  # starts an activity
            assert 8 <= local.hour < 18, record
        if record.record_type == "call":
            calls[record.user_id].append(record)
    for records in calls.values():
        records.sort(key=lambda record: record.start_time)
        for before, after in pairwise(records):
            assert before.release_time < after.start_time


def test_the_day_exercises_every_scenario_and_policy_case(day: Day) -> None:
    records = list(day.truth.values())
    scenarios = Counter(record.scenario for record in records)
    assert set(scenarios) == {
        "outbound_pre_dial", "outbound_no_code", "inbound_plain", "inbound_second_line",
        "code_correction", "incomplete_code", "in_call_digits", "hold_only",
        "simultaneous_ring", "orphan_entry", "late_correction",
    }
    statuses = Counter(record.account_code_status for record in records)
    assert set(statuses) == {
        "present", "missing", "not_required", "applied", "orphan", "incomplete"
    }
    dialed = {event.call_category for event in day.events if event.type == ev.CALL_DIALED}
    assert {"internal", "toll_free", "emergency", "national", "international", "local"} <= dialed
    causes = {record.cause for record in records}
    assert {"normal", "busy", "no_answer"} <= causes
    entries = [entry for record in records for entry in record.account_code_entries]
    assert any(not entry.complete and entry.via == "pre_dial" for entry in entries)
    assert any(len(record.account_code_entries) >= 2 for record in records)
    assert any(len(record.ring_legs) == 2 for record in records)
    assert any(event.user_timezone for event in day.events if event.type == ev.CALL_STARTED)
    # in-call digits that look like an account-code entry
    after_answer = _digits_after_answer(day.events)
    assert any(digits.startswith(day.settings.feature_access_code) for digits in after_answer)


def _digits_after_answer(events: list[Event]) -> list[str]:
    out = []
    for leg in _legs(events).values():
        answered = False
        digits = ""
        for event in sorted(leg, key=lambda event: event.seq):
            answered = answered or event.type == ev.CALL_ANSWERED
            if answered and event.type == ev.DTMF:
                digits += event.digit or ""
        if digits:
            out.append(digits)
    return out


def test_simultaneous_ring_legs_share_the_user_and_network_call(day: Day) -> None:
    legs = _legs(day.events)
    ring = [events for events in legs.values() if events[0].related_reason == ev.SIMULTANEOUS_RING]
    assert ring
    for events in ring:
        started = events[0]
        parent = legs[started.switch_id, started.related_call_id or ""][0]
        assert parent.type == ev.CALL_STARTED and parent.direction == "inbound"
        assert parent.user_id == started.user_id
        assert parent.network_call_id == started.network_call_id
        released = next(event for event in events if event.type == ev.CALL_RELEASED)
        answered = any(event.type == ev.CALL_ANSWERED for event in events)
        assert answered or released.cause == "no_answer"


# ---------------------------------------------------------------- through the engine


def test_the_engine_issues_exactly_the_scripted_records(day: Day, final: dict[str, Cdr]) -> None:
    _assert_matches_truth(day.truth, final)


def test_one_record_per_call_and_per_code_entry_leg_and_none_for_ring_legs(
    day: Day, final: dict[str, Cdr]
) -> None:
    fac = day.settings.feature_access_code
    ring, entry, call = set(), set(), set()
    for (switch_id, call_id), events in _legs(day.events).items():
        by_seq = sorted(events, key=lambda event: event.seq)
        kinds = {event.type for event in events}
        digits = "".join(event.digit or "" for event in by_seq if event.type == ev.DTMF)
        cdr_id = f"{switch_id}:{call_id}"
        if by_seq[0].related_reason == ev.SIMULTANEOUS_RING:
            ring.add(cdr_id)
        elif (
            by_seq[0].direction == "outbound" and digits.startswith(fac)
            and not kinds & {ev.CALL_DIALED, ev.CALL_ANSWERED}
        ):
            entry.add(cdr_id)
        else:
            call.add(cdr_id)
    assert ring and entry and call
    assert not ring & set(final)
    assert {key for key, cdr in final.items() if cdr.record_type == "call"} == call
    assert {key for key, cdr in final.items() if cdr.record_type == "code_entry"} == entry
    assert {key for key, record in day.truth.items() if record.record_type == "code_entry"} == entry


def test_durations_add_up(final: dict[str, Cdr]) -> None:
    for cdr in final.values():
        assert cdr.duration_ms == cdr.release_time - cdr.start_time
        if cdr.answered:
            assert cdr.answer_time is not None
            assert cdr.duration_ms == cdr.talk_ms + cdr.hold_ms + (cdr.answer_time - cdr.start_time)
            assert cdr.talk_ms > 0 and cdr.hold_ms >= 0
        else:
            assert (cdr.talk_ms, cdr.hold_ms, cdr.answer_time) == (0, 0, None)


def test_scripted_codes_are_the_engine_s_codes(day: Day, final: dict[str, Cdr]) -> None:
    """The strongest check, spelled out: the final code of every call is what was keyed."""
    coded = [record for record in day.truth.values() if record.account_code is not None]
    assert len(coded) > 100
    for record in coded:
        assert final[record.cdr_id].account_code == record.account_code, record
    registry = day.settings.client_codes["smith-law"]
    for cdr in final.values():
        if cdr.group_id == "smith-law" and cdr.account_code is not None:
            assert cdr.client_name == registry.get(cdr.account_code)
            assert cdr.code_known is (cdr.account_code in registry)


@pytest.mark.parametrize("config", [EXAMPLE_CONFIG, OTHER_CONFIG], ids=["example", "other-firm"])
def test_other_configurations(config: dict[str, Any]) -> None:
    settings = settings_from_mapping(config, environ={})
    day = _simulate(settings, SimulationOptions(seed=8, users=10))
    fac = settings.feature_access_code
    digits = "".join(event.digit or "" for event in day.events if event.type == ev.DTMF)
    assert fac in digits
    cdrs, letters = _engine(settings, day.events)
    assert letters == []
    _assert_matches_truth(day.truth, cdrs)
    if settings.correction_window_seconds == 0:
        assert all(record.scenario != "late_correction" for record in day.truth.values())


# ---------------------------------------------------------------- faults


def test_disorder_within_settle_and_resends_give_the_same_cdrs(
    day: Day, final: dict[str, Cdr]
) -> None:
    settle = day.settings.settle_ms
    options = dataclasses.replace(day.options, disorder_ms=settle - 1, resend_rate=0.1)
    stats = SimulationStats()
    events = list(iter_events(day.settings, options, stats))
    assert stats.resends > 100 and len(events) == stats.events + stats.resends
    assert events != day.events and sorted(events, key=lambda e: e.ts) != events
    by_id: dict[str, Event] = {}
    for event in events:
        assert by_id.setdefault(event.event_id, event) == event  # a re-send is the same event
    assert len(by_id) == day.stats.events
    cdrs, letters = _engine(day.settings, events)
    assert letters == []
    _same_final_set(final, cdrs)


def test_malformed_lines_go_to_dead_letters_and_change_no_cdr(
    tmp_path: Path, day: Day, final: dict[str, Cdr]
) -> None:
    options = dataclasses.replace(day.options, malformed_rate=0.03, resend_rate=0.02)
    events_path, cdrs_path = tmp_path / "day.jsonl", tmp_path / "cdrs.jsonl"
    stats = write_day(events_path, day.settings, options)
    assert stats.malformed > 50
    assert sum(1 for _ in events_path.open("rb")) == stats.lines
    result = process_file(day.settings, events_path, cdrs_path)
    assert result.dead_letters == stats.malformed
    letters = [orjson.loads(line) for line in result.dead_letter_path.read_bytes().splitlines()]
    assert all(letter["reason"] and letter["origin"]["line"] >= 1 for letter in letters)
    _same_final_set(final, latest_versions(read_cdrs(cdrs_path)))


def test_malformed_lines_never_decode(day: Day) -> None:
    from random import Random

    rng = Random(1)
    for event in day.events[:3000]:
        line = malformed_line(rng, event)
        assert b"\n" not in line
        item = decode_json_event(line, Origin("x", None, 1))
        assert isinstance(item, DeadLetter) and item.reason, line
        with pytest.raises((EventDecodeError, orjson.JSONDecodeError)):
            decode_event(orjson.loads(line))


def test_malformed_lines_only_for_json_lines(tmp_path: Path, settings: Settings) -> None:
    options = SimulationOptions(users=2, malformed_rate=0.1)
    with pytest.raises(SimulationError, match="JSON Lines"):
        write_day(tmp_path / "day.avro", settings, options)
    events = list(iter_events(settings, options))  # events only: malformed lines left out
    assert events == list(iter_events(settings, dataclasses.replace(options, malformed_rate=0)))


def test_avro_output_reads_back(tmp_path: Path, settings: Settings) -> None:
    options = SimulationOptions(seed=2, users=3, resend_rate=0.05)
    write_day(tmp_path / "day.avro", settings, options)
    back = [item for item, _ in read_events(tmp_path / "day.avro")]
    assert back == list(iter_events(settings, options))


@pytest.mark.parametrize("options", [
    SimulationOptions(users=0), SimulationOptions(resend_rate=1.5),
    SimulationOptions(malformed_rate=-0.1), SimulationOptions(disorder_ms=-1),
    SimulationOptions(calls_per_user=0), SimulationOptions(switches=()),
    SimulationOptions(switches=("sw1", "sw1")),
])
def test_bad_options_are_refused(options: SimulationOptions, settings: Settings) -> None:
    with pytest.raises(SimulationError):
        next(iter_events(settings, options))


# ---------------------------------------------------------------- command line


def test_cli_writes_a_reproducible_day_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "simulate", "--users", "4", "--seed", "9", "--date", "2026-12-01",
        "--resend-rate", "0.05", "--disorder-ms", "1000", "--malformed-rate", "0.01",
    ]
    truth_path = tmp_path / "t.jsonl"
    assert main([*args, "--output", str(tmp_path / "a.jsonl"), "--truth", str(truth_path)]) == 0
    summary = capsys.readouterr().err
    assert main([*args, "--output", str(tmp_path / "b.jsonl")]) == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert "4 users" in summary and "calls" in summary and "events" in summary
    assert "re-sent" in summary and "malformed" in summary
    truth = [orjson.loads(line) for line in truth_path.read_bytes().splitlines()]
    assert truth and all(record["local_date"] == "2026-12-01" for record in truth)


def test_cli_refuses_malformed_avro_and_warns_on_large_disorder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--users", "2", "--malformed-rate", "0.1", "--output",
                 str(tmp_path / "x.avro")]) == 2
    assert "JSON Lines" in capsys.readouterr().err
    assert main(["simulate", "--users", "2", "--disorder-ms", "9000", "--output",
                 str(tmp_path / "x.jsonl")]) == 0
    assert "warning" in capsys.readouterr().err


def test_a_user_per_activity_gives_the_same_calls_each_under_its_own_user(
    day: Day, final: dict[str, Cdr]
) -> None:
    """For load tests: every activity under a user of its own (`<user>~<n>`); the engine
    still issues exactly the scripted records, and the same ones but for the user (and
    for a user exempt from codes by name: the new user has its group's policy)."""
    options = dataclasses.replace(day.options, user_per_activity=True)
    spread = _simulate(day.settings, options)
    assert len(spread.events) == len(day.events)
    users = {event.user_id for event in spread.events}
    assert len(users) > 10 * len({event.user_id for event in day.events})
    assert all(user.partition("~")[0] in {e.user_id for e in day.events} for user in users)
    cdrs, letters = _engine(day.settings, spread.events)
    assert letters == []
    _assert_matches_truth(spread.truth, cdrs)
    assert sorted(cdrs) == sorted(final)
    exempt = {user for policy in day.settings.groups.values() for user in policy.exempt_users}
    assert exempt & {cdr.user_id for cdr in final.values()}
    for cdr_id, cdr in cdrs.items():
        user_id = final[cdr_id].user_id
        assert cdr.user_id.partition("~")[0] == user_id
        if user_id not in exempt:
            assert dataclasses.replace(cdr, user_id=user_id).same_content(final[cdr_id])
