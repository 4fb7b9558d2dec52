"""The correlation engine: events in, state and CDRs out (SPEC sections 3 and 5).

Pure and deterministic: no I/O, no wall clock, no Kafka. Per-user state is an immutable
`UserState`; `apply_event` adds one event to it and `evaluate_user` issues what event time
has made final. `Engine` holds the users of one partition (or of a whole file), tracks
event time, and calls both in a fixed order, so every shell that drives it (file mode,
the worker, replay, tests) gets the same CDRs.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from streams.cdr import Cdr, CodeEntry
from streams.cdr_builder import build_call_cdr, build_code_entry_cdr, code_entry
from streams.correlation import Call, UserView, target_of, view_user
from streams.deadletter import DeadLetter, Origin
from streams.events import CALL_RELEASED, CALL_STARTED, Event, LegKey
from streams.legs import Leg, LegFacts, leg_facts, split_rejected
from streams.settings import Settings
from streams.timefmt import Millis

Output = Cdr | DeadLetter

# A held call waits for the user's undecided second line at most this many digit
# timeouts past its own settle time (see README, "Decisions").
HOLDBACK_DIGIT_TIMEOUTS = 4
SEQ_MASK_LIMIT = 4096


@dataclass(init=False)
class Tombstone:
    """What is left of a leg that is final and out of memory: which seqs it had (so a
    re-delivery is recognised) and until when, in event time, this is kept."""

    seqs: Final[int | frozenset[int]]
    expires: Final[Millis]

    def __init__(self, seqs: int | frozenset[int], expires: Millis) -> None:
        self.seqs = seqs
        self.expires = expires

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tombstone):
            return NotImplemented
        return self.expires == other.expires and self.seqs == other.seqs

    def __hash__(self) -> int:
        return hash((self.seqs, self.expires))

    def __reduce__(self) -> tuple[type[Tombstone], tuple[Any, ...]]:
        return Tombstone, (self.seqs, self.expires)

    def had(self, seq: int) -> bool:
        seqs = self.seqs
        if isinstance(seqs, int):
            return seq < SEQ_MASK_LIMIT and bool(seqs >> seq & 1)
        return seq in seqs

    @staticmethod
    def of(leg: Leg, expires: Millis) -> Tombstone:
        mask = 0
        for event in leg.events:
            seq = event.seq
            if seq >= SEQ_MASK_LIMIT:
                return Tombstone(frozenset(e.seq for e in leg.events), expires)
            mask |= 1 << seq
        return Tombstone(mask, expires)


@dataclass(init=False, unsafe_hash=True)
class UserState:
    """One user's calls in flight. Treated as immutable: every change makes a new one
    (its dicts are never changed in place; they are dicts, not Mappings, because the
    compiled core reads dicts much faster).

    `issued` holds the latest issued version of each CDR still in memory; `due` is the
    earliest event time at which `evaluate_user` has something to do; `waiting` is set
    while a call waits for an undecided second line.
    """

    legs: Final[dict[LegKey, Leg]]
    issued: Final[dict[str, Cdr]]
    tombstones: Final[dict[LegKey, Tombstone]]
    due: Final[Millis | None]
    waiting: Final[bool]

    def __init__(
        self,
        legs: dict[LegKey, Leg], issued: dict[str, Cdr],
        tombstones: dict[LegKey, Tombstone], due: Millis | None = None, waiting: bool = False,
    ) -> None:
        self.legs = legs
        self.issued = issued
        self.tombstones = tombstones
        self.due = due
        self.waiting = waiting

    @property
    def empty(self) -> bool:
        return not (self.legs or self.issued or self.tombstones)

    def __reduce__(self) -> tuple[type[UserState], tuple[Any, ...]]:
        # pickled by its fields: the compiled core's classes have no slots to restore
        return UserState, (self.legs, self.issued, self.tombstones, self.due, self.waiting)


EMPTY_USER = UserState({}, {}, {})


def _min(a: Millis | None, b: Millis | None) -> Millis | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a < b else b


def late_letter(event: Event, origin: Origin | None, reason: str) -> DeadLetter:
    return DeadLetter(reason, origin, event.to_json_dict(), event.event_id)


class _Times:
    """A `Settings`' durations in milliseconds, read once (they are properties)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.settle_ms: Millis = settings.settle_ms
        self.max_call_ms: Millis = settings.max_call_ms
        self.correction_window_ms: Millis = settings.correction_window_ms
        self.redelivery_horizon_ms: Millis = settings.redelivery_horizon_ms
        self.digit_timeout_ms: Millis = settings.digit_timeout_ms


