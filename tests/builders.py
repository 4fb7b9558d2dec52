"""Builders for tests: the events of a leg as a script, settings, and engine runs.

A `LegScript` writes one leg's events in the order the switch numbers them: `seq` counts up
from 0 and `event_id` is `{switch_id}:{call_id}:{seq}`. Times are seconds after `BASE`
(2026-11-24T14:00:00Z), so a test reads like the scenario:

    call = LegScript("a1").inbound(0).answer(2).hold(60).retrieve(70).release(100)
    entry = LegScript("a2").outbound(61).keys("*712002", 62).release(66)
    cdrs = run(settings(), call, entry).latest
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams import events as ev
from streams.cdr import Cdr
from streams.deadletter import DeadLetter, Origin
from streams.engine import Engine, Output, UserState, run_events
from streams.events import Event
from streams.serialization import latest_versions
from streams.settings import Settings, settings_from_mapping
from streams.timefmt import Millis, parse_iso

BASE: Millis = parse_iso("2026-11-24T14:00:00.000Z")
ALICE = "alice@smithlaw.example"
BOB = "bob@smithlaw.example"
RECEPTION = "reception@smithlaw.example"
SMITH_LAW = "smith-law"
SWITCH = "sw1"

# The configuration of the contract's worked examples (tests/examples/config.toml).
EXAMPLE_CONFIG: dict[str, Any] = {
    "feature_access_code": "*71",
    "settle_seconds": 5,
    "correction_window_seconds": 0,
    "max_call_hours": 24,
    "digit_timeout_seconds": 5,
    "default_timezone": "America/New_York",
    "default_group": {"code_digits": 4, "usage": "optional"},
    "groups": {
        SMITH_LAW: {
            "code_digits": 4,
            "usage": "mandatory",
            "exempt_users": [RECEPTION],
            "allow_without_code": ["internal", "toll_free"],
        },
    },
    "client_codes": {SMITH_LAW: {"1001": "Jones v. Acme Corp", "2002": "Estate of Miller"}},
}


def at(seconds: float) -> Millis:
    """Event time `seconds` after BASE."""
    return BASE + round(seconds * 1000)


def settings(**overrides: Any) -> Settings:
    """The worked examples' configuration with top-level keys replaced."""
    raw = copy.deepcopy(EXAMPLE_CONFIG)
    raw.update(overrides)
    return settings_from_mapping(raw, "test config", environ={})


class LegScript:
    """The events of one call leg, written in seq order."""

    def __init__(
        self, call_id: str, *, user: str = ALICE, group: str = SMITH_LAW, switch: str = SWITCH
    ) -> None:
        self.call_id = call_id
        self.user = user
        self.group = group
        self.switch = switch
        self.events: list[Event] = []

    @property
    def cdr_id(self) -> str:
        return f"{self.switch}:{self.call_id}"

    def add(self, kind: str, seconds: float, **fields: Any) -> LegScript:
        """Append an event of type `kind` at `seconds`, with the next seq."""
        seq = len(self.events)
        self.events.append(Event(
            event_id=f"{self.switch}:{self.call_id}:{seq}", type=kind, ts=at(seconds),
            switch_id=self.switch, user_id=self.user, group_id=self.group,
            call_id=self.call_id, seq=seq, **fields,
        ))
        return self

    def start(
        self,
        seconds: float,
        direction: str,
        *,
        calling: str | None = "+12125550001",
        called: str | None = None,
        network_call_id: str | None = None,
        related_call_id: str | None = None,
        related_reason: str | None = None,
        timezone: str | None = None,
    ) -> LegScript:
        return self.add(
            ev.CALL_STARTED, seconds, direction=direction, calling_number=calling,
            called_number=called, network_call_id=network_call_id,
            related_call_id=related_call_id, related_reason=related_reason,
            user_timezone=timezone,
        )

    def outbound(self, seconds: float, **kw: Any) -> LegScript:
        return self.start(seconds, "outbound", **kw)

    def inbound(self, seconds: float, **kw: Any) -> LegScript:
        kw.setdefault("calling", "+13105550123")
        kw.setdefault("called", "+12125550001")
        return self.start(seconds, "inbound", **kw)

    def ring(self, seconds: float, parent: str, **kw: Any) -> LegScript:
        """A Simultaneous Ring leg that rings for the call `parent` (rule C7)."""
        kw.setdefault("called", "+19175550100")
        return self.start(
            seconds, "outbound", related_call_id=parent, related_reason=ev.SIMULTANEOUS_RING, **kw
        )

    def key(self, digit: str, seconds: float) -> LegScript:
        return self.add(ev.DTMF, seconds, digit=digit)

    def keys(self, digits: str, seconds: float, step: float = 0.3) -> LegScript:
        """Key `digits` from `seconds` on, one every `step` seconds."""
        for index, digit in enumerate(digits):
            self.key(digit, seconds + index * step)
        return self

    def dial(
        self, seconds: float, number: str = "+13125550100", category: str = "national"
    ) -> LegScript:
        return self.add(ev.CALL_DIALED, seconds, called_number=number, call_category=category)

    def answer(self, seconds: float) -> LegScript:
        return self.add(ev.CALL_ANSWERED, seconds)

    def hold(self, seconds: float) -> LegScript:
        return self.add(ev.CALL_HELD, seconds)

    def retrieve(self, seconds: float) -> LegScript:
        return self.add(ev.CALL_RETRIEVED, seconds)

    def release(
        self, seconds: float, cause: str = "normal", party: str | None = "local"
    ) -> LegScript:
        return self.add(ev.CALL_RELEASED, seconds, cause=cause, releasing_party=party)


