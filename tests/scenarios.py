"""Hypothesis strategies: days of calls built with LegScript, and arrival orders.

A scenario is a few users, each with a run of activities one after the other: pre-dial
calls, held calls with second-line entries (complete or not, slow or fast, released before
or after the held call), two calls on hold at once, Simultaneous Ring calls (a ring leg
may be held for a second-line code), orphan entries (which a correction window may pick
up) and legs that are never released; sometimes another user's busy line besides.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from streams.events import Event
from tests.builders import BASE, LegScript, events_of

CODES = ("1001", "2002", "3003", "4444")


@dataclass
class Scenario:
    legs: list[LegScript]
    window_seconds: int

    @property
    def events(self) -> list[Event]:
        return events_of(*self.legs)


@st.composite
def entry_digits(draw: st.DrawFn) -> str:
    """What a user keys after `*71`: a code, part of one, part of one ended by `#`."""
    code = draw(st.sampled_from(CODES))
    kind = draw(st.sampled_from(["complete", "complete", "partial", "terminated"]))
    if kind == "complete":
        return code
    cut = draw(st.integers(0, 3))
    return code[:cut] + ("#" if kind == "terminated" else "")


@dataclass
class _User:
    user: str
    prefix: str
    legs: list[LegScript]
    count: int = 0

    def leg(self, kind: str) -> LegScript:
        self.count += 1
        leg = LegScript(f"{self.prefix}{kind}{self.count}", user=self.user)
        self.legs.append(leg)
        return leg


def _code_entry(
    draw: st.DrawFn, user: _User, start: float, *, slow: bool = False
) -> tuple[LegScript, float]:
    """A second line opened at `start`: keys *71 and (part of) a code, then hangs up.
    Returns the leg and the time of its last digit."""
    digits = "*71" + draw(entry_digits())
    step = draw(st.sampled_from([0.3, 0.3, 1.0, 5.5])) if slow else 0.3
    leg = user.leg("e").outbound(start)
    first = start + 0.5
    leg.keys(digits, first, step)
    last = first + (len(digits) - 1) * step
    hang_up = last + draw(st.sampled_from([0.5, 2.0, 8.0, 30.0]))
    leg.release(hang_up)
    return leg, hang_up


def _pre_dial_call(draw: st.DrawFn, user: _User, t: float) -> float:
    leg = user.leg("x").outbound(t)
    digits = draw(st.sampled_from(["", "*71", "9"]))
    if digits == "*71":
        digits += draw(entry_digits())
        if draw(st.booleans()):
            digits += "13125550100"
    leg.keys(digits, t + 0.5)
    dialed = t + 1 + len(digits) * 0.3
    leg.dial(dialed, category=draw(st.sampled_from(["national", "internal", "emergency"])))
    if not draw(st.booleans()):
        leg.release(dialed + 10, cause="no_answer", party=None)
        return dialed + 10
    leg.answer(dialed + 3)
    end = dialed + 3 + draw(st.integers(5, 90))
    if draw(st.booleans()):
        leg.key("1", dialed + 4)  # an in-call digit: never a code
    leg.release(end)
    return end


def _held_call(draw: st.DrawFn, user: _User, t: float) -> float:
    """A call put on hold, with one or two second lines keying codes."""
    call = user.leg("h")
    (call.inbound if draw(st.booleans()) else call.outbound)(t)
    if call.events[0].direction == "outbound":
        call.dial(t + 1)
    call.answer(t + 2)
    held = t + 2 + draw(st.integers(3, 30))
    call.hold(held)
    ends = [held]
    start = held + draw(st.sampled_from([0.0, 0.5, 2.0]))
    for _ in range(draw(st.integers(1, 2))):
        _, hung_up = _code_entry(draw, user, start, slow=True)
        ends.append(hung_up)
        start = hung_up + draw(st.sampled_from([0.5, 3.0]))
    # retrieved before, during or after the entries, or released while still on hold
    retrieve = held + draw(st.sampled_from([1.0, 4.0, 10.0, 40.0, 80.0]))
    released_on_hold = draw(st.booleans())
    if released_on_hold:
        end = retrieve
    else:
        call.retrieve(retrieve)
        end = retrieve + draw(st.integers(1, 60))
    call.release(end)
    return max(end, *ends)


def _two_held_calls(draw: st.DrawFn, user: _User, t: float) -> float:
    """Two calls on hold at once, then a second line keys a code: the most recently held
    one gets it (unless it was retrieved before the entry)."""
    first = user.leg("h").inbound(t).answer(t + 1).hold(t + 3)
    second = user.leg("h").inbound(t + 1.5).answer(t + 2)
    held = t + draw(st.sampled_from([2.5, 6.0]))  # before or after the first one's hold
    second.hold(held)
    _, hung_up = _code_entry(draw, user, t + 7)
    retrieve = t + draw(st.sampled_from([8.0, 20.0]))
    second.retrieve(retrieve).release(retrieve + draw(st.integers(1, 30)))
    end = max(hung_up, retrieve) + draw(st.integers(1, 30))
    first.retrieve(end - 0.5).release(end)
    return end + 1


def _ring_call(draw: st.DrawFn, user: _User, t: float) -> float:
    """An inbound call with Simultaneous Ring legs; one of the legs answers."""
    root = user.leg("r").inbound(t, network_call_id=f"N-{user.prefix}{user.count}")
    rings = [user.leg("s").ring(t + 0.1 * (n + 1), root.call_id)
             for n in range(draw(st.integers(1, 2)))]
    legs = [root, *rings]
    answered_by = draw(st.integers(-1, len(legs) - 1))
    answer = t + draw(st.integers(3, 15))
    end = answer
    for index, leg in enumerate(legs):
        if index != answered_by:
            leg.release(answer + 0.1 * (index + 1), cause="answered_elsewhere", party=None)
            continue
        leg.answer(answer)
        end = answer + draw(st.integers(10, 90))
        if draw(st.booleans()):
            held = answer + 5
            leg.hold(held)
            _, hung_up = _code_entry(draw, user, held + 1)
            leg.retrieve(max(hung_up, held + 3) + 1)
            end = max(end, hung_up + 3)
        leg.release(end)
    return end


def _orphan(draw: st.DrawFn, user: _User, t: float) -> float:
    _, hung_up = _code_entry(draw, user, t)
    return hung_up


def _unreleased(draw: st.DrawFn, user: _User, t: float) -> float:
    leg = user.leg("u").inbound(t).answer(t + 2)
    if draw(st.booleans()):
        leg.hold(t + 10)
    return t + 10


ACTIVITIES = {
    "pre_dial": _pre_dial_call, "held": _held_call, "two_held": _two_held_calls,
    "ring": _ring_call,
    "orphan": _orphan, "unreleased": _unreleased,
}


def _background(draw: st.DrawFn, legs: list[LegScript], end: float) -> None:
    """Another user's long call with in-call digits at random times: traffic that moves
    event time forward in small steps, as a busy partition does."""
    tenths = draw(st.lists(st.integers(1, round(end * 10)), max_size=40))
    leg = LegScript("bg1", user="busy@other.example", group="other").inbound(0).answer(0.05)
    for tenth in sorted(tenths):
        leg.key("5", tenth / 10)
    legs.append(leg.release(end + 0.1))


@st.composite
def scenarios(draw: st.DrawFn, max_activities: int = 4) -> Scenario:
    legs: list[LegScript] = []
    for number in range(draw(st.integers(1, 3))):
        user = _User(f"user{number}@smithlaw.example", f"u{number}", legs)
        t = float(draw(st.integers(0, 30)))
        kinds = draw(st.lists(st.sampled_from(sorted(ACTIVITIES)), min_size=1,
                              max_size=max_activities))
        for kind in kinds:
            end = ACTIVITIES[kind](draw, user, t)
            # the next activity starts soon after (within a correction window) or later
            t = end + draw(st.sampled_from([1, 10, 25, 40, 300]))
    if draw(st.booleans()):
        _background(draw, legs, max(event.ts for leg in legs for event in leg.events) / 1000
                    - BASE / 1000)
    window = draw(st.sampled_from([0, 0, 30]))
    return Scenario(legs, window)


@st.composite
def arrivals(draw: st.DrawFn, events: list[Event], settle_ms: int) -> list[Event]:
    """An arrival order of `events` (plus some re-sent copies) in which every event arrives
    while event time (the largest ts seen) is still below its ts + settle: each event is
    delayed by [0, settle) ms and events arrive in order of ts + delay."""
    delay = st.integers(0, settle_ms - 1)
    keyed = [(event.ts + draw(delay), draw(st.integers(0, 1 << 16)), event) for event in events]
    resent = draw(st.lists(st.sampled_from(events), max_size=max(1, len(events) // 5)))
    keyed += [(event.ts + draw(delay), draw(st.integers(0, 1 << 16)), event) for event in resent]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in keyed]