_times_by_id: dict[int, _Times] = {}


def _times(settings: Settings) -> _Times:
    times = _times_by_id.get(id(settings))
    if times is None or times.settings is not settings:
        if len(_times_by_id) >= 64:
            _times_by_id.clear()
        times = _times_by_id[id(settings)] = _Times(settings)
    return times


_new = tuple.__new__


def apply_event(
    state: UserState, event: Event, origin: Origin | None, watermark: Millis, settings: Settings,
    *, times: _Times | None = None, before: Millis | None = None,
) -> tuple[UserState, DeadLetter | None]:
    """Add one event to a user's state. Re-deliveries change nothing; an event for a leg
    that is final and out of memory goes to the dead letters. (`times` are `settings`'
    durations, where the caller has them. `before` is event time before this event: a
    tombstone that expired by then counts as gone, whether or not it was swept yet.)"""
    # a plain tuple finds a LegKey in a dict (equal, same hash); a LegKey is made only
    # for a new leg
    lookup = cast(LegKey, (event.switch_id, event.call_id))
    if state.tombstones:
        tombstone = state.tombstones.get(lookup)
        if tombstone is not None and (before is None or tombstone.expires > before):
            if tombstone.had(event.seq):
                return state, None
            reason = f"late event: call leg {event.switch_id}:{event.call_id} is already final"
            return state, late_letter(event, origin, reason)
    if times is None:
        times = _times(settings)
    ts = event.ts
    kind = event.type
    leg = state.legs.get(lookup)
    due = state.due
    if leg is None:
        key = _new(LegKey, lookup)
        leg = Leg(key, (event,), (origin,), False)
        closes_at = ts + times.max_call_ms  # closes a leg that never ends
        if due is None or closes_at < due:
            due = closes_at
    elif leg.has_event(event):
        return state, None
    else:
        key = leg.key
        leg = leg.with_event(event, origin)
        if kind == CALL_STARTED:
            due = _min(due, ts + times.max_call_ms)
    legs = {**state.legs, key: leg}
    settle_ms = times.settle_ms
    if kind == CALL_RELEASED:
        due = _min(due, ts + settle_ms)
    if ts <= watermark - settle_ms:
        due = _min(due, watermark)  # late: may change what was issued, look again now
    elif state.waiting:
        due = _min(due, ts + settle_ms)  # may decide a line a call waits for
    return UserState(legs, state.issued, state.tombstones, due, state.waiting), None


class Memo:
    """What an engine has already read from its users' immutable legs, so that a call
    to `evaluate_user` reads again only the legs that changed (a cache: the outcome is the
    same with or without it). Entries are checked by identity: a leg is immutable, so
    the same object reads the same. One memo serves one engine (one `Settings`)."""

    __slots__ = ("built", "facts")

    def __init__(self) -> None:
        # a leg as stored after cleaning (and closing), and its facts
        self.facts: dict[LegKey, tuple[Leg, LegFacts]] = {}
        # a CDR's inputs when last built, and what was issued for it then
        self.built: dict[str, tuple[tuple[object, ...], Cdr]] = {}

    def drop(self, key: LegKey) -> None:
        self.facts.pop(key, None)
        self.built.pop(key.cdr_id, None)

    def clear(self) -> None:
        self.facts.clear()
        self.built.clear()


