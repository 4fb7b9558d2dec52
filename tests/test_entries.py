"""Account-code entries in a leg's dialing digits (SPEC section 3, "Entry")."""

from __future__ import annotations

import pytest

from streams.cdr import CodeEntry
from streams.dialing import EntryAttempt, Keyed, is_fac_prefix, parse_entry
from tests.builders import LegScript, at, entries, run, run_in_order, settings

FAC = "*71"
TIMEOUT = 5000


def keyed(digits: str, start: int = 0, step: int = 300) -> list[Keyed]:
    return [Keyed(digit, start + index * step) for index, digit in enumerate(digits)]


class TestParseEntry:
    def test_complete_code(self) -> None:
        assert parse_entry(keyed("*711001"), FAC, 4, TIMEOUT) == EntryAttempt(
            "1001", "1001", True, 1800
        )

    def test_digits_after_the_code_are_the_destination(self) -> None:
        attempt = parse_entry(keyed("*71100131255501"), FAC, 4, TIMEOUT)
        assert attempt == EntryAttempt("1001", "1001", True, 1800)

    def test_no_fac_no_entry(self) -> None:
        assert parse_entry(keyed("13125550100"), FAC, 4, TIMEOUT) is None

    def test_fac_not_at_the_start_is_no_entry(self) -> None:
        assert parse_entry(keyed("9*711001"), FAC, 4, TIMEOUT) is None

    def test_fac_alone_is_an_incomplete_entry_timed_at_its_last_digit(self) -> None:
        assert parse_entry(keyed("*71"), FAC, 4, TIMEOUT) == EntryAttempt(None, "", False, 600)

    def test_digits_running_out_leave_an_incomplete_entry(self) -> None:
        assert parse_entry(keyed("*7110"), FAC, 4, TIMEOUT) == EntryAttempt(None, "10", False, 1200)

    def test_too_few_digits_for_the_fac(self) -> None:
        assert parse_entry(keyed("*7"), FAC, 4, TIMEOUT) is None

    @pytest.mark.parametrize("terminator", ["#", "*"])
    def test_terminator_ends_the_entry(self, terminator: str) -> None:
        attempt = parse_entry(keyed(f"*7110{terminator}01"), FAC, 4, TIMEOUT)
        assert attempt == EntryAttempt(None, "10", False, 1200)

    @pytest.mark.parametrize("terminator", ["#", "*"])
    def test_terminator_right_after_the_fac(self, terminator: str) -> None:
        attempt = parse_entry(keyed(f"*71{terminator}1001"), FAC, 4, TIMEOUT)
        assert attempt == EntryAttempt(None, "", False, 600)

    def test_terminator_after_a_complete_code_changes_nothing(self) -> None:
        attempt = parse_entry(keyed("*711001#"), FAC, 4, TIMEOUT)
        assert attempt == EntryAttempt("1001", "1001", True, 1800)

    def test_gap_of_exactly_the_timeout_continues_the_code(self) -> None:
        digits = [*keyed("*7110"), Keyed("0", 1200 + TIMEOUT), Keyed("1", 1500 + TIMEOUT)]
        assert parse_entry(digits, FAC, 4, TIMEOUT) == EntryAttempt(
            "1001", "1001", True, 1500 + TIMEOUT
        )

    def test_gap_just_over_the_timeout_ends_the_code(self) -> None:
        digits = [*keyed("*7110"), Keyed("0", 1201 + TIMEOUT), Keyed("1", 1501 + TIMEOUT)]
        assert parse_entry(digits, FAC, 4, TIMEOUT) == EntryAttempt(None, "10", False, 1200)

    def test_gap_before_the_first_code_digit(self) -> None:
        digits = [*keyed("*71"), *keyed("1001", 600 + TIMEOUT + 1)]
        assert parse_entry(digits, FAC, 4, TIMEOUT) == EntryAttempt(None, "", False, 600)

    def test_fac_keyed_with_a_gap_of_exactly_the_timeout(self) -> None:
        digits = [Keyed("*", 0), *keyed("711001", TIMEOUT)]
        assert parse_entry(digits, FAC, 4, TIMEOUT) == EntryAttempt(
            "1001", "1001", True, TIMEOUT + 1500
        )

    def test_fac_keyed_with_a_gap_over_the_timeout_is_no_entry(self) -> None:
        digits = [Keyed("*", 0), *keyed("711001", TIMEOUT + 1)]
        assert parse_entry(digits, FAC, 4, TIMEOUT) is None

    def test_code_length_from_the_policy(self) -> None:
        assert parse_entry(keyed("*71123456"), FAC, 6, TIMEOUT) == EntryAttempt(
            "123456", "123456", True, 2400
        )
        assert parse_entry(keyed("*7112345"), FAC, 6, TIMEOUT) == EntryAttempt(
            None, "12345", False, 2100
        )

    def test_other_feature_access_code(self) -> None:
        assert parse_entry(keyed("#881001"), "#88", 4, TIMEOUT) == EntryAttempt(
            "1001", "1001", True, 1800
        )
        assert parse_entry(keyed("*881001"), "#88", 4, TIMEOUT) is None

    def test_fac_prefix(self) -> None:
        assert is_fac_prefix([], FAC)
        assert is_fac_prefix(keyed("*7"), FAC)
        assert not is_fac_prefix(keyed("*1"), FAC)
        assert not is_fac_prefix(keyed("*71"), FAC)  # complete FAC: an entry, no prefix


def outbound_call(digits: str, *, step: float = 0.3) -> LegScript:
    """An outbound leg: keys `digits` from t=1, dials at t=20, talks, hangs up."""
    return LegScript("x1").outbound(0).keys(digits, 1, step).dial(20).answer(22).release(80)


