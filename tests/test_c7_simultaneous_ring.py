"""Rule C7: Simultaneous Ring legs are part of the call they ring for: one CDR per call."""

from __future__ import annotations

from streams.cdr import LegSummary
from streams.engine import Engine
from tests.builders import (
    LegScript,
    at,
    code_entry_at,
    entries,
    events_of,
    feed_all,
    only,
    run,
    run_in_order,
    settings,
)


def root(call_id: str = "w1") -> LegScript:
    return LegScript(call_id).inbound(0, network_call_id="N7")


def ring(call_id: str = "w2", parent: str = "w1", start: float = 0.1) -> LegScript:
    return LegScript(call_id).ring(start, parent, network_call_id="N7")


def test_ring_leg_answers() -> None:
    w1 = root().release(96, party="remote")
    w2 = ring().answer(6).release(96, cause="normal", party="remote")
    result = run(settings(), w1, w2)
    only(result.latest, "sw1:w1")
    cdr = result.latest["sw1:w1"]
    assert [c.version for c in result.cdrs] == [1]
    assert (cdr.record_type, cdr.call_id, cdr.direction) == ("call", "w1", "inbound")
    assert (cdr.answered, cdr.billable) == (True, True)
    assert (cdr.start_time, cdr.answer_time, cdr.release_time) == (at(0), at(6), at(96))
    assert (cdr.duration_ms, cdr.talk_ms, cdr.hold_ms) == (96_000, 90_000, 0)
    assert cdr.network_call_id == "N7"
    assert cdr.legs == (LegSummary("w2", "+19175550100", True, at(6), at(96)),)


def test_first_leg_answers() -> None:
    w1 = root().answer(4).release(50)
    w2 = ring().release(4.2, cause="answered_elsewhere", party=None)
    cdr = run(settings(), w1, w2).latest["sw1:w1"]
    assert (cdr.answer_time, cdr.release_time, cdr.talk_ms) == (at(4), at(50), 46_000)
    assert cdr.cause == "normal"
    assert cdr.legs == (LegSummary("w2", "+19175550100", False, None, at(4.2)),)


def test_cause_comes_from_the_leg_that_answered() -> None:
    w1 = root().release(6.1, cause="answered_elsewhere", party=None)
    w2 = ring().answer(6).release(96, cause="normal", party="remote")
    cdr = run(settings(), w1, w2).latest["sw1:w1"]
    assert (cdr.cause, cdr.releasing_party) == ("normal", "remote")
    assert cdr.release_time == at(96)


def test_earliest_answer_of_several_legs() -> None:
    w1 = root().release(100)
    w2 = ring("w2").answer(7).release(100)
    w3 = ring("w3", start=0.2).answer(6).release(100)
    cdr = run(settings(), w1, w2, w3).latest["sw1:w1"]
    assert cdr.answer_time == at(6)
    assert [leg.call_id for leg in cdr.legs] == ["w2", "w3"]


def test_unanswered_by_every_leg() -> None:
    w1 = root().release(20, cause="no_answer", party=None)
    w2 = ring().release(20, cause="no_answer", party=None)
    cdr = run(settings(), w1, w2).latest["sw1:w1"]
    assert (cdr.answered, cdr.billable, cdr.answer_time, cdr.talk_ms) == (False, False, None, 0)
    assert cdr.cause == "no_answer"


def test_call_is_final_only_when_every_leg_is_released() -> None:
    w1 = root().release(10, cause="answered_elsewhere", party=None)
    w2 = ring().answer(9).release(300)
    engine = Engine(settings())
    assert feed_all(engine, events_of(w1, w2)).cdrs == []
    assert engine.advance(at(304.999)) == []
    [cdr] = engine.advance(at(305))
    assert cdr.release_time == at(300)


def test_ring_leg_arriving_first() -> None:
    w1 = root().answer(4).release(50)
    w2 = ring().release(4.2, cause="answered_elsewhere", party=None)
    expected = run(settings(), w1, w2).latest
    # the whole ring leg before any event of the call it rings for
    arrival = [*w2.events, *w1.events]
    assert run_in_order(settings(), arrival).latest == expected


def test_ring_leg_started_before_its_call_arrives() -> None:
    w1 = root().answer(4).release(50)
    w2 = ring().release(4.2, cause="answered_elsewhere", party=None)
    expected = run(settings(), w1, w2).latest
    arrival = [w2.events[0], *w1.events[:2], w2.events[1], *w1.events[2:]]
    result = run_in_order(settings(), arrival)
    assert result.latest == expected
    assert result.letters == []


def test_ring_of_a_ring_leg_belongs_to_the_first_call() -> None:
    w1 = root().release(60)
    w2 = ring("w2", "w1").release(60)
    w3 = ring("w3", "w2", start=0.2).answer(5).release(60)
    result = run(settings(), w1, w2, w3)
    only(result.latest, "sw1:w1")
    assert [leg.call_id for leg in result.latest["sw1:w1"].legs] == ["w2", "w3"]
    assert result.latest["sw1:w1"].answer_time == at(5)


def test_held_ring_leg_takes_a_second_line_code_for_its_call() -> None:
    w1 = root().release(6.1, cause="answered_elsewhere", party=None)
    w2 = ring().answer(6).hold(30).retrieve(50).release(96)
    result = run(settings(), w1, w2, code_entry_at("c1", 35, "*711001"))
    only(result.latest, "sw1:w1", "sw1:c1")
    w1_cdr = result.latest["sw1:w1"]
    assert w1_cdr.account_code == "1001"
    assert entries(w1_cdr) == [("1001", True, "second_line", "c1")]
    assert w1_cdr.hold_ms == 20_000
    assert result.latest["sw1:c1"].applied_to_cdr_id == "sw1:w1"


def test_ring_leg_whose_call_never_appears_is_a_dead_letter() -> None:
    orphan_ring = ring("w2", "w9").answer(6).release(96)
    other = LegScript("x1").outbound(0).dial(2).answer(3).release(10)
    result = run(settings(), orphan_ring, other)
    only(result.latest, "sw1:x1")
    assert len(result.letters) == len(orphan_ring.events)
    assert {letter.event_id for letter in result.letters} == {
        e.event_id for e in orphan_ring.events
    }
    assert all("sw1:w9" in letter.reason and "never seen" in letter.reason
               for letter in result.letters)


def test_ring_leg_whose_call_never_appears_is_dead_lettered_once_final() -> None:
    orphan_ring = ring("w2", "w9").answer(6).release(96)
    engine = Engine(settings())
    assert feed_all(engine, orphan_ring.events).outputs == []
    assert engine.advance(at(100.999)) == []
    letters = engine.advance(at(101))
    assert [letter.event_id for letter in letters] == [e.event_id for e in orphan_ring.events]
    assert engine.open_legs == 0


def test_other_related_reasons_are_not_acted_on() -> None:
    w1 = root().answer(2).release(60)
    w2 = LegScript("w2").outbound(
        1, related_call_id="w1", related_reason="transfer", called="+19175550100"
    ).dial(1.5, "+19175550100").answer(3).release(30)
    result = run(settings(), w1, w2)
    only(result.latest, "sw1:w1", "sw1:w2")
    assert result.latest["sw1:w1"].legs == ()
