"""SPEC section 5: the final CDR set depends only on the events.

Scenarios are generated (tests/scenarios.py). Each is run in time order, and

- in an arrival order where every event arrives while event time (the largest ts seen) is
  below its ts + settle, with re-sent copies mixed in;
- split by user over two engines, as partitions of the streaming worker are.

The latest version of each cdr_id must be the same Cdr, version included. The two cases
after the properties are counterexamples hypothesis found in the engine as first written.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.cdr import Cdr
from streams.events import Event
from streams.settings import Settings
from tests import builders
from tests.builders import BOB, LegScript, events_of, run_in_order
from tests.scenarios import Scenario, arrivals, scenarios

PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def config_of(scenario: Scenario) -> Settings:
    return builders.settings(correction_window_seconds=scenario.window_seconds)


@PROPERTY
@given(scenario=scenarios(), data=st.data())
def test_any_arrival_within_settle_gives_the_same_cdrs(
    scenario: Scenario, data: st.DataObject
) -> None:
    config = config_of(scenario)
    in_time_order = run_in_order(config, scenario.events)
    order = data.draw(arrivals(scenario.events, config.settle_ms), label="arrival order")
    shuffled = run_in_order(config, order)
    assert shuffled.latest == in_time_order.latest
    assert in_time_order.letters == []
    assert shuffled.letters == []


@PROPERTY
@given(scenario=scenarios(), data=st.data())
def test_users_split_over_partitions_give_the_same_cdrs(
    scenario: Scenario, data: st.DataObject
) -> None:
    config = config_of(scenario)
    whole = run_in_order(config, scenario.events).latest
    users = sorted({event.user_id for event in scenario.events})
    partition_of = {user: data.draw(st.integers(0, 1), label=user) for user in users}
    merged: dict[str, Cdr] = {}
    for partition in (0, 1):
        events = [e for e in scenario.events if partition_of[e.user_id] == partition]
        merged.update(run_in_order(config, events).latest)
    assert merged == whole


def swap(events: list[Event], first: Event, second: Event) -> list[Event]:
    order = list(events)
    i, j = order.index(first), order.index(second)
    order[i], order[j] = order[j], order[i]
    return order


def test_correction_does_not_depend_on_how_far_event_time_jumps() -> None:
    # a1 is final at 105 and corrected by c1, final at 108.8 (window 30 s). In time order
    # bob's start (106) issues a1 before c1 is final: a1 v1 without code, v2 with it.
    # bob's answer (110) may arrive first, within settle: event time jumps to 110 at once.
    config = builders.settings(correction_window_seconds=30)
    a1 = LegScript("a1").inbound(0).answer(2).release(100)
    c1 = LegScript("c1").outbound(101).keys("*711001", 101.5).release(103.8)
    bob = LegScript("b1", user=BOB).inbound(106).answer(110).release(200)
    events = events_of(a1, c1, bob)
    expected = run_in_order(config, events)
    assert [(c.cdr_id, c.version, c.account_code) for c in expected.cdrs] == [
        ("sw1:a1", 1, None), ("sw1:c1", 1, "1001"), ("sw1:a1", 2, "1001"), ("sw1:b1", 1, None),
    ]
    jumped = swap(events, bob.events[0], bob.events[1])
    assert run_in_order(config, jumped).latest == expected.latest
    # and alice's CDRs do not depend on bob's traffic at all
    alone = run_in_order(config, events_of(a1, c1)).latest
    assert alone == {k: v for k, v in expected.latest.items() if k != "sw1:b1"}


def test_held_call_waits_for_a_line_whose_digits_arrive_out_of_order() -> None:
    # h1 is released at 23 while held; e2 keys "*" at 22.5 and "7" at 23.5, ... When "7"
    # is late, e2's digits at h1's settle time read "*1100": no FAC prefix. h1 must still
    # wait for e2 (judged on what has surely arrived), or v1 misses e2's entry.
    config = builders.settings(correction_window_seconds=30)
    h1 = LegScript("h1").inbound(0).answer(2).hold(22).release(23)
    e2 = LegScript("e2").outbound(22).keys("*71100", 22.5, step=1.0).release(28)
    events = events_of(h1, e2)
    expected = run_in_order(config, events)
    assert [(c.cdr_id, c.version, c.account_code_status) for c in expected.cdrs] == [
        ("sw1:e2", 1, "incomplete"), ("sw1:h1", 1, "not_required"),
    ]
    seven = e2.events[2]
    late_seven = [e for e in events if e is not seven] + [seven]
    assert run_in_order(config, late_seven).latest == expected.latest
