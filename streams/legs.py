"""A call leg's events, and the facts the correlation rules read from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from streams import events as ev
from streams.deadletter import Origin
from streams.dialing import EntryAttempt, Keyed, is_fac_prefix, parse_entry
from streams.events import (
    CALL_ANSWERED,
    CALL_DIALED,
    CALL_HELD,
    CALL_RELEASED,
    CALL_RETRIEVED,
    CALL_STARTED,
    DTMF,
    Event,
    LegKey,
)
from streams.settings import Settings
from streams.timefmt import Millis

UNRELEASED_CAUSE = "unreleased"
_UNIQUE_TYPES = frozenset({ev.CALL_STARTED, ev.CALL_DIALED, ev.CALL_ANSWERED, ev.CALL_RELEASED})


@dataclass(init=False)
class Leg:
    """Everything received for one leg, in arrival order (immutable: adding makes a new Leg).

    `closed` is set when the leg was closed without a release (SPEC rule C8). (A value
    class with spelled-out methods, native in the compiled core, like `Event`.)
    """

    key: Final[LegKey]
    events: Final[tuple[Event, ...]]
    origins: Final[tuple[Origin | None, ...]]
    closed: Final[bool]

    def __init__(
        self, key: LegKey, events: tuple[Event, ...], origins: tuple[Origin | None, ...],
        closed: bool = False,
    ) -> None:
        self.key = key
        self.events = events
        self.origins = origins
        self.closed = closed

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Leg):
            return NotImplemented
        return (
            self.key == other.key and self.closed == other.closed
            and self.events == other.events and self.origins == other.origins
        )

    def __hash__(self) -> int:
        return hash((self.key, self.events, self.origins, self.closed))

    def __reduce__(self) -> tuple[type[Leg], tuple[Any, ...]]:
        return Leg, (self.key, self.events, self.origins, self.closed)

    def has_event(self, event: Event) -> bool:
        event_id = event.event_id
        return any(other.event_id == event_id for other in self.events)

    def with_event(self, event: Event, origin: Origin | None) -> Leg:
        # concatenation: one C call when compiled (the starred form builds a list first)
        return Leg(self.key, self.events + (event,), self.origins + (origin,), self.closed)  # noqa: RUF005

    def closed_now(self) -> Leg:
        """The leg closed without a release (rule C8)."""
        return Leg(self.key, self.events, self.origins, True)

    def as_of(self, moment: Millis) -> Leg | None:
        """The leg as far as event time `moment` (its events with ts <= moment), or None
        where it has none by then."""
        kept = [index for index, event in enumerate(self.events) if event.ts <= moment]
        if len(kept) == len(self.events):
            return self
        if not kept:
            return None
        return Leg(
            self.key, tuple(self.events[i] for i in kept), tuple(self.origins[i] for i in kept),
            self.closed,
        )



@dataclass(init=False)
class Hold:
    """A hold: from `start` until retrieved or released (`end`; None while still held)."""

    start: Final[Millis]
    end: Final[Millis | None]

    def __init__(self, start: Millis, end: Millis | None) -> None:
        self.start = start
        self.end = end

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hold):
            return NotImplemented
        return self.start == other.start and self.end == other.end

    def __hash__(self) -> int:
        return hash((self.start, self.end))

    def __reduce__(self) -> tuple[type[Hold], tuple[Any, ...]]:
        return Hold, (self.start, self.end)


class Rejected(NamedTuple):
    """An event of a leg that breaks the contract, and why."""

    event: Event
    origin: Origin | None
    reason: str


@dataclass(init=False, unsafe_hash=True)
class LegFacts:
    """What a leg's events (ordered by seq) say, as far as they have arrived."""

    key: Final[LegKey]
    user_id: Final[str]
    group_id: Final[str]
    started: Final[Event | None]
    first_ts: Final[Millis]
    last_ts: Final[Millis]
    dialed: Final[Event | None]
    answer_ts: Final[Millis | None]
    release: Final[Event | None]  # a real call_released, or a synthetic one where closed
    holds: Final[tuple[Hold, ...]]
    entry: Final[EntryAttempt | None]
    may_become_entry: Final[bool]  # the dialing digits so far are empty or a FAC prefix
    ring_parent: Final[LegKey | None]  # see `parent`
    kind: Final[str | None]  # CODE_ENTRY_LEG, UNDECIDED_LEG or None, see the properties

    def __init__(  # noqa: PLR0917 (a record, built positionally as before)
        self,
        key: LegKey, user_id: str, group_id: str, started: Event | None, first_ts: Millis,
        last_ts: Millis, dialed: Event | None, answer_ts: Millis | None, release: Event | None,
        holds: tuple[Hold, ...], entry: EntryAttempt | None, may_become_entry: bool,
        ring_parent: LegKey | None, kind: str | None,
    ) -> None:
        self.key = key
        self.user_id = user_id
        self.group_id = group_id
        self.started = started
        self.first_ts = first_ts
        self.last_ts = last_ts
        self.dialed = dialed
        self.answer_ts = answer_ts
        self.release = release
        self.holds = holds
        self.entry = entry
        self.may_become_entry = may_become_entry
        self.ring_parent = ring_parent
        self.kind = kind

    @property
    def start_ts(self) -> Millis:
        return self.started.ts if self.started is not None else self.first_ts

    @property
    def release_ts(self) -> Millis | None:
        return None if self.release is None else self.release.ts

    @property
    def direction(self) -> str | None:
        return None if self.started is None else self.started.direction

    @property
    def parent(self) -> LegKey | None:
        """The call this leg rings for, where it is a Simultaneous Ring leg (rule C7)."""
        return self.ring_parent

    @property
    def is_code_entry_leg(self) -> bool:
        """Rule C2: an entry, then released without a dial (and never answered)."""
        return self.kind == CODE_ENTRY_LEG

    @property
    def may_become_code_entry_leg(self) -> bool:
        """Still open, and its digits so far could make it a code-entry leg."""
        return self.kind == UNDECIDED_LEG


