"""Rule C5: with a correction window, an orphan entered soon after the user's latest
released call goes to that call, whose CDR is re-issued."""

from __future__ import annotations

import pytest

from tests.builders import LegScript, code_entry_at, entries, only, run, settings

WINDOW = settings(correction_window_seconds=120)


def call(call_id: str = "a1", start: float = 0, release: float = 100) -> LegScript:
    return LegScript(call_id).inbound(start).answer(start + 2).release(release)


def test_entry_inside_the_window_corrects_the_call() -> None:
    result = run(WINDOW, call(), code_entry_at("c1", 160))
    only(result.latest, "sw1:a1", "sw1:c1")
    v1, v2 = result.versions("sw1:a1")
    assert (v1.version, v1.account_code, v1.account_code_entries) == (1, None, ())
    assert (v2.version, v2.account_code) == (2, "2002")
    assert entries(v2) == [("2002", True, "second_line", "c1")]
    assert v2.same_content(v1) is False
    c1 = result.latest["sw1:c1"]
    assert (c1.account_code_status, c1.applied_to_cdr_id) == ("applied", "sw1:a1")


def test_correction_turns_missing_into_present() -> None:
    outbound = LegScript("a1").outbound(0).dial(2).answer(5).release(100)
    result = run(WINDOW, outbound, code_entry_at("c1", 130, "*711001"))
    assert [(c.version, c.account_code_status) for c in result.versions("sw1:a1")] == [
        (1, "missing"), (2, "present"),
    ]


@pytest.mark.parametrize(("entered", "applied"), [
    (100.001, True),  # just after the release
    (220, True),  # exactly window seconds after the release
    (220.001, False),  # just past the window
])
def test_window_bounds(entered: float, applied: bool) -> None:
    result = run(WINDOW, call(), code_entry_at("c1", entered))
    c1 = result.latest["sw1:c1"]
    if applied:
        assert (c1.account_code_status, c1.applied_to_cdr_id) == ("applied", "sw1:a1")
        assert result.latest["sw1:a1"].account_code == "2002"
    else:
        assert (c1.account_code_status, c1.applied_to_cdr_id) == ("orphan", None)
        assert [c.version for c in result.versions("sw1:a1")] == [1]


def test_entry_at_the_release_itself() -> None:
    # not on hold at that instant (C2: released at the entry time), but released at or
    # before it: C5 applies
    result = run(WINDOW, call(release=100), code_entry_at("c1", 100))
    assert result.latest["sw1:c1"].applied_to_cdr_id == "sw1:a1"


def test_window_zero_turns_corrections_off() -> None:
    result = run(settings(correction_window_seconds=0), call(), code_entry_at("c1", 101))
    assert result.latest["sw1:c1"].account_code_status == "orphan"
    assert [c.version for c in result.versions("sw1:a1")] == [1]


def test_latest_released_call_wins() -> None:
    result = run(WINDOW, call("a1", 0, 100), call("b1", 50, 150), code_entry_at("c1", 160))
    assert result.latest["sw1:c1"].applied_to_cdr_id == "sw1:b1"
    assert result.latest["sw1:b1"].account_code == "2002"
    assert [c.version for c in result.versions("sw1:a1")] == [1]


def test_call_still_in_progress_is_no_target() -> None:
    # b1 is up (not on hold) at the entry time: the latest released call is a1
    result = run(WINDOW, call("a1", 0, 100), call("b1", 110, 400), code_entry_at("c1", 130))
    assert result.latest["sw1:c1"].applied_to_cdr_id == "sw1:a1"
    assert result.latest["sw1:b1"].account_code_entries == ()


def test_code_entry_legs_are_not_calls_to_correct() -> None:
    # c1 goes to a1; c2 is keyed after c1's release but still goes to a1, the latest call
    result = run(
        WINDOW, call(), code_entry_at("c1", 110, "*711001"), code_entry_at("c2", 140, "*712002"),
    )
    assert result.latest["sw1:c1"].applied_to_cdr_id == "sw1:a1"
    assert result.latest["sw1:c2"].applied_to_cdr_id == "sw1:a1"
    a1 = result.latest["sw1:a1"]
    assert a1.account_code == "2002"
    assert entries(a1) == [
        ("1001", True, "second_line", "c1"),
        ("2002", True, "second_line", "c2"),
    ]
    assert [c.version for c in result.versions("sw1:a1")] == [1, 2, 3]


def test_orphan_code_entry_legs_are_not_calls_either() -> None:
    # no call at all: both are orphans, c2 does not go to c1
    result = run(WINDOW, code_entry_at("c1", 10, "*711001"), code_entry_at("c2", 40))
    assert {k: (c.account_code_status, c.applied_to_cdr_id) for k, c in result.latest.items()} == {
        "sw1:c1": ("orphan", None), "sw1:c2": ("orphan", None),
    }


def test_held_call_comes_before_a_correction() -> None:
    held = LegScript("b1").inbound(110).answer(112).hold(130).retrieve(200).release(300)
    result = run(WINDOW, call(), held, code_entry_at("c1", 140))
    assert result.latest["sw1:c1"].applied_to_cdr_id == "sw1:b1"
    assert [c.version for c in result.versions("sw1:a1")] == [1]


def test_correction_window_is_per_user() -> None:
    other = LegScript("a1", user="bob@smithlaw.example").inbound(0).answer(2).release(100)
    result = run(WINDOW, other, code_entry_at("c1", 130))
    assert result.latest["sw1:c1"].account_code_status == "orphan"


def test_incomplete_correction_is_recorded() -> None:
    result = run(WINDOW, call(), code_entry_at("c1", 130, "*7120"))
    a1 = result.latest["sw1:a1"]
    assert (a1.version, a1.account_code) == (2, None)
    assert entries(a1) == [("20", False, "second_line", "c1")]
    c1 = result.latest["sw1:c1"]
    assert (c1.account_code_status, c1.applied_to_cdr_id) == ("incomplete", "sw1:a1")
