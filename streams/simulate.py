"""Simulated switch traffic: one business day of a firm's call and DTMF events (SPEC section 1).

A firm of `users` subscribers works 08:00-18:00 in their own time zone on `day`. Each user
goes through a day of *activities* that do not overlap (a call, a call with holds and
second-line code entries, a Simultaneous Ring call, an orphan code entry, ...), each
scripted by one small function below. The script knows what it meant: every `call` and
`code_entry` record it expects the engine to issue comes out as a `ScriptedCall` (the
"ground truth": times, entries, final account code, target of each code-entry leg), see
`iter_calls`.

Determinism. Everything is drawn from `random.Random` instances seeded from
`SimulationOptions.seed` (one per user and purpose, seeded with a string that names the
seed, the user's index and the purpose); nothing reads the wall clock, the environment or
hash order. The same settings and options give the same events, byte for byte, and a
user's day does not depend on how many users there are (a 20-user day is the first 20
users of a 40-user day), so the event count scales linearly with `users`.

Order. `iter_events` yields the day's events sorted by arrival time: the event time `ts`,
plus the simulated delivery delay where `disorder_ms` is set, ties broken by (user, leg,
seq, copy). It is a generator that keeps only the activities in flight in memory, so a
streaming producer can use it for a day of any size.

Faults, on request (`SimulationOptions`):

* `resend_rate`: that share of events is delivered a second time, with the same
  `event_id` and content, 0.1-10 s after the first delivery (the engine ignores it).
* `disorder_ms` = D: every event is delayed by a random amount in [0, D) and delivered in
  order of `ts` + delay. SPEC section 5 (the final CDR set does not depend on arrival
  order) holds only for D < `settle_seconds` * 1000: a leg's events may arrive at most
  `settle_seconds` late. A larger D is allowed, for testing late events, and warned about.
* `malformed_rate`: after that share of events, an extra malformed line (not JSON, a
  missing field, a bad digit, an unknown type, a wrong seq type, ...), made from the event
  so it looks real, none of which decodes. Only for JSON Lines output (`iter_items`,
  `write_day` to a `.jsonl` file); an Avro file can only hold valid records, so Avro
  output refuses a `malformed_rate` > 0.

Where a code-entry leg has no held call to go to (an orphan, rule C4), the script leaves
more than `correction_window_seconds` after the user's previous call, so that rule C5 does
not make it a correction; corrections after the call (C5) are scripted on purpose by
`_late_correction`, and only when the window is at least 20 s.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, time
from pathlib import Path
from random import Random
from typing import Any, Final, cast

import orjson

from streams import events as ev
from streams.cdr import CodeEntry, Via
from streams.errors import CdrStreamError
from streams.events import Event
from streams.serialization import is_avro_path, write_events
from streams.settings import Settings, load_settings
from streams.timefmt import Millis, format_iso, local_date, zone

__all__ = [
    "DEFAULT_DAY", "Item", "ScriptedCall", "SimUser", "SimulationError",
    "SimulationOptions", "SimulationStats", "item_line", "iter_calls", "iter_events",
    "iter_items", "malformed_line", "roster", "write_day", "write_truth",
]

DEFAULT_DAY: Final = date(2026, 11, 24)
BUSINESS_HOURS: Final = (time(8, 0), time(18, 0))
PRIMARY_GROUP: Final = "smith-law"
SECONDARY_GROUP: Final = "acme-corp"
OTHER_TIMEZONES: Final = ("America/Chicago", "America/Los_Angeles", "America/Denver")
RESEND_LAG_MS: Final = (100, 10_000)
MEAN_ACTIVITY_MS: Final = 200_000  # measured average length of one activity

FIRST_NAMES: Final = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    "karl", "laura", "mike", "nina", "oscar", "peggy", "quinn", "rita", "sam", "tina",
    "umar", "vera", "walt", "xenia", "yusuf", "zoe",
)
LAST_NAMES: Final = (
    "smith", "jones", "miller", "brown", "garcia", "davis", "wilson", "moore", "taylor",
    "clark", "lewis", "walker", "hall", "young", "king", "wright", "lopez", "hill",
    "scott", "green", "adams", "baker", "nelson", "carter", "mitchell", "perez",
)


class SimulationError(CdrStreamError):
    """The simulation cannot be run as asked."""


@dataclass(frozen=True, slots=True)
class SimulationOptions:
    """What to simulate. The settings (groups, codes, FAC, timeouts) come separately."""

    seed: int = 1
    users: int = 20
    day: date = DEFAULT_DAY
    calls_per_user: float = 25.0  # average activities (calls) per user-day
    resend_rate: float = 0.0
    disorder_ms: int = 0
    malformed_rate: float = 0.0
    switches: tuple[str, ...] = ("sw1", "sw2")
    # Each activity (a call with its code entries and ring legs, as scripted) under a user
    # of its own, `<user_id>~<n>`: a firm's calls spread over many users, each as busy as
    # a real user is over a few minutes. For load tests that send a day's calls in a short
    # run: with the firm's users, each would hold a day of calls at once.
    user_per_activity: bool = False

    def check(self) -> None:
        if self.users < 1:
            raise SimulationError(f"users must be at least 1, got {self.users}")
        if not 0 < self.calls_per_user <= 2000:
            raise SimulationError(f"calls per user must be in (0, 2000], got {self.calls_per_user}")
        for name in ("resend_rate", "malformed_rate"):
            rate = getattr(self, name)
            if not 0 <= rate <= 1:
                raise SimulationError(f"{name.replace('_', ' ')} must be in [0, 1], got {rate}")
        if self.disorder_ms < 0:
            raise SimulationError(f"disorder must be >= 0 ms, got {self.disorder_ms}")
        if not self.switches or any(not name for name in self.switches):
            raise SimulationError("at least one switch id, none empty")
        if len(set(self.switches)) != len(self.switches):
            raise SimulationError(f"switch ids must differ: {self.switches}")


# ---------------------------------------------------------------- ground truth


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """A record the script expects the engine to issue (latest version), as intended."""

    cdr_id: str
    record_type: str  # call or code_entry
    scenario: str
    switch_id: str
    user_id: str
    group_id: str
    call_id: str
    direction: str
    call_category: str | None
    start_time: Millis
    answer_time: Millis | None
    release_time: Millis
    hold_ms: int
    cause: str
    account_code: str | None
    account_code_status: str
    account_code_required: bool
    account_code_entries: tuple[CodeEntry, ...]
    applied_to_cdr_id: str | None
    ring_legs: tuple[str, ...]  # Simultaneous Ring legs folded into this call
    user_timezone: str
    local_date: str

    @property
    def duration_ms(self) -> int:
        return self.release_time - self.start_time

    @property
    def talk_ms(self) -> int:
        if self.answer_time is None:
            return 0
        return self.release_time - self.answer_time - self.hold_ms

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _TRUTH_FIELDS:
            value = getattr(self, name)
            if name in ("start_time", "answer_time", "release_time"):
                value = None if value is None else format_iso(value)
            elif name == "account_code_entries":
                value = [entry.to_json_dict() for entry in value]
            elif name == "ring_legs":
                value = list(value)
            out[name] = value
        return out


_TRUTH_FIELDS: Final = tuple(item.name for item in fields(ScriptedCall))


@dataclass(slots=True)
class SimulationStats:
    """What a run produced (filled while the events are generated)."""

    users: int = 0
    calls: int = 0  # `call` records expected
    code_entry_legs: int = 0
    ring_legs: int = 0
    legs: int = 0
    events: int = 0  # distinct events
    resends: int = 0
    malformed: int = 0
    scenarios: Counter[str] = field(default_factory=Counter)

    @property
    def lines(self) -> int:
        return self.events + self.resends + self.malformed

    def count(self, activity: _Activity) -> None:
        self.scenarios[activity.scenario] += 1
        self.legs += len(activity.legs)
        self.events += sum(len(leg.events) for leg in activity.legs)
        for record in activity.records:
            if record.record_type == "call":
                self.calls += 1
                self.ring_legs += len(record.ring_legs)
            else:
                self.code_entry_legs += 1

    def summary(self) -> str:
        return (
            f"{self.users} users: {self.calls} calls, {self.code_entry_legs} code-entry legs, "
            f"{self.ring_legs} ring legs, {self.legs} legs; {self.events} events; faults: "
            f"{self.resends} re-sent, {self.malformed} malformed; {self.lines} lines"
        )


# ---------------------------------------------------------------- the firm


@dataclass(frozen=True, slots=True)
class SimUser:
    """A subscriber of the simulated firm."""

    index: int
    user_id: str
    group_id: str
    switch_id: str
    number: str
    mobile: str | None  # Simultaneous Ring target, where the user has it on
    timezone: str | None  # sent as user_timezone (None: the default time zone)
    zone_name: str  # the zone the user's business hours are in
    codes: tuple[str, ...]  # the client codes this user bills to
    code_digits: int
    mandatory: bool  # the group's usage is mandatory and the user is not exempt
    exempt: bool


def _groups(settings: Settings) -> tuple[str, str]:
    """The firm's main group (mandatory codes where the config has one) and second group."""
    names = sorted(settings.groups)
    if PRIMARY_GROUP in settings.groups:
        primary = PRIMARY_GROUP
    else:
        mandatory = [name for name in names if settings.groups[name].usage == "mandatory"]
        primary = (mandatory or names or [PRIMARY_GROUP])[0]
    others = [name for name in names if name != primary]
    return primary, (others[0] if others else SECONDARY_GROUP)