CODE_ENTRY_LEG: Final = "code_entry"
UNDECIDED_LEG: Final = "undecided"


def _ring_parent(key: LegKey, started: Event | None) -> LegKey | None:
    if (
        started is not None
        and started.related_reason == ev.SIMULTANEOUS_RING
        and started.related_call_id
    ):
        return LegKey(key.switch_id, started.related_call_id)
    return None


def _kind(
    *,
    started: Event | None, dialed: Event | None, answer_ts: Millis | None,
    release: Event | None, entry: EntryAttempt | None, may_become_entry: bool,
    parent: LegKey | None,
) -> str | None:
    """Which of the two properties above holds (they never both do), read once."""
    if dialed is not None or answer_ts is not None or parent is not None:
        return None
    if release is not None:
        return CODE_ENTRY_LEG if entry is not None else None  # rule C2
    direction = None if started is None else started.direction
    if direction != "inbound" and (entry is not None or may_become_entry):
        return UNDECIDED_LEG
    return None


def _synthetic_release(last: Event) -> Event:
    return last.replace(
        event_id=f"{last.event_id}#closed", type=ev.CALL_RELEASED, seq=last.seq + 1,
        cause=UNRELEASED_CAUSE, releasing_party=None, digit=None,
    )


def split_rejected(leg: Leg) -> tuple[Leg, tuple[Rejected, ...]]:
    """Take out the events that break the contract: a second event of a once-per-leg
    type, two events with one seq, and events ordered after the leg's release. The
    earliest by seq is kept, so the outcome does not depend on arrival order."""
    events = leg.events
    if _in_order_and_clean(events):
        return leg, ()
    order = sorted(range(len(events)), key=lambda i: (events[i].seq, events[i].event_id))
    kept: list[int] = []
    rejected: list[Rejected] = []
    seen_types: set[str] = set()
    seen_seqs: set[int] = set()
    released = False
    for index in order:
        event = leg.events[index]
        reason = None
        if event.seq in seen_seqs:
            reason = f"leg {leg.key.cdr_id} already has an event with seq {event.seq}"
        elif released:
            reason = f"event ordered after the release of leg {leg.key.cdr_id}"
        elif event.type in _UNIQUE_TYPES and event.type in seen_types:
            reason = f"leg {leg.key.cdr_id} already has a {event.type} event"
        if reason is None:
            kept.append(index)
            seen_seqs.add(event.seq)
            seen_types.add(event.type)
            released = event.type == ev.CALL_RELEASED
        else:
            rejected.append(Rejected(event, leg.origins[index], reason))
    if not rejected:
        return leg, ()
    kept.sort()
    cleaned = Leg(
        leg.key, tuple(leg.events[i] for i in kept), tuple(leg.origins[i] for i in kept), leg.closed
    )
    return cleaned, tuple(rejected)


