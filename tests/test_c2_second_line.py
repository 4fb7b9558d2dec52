"""Rule C2: a code keyed on a second line goes to the user's call on hold at that time."""

from __future__ import annotations

from tests.builders import (
    ALICE,
    BOB,
    LegScript,
    at,
    code_entry_at,
    code_entry_leg,
    entries,
    only,
    run,
    settings,
)


def inbound(call_id: str, start: float = 0, *, user: str = ALICE) -> LegScript:
    return LegScript(call_id, user=user).inbound(start).answer(start + 2)


def test_code_goes_to_the_held_call() -> None:
    call = inbound("a1").hold(60).retrieve(70).release(300)
    cdrs = run(settings(), call, code_entry_leg("a2", 61, "*712002")).latest
    only(cdrs, "sw1:a1", "sw1:a2")
    a1, a2 = cdrs["sw1:a1"], cdrs["sw1:a2"]
    assert a1.account_code == "2002"
    assert a1.account_code_status == "present"
    assert a1.client_name == "Estate of Miller"
    assert entries(a1) == [("2002", True, "second_line", "a2")]
    assert a1.account_code_entries[0].entered_at == at(62 + 6 * 0.3)
    assert a2.record_type == "code_entry"
    assert a2.account_code == "2002"
    assert a2.account_code_status == "applied"
    assert a2.applied_to_cdr_id == "sw1:a1"
    assert (a2.billable, a2.answered, a2.account_code_required) == (False, False, False)
    assert entries(a2) == [("2002", True, "second_line", "a2")]


def test_correction_on_an_outbound_call() -> None:
    call = LegScript("a1").outbound(0).dial(2).answer(5).hold(60).retrieve(70).release(300)
    cdrs = run(settings(), call, code_entry_leg("a2", 61, "*712002")).latest
    assert cdrs["sw1:a1"].account_code == "2002"
    assert cdrs["sw1:a1"].account_code_status == "present"
    assert cdrs["sw1:a1"].account_code_required is True


def test_most_recently_held_call_wins() -> None:
    first = inbound("a1").hold(20).retrieve(200).release(300)
    second = inbound("b1", 10).hold(30).retrieve(210).release(310)
    entry = code_entry_at("c1", 40)
    cdrs = run(settings(), first, second, entry).latest
    assert cdrs["sw1:b1"].account_code == "2002"
    assert cdrs["sw1:a1"].account_code_entries == ()
    assert cdrs["sw1:c1"].applied_to_cdr_id == "sw1:b1"


def test_most_recently_held_wins_whatever_the_call_start() -> None:
    first = inbound("a1").hold(30).retrieve(200).release(300)
    second = inbound("b1", 10).hold(20).retrieve(210).release(310)
    cdrs = run(settings(), first, second, code_entry_at("c1", 40)).latest
    assert cdrs["sw1:a1"].account_code == "2002"
    assert cdrs["sw1:b1"].account_code_entries == ()


def test_call_retrieved_before_the_entry_is_no_target() -> None:
    first = inbound("a1").hold(20).retrieve(25).release(300)
    second = inbound("b1", 10).hold(22).retrieve(210).release(310)
    cdrs = run(settings(), first, second, code_entry_at("c1", 40)).latest
    # a1 was held later but retrieved before the entry: b1 is the one on hold
    assert cdrs["sw1:b1"].account_code == "2002"
    assert cdrs["sw1:a1"].account_code is None


def test_only_call_retrieved_before_entry_leaves_an_orphan() -> None:
    call = inbound("a1").hold(20).retrieve(39.999).release(300)
    cdrs = run(settings(), call, code_entry_at("c1", 40)).latest
    assert cdrs["sw1:c1"].account_code_status == "orphan"
    assert cdrs["sw1:c1"].applied_to_cdr_id is None
    assert cdrs["sw1:a1"].account_code is None


def test_retrieved_exactly_at_the_entry_time_is_no_longer_held() -> None:
    call = inbound("a1").hold(20).retrieve(40).release(300)
    cdrs = run(settings(), call, code_entry_at("c1", 40)).latest
    assert cdrs["sw1:c1"].account_code_status == "orphan"