class _Evaluation:
    """The working state of one `evaluate_user` call."""

    def __init__(
        self, state: UserState, watermark: Millis, settings: Settings, final: bool,
        memo: Memo,
    ):
        self.memo = memo
        self.settings = settings
        self.times = _times(settings)
        self.watermark = watermark
        self.final = final
        self.legs = dict(state.legs)
        self.issued = dict(state.issued)
        self.tombstones = dict(state.tombstones)
        self.outputs: list[Output] = []
        self.due: Millis | None = None
        self.waiting = False

    def wake_at(self, moment: Millis) -> None:
        if moment > self.watermark:
            self.due = _min(self.due, moment)

    def reached(self, moment: Millis) -> bool:
        return self.final or moment <= self.watermark

    def unchanged(self, cdr_id: str, inputs: tuple[object, ...]) -> bool:
        """True where the CDR was last built from these very inputs (the same facts, by
        identity, and equal entries) and that is what is issued: building it again would
        issue nothing."""
        built = self.memo.built.get(cdr_id)
        if built is None or self.issued.get(cdr_id) is not built[1]:
            return False
        before = built[0]
        return len(before) == len(inputs) and all(
            _same_input(old, new) for old, new in zip(before, inputs, strict=True)
        )

    def issue(self, built: Cdr, inputs: tuple[object, ...] = ()) -> None:
        cdr_id = built.cdr_id
        previous = self.issued.get(cdr_id)
        if previous is None or not previous.same_content(built):
            version = 1 if previous is None else previous.version + 1
            if version != built.version:
                built = _with_version(built, version)
            self.issued[cdr_id] = built
            self.outputs.append(built)
        if inputs:
            self.memo.built[cdr_id] = (inputs, self.issued[cdr_id])

    def next_version(self, cdr_id: str) -> int:
        previous = self.issued.get(cdr_id)
        return 1 if previous is None else previous.version + 1

    def forget(self, keys: Iterable[LegKey], reason: str | None = None) -> None:
        """Drop legs from memory, leaving tombstones; with a reason, their events go to the
        dead letters first."""
        expires = self.watermark + self.times.redelivery_horizon_ms
        for key in keys:
            leg = self.legs.pop(key, None)
            if leg is None:
                continue
            if reason is not None:
                for event, origin in sorted(zip(leg.events, leg.origins, strict=True), key=_by_seq):
                    self.outputs.append(late_letter(event, origin, reason))
            self.issued.pop(key.cdr_id, None)
            self.memo.drop(key)
            self.tombstones[key] = Tombstone.of(leg, expires)

    def state(self) -> UserState:
        # tombstones do not make a user due: they expire lazily (`apply_event`) and are
        # swept from memory by the engine (`Engine.sweep`)
        # a dict emptied by deletions keeps its table: a user left with its tombstones
        # alone would hold two of them for the redelivery horizon
        return UserState(
            self.legs or {}, self.issued or {}, self.tombstones, self.due, self.waiting
        )


def _same_input(before: object, now: object) -> bool:
    """Facts are compared by identity (the same leg read once), anything else by value."""
    return before is now or (not isinstance(now, LegFacts) and before == now)


def _by_seq(pair: tuple[Event, Origin | None]) -> tuple[int, str]:
    return pair[0].seq, pair[0].event_id


def _with_version(cdr: Cdr, version: int) -> Cdr:
    from dataclasses import replace

    return replace(cdr, version=version)


def _clean_and_close(run: _Evaluation) -> dict[LegKey, LegFacts]:
    """Reject contract-breaking events, close legs past max_call_hours, read the facts."""
    settings = run.settings
    known = run.memo.facts
    legs = run.legs
    facts: dict[LegKey, LegFacts] = {}
    for key in sorted(legs) if len(legs) > 1 else list(legs):
        leg = legs[key]
        seen = known.get(key)
        if seen is not None and seen[0] is leg:
            read = seen[1]  # as read last time: clean already, nothing to reject
        else:
            leg, rejected = split_rejected(leg)
            for item in rejected:
                run.outputs.append(late_letter(item.event, item.origin, item.reason))
            read = leg_facts(leg, settings)
        if read.release is None and not leg.closed:
            closes_at = read.start_ts + run.times.max_call_ms
            if run.reached(closes_at):
                leg = leg.closed_now()
                read = leg_facts(leg, settings)
            else:
                run.wake_at(closes_at)
        if seen is None or seen[0] is not leg:
            known[key] = (leg, read)
        legs[key] = leg
        facts[key] = read
    return facts


