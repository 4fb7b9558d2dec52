"""A call leg's events, and the facts the correlation rules read from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from streams import events as ev
from streams.deadletter import Origin
from streams.dialing import EntryAttempt, Keyed, is_fac_prefix, parse_entry
from streams.events import Event, LegKey
from streams.settings import Settings
from streams.timefmt import Millis

UNRELEASED_CAUSE = "unreleased"
_UNIQUE_TYPES = frozenset({ev.CALL_STARTED, ev.CALL_DIALED, ev.CALL_ANSWERED, ev.CALL_RELEASED})


class Leg(NamedTuple):
    """Everything received for one leg, in arrival order (immutable: adding makes a new Leg).

    `closed` is set when the leg was closed without a release (SPEC rule C8).
    """

    key: LegKey
    events: tuple[Event, ...]
    origins: tuple[Origin | None, ...]
    closed: bool = False

    def has_event(self, event: Event) -> bool:
        return any(seen.event_id == event.event_id for seen in self.events)

    def with_event(self, event: Event, origin: Origin | None) -> Leg:
        return Leg(self.key, (*self.events, event), (*self.origins, origin), self.closed)

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

    def seq_mask(self) -> int:
        """A bit per seq received: enough to tell re-deliveries once the leg is gone."""
        mask = 0
        for event in self.events:
            mask |= 1 << event.seq
        return mask


class Hold(NamedTuple):
    """A hold: from `start` until retrieved or released (`end`; None while still held)."""

    start: Millis
    end: Millis | None


class Rejected(NamedTuple):
    """An event of a leg that breaks the contract, and why."""

    event: Event
    origin: Origin | None
    reason: str


@dataclass(frozen=True, slots=True)
class LegFacts:
    """What a leg's events (ordered by seq) say, as far as they have arrived."""

    key: LegKey
    user_id: str
    group_id: str
    started: Event | None
    first_ts: Millis
    last_ts: Millis
    dialed: Event | None
    answer_ts: Millis | None
    release: Event | None  # a real call_released, or a synthetic one where closed
    holds: tuple[Hold, ...]
    entry: EntryAttempt | None
    may_become_entry: bool  # the dialing digits so far are empty or a FAC prefix

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
        started = self.started
        if (
            started is not None
            and started.related_reason == ev.SIMULTANEOUS_RING
            and started.related_call_id
        ):
            return LegKey(self.key.switch_id, started.related_call_id)
        return None

    @property
    def is_code_entry_leg(self) -> bool:
        """Rule C2: an entry, then released without a dial (and never answered)."""
        return (
            self.entry is not None
            and self.release is not None
            and self.dialed is None
            and self.answer_ts is None
            and self.parent is None
        )

    @property
    def may_become_code_entry_leg(self) -> bool:
        """Still open, and its digits so far could make it a code-entry leg."""
        return (
            self.release is None
            and self.dialed is None
            and self.answer_ts is None
            and self.direction != "inbound"
            and self.parent is None
            and (self.entry is not None or self.may_become_entry)
        )


def _synthetic_release(last: Event) -> Event:
    return last._replace(
        event_id=f"{last.event_id}#closed", type=ev.CALL_RELEASED, seq=last.seq + 1,
        cause=UNRELEASED_CAUSE, releasing_party=None, digit=None,
    )


def split_rejected(leg: Leg) -> tuple[Leg, tuple[Rejected, ...]]:
    """Take out the events that break the contract: a second event of a once-per-leg
    type, two events with one seq, and events ordered after the leg's release. The
    earliest by seq is kept, so the outcome does not depend on arrival order."""
    events = leg.events
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


def leg_facts(leg: Leg, settings: Settings) -> LegFacts:
    """Read the facts of a leg whose events have passed `split_rejected`."""
    ordered = sorted(leg.events, key=lambda event: event.seq)
    started = dialed = release = None
    answer_ts = None
    holds: list[Hold] = []
    held_since: Millis | None = None
    digits: list[Keyed] = []
    dialing = True  # dtmf before the dial, answer or release are dialing digits
    for event in ordered:
        kind = event.type
        if kind == ev.DTMF:
            if dialing:
                digits.append(Keyed(event.digit or "", event.ts))
        elif kind == ev.CALL_STARTED:
            started = event
        elif kind == ev.CALL_DIALED:
            dialed, dialing = event, False
        elif kind == ev.CALL_ANSWERED:
            answer_ts, dialing = event.ts, False
        elif kind == ev.CALL_HELD:
            if held_since is None:
                held_since = event.ts
        elif kind == ev.CALL_RETRIEVED:
            if held_since is not None:
                holds.append(Hold(held_since, event.ts))
                held_since = None
        elif kind == ev.CALL_RELEASED:
            release, dialing = event, False
    if release is None and leg.closed:
        release = _synthetic_release(ordered[-1])
    if held_since is not None:
        holds.append(Hold(held_since, None if release is None else release.ts))
    # Inbound legs have no dialing digits; a leg whose call_started is still on its way is
    # read as outbound, so that it counts as a possible code-entry leg until it arrives.
    outbound = started is None or started.direction == "outbound"
    fac = settings.feature_access_code
    policy = settings.policy(ordered[0].group_id)
    timeout = settings.digit_timeout_ms
    entry = parse_entry(digits, fac, policy.code_digits, timeout) if outbound else None
    first = ordered[0]
    return LegFacts(
        key=leg.key,
        user_id=first.user_id,
        group_id=started.group_id if started is not None else first.group_id,
        started=started,
        first_ts=min(event.ts for event in ordered),
        last_ts=max(event.ts for event in ordered),
        dialed=dialed,
        answer_ts=answer_ts,
        release=release,
        holds=tuple(holds),
        entry=entry,
        may_become_entry=entry is None and is_fac_prefix(digits, fac),
    )
