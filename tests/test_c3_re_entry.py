"""Rule C3: several entries; the complete one entered last wins; all are kept in time order."""

from __future__ import annotations

from tests.builders import LegScript, at, code_entry_leg, entries, only, run, settings


def held_inbound() -> LegScript:
    """An inbound call on hold from 20 s to 200 s."""
    return LegScript("a1").inbound(0).answer(2).hold(20).retrieve(200).release(300)


def test_latest_complete_entry_wins() -> None:
    cdrs = run(
        settings(), held_inbound(),
        code_entry_leg("c1", 30, "*711001"), code_entry_leg("c2", 60, "*712002"),
    ).latest
    a1 = cdrs["sw1:a1"]
    assert a1.account_code == "2002"
    assert a1.client_name == "Estate of Miller"
    assert entries(a1) == [
        ("1001", True, "second_line", "c1"),
        ("2002", True, "second_line", "c2"),
    ]
    assert [e.entered_at for e in a1.account_code_entries] == [at(32.8), at(62.8)]
    assert cdrs["sw1:c1"].account_code_status == "applied"
    assert cdrs["sw1:c2"].account_code_status == "applied"


def test_entries_are_in_entry_time_order_not_leg_order() -> None:
    # c2 is opened first but keys slowly; c1's entry is the earlier one
    slow = LegScript("c2").outbound(25).keys("*712002", 26, step=4).release(60)  # entered 50
    fast = code_entry_leg("c1", 40, "*711001")  # entered 42.8
    cdrs = run(settings(), held_inbound(), slow, fast).latest
    assert entries(cdrs["sw1:a1"]) == [
        ("1001", True, "second_line", "c1"),
        ("2002", True, "second_line", "c2"),
    ]
    assert cdrs["sw1:a1"].account_code == "2002"


def test_incomplete_entry_after_a_complete_one_sets_no_code() -> None:
    cdrs = run(
        settings(), held_inbound(),
        code_entry_leg("c1", 30, "*711001"), code_entry_leg("c2", 60, "*7120"),
    ).latest
    a1 = cdrs["sw1:a1"]
    assert a1.account_code == "1001"
    assert entries(a1) == [
        ("1001", True, "second_line", "c1"),
        ("20", False, "second_line", "c2"),
    ]
    c2 = cdrs["sw1:c2"]
    assert c2.account_code_status == "incomplete"
    assert c2.applied_to_cdr_id == "sw1:a1"
    assert c2.account_code is None
    assert entries(c2) == [("20", False, "second_line", "c2")]


def test_incomplete_entry_alone_leaves_the_call_without_code() -> None:
    cdrs = run(settings(), held_inbound(), code_entry_leg("c1", 30, "*71")).latest
    a1 = cdrs["sw1:a1"]
    assert a1.account_code is None
    assert a1.account_code_status == "not_required"
    assert entries(a1) == [(None, False, "second_line", "c1")]
    assert a1.account_code_entries[0].entered_at == at(31.6)
    assert cdrs["sw1:c1"].account_code_status == "incomplete"
    assert cdrs["sw1:c1"].applied_to_cdr_id == "sw1:a1"


def test_complete_entry_after_incomplete_ones() -> None:
    cdrs = run(
        settings(), held_inbound(),
        code_entry_leg("c1", 30, "*7110"), code_entry_leg("c2", 50, "*71"),
        code_entry_leg("c3", 70, "*712002"),
    ).latest
    a1 = cdrs["sw1:a1"]
    assert a1.account_code == "2002"
    assert entries(a1) == [
        ("10", False, "second_line", "c1"),
        (None, False, "second_line", "c2"),
        ("2002", True, "second_line", "c3"),
    ]


def test_pre_dial_then_second_line_correction() -> None:
    call = LegScript("a1").outbound(0).keys("*711001", 1).dial(5).answer(8)
    call.hold(20).retrieve(200).release(300)
    cdrs = run(settings(), call, code_entry_leg("c1", 30, "*712002")).latest
    a1 = cdrs["sw1:a1"]
    assert a1.account_code == "2002"
    assert entries(a1) == [
        ("1001", True, "pre_dial", "a1"),
        ("2002", True, "second_line", "c1"),
    ]
    assert a1.account_code_status == "present"


def test_pre_dial_then_incomplete_correction_keeps_the_pre_dial_code() -> None:
    call = LegScript("a1").outbound(0).keys("*711001", 1).dial(5).answer(8)
    call.hold(20).retrieve(200).release(300)
    cdrs = run(settings(), call, code_entry_leg("c1", 30, "*712")).latest
    assert cdrs["sw1:a1"].account_code == "1001"
    assert entries(cdrs["sw1:a1"]) == [
        ("1001", True, "pre_dial", "a1"),
        ("2", False, "second_line", "c1"),
    ]


def test_incomplete_pre_dial_then_second_line_code() -> None:
    call = LegScript("a1").outbound(0).keys("*7110#", 1).dial(5).answer(8)
    call.hold(20).retrieve(200).release(300)
    cdrs = run(settings(), call, code_entry_leg("c1", 30, "*712002")).latest
    assert cdrs["sw1:a1"].account_code == "2002"
    assert entries(cdrs["sw1:a1"]) == [
        ("10", False, "pre_dial", "a1"),
        ("2002", True, "second_line", "c1"),
    ]


def test_entries_on_two_holds_of_one_call() -> None:
    call = LegScript("a1").inbound(0).answer(2).hold(20).retrieve(40).hold(100).retrieve(140)
    call.release(300)
    cdrs = run(
        settings(), call, code_entry_leg("c1", 25, "*711001"), code_entry_leg("c2", 110, "*712002"),
    ).latest
    only(cdrs, "sw1:a1", "sw1:c1", "sw1:c2")
    assert cdrs["sw1:a1"].account_code == "2002"
    assert len(cdrs["sw1:a1"].account_code_entries) == 2
    # call_held twice: hold_ms counts both holds
    assert cdrs["sw1:a1"].hold_ms == 60_000
