"""Rule C1: `*71` + code, then the destination: the code belongs to that leg."""

from __future__ import annotations

from tests.builders import ALICE, BOB, LegScript, at, code_entry_leg, entries, only, run, settings


def pre_dial(call_id: str = "x1", code: str = "1001", *, user: str = ALICE,
             group: str = "smith-law", start: float = 0) -> LegScript:
    leg = LegScript(call_id, user=user, group=group).outbound(start)
    leg.keys(f"*71{code}", start + 1).dial(start + 5).answer(start + 8)
    return leg.release(start + 60)


def test_code_belongs_to_the_leg() -> None:
    cdrs = run(settings(), pre_dial()).latest
    only(cdrs, "sw1:x1")
    cdr = cdrs["sw1:x1"]
    assert cdr.record_type == "call"
    assert cdr.account_code == "1001"
    assert cdr.account_code_status == "present"
    assert entries(cdr) == [("1001", True, "pre_dial", "x1")]
    assert cdr.account_code_entries[0].entered_at == at(1 + 6 * 0.3)
    assert (cdr.client_name, cdr.code_known) == ("Jones v. Acme Corp", True)
    assert cdr.called_number == "+13125550100"
    assert cdr.call_category == "national"
    assert cdr.applied_to_cdr_id is None


def test_unknown_code_is_accepted() -> None:
    cdr = run(settings(), pre_dial(code="9999")).latest["sw1:x1"]
    assert cdr.account_code == "9999"
    assert cdr.account_code_status == "present"
    assert (cdr.client_name, cdr.code_known) == (None, False)


def test_group_without_registry_has_no_code_known() -> None:
    cdr = run(settings(), pre_dial(group="other-firm")).latest["sw1:x1"]
    assert cdr.account_code == "1001"
    assert (cdr.client_name, cdr.code_known) == (None, None)


def test_unanswered_call_keeps_its_code() -> None:
    leg = LegScript("x1").outbound(0).keys("*712002", 1).dial(5).release(30, cause="busy")
    cdr = run(settings(), leg).latest["sw1:x1"]
    assert cdr.account_code == "2002"
    assert cdr.client_name == "Estate of Miller"
    assert (cdr.answered, cdr.billable, cdr.cause) == (False, False, "busy")


def test_no_entry_no_code() -> None:
    leg = LegScript("x1").outbound(0).dial(3).answer(6).release(60)
    cdr = run(settings(), leg).latest["sw1:x1"]
    assert cdr.account_code is None
    assert cdr.account_code_entries == ()
    assert cdr.account_code_status == "missing"


def test_each_leg_keeps_its_own_code() -> None:
    cdrs = run(settings(), pre_dial("x1", "1001"), pre_dial("x2", "2002", start=100)).latest
    assert cdrs["sw1:x1"].account_code == "1001"
    assert cdrs["sw1:x2"].account_code == "2002"


def test_other_users_are_apart() -> None:
    cdrs = run(settings(), pre_dial("x1", "1001"), pre_dial("x2", "2002", user=BOB)).latest
    assert (cdrs["sw1:x1"].user_id, cdrs["sw1:x1"].account_code) == (ALICE, "1001")
    assert (cdrs["sw1:x2"].user_id, cdrs["sw1:x2"].account_code) == (BOB, "2002")


def test_pre_dial_on_a_second_line_stays_on_that_line() -> None:
    # a call is on hold while the second line dials *71 + code + a destination: that is a
    # new call with its own code (C1), not a code-entry leg for the held call (C2)
    held = LegScript("a1").inbound(0).answer(2).hold(10).retrieve(100).release(120)
    second = LegScript("a2").outbound(12).keys("*711001", 13).dial(16).answer(18).release(60)
    cdrs = run(settings(), held, second).latest
    only(cdrs, "sw1:a1", "sw1:a2")
    assert cdrs["sw1:a1"].account_code_entries == ()
    assert cdrs["sw1:a1"].account_code is None
    assert cdrs["sw1:a2"].record_type == "call"
    assert entries(cdrs["sw1:a2"]) == [("1001", True, "pre_dial", "a2")]


def test_second_line_code_without_dial_is_not_pre_dial() -> None:
    cdrs = run(settings(), code_entry_leg("c1", 0, "*711001")).latest
    assert cdrs["sw1:c1"].record_type == "code_entry"
    assert entries(cdrs["sw1:c1"]) == [("1001", True, "second_line", "c1")]