def _in_order_and_clean(events: tuple[Event, ...]) -> bool:
    """True where `events` are in strictly increasing seq order, no once-per-leg type
    repeats and nothing follows a release: then `split_rejected` has nothing to take out."""
    last_seq = -1
    seen_types: set[str] = set()
    released = False
    for event in events:
        kind = event.type
        if released or event.seq <= last_seq or kind in seen_types:
            return False
        last_seq = event.seq
        if kind in _UNIQUE_TYPES:
            seen_types.add(kind)
            released = kind == CALL_RELEASED
    return True


def _seq_of(event: Event) -> int:
    return event.seq


def leg_facts(leg: Leg, settings: Settings) -> LegFacts:
    """Read the facts of a leg whose events have passed `split_rejected`."""
    ordered = leg.events
    last_seq = -1
    for event in ordered:
        if event.seq < last_seq:
            ordered = tuple(sorted(ordered, key=_seq_of))  # stable, as sorted() always was
            break
        last_seq = event.seq
    started = dialed = release = None
    answer_ts = None
    holds: list[Hold] = []
    held_since: Millis | None = None
    digits: list[Keyed] = []
    dialing = True  # dtmf before the dial, answer or release are dialing digits
    first_ts = last_ts = ordered[0].ts
    for event in ordered:
        ts = event.ts
        if ts < first_ts:
            first_ts = ts
        elif ts > last_ts:
            last_ts = ts
        kind = event.type
        if kind == DTMF:
            if dialing:
                digits.append(Keyed(event.digit or "", ts))
        elif kind == CALL_STARTED:
            started = event
        elif kind == CALL_DIALED:
            dialed, dialing = event, False
        elif kind == CALL_ANSWERED:
            answer_ts, dialing = event.ts, False
        elif kind == CALL_HELD:
            if held_since is None:
                held_since = event.ts
        elif kind == CALL_RETRIEVED:
            if held_since is not None:
                holds.append(Hold(held_since, event.ts))
                held_since = None
        elif kind == CALL_RELEASED:
            release, dialing = event, False
    if release is None and leg.closed:
        release = _synthetic_release(ordered[-1])
    if held_since is not None:
        holds.append(Hold(held_since, None if release is None else release.ts))
    # Inbound legs have no dialing digits; a leg whose call_started is still on its way is
    # read as outbound, so that it counts as a possible code-entry leg until it arrives.
    outbound = started is None or started.direction == "outbound"
    fac = settings.feature_access_code
    first = ordered[0]
    if outbound and digits:
        policy = settings.policy(first.group_id)
        timeout = settings.digit_timeout_ms
        entry = parse_entry(digits, fac, policy.code_digits, timeout)
    else:
        entry = None
    may_become_entry = entry is None and is_fac_prefix(digits, fac)
    key = leg.key
    parent = _ring_parent(key, started)
    return LegFacts(
        key, first.user_id, started.group_id if started is not None else first.group_id,
        started, first_ts, last_ts, dialed, answer_ts, release, tuple(holds), entry,
        may_become_entry, parent,
        _kind(
            started=started, dialed=dialed, answer_ts=answer_ts, release=release, entry=entry,
            may_become_entry=may_become_entry, parent=parent,
        ),
    )