def _issue_code_entry_legs(run: _Evaluation, view: UserView) -> dict[LegKey, list[CodeEntry]]:
    """Issue the code-entry legs that are final; return the entries each call receives."""
    received: dict[LegKey, list[CodeEntry]] = {}
    settings = run.settings
    for key, leg in view.code_entry_legs.items():
        assert leg.release is not None and leg.entry is not None
        final_at = leg.release.ts + run.times.settle_ms
        if not (run.reached(final_at) or key.cdr_id in run.issued):  # issued stays final
            run.wake_at(final_at)
            continue
        if leg.started is None:
            run.forget([key], f"call leg {key.cdr_id} has no call_started event")
            continue
        target = target_of(view, leg, run.times.correction_window_ms)  # a call with its root
        if target is not None:
            received.setdefault(target, []).append(code_entry(leg.entry, "second_line", leg))
        applied_to = None if target is None else target.cdr_id
        inputs = (leg, applied_to)
        if run.unchanged(key.cdr_id, inputs):
            continue
        run.issue(build_code_entry_cdr(
            settings, leg, applied_to, run.next_version(key.cdr_id)
        ), inputs)
    return received


def _call_entries(call: Call, received: list[CodeEntry]) -> list[CodeEntry]:
    own = [code_entry(leg.entry, "pre_dial", leg) for leg in call.legs if leg.entry is not None]
    if not own and len(received) <= 1:
        return list(received)
    return sorted(own + received, key=_entry_order)


def _entry_order(entry: CodeEntry) -> tuple[Millis, str]:
    return entry.entered_at, entry.entry_call_id


def _undecided(
    run: _Evaluation, facts: Mapping[LegKey, LegFacts], view: UserView
) -> list[LegFacts]:
    """Legs that may yet add an entry to a call: those that may still become code-entry
    legs (or are, but are not final yet), as far as their events have surely arrived
    (ts + settle <= now). Events that may or may not have arrived yet are left out, so
    that what a call waits for does not depend on the order events arrive in.
    (`view` is the view of `facts`: where every event has surely arrived, it is the one.)"""
    arrived = run.watermark - run.times.settle_ms
    if all(read.last_ts <= arrived for read in facts.values()):
        return view.undecided
    known: dict[LegKey, LegFacts] = {}
    for key, read in facts.items():
        if read.last_ts <= arrived:
            known[key] = read
            continue
        leg = run.legs[key].as_of(arrived)
        if leg is not None:
            known[key] = leg_facts(leg, run.settings)
    return view_user(known).undecided


def _next_arrived(run: _Evaluation, key: LegKey) -> Millis | None:
    """When the earliest event of a leg left out by `_undecided` counts as arrived."""
    arrived = run.watermark - run.times.settle_ms
    later = [event.ts for event in run.legs[key].events if event.ts > arrived]
    return min(later) + run.times.settle_ms if later else None


def _waits_for_second_line(run: _Evaluation, call: Call, open_legs: list[LegFacts]) -> bool:
    """A held call waits (a bounded time) for an undecided second line of the same user
    that started before it ended, so its first version already has the code."""
    if run.final or not any(leg.holds for leg in call.legs):
        return False
    release = call.release_time
    own = call.legs_keys()
    lines = [leg.key for leg in open_legs if leg.start_ts <= release and leg.key not in own]
    if not lines:
        return False
    limit = (
        release + run.times.settle_ms + HOLDBACK_DIGIT_TIMEOUTS * run.times.digit_timeout_ms
    )
    if run.reached(limit):
        return False
    run.wake_at(limit)
    for key in lines:  # look again when what has arrived of them counts
        moment = _next_arrived(run, key)
        if moment is not None:
            run.wake_at(moment)
    return True


def _issue_calls(
    run: _Evaluation,
    view: UserView,
    received: Mapping[LegKey, list[CodeEntry]],
    open_legs: list[LegFacts],
) -> list[LegKey]:
    """Issue every call that is final; return the calls issued and current."""
    settings = run.settings
    settle_ms = run.times.settle_ms
    watermark = run.watermark
    final = run.final
    current: list[LegKey] = []
    for key, call in view.calls.items():
        if call.root is None:
            _unattached_ring_legs(run, key, call)
            continue
        if not call.released:
            continue
        final_at = call.release_time + settle_ms
        cdr_id = key.cdr_id
        issued = cdr_id in run.issued  # once issued (by an idle flush), stays final
        if not (final or final_at <= watermark or issued):
            run.wake_at(final_at)
            continue
        if call.root.started is None:
            reason = f"call leg {key.cdr_id} has no call_started event"
            run.forget([leg.key for leg in call.legs], reason)
            continue
        if not issued and _waits_for_second_line(run, call, open_legs):
            run.waiting = True
            continue
        entries = _call_entries(call, received.get(key, []))
        current.append(key)
        inputs = (*entries, None, call.root, *call.ring)
        if run.unchanged(cdr_id, inputs):
            continue
        version = run.next_version(cdr_id)
        run.issue(build_call_cdr(settings, call.root, call.ring, entries, version), inputs)
    return current