def _domain(settings: Settings, group: str) -> str:
    for user in settings.policy(group).exempt_users if group in settings.groups else ():
        if "@" in user:
            return user.split("@", 1)[1]
    return group.replace("-", "") + ".example"


def _group_codes(settings: Settings, seed: int, group: str) -> tuple[str, ...]:
    digits = settings.policy(group).code_digits
    registry = sorted(code for code in settings.client_codes.get(group, {}) if len(code) == digits)
    if registry:
        return tuple(registry)
    rng = Random(f"cdrstream-sim:{seed}:codes:{group}")
    return tuple(sorted({str(rng.randrange(10 ** (digits - 1), 10**digits)) for _ in range(6)}))


def roster(settings: Settings, options: SimulationOptions) -> list[SimUser]:
    """The firm: user i is the same user whatever the number of users."""
    primary, secondary = _groups(settings)
    codes = {group: _group_codes(settings, options.seed, group) for group in (primary, secondary)}
    exempt_ids = settings.policy(primary).exempt_users if primary in settings.groups else ()
    users = []
    for index in range(options.users):
        group = secondary if index % 5 == 4 else primary
        if index == 1 and exempt_ids:
            user_id = exempt_ids[0]
        else:
            user_id = f"{_local_part(index)}@{_domain(settings, group)}"
        policy = settings.policy(group)
        exempt = user_id in policy.exempt_users
        timezone = None
        if index % 10 == 7:
            timezone = OTHER_TIMEZONES[(index // 10) % len(OTHER_TIMEZONES)]
        elif index % 10 == 3:
            timezone = settings.default_timezone
        rng = Random(f"cdrstream-sim:{options.seed}:{index}:user")
        own = codes[group]
        users.append(SimUser(
            index=index, user_id=user_id, group_id=group,
            switch_id=options.switches[index % len(options.switches)],
            number=f"+1{212 if group == primary else 646}{5_550_000 + index:07d}",
            mobile=f"+1917{5_550_000 + index:07d}" if index % 3 == 0 else None,
            timezone=timezone, zone_name=timezone or settings.default_timezone,
            codes=tuple(rng.sample(own, min(len(own), rng.randint(2, 4)))),
            code_digits=policy.code_digits,
            mandatory=policy.usage == "mandatory" and not exempt, exempt=exempt,
        ))
    return users


def _local_part(index: int) -> str:
    first = FIRST_NAMES[index % len(FIRST_NAMES)]
    rest = index // len(FIRST_NAMES)
    last = LAST_NAMES[rest % len(LAST_NAMES)]
    round_ = rest // len(LAST_NAMES)
    return f"{first}.{last}" + (str(round_ + 1) if round_ else "")


# ---------------------------------------------------------------- legs and scripts


class _Leg:
    """One call leg being scripted: its events, numbered by seq from 0."""

    __slots__ = ("call_id", "events", "no", "user")

    def __init__(self, user: SimUser, call_id: str, no: int) -> None:
        self.user = user
        self.call_id = call_id
        self.no = no  # the leg's number in the user's day: with the user, unique
        self.events: list[Event] = []

    @property
    def cdr_id(self) -> str:
        return f"{self.user.switch_id}:{self.call_id}"

    def add(self, ts: Millis, kind: str, **fields: str | None) -> None:
        user, seq = self.user, len(self.events)
        self.events.append(Event(
            f"{user.switch_id}-{self.call_id}-{seq}", kind, ts, user.switch_id, user.user_id,
            user.group_id, self.call_id, seq, **fields,
        ))

    def dtmf(self, ts: Millis, digit: str) -> None:
        user, seq = self.user, len(self.events)
        self.events.append(Event(
            f"{user.switch_id}-{self.call_id}-{seq}", ev.DTMF, ts, user.switch_id, user.user_id,
            user.group_id, self.call_id, seq, digit=digit,
        ))

    def release(self, ts: Millis, cause: str = "normal", party: str = "local") -> Millis:
        self.add(ts, ev.CALL_RELEASED, cause=cause, releasing_party=party)
        return ts


@dataclass(slots=True)
class _CallPlan:
    """A call being scripted: what the CDR of its first leg should say."""

    scenario: str
    root: _Leg
    direction: str
    category: str | None = None
    ring: list[_Leg] = field(default_factory=list)
    entries: list[CodeEntry] = field(default_factory=list)
    answer: Millis | None = None
    release: Millis = 0
    hold_ms: int = 0
    cause: str = "normal"


@dataclass(slots=True)
class _Activity:
    scenario: str
    legs: list[_Leg]
    records: list[ScriptedCall]

    def keyed(self, user: int) -> list[tuple[_Key, Event]]:
        """The events by time, then leg, then seq, keyed for the merge of all users."""
        return sorted(
            ((event.ts, user, leg.no, event.seq, 0), event)
            for leg in self.legs for event in leg.events
        )


# An account-code entry to key: the code digits, and how it ends: "" (complete, or ended by
# what follows), "#" or "*" (a terminator), "timeout" (a pause longer than the inter-digit
# timeout follows).
Keying = tuple[str, str]


class _Script:
    """One user's day being written: random source, call numbering, and the legs and
    expected records of the activity in progress."""

    def __init__(self, settings: Settings, options: SimulationOptions, user: SimUser) -> None:
        self.settings = settings
        self.user = user
        self.rng = Random(f"cdrstream-sim:{options.seed}:{user.index}:calls")
        self.random = self.rng.random
        self.fac = settings.feature_access_code
        self.timeout_ms = settings.digit_timeout_ms
        self.window_ms = settings.correction_window_ms
        high = max(2, min(400, self.timeout_ms // 2))
        self.key_gap = (min(250, high - 1), high)
        self.legs_started = 0  # numbers the user's legs: call ids and merge tie-breaks
        self.legs: list[_Leg] = []
        self.records: list[ScriptedCall] = []

    # -- building blocks

    def ms(self, low: int, high: int) -> int:
        """A whole number in [low, high] (cheaper than `randint`, same idea)."""
        return low + int(self.random() * (high - low + 1))

    def leg(self) -> _Leg:
        self.legs_started += 1
        number = self.legs_started
        leg = _Leg(self.user, f"u{self.user.index}c{number}", number)
        self.legs.append(leg)
        return leg

    def outbound(self, t: Millis) -> _Leg:
        leg = self.leg()
        leg.add(
            t, ev.CALL_STARTED, direction="outbound", calling_number=self.user.number,
            called_number=None, network_call_id=None, related_call_id=None,
            related_reason=None, user_timezone=self.user.timezone,
        )
        return leg

    def inbound(self, t: Millis) -> _Leg:
        leg = self.leg()
        leg.add(
            t, ev.CALL_STARTED, direction="inbound",
            calling_number=self.number(self.rng.choice(("local", "national", "national"))),
            called_number=self.user.number,
            network_call_id=f"N-{self.user.switch_id}-{leg.call_id}",
            related_call_id=None, related_reason=None, user_timezone=self.user.timezone,
        )
        return leg

    def key(self, leg: _Leg, t: Millis, digits: str, gap: tuple[int, int] | None = None) -> Millis:
        """Key `digits` from `t` on; return the time of the last one (`t` where none)."""
        low, high = gap or self.key_gap
        span, random, dtmf = high - low + 1, self.random, leg.dtmf
        for index, digit in enumerate(digits):
            if index:
                t += low + int(random() * span)
            dtmf(t, digit)
        return t

    def enter(self, leg: _Leg, t: Millis, keying: Keying, via: Via) -> tuple[Millis, CodeEntry]:
        """Key the FAC and a code from `t`; return the time of the last digit and the entry."""
        keyed, ending = keying
        last = self.key(leg, t, self.fac)
        if keyed:
            last = self.key(leg, last + self.ms(*self.key_gap), keyed)
        entered = last
        if ending in ("#", "*"):
            last = self.key(leg, last + self.ms(*self.key_gap), ending)
        elif ending == "timeout":
            last += self.timeout_ms + self.ms(500, 4000)
        complete = len(keyed) == self.user.code_digits
        entry = CodeEntry(keyed or None, complete, via, leg.call_id, entered)
        return last, entry

    def code(self) -> str:
        return self.rng.choice(self.user.codes)

    def wrong_code(self, right: str) -> str:
        """A typo of `right`: two digits swapped, or one digit off."""
        digits = list(right)
        index = self.rng.randrange(len(digits))
        if len(digits) > 1 and self.rng.random() < 0.5 and digits[index] != digits[index - 1]:
            digits[index], digits[index - 1] = digits[index - 1], digits[index]
        else:
            digits[index] = str((int(digits[index]) + self.rng.randint(1, 9)) % 10)
        return "".join(digits)

    def partial(self, code: str) -> str:
        return code[: self.rng.randrange(len(code))]

    def talk_ms(self) -> int:
        seconds = self.rng.lognormvariate(math.log(150), 0.9)
        return int(min(max(seconds, 30.0), 1200.0) * 1000) + self.ms(0, 999)

    def category(self, weights: dict[str, int]) -> str:
        return self.rng.choices(tuple(weights), tuple(weights.values()))[0]

    def number(self, category: str) -> str:
        rng = self.rng
        line = f"{rng.randrange(2_000_000, 10_000_000)}"
        if category == "internal":  # the firm's block of 100 numbers (not only its users)
            return f"+1212{5_550_000 + rng.randrange(100):07d}"
        if category == "local":
            return f"+1{rng.choice(('212', '646', '718', '917'))}{line}"
        if category == "national":
            return f"+1{rng.choice(('312', '415', '617', '202', '305', '713', '206'))}{line}"
        if category == "toll_free":
            return f"+1{rng.choice(('800', '888', '877', '866'))}{line}"
        if category == "international":
            country = rng.choice(("+4420", "+331", "+4930", "+8133", "+5255"))
            return f"{country}{line}{rng.randrange(10)}"
        if category == "emergency":
            return "911"
        return rng.choice(("411", "611"))

    # -- records

    def finish_call(self, plan: _CallPlan) -> None:
        root, user = plan.root, self.user
        code = next((entry.code for entry in reversed(plan.entries) if entry.complete), None)
        required = (
            plan.direction == "outbound" and user.mandatory
            and plan.category not in self.settings.policy(user.group_id).allow_without_code
            and plan.category != "emergency"
        )
        status = "present" if code is not None else ("missing" if required else "not_required")
        start = root.events[0].ts
        self.records.append(ScriptedCall(
            cdr_id=root.cdr_id, record_type="call", scenario=plan.scenario,
            switch_id=user.switch_id, user_id=user.user_id, group_id=user.group_id,
            call_id=root.call_id, direction=plan.direction, call_category=plan.category,
            start_time=start, answer_time=plan.answer, release_time=plan.release,
            hold_ms=plan.hold_ms if plan.answer is not None else 0, cause=plan.cause,
            account_code=code, account_code_status=status, account_code_required=required,
            account_code_entries=tuple(plan.entries), applied_to_cdr_id=None,
            ring_legs=tuple(leg.call_id for leg in plan.ring),
            user_timezone=user.zone_name, local_date=self.local_date(start),
        ))

    def finish_entry_leg(
        self, scenario: str, leg: _Leg, entry: CodeEntry, target: _CallPlan | None
    ) -> None:
        user = self.user
        if not entry.complete:
            status = "incomplete"
        else:
            status = "applied" if target is not None else "orphan"
        start, release = leg.events[0].ts, leg.events[-1].ts
        self.records.append(ScriptedCall(
            cdr_id=leg.cdr_id, record_type="code_entry", scenario=scenario,
            switch_id=user.switch_id, user_id=user.user_id, group_id=user.group_id,
            call_id=leg.call_id, direction="outbound", call_category=None,
            start_time=start, answer_time=None, release_time=release, hold_ms=0,
            cause="normal", account_code=entry.code if entry.complete else None,
            account_code_status=status, account_code_required=False,
            account_code_entries=(entry,),
            applied_to_cdr_id=None if target is None else target.root.cdr_id,
            ring_legs=(), user_timezone=user.zone_name, local_date=self.local_date(start),
        ))
        if target is not None:
            target.entries.append(entry)

    def local_date(self, ms: Millis) -> str:
        return local_date(ms, self.user.zone_name).isoformat()


# ---------------------------------------------------------------- pieces of calls

_PRE_DIAL_CATEGORIES: Final = {
    "national": 40, "local": 35, "international": 10, "toll_free": 5, "internal": 5, "other": 2,
}
_PLAIN_CATEGORIES: Final = {
    "internal": 30, "local": 18, "national": 18, "toll_free": 15, "international": 5,
    "emergency": 2, "other": 2,
}


_HOLD_CATEGORIES: Final = {
    name: weight for name, weight in _PLAIN_CATEGORIES.items() if name != "emergency"
}


def _dial_digits(number: str) -> str:
    if number.startswith("+1"):
        return number[1:]
    if number.startswith("+"):
        return "011" + number[1:]
    return number


def _dial(s: _Script, plan: _CallPlan, t: Millis, keying: Keying | None) -> Millis:
    """Off hook at `t`: key a pre-dial entry where given, maybe the destination digits,
    then the dial. Returns the time of the `call_dialed`."""
    leg = plan.root
    t += s.ms(700, 2500)
    ended = True  # an entry keyed so far is over: the destination digits cannot extend it
    if keying is not None:
        t, entry = s.enter(leg, t, keying, "pre_dial")
        plan.entries.append(entry)
        ended = entry.complete or keying[1] != ""
        t += s.ms(*s.key_gap)
    number = s.number(plan.category or "national")
    if s.rng.random() < 0.4 and ended:  # this switch reports the destination digits too
        digits = _dial_digits(number)
        if keying is None and s.rng.random() < 0.1:
            digits = "*67" + digits  # caller id blocked: starts with `*`, but is no FAC
        high = min(350, s.key_gap[1])
        t = s.key(leg, t, digits, (min(120, high - 1), high)) + s.ms(300, 1500)
    else:
        t += s.ms(1500, 4000)
    leg.add(t, ev.CALL_DIALED, called_number=number, call_category=plan.category)
    return t


def _ring_out(s: _Script, plan: _CallPlan, t: Millis, fail_rate: float) -> Millis | None:
    """The far end after the dial: answered (returns the answer time), busy or no answer
    (the leg is released, returns None)."""
    leg = plan.root
    roll = s.rng.random()
    if roll < fail_rate * 0.4:
        plan.cause, plan.release = "busy", leg.release(t + s.ms(800, 3000), "busy", "remote")
        return None
    if roll < fail_rate:
        plan.cause, plan.release = "no_answer", leg.release(t + s.ms(15_000, 40_000), "no_answer")
        return None
    t += s.ms(2500, 20_000) if plan.category != "emergency" else s.ms(500, 3000)
    leg.add(t, ev.CALL_ANSWERED)
    plan.answer = t
    return t


def _converse(
    s: _Script, plan: _CallPlan, leg: _Leg, t: Millis, holds: list[list[Keying]],
    *, hang_up_on_hold: bool = False,
) -> Millis:
    """Talk on answered `leg` from `t`, with one hold per item of `holds` (the second-line
    entries keyed during it); release all legs of the call. Returns the release time."""
    pieces = len(holds) + 1
    talk = s.talk_ms()
    for number, keyings in enumerate(holds):
        t += max(talk // pieces + s.ms(-5000, 5000), 3000)
        leg.add(t, ev.CALL_HELD)
        held = t
        for keying in keyings:
            t = _second_line(s, plan, t, keying)
        t += s.ms(1000, 3000) if keyings else s.ms(5000, 90_000)
        if hang_up_on_hold and number == len(holds) - 1:
            plan.hold_ms += t - held
            return _hang_up(s, plan, leg, t, "remote")
        leg.add(t, ev.CALL_RETRIEVED)
        plan.hold_ms += t - held
    t += max(talk // pieces, 1000)
    return _hang_up(s, plan, leg, t, s.rng.choice(("local", "remote")))


def _hang_up(s: _Script, plan: _CallPlan, leg: _Leg, t: Millis, party: str) -> Millis:
    """Release the talking leg, then the call's other legs still up."""
    leg.release(t, "normal", party)
    plan.release = t
    for other in (plan.root, *plan.ring):
        if other is not leg and other.events[-1].type != ev.CALL_RELEASED:
            plan.release = other.release(t + s.ms(0, 40), "normal", party)
    return plan.release


def _second_line(s: _Script, plan: _CallPlan, t: Millis, keying: Keying) -> Millis:
    """While `plan` is on hold: a second line keys an entry and hangs up (rule C2)."""
    leg = s.outbound(t + s.ms(800, 2500))
    last, entry = s.enter(leg, leg.events[0].ts + s.ms(600, 1500), keying, "second_line")
    leg.release(last + s.ms(400, 1500))
    s.finish_entry_leg(plan.scenario, leg, entry, plan)
    return leg.events[-1].ts


def _out_plan(s: _Script, scenario: str, t: Millis, categories: dict[str, int]) -> _CallPlan:
    return _CallPlan(scenario, s.outbound(t), "outbound", s.category(categories))


def _answered_inbound(s: _Script, scenario: str, t: Millis) -> tuple[_CallPlan, Millis]:
    plan = _CallPlan(scenario, s.inbound(t), "inbound")
    t += s.ms(3000, 15_000)
    plan.root.add(t, ev.CALL_ANSWERED)
    plan.answer = t
    return plan, t


def _holds(s: _Script, count: int) -> list[list[Keying]]:
    return [[] for _ in range(count)]


# ---------------------------------------------------------------- scenarios

ScenarioFn = Callable[[_Script, Millis], None]


def _outbound_pre_dial(s: _Script, t: Millis) -> None:
    """C1: `*71` + code, then the destination."""
    plan = _out_plan(s, "outbound_pre_dial", t, _PRE_DIAL_CATEGORIES)
    t = _dial(s, plan, t, (s.code(), ""))
    answered = _ring_out(s, plan, t, 0.2)
    if answered is not None:
        _converse(s, plan, plan.root, answered, _holds(s, int(s.rng.random() < 0.2)))
    s.finish_call(plan)


def _outbound_no_code(s: _Script, t: Millis) -> None:
    """No entry: internal, toll-free and emergency calls need none (C6); others are missing
    a code where the group's usage is mandatory."""
    plan = _out_plan(s, "outbound_no_code", t, _PLAIN_CATEGORIES)
    t = _dial(s, plan, t, None)
    answered = _ring_out(s, plan, t, 0.25 if plan.category != "emergency" else 0.0)
    if answered is not None:
        _converse(s, plan, plan.root, answered, [])
    s.finish_call(plan)


def _inbound_plain(s: _Script, t: Millis) -> None:
    """An inbound call: answered, missed (no answer) or refused busy."""
    roll = s.rng.random()
    if roll < 0.75:
        plan, t = _answered_inbound(s, "inbound_plain", t)
        _converse(s, plan, plan.root, t, [])
    else:
        plan = _CallPlan("inbound_plain", s.inbound(t), "inbound")
        if roll < 0.95:
            plan.cause = "no_answer"
            plan.release = plan.root.release(t + s.ms(15_000, 35_000), "no_answer", "remote")
        else:
            plan.cause = "busy"
            plan.release = plan.root.release(t + s.ms(200, 1500), "busy", "local")
    s.finish_call(plan)


def _inbound_second_line(s: _Script, t: Millis) -> None:
    """C2: the agent holds an inbound call and keys `*71` + code on a second line."""
    plan, t = _answered_inbound(s, "inbound_second_line", t)
    _converse(s, plan, plan.root, t, [[(s.code(), "")]])
    s.finish_call(plan)


def _code_correction(s: _Script, t: Millis) -> None:
    """C3: a wrong code, corrected by a later entry (the latest complete one counts)."""
    right = s.code()
    wrong = s.wrong_code(right)
    variant = s.rng.randrange(3)
    if variant == 0:  # pre-dial, then a second-line correction on hold
        plan = _out_plan(s, "code_correction", t, _PRE_DIAL_CATEGORIES)
        answered = _ring_out(s, plan, _dial(s, plan, t, (wrong, "")), 0.0)
        assert answered is not None
        _converse(s, plan, plan.root, answered, [[(right, "")]])
    elif variant == 1:  # two holds, one entry each
        plan, t = _answered_inbound(s, "code_correction", t)
        _converse(s, plan, plan.root, t, [[(wrong, "")], [(right, "")]])
    else:  # an entry cut short, then the whole code, in one hold
        plan, t = _answered_inbound(s, "code_correction", t)
        cut_short = (s.partial(right), s.rng.choice(("", "#")))
        _converse(s, plan, plan.root, t, [[cut_short, (right, "")]])
    s.finish_call(plan)


def _incomplete_code(s: _Script, t: Millis) -> None:
    """An entry that ends before the code is whole: at `#`/`*`, at a pause longer than the
    inter-digit timeout, at the dial, or (second line) at the release. It sets no code."""
    code = s.code()
    if s.rng.random() < 0.6:
        plan = _out_plan(s, "incomplete_code", t, _PRE_DIAL_CATEGORIES)
        ending = s.rng.choice(("#", "*", "timeout", ""))
        t = _dial(s, plan, t, (s.partial(code), ending))
        answered = _ring_out(s, plan, t, 0.2)
        if answered is not None:
            _converse(s, plan, plan.root, answered, [])
    else:
        plan, t = _answered_inbound(s, "incomplete_code", t)
        _converse(s, plan, plan.root, t, [[(s.partial(code), s.rng.choice(("", "#")))]])
    s.finish_call(plan)


def _in_call_digits(s: _Script, t: Millis) -> None:
    """Digits after the answer (IVR menus, PINs) are never account codes, even when they
    look like one."""
    fake = s.fac + s.code() if s.rng.random() < 0.4 else ""
    if s.rng.random() < 0.7:
        plan = _CallPlan("in_call_digits", s.outbound(t), "outbound", "toll_free")
        keying = (s.code(), "") if s.rng.random() < 0.5 else None
        answered = _ring_out(s, plan, _dial(s, plan, t, keying), 0.0)
        assert answered is not None
        t = answered
        menu = fake or s.rng.choice(("1", "2#", "31", "0", "4417209#"))
    else:  # an inbound call where the agent keys the FAC and a code on the call itself
        plan, t = _answered_inbound(s, "in_call_digits", t)
        menu = fake or s.rng.choice(("1", "5#"))
    t = s.key(plan.root, t + s.ms(3000, 20_000), menu)
    _converse(s, plan, plan.root, t, [])
    s.finish_call(plan)


def _hold_only(s: _Script, t: Millis) -> None:
    """Holds without codes; sometimes the caller gives up while on hold."""
    if s.rng.random() < 0.5:
        plan, t = _answered_inbound(s, "hold_only", t)
    else:
        plan = _out_plan(s, "hold_only", t, _HOLD_CATEGORIES)
        answered = _ring_out(s, plan, _dial(s, plan, t, None), 0.0)
        assert answered is not None
        t = answered
    holds = _holds(s, s.rng.randint(1, 2))
    _converse(s, plan, plan.root, t, holds, hang_up_on_hold=s.rng.random() < 0.15)
    s.finish_call(plan)


def _simultaneous_ring(s: _Script, t: Millis) -> None:
    """C7: an inbound call also rings the user's mobile (and sometimes another device);
    one leg answers, the others stop ringing; one CDR for the call."""
    user = s.user
    plan = _CallPlan("simultaneous_ring", s.inbound(t), "inbound")
    network_call_id = plan.root.events[0].network_call_id
    targets = [user.mobile or user.number]
    if s.rng.random() < 0.3:
        targets.append(f"+1646{5_550_000 + user.index:07d}")
    rings = t
    for number in targets:
        leg = s.leg()
        rings += s.ms(30, 300)
        leg.add(
            rings, ev.CALL_STARTED, direction="outbound", calling_number=user.number,
            called_number=number, network_call_id=network_call_id,
            related_call_id=plan.root.call_id, related_reason=ev.SIMULTANEOUS_RING,
            user_timezone=user.timezone,
        )
        plan.ring.append(leg)
    legs = [plan.root, *plan.ring]
    roll = s.rng.random()
    if roll < 0.15:  # nobody answers: the caller gives up
        end = t + s.ms(18_000, 30_000)
        for leg in legs:
            plan.release = max(plan.release, leg.release(end + s.ms(0, 50), "no_answer", "remote"))
        plan.cause = "no_answer"
    else:
        answering = plan.root if roll < 0.5 else s.rng.choice(plan.ring)
        t += s.ms(3000, 15_000)
        answering.add(t, ev.CALL_ANSWERED)
        plan.answer = t
        for leg in plan.ring:
            if leg is not answering:
                leg.release(t + s.ms(20, 400), "no_answer")
        holds = [[(s.code(), "")]] if s.rng.random() < 0.3 else []
        _converse(s, plan, answering, t, holds)
    s.finish_call(plan)


def _orphan_entry(s: _Script, t: Millis) -> None:
    """C4: a code-entry leg with no call on hold (or a pre-dial abandoned before the
    dial): reported, changes no call."""
    leg = s.outbound(t)
    code = s.code()
    keying = (code, "") if s.rng.random() < 0.7 else (s.partial(code), s.rng.choice(("", "#")))
    last, entry = s.enter(leg, t + s.ms(700, 2000), keying, "second_line")
    leg.release(last + s.ms(400, 3000))
    s.finish_entry_leg("orphan_entry", leg, entry, None)


def _late_correction(s: _Script, t: Millis) -> None:
    """C5: a code keyed on a second line shortly after the call ended goes to that call."""
    if s.rng.random() < 0.5:
        plan = _out_plan(s, "late_correction", t, _PRE_DIAL_CATEGORIES)
        keying = (s.wrong_code(s.code()), "") if s.rng.random() < 0.5 else None
        answered = _ring_out(s, plan, _dial(s, plan, t, keying), 0.0)
        assert answered is not None
        t = answered
    else:
        plan, t = _answered_inbound(s, "late_correction", t)
    end = _converse(s, plan, plan.root, t, [])
    leg = s.outbound(end + s.ms(3000, s.window_ms - 15_000))
    last, entry = s.enter(leg, leg.events[0].ts + s.ms(600, 1500), (s.code(), ""), "second_line")
    leg.release(last + s.ms(400, 1500))
    s.finish_entry_leg("late_correction", leg, entry, plan)
    s.finish_call(plan)


@dataclass(frozen=True, slots=True)
class _Scenario:
    name: str
    script: ScenarioFn
    weight: float
    enters_codes: bool  # weighted down for users who rarely key codes
    quiet: bool = False  # needs the correction window clear of the user's previous call


SCENARIOS: Final = (
    _Scenario("outbound_pre_dial", _outbound_pre_dial, 24, True),
    _Scenario("outbound_no_code", _outbound_no_code, 18, False),
    _Scenario("inbound_plain", _inbound_plain, 14, False),
    _Scenario("inbound_second_line", _inbound_second_line, 9, True),
    _Scenario("code_correction", _code_correction, 4, True),
    _Scenario("incomplete_code", _incomplete_code, 4, True),
    _Scenario("in_call_digits", _in_call_digits, 5, False),
    _Scenario("hold_only", _hold_only, 5, False),
    _Scenario("simultaneous_ring", _simultaneous_ring, 8, False),
    _Scenario("orphan_entry", _orphan_entry, 1.5, True, quiet=True),
    _Scenario("late_correction", _late_correction, 2, True),
)


def _weights(settings: Settings, user: SimUser) -> list[float]:
    weights = []
    for scenario in SCENARIOS:
        weight = scenario.weight
        if scenario.enters_codes and not user.mandatory:
            weight *= 0.2 if user.exempt else 0.4
        if scenario.name == "simultaneous_ring" and user.mobile is None:
            weight = 0
        if scenario.name == "late_correction" and settings.correction_window_ms < 20_000:
            weight = 0
        weights.append(weight)
    return weights


def _epoch_ms(day: date, at: time, zone_name: str) -> Millis:
    return round(datetime.combine(day, at, zone(zone_name)).timestamp() * 1000)


def _activity_user(settings: Settings, user: SimUser, number: int) -> SimUser:
    """The user of one activity (`SimulationOptions.user_per_activity`): the same
    subscriber as `<user_id>~<number>`, under its group's policy (no exemption)."""
    user_id = f"{user.user_id}~{number}"
    policy = settings.policy(user.group_id)
    exempt = user_id in policy.exempt_users
    mandatory = policy.usage == "mandatory" and not exempt
    return replace(user, user_id=user_id, exempt=exempt, mandatory=mandatory)


def _activities(
    settings: Settings, options: SimulationOptions, user: SimUser
) -> Iterator[_Activity]:
    """One user's day, activity by activity, in time order, none overlapping."""
    s = _Script(settings, options, user)
    rng = s.rng
    opens, closes = (_epoch_ms(options.day, at, user.zone_name) for at in BUSINESS_HOURS)
    mean_gap = max(10_000.0, (closes - opens) / options.calls_per_user - MEAN_ACTIVITY_MS)
    cumulative = []
    total = 0.0
    for weight in _weights(settings, user):
        total += weight
        cumulative.append(total)
    t = opens + rng.randint(0, 1_200_000)
    previous_end: Millis | None = None
    number = 1
    while t < closes:
        scenario = rng.choices(SCENARIOS, cum_weights=cumulative)[0]
        if scenario.quiet and previous_end is not None:
            t = max(t, previous_end + s.window_ms + rng.randint(1000, 30_000))
            if t >= closes:
                break
        s.legs, s.records = [], []
        if options.user_per_activity:
            s.user = _activity_user(settings, user, number)
        scenario.script(s, t)
        activity = _Activity(scenario.name, s.legs, s.records)
        previous_end = max(leg.events[-1].ts for leg in s.legs)  # a leg's ts grow with seq
        yield activity
        number += 1
        t = previous_end + 2000 + int(rng.expovariate(1 / mean_gap))


# ---------------------------------------------------------------- faults

_MALFORMED_KINDS: Final = (
    "truncated", "missing_field", "bad_digit", "unknown_type", "seq_type", "bad_ts",
    "not_object", "bad_value", "binary",
)
_REQUIRED: Final = ("event_id", "type", "ts", "switch_id", "user_id", "group_id", "call_id", "seq")


def malformed_line(rng: Random, event: Event) -> bytes:
    """A line made from `event` that no decoder accepts (a broken producer's output)."""
    raw: dict[str, Any] = event.to_json_dict()
    kind = rng.choice(_MALFORMED_KINDS)
    if kind == "truncated":
        text = orjson.dumps(raw)
        return text[: -rng.randint(1, 30)]
    if kind == "binary":
        return b"\xff\xfe" + orjson.dumps(raw)[2:]
    if kind == "not_object":
        return orjson.dumps(rng.choice(([raw["type"], raw["call_id"]], raw["event_id"], None)))
    if kind == "missing_field":
        del raw[rng.choice(_REQUIRED)]
    elif kind == "bad_digit":
        raw["type"], raw["digit"] = ev.DTMF, rng.choice(("A", "12", "", None, 5))
    elif kind == "unknown_type":
        raw["type"] = rng.choice(("call_parked", "DTMF", "call-started", ""))
    elif kind == "seq_type":
        raw["seq"] = rng.choice((str(event.seq), event.seq + 0.5, -1, None, True))
    elif kind == "bad_ts":
        raw["ts"] = rng.choice((raw["ts"].rstrip("Z"), "yesterday", float(event.ts), None))
    else:
        _bad_value(rng, raw)
    return orjson.dumps(raw)


def _bad_value(rng: Random, raw: dict[str, Any]) -> None:
    kind = raw["type"]
    if kind == ev.CALL_STARTED:
        raw["direction"] = rng.choice(("sideways", None, "INBOUND"))
    elif kind == ev.CALL_DIALED:
        raw["call_category"] = rng.choice(("premium", None))
    elif kind == ev.CALL_RELEASED:
        raw["cause"] = rng.choice(("", None, 16))
    else:
        raw["event_id"] = rng.choice(("", None, 42))


_Key = tuple[Millis, int, int, int, int]  # arrival, user, leg, seq, copy
Item = Event | bytes  # an event, or a malformed line (JSON Lines only)
_Chunk = list[tuple[_Key, Item]]  # items in key order


def _user_items(
    settings: Settings, options: SimulationOptions, user: SimUser, stats: SimulationStats,
    malformed: bool,
) -> Iterator[_Chunk]:
    """One user's events (and faults) in arrival order, in chunks, keyed for the merge."""
    index = user.index
    activities = _activities(settings, options, user)
    faulty = options.resend_rate > 0 or options.disorder_ms > 0 or (
        malformed and options.malformed_rate > 0
    )
    if not faulty:
        for activity in activities:
            stats.count(activity)
            yield cast(_Chunk, activity.keyed(index))  # a list of events is a chunk
        return
    seed = f"cdrstream-sim:{options.seed}:{index}"
    delays, resends, breaks = (
        Random(f"{seed}:{purpose}") for purpose in ("disorder", "resend", "malformed")
    )
    disorder, resend_rate = options.disorder_ms, options.resend_rate
    malformed_rate = options.malformed_rate if malformed else 0.0
    pending: _Chunk = []
    push, pop = heapq.heappush, heapq.heappop
    for activity in activities:
        stats.count(activity)
        ordered = activity.keyed(index)
        floor = ordered[0][0][0]  # nothing later arrives before this
        ready = []
        while pending and pending[0][0][0] < floor:
            ready.append(pop(pending))
        if ready:
            yield ready
        for (ts, _, leg_no, seq, _), event in ordered:
            arrival = ts + delays.randrange(disorder) if disorder else ts
            push(pending, ((arrival, index, leg_no, seq, 0), event))
            if resend_rate and resends.random() < resend_rate:
                again = arrival + resends.randint(*RESEND_LAG_MS)
                push(pending, ((again, index, leg_no, seq, 1), event))
                stats.resends += 1
            if malformed_rate and breaks.random() < malformed_rate:
                line = malformed_line(breaks, event)
                push(pending, ((arrival, index, leg_no, seq, 2), line))
                stats.malformed += 1
    if pending:
        yield [pop(pending) for _ in range(len(pending))]


def _arrival(pair: tuple[_Key, Item]) -> Millis:
    return pair[0][0]


def _merge(streams: list[Iterator[_Chunk]], window_ms: int = 60_000) -> Iterator[Item]:
    """Merge streams of chunks that are each in key order (keys unique across streams).

    Like `heapq.merge`, but the heap holds one entry per stream, not per item: each round
    takes, from every stream whose next item arrives within `window_ms` of the earliest,
    the items that arrive in that window (slices of its chunks), and sorts them (in C)."""
    heads: list[tuple[_Key, int, int, _Chunk, Iterator[_Chunk]]] = []
    for order, stream in enumerate(streams):
        first = next(stream, None)
        if first:
            heads.append((first[0][0], order, 0, first, stream))
    heapq.heapify(heads)
    push, pop = heapq.heappush, heapq.heappop
    while heads:
        end = heads[0][0][0] + window_ms
        bucket: _Chunk = []
        while heads and heads[0][0][0] < end:
            _, order, at, chunk, stream = pop(heads)
            while True:
                cut = bisect_left(chunk, end, at, key=_arrival)
                bucket.extend(chunk[at:cut] if at or cut < len(chunk) else chunk)
                if cut < len(chunk):
                    push(heads, (chunk[cut][0], order, cut, chunk, stream))
                    break
                following = next(stream, None)
                if following is None:
                    break
                chunk, at = following, 0
        bucket.sort()
        for _key, item in bucket:
            yield item


def _merged(
    settings: Settings | None, options: SimulationOptions, stats: SimulationStats | None,
    malformed: bool,
) -> Iterator[Item]:
    options.check()
    settings = settings or load_settings(None)
    stats = stats if stats is not None else SimulationStats()
    users = roster(settings, options)
    stats.users = len(users)
    yield from _merge([_user_items(settings, options, user, stats, malformed) for user in users])


# ---------------------------------------------------------------- public API


def iter_events(
    settings: Settings | None = None, options: SimulationOptions | None = None,
    stats: SimulationStats | None = None,
) -> Iterator[Event]:
    """The day's events (with re-sends and disorder where asked), in arrival order.

    `settings` defaults to the embedded default config. `stats`, where given, is filled as
    the events are generated. Malformed lines are not events: see `iter_items`."""
    items = _merged(settings, options or SimulationOptions(), stats, malformed=False)
    return cast(Iterator[Event], items)  # without malformed lines, every item is an Event


def iter_items(
    settings: Settings | None = None, options: SimulationOptions | None = None,
    stats: SimulationStats | None = None,
) -> Iterator[Item]:
    """Like `iter_events`, with the malformed lines (bytes) among the events. Without
    malformed lines the events are exactly those of `iter_events`."""
    return _merged(settings, options or SimulationOptions(), stats, malformed=True)


def iter_calls(
    settings: Settings | None = None, options: SimulationOptions | None = None
) -> Iterator[ScriptedCall]:
    """The ground truth: every record the day's events should give (one per `cdr_id`, its
    latest version), user by user, in time order. Faults do not change it."""
    options = options or SimulationOptions()
    options.check()
    settings = settings or load_settings(None)
    for user in roster(settings, options):
        for activity in _activities(settings, options, user):
            yield from activity.records


def item_line(item: Item) -> bytes:
    """An item as a JSON Lines line (without the newline)."""
    if isinstance(item, Event):
        return orjson.dumps(item.to_json_dict())
    return item


def write_day(
    path: str | Path, settings: Settings | None = None, options: SimulationOptions | None = None
) -> SimulationStats:
    """Write the day to `path`: Avro by its `.avro` extension, else JSON Lines."""
    options = options or SimulationOptions()
    stats = SimulationStats()
    if is_avro_path(path):
        if options.malformed_rate > 0:
            raise SimulationError(
                "malformed lines need JSON Lines output: an Avro file holds only valid "
                "records (drop --malformed-rate or write .jsonl)"
            )
        write_events(path, iter_events(settings, options, stats))
    elif options.malformed_rate > 0:
        write_events(path, (), (item_line(item) for item in iter_items(settings, options, stats)))
    else:
        write_events(path, iter_events(settings, options, stats))
    return stats


def write_truth(
    path: str | Path, settings: Settings | None = None, options: SimulationOptions | None = None
) -> int:
    """Write the ground truth (`iter_calls`) as JSON Lines; returns the record count."""
    count = 0
    with open(path, "wb") as handle:
        for record in iter_calls(settings, options):
            handle.write(orjson.dumps(record.to_json_dict()) + b"\n")
            count += 1
    return count
