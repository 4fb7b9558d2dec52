"""Rule C4: a code-entry leg with no held call to go to is an orphan and changes no call."""

from __future__ import annotations

from tests.builders import LegScript, code_entry_leg, entries, only, run, settings


def test_orphan_alone() -> None:
    result = run(settings(), code_entry_leg("c1", 0, "*711001"))
    only(result.latest, "sw1:c1")
    cdr = result.latest["sw1:c1"]
    assert cdr.record_type == "code_entry"
    assert cdr.account_code == "1001"
    assert cdr.account_code_status == "orphan"
    assert cdr.applied_to_cdr_id is None
    assert (cdr.client_name, cdr.code_known) == ("Jones v. Acme Corp", True)
    assert entries(cdr) == [("1001", True, "second_line", "c1")]
    assert result.letters == []


def test_orphan_changes_no_call() -> None:
    before = LegScript("a1").inbound(0).answer(2).release(20)
    talking = LegScript("a2").inbound(30).answer(32).release(200)  # not on hold
    result = run(settings(), before, talking, code_entry_leg("c1", 50, "*711001"))
    only(result.latest, "sw1:a1", "sw1:a2", "sw1:c1")
    assert result.latest["sw1:c1"].account_code_status == "orphan"
    for cdr_id in ("sw1:a1", "sw1:a2"):
        [cdr] = result.versions(cdr_id)
        assert cdr.account_code_entries == ()
        assert cdr.account_code is None


def test_incomplete_orphan() -> None:
    cdr = run(settings(), code_entry_leg("c1", 0, "*7110")).latest["sw1:c1"]
    assert cdr.account_code_status == "incomplete"
    assert cdr.applied_to_cdr_id is None
    assert cdr.account_code is None
    assert (cdr.client_name, cdr.code_known) == (None, None)
    assert entries(cdr) == [("10", False, "second_line", "c1")]


def test_unknown_code_orphan() -> None:
    cdr = run(settings(), code_entry_leg("c1", 0, "*719999")).latest["sw1:c1"]
    assert cdr.account_code_status == "orphan"
    assert (cdr.client_name, cdr.code_known) == (None, False)


def test_orphan_is_issued_once() -> None:
    result = run(settings(), code_entry_leg("c1", 0, "*711001"))
    assert [c.version for c in result.versions("sw1:c1")] == [1]


def test_two_orphans() -> None:
    orphans = code_entry_leg("c1", 0, "*711001"), code_entry_leg("c2", 30, "*712002")
    result = run(settings(), *orphans)
    assert {cid: c.account_code_status for cid, c in result.latest.items()} == {
        "sw1:c1": "orphan", "sw1:c2": "orphan",
    }