def _unattached_ring_legs(run: _Evaluation, parent: LegKey, call: Call) -> None:
    """Simultaneous Ring legs whose call was never seen: dead letters once final."""
    if parent in run.tombstones:
        reason = f"late Simultaneous Ring leg: call {parent.cdr_id} is already final"
    else:
        reason = f"Simultaneous Ring leg of call {parent.cdr_id}, which was never seen"
    for leg in call.ring:
        if leg.release is None:
            continue
        final_at = leg.release.ts + run.times.settle_ms
        if run.reached(final_at):
            run.forget([leg.key], reason)
        else:
            run.wake_at(final_at)


def _evict(
    run: _Evaluation, view: UserView, current: list[LegKey], pending: list[LegFacts]
) -> None:
    """Drop calls that can no longer change (rule C8, bounded state)."""
    window = run.times.correction_window_ms
    applied_to: dict[str, list[LegKey]] = {}
    for key in view.code_entry_legs:
        issued = run.issued.get(key.cdr_id)
        if issued is None:
            continue
        if issued.applied_to_cdr_id is None:
            run.forget([key])  # an orphan is final once issued
        else:
            applied_to.setdefault(issued.applied_to_cdr_id, []).append(key)
    settle_ms = run.times.settle_ms
    watermark = run.watermark
    final = run.final
    for key in current:
        call = view.calls[key]
        release = call.release_time
        leaves_at = release + settle_ms + window
        if not (final or leaves_at <= watermark):
            run.wake_at(leaves_at)
            continue
        if not final and pending and any(leg.start_ts <= release + window for leg in pending):
            continue  # looked at again when that leg is decided
        run.forget([leg.key for leg in call.legs] + applied_to.get(key.cdr_id, []))


def _expire_tombstones(state: UserState, watermark: Millis, final: bool) -> UserState:
    """`evaluate_user` for a user with nothing in memory but tombstones."""
    tombstones = state.tombstones
    if not final:
        tombstones = {key: t for key, t in tombstones.items() if t.expires > watermark}
    return UserState({}, {}, tombstones, None, False)


def evaluate_user(
    state: UserState, watermark: Millis, settings: Settings, final: bool = False,
    evict: bool = True, *, memo: Memo | None = None,
) -> tuple[UserState, list[Output]]:
    """Issue what event time `watermark` has made final for one user, and forget what can
    no longer change. `watermark` is the event time to look at the user as of (the engine
    uses the user's due time): every event with ts + settle <= it must have been added.
    With `final` (end of input) every open leg is closed and every call issued. Without
    `evict` nothing is forgotten: the user stays due at the time it would have been.
    `memo` (an engine's) spares reading again what has not changed."""
    if not (state.legs or state.issued):
        return _expire_tombstones(state, watermark, final or not evict), []
    run = _Evaluation(state, watermark, settings, final, Memo() if memo is None else memo)
    tombstones = run.tombstones
    if tombstones and evict and not final:
        for key in [key for key, t in tombstones.items() if t.expires <= watermark]:
            del tombstones[key]
    facts = _clean_and_close(run)
    view = view_user(facts)
    undecided = _undecided(run, facts, view)
    received = _issue_code_entry_legs(run, view)
    current = _issue_calls(run, view, received, undecided)
    if evict:
        _evict(run, view, current, undecided)
        return run.state(), run.outputs
    after = run.state()
    leaves = [
        view.calls[key].release_time + run.times.settle_ms + run.times.correction_window_ms
        for key in current
    ]
    due = _min(after.due, min(leaves, default=None))
    return UserState(after.legs, after.issued, after.tombstones, due, after.waiting), run.outputs


