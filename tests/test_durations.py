"""duration_ms, talk_ms and hold_ms (SPEC section 4)."""

from __future__ import annotations

from streams.cdr import Cdr
from tests.builders import LegScript, run, settings


def times(cdr: Cdr) -> tuple[int, int, int]:
    return cdr.duration_ms, cdr.talk_ms, cdr.hold_ms


def call_of(*legs: LegScript) -> Cdr:
    result = run(settings(), *legs)
    [cdr] = [c for c in result.latest.values() if c.record_type == "call"]
    return cdr


def test_no_hold() -> None:
    cdr = call_of(LegScript("a1").inbound(0).answer(4).release(64))
    assert times(cdr) == (64_000, 60_000, 0)
    assert cdr.talk_ms + cdr.hold_ms == cdr.duration_ms - 4_000


def test_hold_retrieved() -> None:
    cdr = call_of(LegScript("a1").inbound(0).answer(4).hold(60).retrieve(68).release(424))
    assert times(cdr) == (424_000, 412_000, 8_000)


def test_two_holds() -> None:
    leg = LegScript("a1").inbound(0).answer(10).hold(20).retrieve(25).hold(50).retrieve(60)
    assert times(call_of(leg.release(110))) == (110_000, 85_000, 15_000)


def test_hold_still_open_at_release() -> None:
    cdr = call_of(LegScript("a1").inbound(0).answer(10).hold(40).release(100))
    assert times(cdr) == (100_000, 30_000, 60_000)


def test_second_hold_while_held_changes_nothing() -> None:
    leg = LegScript("a1").inbound(0).answer(10).hold(20).hold(30).retrieve(40).release(100)
    assert times(call_of(leg)) == (100_000, 70_000, 20_000)


def test_retrieve_without_hold_changes_nothing() -> None:
    leg = LegScript("a1").inbound(0).answer(10).retrieve(20).release(100)
    assert times(call_of(leg)) == (100_000, 90_000, 0)


def test_unanswered_call_has_no_talk_or_hold() -> None:
    cdr = call_of(LegScript("x1").outbound(0).dial(2).release(30, cause="no_answer"))
    assert times(cdr) == (30_000, 0, 0)
    assert cdr.answer_time is None


def test_overlapping_holds_on_ring_legs_count_once() -> None:
    w1 = LegScript("w1").inbound(0).answer(5).hold(20).retrieve(40).release(100)
    w2 = LegScript("w2").ring(0.1, "w1").answer(6).hold(30).retrieve(50).release(100)
    assert times(call_of(w1, w2)) == (100_000, 65_000, 30_000)


def test_nested_holds_on_ring_legs() -> None:
    w1 = LegScript("w1").inbound(0).answer(5).hold(20).retrieve(60).release(100)
    w2 = LegScript("w2").ring(0.1, "w1").answer(6).hold(30).retrieve(40).release(100)
    assert times(call_of(w1, w2)) == (100_000, 55_000, 40_000)


def test_disjoint_holds_on_ring_legs() -> None:
    w1 = LegScript("w1").inbound(0).answer(5).hold(20).retrieve(30).release(100)
    w2 = LegScript("w2").ring(0.1, "w1").answer(6).hold(40).retrieve(50).release(100)
    assert times(call_of(w1, w2)) == (100_000, 75_000, 20_000)


def test_ring_leg_released_while_held_ends_its_hold() -> None:
    w1 = LegScript("w1").inbound(0).answer(5).release(100)
    w2 = LegScript("w2").ring(0.1, "w1").answer(6).hold(20).release(40)
    assert times(call_of(w1, w2)) == (100_000, 75_000, 20_000)


def test_hold_open_at_release_on_ring_legs_overlapping() -> None:
    w1 = LegScript("w1").inbound(0).answer(5).hold(70).release(100)
    w2 = LegScript("w2").ring(0.1, "w1").answer(6).hold(60).release(90)
    # held from 60 (w2) until 100 (w1's release)
    assert times(call_of(w1, w2)) == (100_000, 55_000, 40_000)


def test_hold_before_the_answer_counts_from_the_answer() -> None:
    # a ring leg put on hold before the call was answered elsewhere
    w1 = LegScript("w1").inbound(0).answer(10).release(100)
    w2 = LegScript("w2").ring(0.1, "w1").hold(2).retrieve(15).release(100)
    assert times(call_of(w1, w2)) == (100_000, 85_000, 5_000)


def test_unreleased_held_leg_is_held_until_its_last_event() -> None:
    leg = LegScript("a1").inbound(0).answer(10).hold(40)
    cdr = call_of(leg)
    assert cdr.cause == "unreleased"
    assert times(cdr) == (40_000, 30_000, 0)