def call_entries(leg: LegScript) -> list[CodeEntry]:
    return list(run(settings(), leg).latest[leg.cdr_id].account_code_entries)


class TestEntriesOfLegs:
    def test_pre_dial_code_then_destination_digits(self) -> None:
        cdr = run(settings(), outbound_call("*71100113125550100")).latest["sw1:x1"]
        assert entries(cdr) == [("1001", True, "pre_dial", "x1")]
        assert cdr.account_code_entries[0].entered_at == at(1 + 6 * 0.3)
        assert cdr.account_code == "1001"

    def test_exactly_the_timeout_between_code_digits(self) -> None:
        # "*7110" ends at 2.2; the next digit comes exactly 5 s (the timeout) later
        leg = LegScript("x1").outbound(0).keys("*7110", 1).keys("01", 2.2 + 5)
        leg.dial(20).answer(22).release(80)
        [entry] = call_entries(leg)
        assert (entry.code, entry.complete, entry.entered_at) == ("1001", True, at(7.5))

    def test_just_over_the_timeout_between_code_digits(self) -> None:
        leg = LegScript("x1").outbound(0).keys("*7110", 1).keys("01", 2.201 + 5)
        leg.dial(20).answer(22).release(80)
        cdr = run(settings(), leg).latest["sw1:x1"]
        [entry] = cdr.account_code_entries
        assert (entry.code, entry.complete, entry.entered_at) == ("10", False, at(2.2))
        assert cdr.account_code is None
        assert cdr.account_code_status == "missing"

    @pytest.mark.parametrize("terminator", ["#", "*"])
    def test_terminator(self, terminator: str) -> None:
        [entry] = call_entries(outbound_call(f"*7110{terminator}3125550100"))
        assert (entry.code, entry.complete, entry.entered_at) == ("10", False, at(2.2))

    def test_fac_with_a_gap_is_no_entry(self) -> None:
        leg = LegScript("x1").outbound(0).key("*", 1).keys("711001", 6.001)
        leg.dial(20).answer(22).release(80)
        assert call_entries(leg) == []

    def test_fac_not_at_the_start(self) -> None:
        assert call_entries(outbound_call("9*711001")) == []

    def test_fac_only_then_dial_is_an_incomplete_entry_without_code(self) -> None:
        [entry] = call_entries(outbound_call("*71"))
        assert (entry.code, entry.complete, entry.entered_at) == (None, False, at(1.6))

    def test_digits_after_the_answer_never_count(self) -> None:
        leg = LegScript("x1").outbound(0).dial(2).answer(5).keys("*711001", 10).release(80)
        cdr = run(settings(), leg).latest["sw1:x1"]
        assert cdr.account_code_entries == ()
        assert cdr.account_code_status == "missing"

    def test_digits_after_the_dial_before_the_answer_never_count(self) -> None:
        leg = LegScript("x1").outbound(0).dial(2).keys("*711001", 3).answer(8).release(80)
        assert call_entries(leg) == []

    def test_dialing_digits_end_at_the_release_of_an_unanswered_leg(self) -> None:
        # released after the FAC and two digits, without a dial: an incomplete code entry
        leg = LegScript("x1").outbound(0).keys("*7110", 1).release(4)
        cdr = run(settings(), leg).latest["sw1:x1"]
        assert cdr.record_type == "code_entry"
        assert entries(cdr) == [("10", False, "second_line", "x1")]

    def test_inbound_legs_never_have_entries(self) -> None:
        leg = LegScript("y1").inbound(0).keys("*711001", 1).answer(5).release(80)
        cdr = run(settings(), leg).latest["sw1:y1"]
        assert cdr.record_type == "call"
        assert cdr.account_code_entries == ()

    def test_inbound_leg_keyed_and_released_unanswered_is_no_code_entry_leg(self) -> None:
        leg = LegScript("y1").inbound(0).keys("*711001", 1).release(5)
        cdr = run(settings(), leg).latest["sw1:y1"]
        assert cdr.record_type == "call"
        assert cdr.account_code_entries == ()

    def test_code_length_of_the_group(self) -> None:
        config = settings(groups={"six": {"code_digits": 6}})
        leg = LegScript("x1", group="six").outbound(0).keys("*71123456", 1)
        leg.dial(20).answer(22).release(80)
        cdr = run(config, leg).latest["sw1:x1"]
        assert entries(cdr) == [("123456", True, "pre_dial", "x1")]

    def test_code_length_of_the_default_group(self) -> None:
        config = settings(default_group={"code_digits": 2})
        leg = LegScript("x1", group="unlisted").outbound(0).keys("*71123", 1)
        leg.dial(20).answer(22).release(80)
        cdr = run(config, leg).latest["sw1:x1"]
        assert entries(cdr) == [("12", True, "pre_dial", "x1")]
        assert cdr.account_code_entries[0].entered_at == at(2.2)

    def test_configured_feature_access_code(self) -> None:
        config = settings(feature_access_code="#88")
        assert call_entries(outbound_call("*711001")) != []
        leg = outbound_call("#881001")
        cdr = run(config, leg).latest["sw1:x1"]
        assert entries(cdr) == [("1001", True, "pre_dial", "x1")]
        assert run(config, outbound_call("*711001")).latest["sw1:x1"].account_code_entries == ()

    def test_digits_are_read_in_seq_order_not_arrival_order(self) -> None:
        leg = outbound_call("*711001")
        shuffled = list(reversed(leg.events))
        cdr = run_in_order(settings(), shuffled).latest["sw1:x1"]
        assert entries(cdr) == [("1001", True, "pre_dial", "x1")]