class Engine:
    """The users of one partition (or one file) and their event time.

    `feed` one event at a time, `advance` event time without events (the worker's idle
    flush), and `finish` at the end of the input. Each returns what it issued, in order.
    """

    def __init__(
        self, settings: Settings, users: Mapping[str, UserState] | None = None,
        sweep_every_ms: Millis | None = None,
    ):
        """`sweep_every_ms`: how often, in event time, expired tombstones are dropped
        from memory (default: an eighth of the redelivery horizon, at least a minute)."""
        self.settings = settings
        self.users: dict[str, UserState] = dict(users or {})
        self.watermark: Millis | None = None
        self._schedule: list[tuple[Millis, str]] = []
        self.changed: set[str] = set()
        self._memo = Memo()
        self._times = _times(settings)
        self._sweep_every = (
            max(60_000, self._times.redelivery_horizon_ms // 8)
            if sweep_every_ms is None else sweep_every_ms
        )
        self._next_sweep: Millis | None = None
        # When a list, each evaluation that may issue appends (due, user_id, how many
        # outputs it gave): what sharded file mode needs to merge engines' outputs in the
        # order one engine gives them (streams/sharded.py).
        self.evaluations: list[tuple[Millis, str, int]] | None = None
        for user_id, state in self.users.items():
            if state.due is not None:
                self._schedule.append((state.due, user_id))
        heapq.heapify(self._schedule)

    def _store(self, user_id: str, before: UserState | None, after: UserState) -> None:
        if after.empty:
            self.users.pop(user_id, None)
        else:
            self.users[user_id] = after
            if after.due is not None and (before is None or after.due != before.due):
                heapq.heappush(self._schedule, (after.due, user_id))
        self.changed.add(user_id)

    def feed(
        self, event: Event, origin: Origin | None = None, advance: bool = True
    ) -> list[Output]:
        """Add one event. With `advance` (file mode) event time moves on to the largest ts
        seen; without it, event time stays where the caller's `advance` put it (the worker,
        which keeps it behind the slower of its two topics)."""
        current = self.watermark
        ahead = current is None or (advance and event.ts > current)
        watermark = event.ts if ahead or current is None else current
        user_id = event.user_id
        before = self.users.get(user_id)
        after, letter = apply_event(
            before or EMPTY_USER, event, origin, watermark, self.settings, times=self._times,
            before=current,
        )
        outputs: list[Output] = [] if letter is None else [letter]
        if after is not before:  # never empty: it holds the event's leg
            self.users[user_id] = after
            if after.due is not None and (before is None or after.due != before.due):
                heapq.heappush(self._schedule, (after.due, user_id))
            self.changed.add(user_id)
        if not advance and current is None:
            return outputs
        due = after.due
        if watermark != current or (due is not None and due <= watermark):
            self.watermark = watermark
            schedule = self._schedule
            if schedule and schedule[0][0] <= watermark:
                outputs.extend(self._run_due())
            next_sweep = self._next_sweep
            if next_sweep is None or watermark >= next_sweep:
                self.sweep()
        return outputs

    def advance(self, watermark: Millis) -> list[Output]:
        """Move event time forward to `watermark` (never back) and issue what is due."""
        if self.watermark is not None and watermark <= self.watermark:
            return []
        self.watermark = watermark
        outputs = self._run_due()
        if self._next_sweep is None or watermark >= self._next_sweep:
            self.sweep()
        return outputs

    def sweep(self) -> None:
        """Drop the tombstones that expired by event time (they count as gone as soon as
        they expire, see `apply_event`; this frees their memory), every so often."""
        watermark = self.watermark
        if watermark is None:
            return
        self._next_sweep = watermark + self._sweep_every
        users = self.users
        expired = [
            user_id for user_id, state in users.items()
            if state.tombstones
            and any(t.expires <= watermark for t in state.tombstones.values())
        ]
        for user_id in expired:
            state = users[user_id]
            kept = {key: t for key, t in state.tombstones.items() if t.expires > watermark}
            after = UserState(state.legs, state.issued, kept, state.due, state.waiting)
            if after.empty:
                del users[user_id]
            else:
                users[user_id] = after
            self.changed.add(user_id)

    def idle_horizon(self) -> Millis | None:
        """How far an idle flush looks ahead of event time: far enough to issue every
        call released so far (settle time, and a held call's wait for a second line)."""
        if self.watermark is None:
            return None
        settings = self.settings
        return (
            self.watermark + 2 * settings.settle_ms
            + HOLDBACK_DIGIT_TIMEOUTS * settings.digit_timeout_ms
        )

    def flush_idle(self) -> list[Output]:
        """The worker's idle flush (SPEC C8): issue every call released so far, as if
        event time had run on to `idle_horizon`, without moving event time and without
        forgetting anything. If events come after all (a paused feed), they are taken as
        usual against the real event time; what was issued stays issued, and calls are
        forgotten only by real event time."""
        until = self.idle_horizon()
        if until is None:
            return []
        outputs: list[Output] = []
        for user_id in sorted({user_id for due, user_id in self._schedule if due <= until}):
            state = self.users.get(user_id)
            if state is None or state.due is None or state.due > until:
                continue
            after, issued = evaluate_user(state, until, self.settings, evict=False, memo=self._memo)
            self._store(user_id, state, after)
            outputs.extend(issued)
        return outputs

    def _run_due(self) -> list[Output]:
        outputs: list[Output] = []
        watermark = self.watermark
        assert watermark is not None
        schedule = self._schedule
        while schedule and schedule[0][0] <= watermark:
            _, user_id = heapq.heappop(schedule)
            state = self.users.get(user_id)
            if state is None or state.due is None or state.due > watermark:
                continue
            # as of the due time, not of the watermark: what is issued then must not depend
            # on how far event time happened to jump (other users' traffic, partitioning,
            # arrival order)
            due = state.due
            after, issued = evaluate_user(state, due, self.settings, memo=self._memo)
            self._store(user_id, state, after)
            outputs.extend(issued)
            if self.evaluations is not None:
                self.evaluations.append((due, user_id, len(issued)))
        return outputs

    def finish(self) -> list[Output]:
        """End of input: event time runs on, as for a worker that goes idle, until every
        user's legs are issued and forgotten, each user at its own due times (so the last
        calls come out as they would from a worker, or with more traffic after them).
        Whatever is still open then is closed and issued, users in order."""
        outputs = self.finish_due()
        outputs.extend(self.finish_open(self.watermark or 0))
        return outputs

    def finish_due(self) -> list[Output]:
        """`finish`'s first part: event time runs on through every due time."""
        outputs: list[Output] = []
        schedule = self._schedule
        while schedule:
            due, user_id = schedule[0]
            state = self.users.get(user_id)
            if state is None or not state.legs or state.due != due:
                heapq.heappop(schedule)  # gone, stale, or only tombstones: nothing to issue
                continue
            self.watermark = due if self.watermark is None else max(self.watermark, due)
            outputs.extend(self._run_due())
        return outputs

    def finish_open(self, watermark: Millis) -> list[Output]:
        """`finish`'s second part: what is still open at event time `watermark` (where the
        first part left it) is closed and issued, users in order."""
        outputs: list[Output] = []
        for user_id in sorted(self.users):
            state = self.users[user_id]
            after, issued = evaluate_user(
                state, watermark, self.settings, final=True, memo=self._memo
            )
            outputs.extend(issued)
            self._store(user_id, state, UserState({}, {}, after.tombstones))
            if self.evaluations is not None:
                self.evaluations.append((watermark, user_id, len(issued)))
        self._schedule.clear()
        self._memo.clear()
        return outputs

    def take_changed(self) -> dict[str, UserState | None]:
        """The users changed since the last call (None: gone), for a state store."""
        changed = {user_id: self.users.get(user_id) for user_id in sorted(self.changed)}
        self.changed.clear()
        return changed

    @property
    def open_legs(self) -> int:
        return sum(len(state.legs) for state in self.users.values())


def run_events(
    settings: Settings, events: Iterable[tuple[Event, Origin | None]]
) -> Iterator[Output]:
    """Drive a fresh engine over events in the order given, then finish."""
    engine = Engine(settings)
    for event, origin in events:
        yield from engine.feed(event, origin)
    yield from engine.finish()
