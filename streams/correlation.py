"""Which legs make which calls, and where each second-line code goes (rules C2, C4, C5, C7)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streams.events import LegKey
from streams.legs import CODE_ENTRY_LEG, UNDECIDED_LEG, LegFacts
from streams.timefmt import Millis

MAX_RING_DEPTH = 8


@dataclass(init=False)
class Call:
    """A call: its first leg and the Simultaneous Ring legs that ring for it."""

    root_key: LegKey
    root: LegFacts | None  # None while the first leg has not been seen
    ring: list[LegFacts]

    def __init__(
        self, root_key: LegKey, root: LegFacts | None, ring: list[LegFacts] | None = None
    ) -> None:
        self.root_key = root_key
        self.root = root
        self.ring = [] if ring is None else ring

    @property
    def legs(self) -> list[LegFacts]:
        return [self.root, *self.ring] if self.root is not None else list(self.ring)

    def legs_keys(self) -> set[LegKey]:
        return {leg.key for leg in self.legs}

    @property
    def released(self) -> bool:
        if self.root is None or self.root.release is None:
            return False
        return all(leg.release is not None for leg in self.ring)

    @property
    def release_time(self) -> Millis:
        latest: Millis | None = None
        for leg in self.legs:
            release = leg.release
            moment = release.ts if release is not None and release.ts else 0  # release_ts or 0
            if latest is None or moment > latest:
                latest = moment
        if latest is None:
            raise ValueError("a call without legs has no release time")
        return latest

    @property
    def first_ts(self) -> Millis:
        return min(leg.start_ts for leg in self.legs)


@dataclass(init=False)
class UserView:
    """One user's legs, sorted into calls, code-entry legs and legs still undecided."""

    calls: dict[LegKey, Call]
    code_entry_legs: dict[LegKey, LegFacts]
    undecided: list[LegFacts]  # open legs that may still become code-entry legs

    def __init__(
        self, calls: dict[LegKey, Call], code_entry_legs: dict[LegKey, LegFacts],
        undecided: list[LegFacts],
    ) -> None:
        self.calls = calls
        self.code_entry_legs = code_entry_legs
        self.undecided = undecided


def _root_of(key: LegKey, facts: Mapping[LegKey, LegFacts]) -> LegKey:
    """Follow Simultaneous Ring links up to the call's first leg (rule C7)."""
    for _ in range(MAX_RING_DEPTH):
        leg = facts.get(key)
        parent = None if leg is None else leg.ring_parent
        if parent is None or parent == key:
            return key
        key = parent
    return key


def view_user(facts: Mapping[LegKey, LegFacts]) -> UserView:
    calls: dict[LegKey, Call] = {}
    code_entry_legs: dict[LegKey, LegFacts] = {}
    undecided: list[LegFacts] = []
    for key in sorted(facts) if len(facts) > 1 else list(facts):
        leg = facts[key]
        kind = leg.kind
        if kind == CODE_ENTRY_LEG:
            code_entry_legs[key] = leg
            continue
        if kind == UNDECIDED_LEG:
            undecided.append(leg)
        root_key = key if leg.ring_parent is None else _root_of(key, facts)
        call = calls.get(root_key)
        if call is None:
            call = calls[root_key] = Call(root_key, facts.get(root_key))
        if root_key != key:
            call.ring.append(leg)
    return UserView(calls, code_entry_legs, undecided)


def held_call(view: UserView, at: Millis) -> LegKey | None:
    """Rule C2: the call on hold at `at` (held at or before it, not yet retrieved or
    released); where several are, the most recently held."""
    best: tuple[Millis, LegKey] | None = None
    for root_key, call in view.calls.items():
        if call.root is None:
            continue
        for leg in call.legs:
            for hold in leg.holds:
                if hold.start <= at and (hold.end is None or hold.end > at):
                    candidate = (hold.start, root_key)
                    if best is None or candidate > best:
                        best = candidate
    return None if best is None else best[1]


def corrected_call(view: UserView, at: Millis, window_ms: Millis) -> LegKey | None:
    """Rule C5: the user's latest call released at or before `at`, where `at` is within
    the correction window after its release."""
    if window_ms <= 0:
        return None
    released = [
        (call.release_time, key)
        for key, call in view.calls.items()
        if call.released and call.release_time <= at
    ]
    if not released:
        return None
    release_time, key = max(released)
    return key if at - release_time <= window_ms else None


def target_of(view: UserView, entry_leg: LegFacts, window_ms: Millis) -> LegKey | None:
    """The call a code-entry leg's entry goes to, or None for an orphan (rule C4)."""
    assert entry_leg.entry is not None
    at = entry_leg.entry.entered_at
    return held_call(view, at) or corrected_call(view, at, window_ms)