def test_held_exactly_at_the_entry_time() -> None:
    call = inbound("a1").hold(40).retrieve(60).release(300)
    cdrs = run(settings(), call, code_entry_at("c1", 40)).latest
    assert cdrs["sw1:a1"].account_code == "2002"
    assert cdrs["sw1:c1"].applied_to_cdr_id == "sw1:a1"


def test_held_just_after_the_entry_time_is_no_target() -> None:
    call = inbound("a1").hold(40.001).retrieve(60).release(300)
    cdrs = run(settings(), call, code_entry_at("c1", 40)).latest
    assert cdrs["sw1:c1"].account_code_status == "orphan"
    assert cdrs["sw1:a1"].account_code is None


def test_held_call_released_before_the_entry_is_no_target() -> None:
    call = inbound("a1").hold(20).release(35)
    cdrs = run(settings(), call, code_entry_at("c1", 40)).latest
    assert cdrs["sw1:c1"].account_code_status == "orphan"
    assert cdrs["sw1:a1"].account_code is None
    assert cdrs["sw1:a1"].version == 1


def test_held_call_released_exactly_at_the_entry_time_is_no_target() -> None:
    call = inbound("a1").hold(20).release(40)
    cdrs = run(settings(), call, code_entry_at("c1", 40)).latest
    assert cdrs["sw1:c1"].account_code_status == "orphan"


def test_held_call_released_while_on_hold_after_the_entry() -> None:
    # the far end hangs up while the agent is still on the second line
    call = inbound("a1").hold(20).release(41)
    cdrs = run(settings(), call, code_entry_at("c1", 40)).latest
    assert cdrs["sw1:a1"].account_code == "2002"
    assert cdrs["sw1:a1"].hold_ms == 21_000


def test_held_call_of_another_user_is_no_target() -> None:
    call = inbound("a1", user=BOB).hold(20).retrieve(60).release(300)
    cdrs = run(settings(), call, code_entry_at("c1", 40)).latest
    assert cdrs["sw1:c1"].account_code_status == "orphan"
    assert cdrs["sw1:a1"].account_code is None


def test_second_line_that_dials_is_no_code_entry_leg() -> None:
    call = inbound("a1").hold(20).retrieve(60).release(300)
    second = LegScript("c1").outbound(30).keys("*712002", 31).dial(34).release(40, cause="busy")
    cdrs = run(settings(), call, second).latest
    assert cdrs["sw1:a1"].account_code is None
    assert cdrs["sw1:c1"].record_type == "call"
    assert cdrs["sw1:c1"].account_code == "2002"


def test_second_line_that_is_answered_is_no_code_entry_leg() -> None:
    call = inbound("a1").hold(20).retrieve(60).release(300)
    second = LegScript("c1").outbound(30).keys("*712002", 31).answer(34).release(40)
    cdrs = run(settings(), call, second).latest
    assert cdrs["sw1:a1"].account_code is None
    assert cdrs["sw1:c1"].record_type == "call"


def test_second_line_without_an_entry_is_a_call() -> None:
    call = inbound("a1").hold(20).retrieve(60).release(300)
    second = LegScript("c1").outbound(30).keys("5", 31).release(34)
    cdrs = run(settings(), call, second).latest
    assert cdrs["sw1:a1"].account_code is None
    assert cdrs["sw1:c1"].record_type == "call"


def test_code_entry_leg_fields() -> None:
    call = inbound("a1").hold(60).retrieve(70).release(300)
    cdr = run(settings(), call, code_entry_leg("a2", 61, "*712002")).latest["sw1:a2"]
    assert cdr.direction == "outbound"
    assert (cdr.start_time, cdr.release_time) == (at(61), at(62 + 7 * 0.3 + 1))
    assert cdr.duration_ms == 4100
    assert (cdr.talk_ms, cdr.hold_ms, cdr.answer_time) == (0, 0, None)
    assert cdr.client_name == "Estate of Miller"
    assert cdr.legs == ()


def test_code_entry_before_the_held_call_is_final() -> None:
    # the code-entry leg is final long before the held call ends
    call = inbound("a1").hold(60).retrieve(70).release(3000)
    result = run(settings(), call, code_entry_leg("a2", 61, "*712002"))
    assert [c.cdr_id for c in result.cdrs] == ["sw1:a2", "sw1:a1"]
    assert result.latest["sw1:a1"].account_code == "2002"
    assert result.latest["sw1:a1"].version == 1