def code_entry_leg(
    call_id: str, seconds: float, digits: str, *, user: str = ALICE, step: float = 0.3
) -> LegScript:
    """A second line (rule C2): opened at `seconds`, keys `digits` a second later, hangs up
    a second after the last digit without dialing."""
    leg = LegScript(call_id, user=user).outbound(seconds).keys(digits, seconds + 1, step)
    return leg.release(seconds + 1 + len(digits) * step + 1)


def code_entry_at(
    call_id: str, entered: float, digits: str = "*712002", *, user: str = ALICE
) -> LegScript:
    """A code-entry leg whose last digit is keyed at exactly `entered` seconds."""
    first_digit = entered - (len(digits) - 1) * 0.3
    leg = LegScript(call_id, user=user).outbound(first_digit - 1).keys(digits, first_digit)
    return leg.release(entered + 1)


def events_of(*legs: LegScript | Iterable[Event]) -> list[Event]:
    """All events of the legs, in time order (ties: in the order given)."""
    merged: list[Event] = []
    for leg in legs:
        merged.extend(leg.events if isinstance(leg, LegScript) else leg)
    return sorted(merged, key=lambda event: event.ts)


@dataclass
class Result:
    """What a run issued: every CDR version and dead letter, in issue order."""

    outputs: list[Output]
    cdrs: list[Cdr] = field(init=False)
    letters: list[DeadLetter] = field(init=False)

    def __post_init__(self) -> None:
        self.cdrs = [item for item in self.outputs if isinstance(item, Cdr)]
        self.letters = [item for item in self.outputs if isinstance(item, DeadLetter)]

    @property
    def latest(self) -> dict[str, Cdr]:
        """The final CDR set: the latest version of each cdr_id."""
        return latest_versions(self.cdrs)

    def versions(self, cdr_id: str) -> list[Cdr]:
        return [cdr for cdr in self.cdrs if cdr.cdr_id == cdr_id]


def run(config: Settings, *legs: LegScript | Iterable[Event]) -> Result:
    """Run the legs' events through a fresh engine in time order, then finish."""
    return run_in_order(config, events_of(*legs))


def run_in_order(config: Settings, events: Iterable[Event]) -> Result:
    """Run events through a fresh engine in exactly the order given, then finish."""
    return Result(list(run_events(config, ((event, None) for event in events))))


def feed_all(engine: Engine, events: Iterable[Event], origin: Origin | None = None) -> Result:
    """Feed events to an existing engine (no finish)."""
    outputs: list[Output] = []
    for event in events:
        outputs.extend(engine.feed(event, origin))
    return Result(outputs)


def entries(cdr: Cdr) -> list[tuple[str | None, bool, str, str]]:
    """A CDR's account-code entries as (code, complete, via, entry_call_id)."""
    return [(e.code, e.complete, e.via, e.entry_call_id) for e in cdr.account_code_entries]


def only(mapping: Mapping[str, Cdr], *cdr_ids: str) -> None:
    """Assert that exactly these cdr_ids were issued."""
    assert sorted(mapping) == sorted(cdr_ids)


def state_fields(state: UserState) -> tuple[object, ...]:
    """A user state's fields, in order: two states compared field by field."""
    return (state.legs, state.issued, state.tombstones, state.due, state.waiting)
