"""Switch events (SPEC section 1): one immutable record type, decoded and checked.

Every event has the common fields; the fields of the other types are None. Decoding
checks types and values and raises EventDecodeError with a reason: the caller sends
that event to the dead-letter output.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, NamedTuple

from streams.errors import EventDecodeError
from streams.settings import CALL_CATEGORIES
from streams.timefmt import Millis, format_iso, parse_canonical_iso, parse_iso

CALL_STARTED: Final = "call_started"
CALL_DIALED: Final = "call_dialed"
CALL_ANSWERED: Final = "call_answered"
CALL_HELD: Final = "call_held"
CALL_RETRIEVED: Final = "call_retrieved"
CALL_RELEASED: Final = "call_released"
DTMF: Final = "dtmf"

CALL_EVENT_TYPES: Final = frozenset(
    {CALL_STARTED, CALL_DIALED, CALL_ANSWERED, CALL_HELD, CALL_RETRIEVED, CALL_RELEASED}
)
EVENT_TYPES: Final = CALL_EVENT_TYPES | {DTMF}
DIRECTIONS: Final = frozenset({"inbound", "outbound"})
DIGITS: Final = frozenset("0123456789*#")
RELEASING_PARTIES: Final = frozenset({"local", "remote"})
SIMULTANEOUS_RING: Final = "simultaneous_ring"
_CATEGORIES: Final = frozenset(CALL_CATEGORIES)

COMMON_FIELDS: Final = (
    "event_id", "type", "ts", "switch_id", "user_id", "group_id", "call_id", "seq",
)
FIELDS_BY_TYPE: Final[dict[str, tuple[str, ...]]] = {
    CALL_STARTED: (
        "direction", "calling_number", "called_number", "network_call_id",
        "related_call_id", "related_reason", "user_timezone",
    ),
    CALL_DIALED: ("called_number", "call_category"),
    CALL_ANSWERED: (),
    CALL_HELD: (),
    CALL_RETRIEVED: (),
    CALL_RELEASED: ("cause", "releasing_party"),
    DTMF: ("digit",),
}


class LegKey(NamedTuple):
    """A call leg: `call_id` is unique within `switch_id`."""

    switch_id: str
    call_id: str

    @property
    def cdr_id(self) -> str:
        return f"{self.switch_id}:{self.call_id}"


class Event(NamedTuple):
    """One switch event. `ts` is event time in epoch milliseconds."""

    event_id: str
    type: str
    ts: Millis
    switch_id: str
    user_id: str
    group_id: str
    call_id: str
    seq: int
    direction: str | None = None
    calling_number: str | None = None
    called_number: str | None = None
    network_call_id: str | None = None
    related_call_id: str | None = None
    related_reason: str | None = None
    user_timezone: str | None = None
    call_category: str | None = None
    cause: str | None = None
    releasing_party: str | None = None
    digit: str | None = None

    @property
    def leg(self) -> LegKey:
        return LegKey(self.switch_id, self.call_id)

    def to_json_dict(self) -> dict[str, Any]:
        """The event as its JSON form: common fields plus those of its type."""
        out: dict[str, Any] = {
            "event_id": self.event_id, "type": self.type, "ts": format_iso(self.ts),
            "switch_id": self.switch_id, "user_id": self.user_id, "group_id": self.group_id,
            "call_id": self.call_id, "seq": self.seq,
        }
        for name in FIELDS_BY_TYPE[self.type]:
            out[name] = getattr(self, name)
        return out


def _text(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    if type(value) is not str or not value:
        raise EventDecodeError(f"field {name!r} must be a non-empty string, got {value!r}")
    return value


def _optional_text(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None or type(value) is str:
        return value
    raise EventDecodeError(f"field {name!r} must be a string or null, got {value!r}")


def _choice(raw: Mapping[str, Any], name: str, allowed: frozenset[str]) -> str:
    value = raw.get(name)
    if type(value) is not str or value not in allowed:
        raise EventDecodeError(f"field {name!r} must be one of {sorted(allowed)}, got {value!r}")
    return value


def _timestamp(value: Any) -> Millis:
    if type(value) is int:  # Avro timestamp-millis arrives as int
        return value
    if type(value) is str:
        try:
            return parse_iso(value)
        except ValueError:
            pass
    elif isinstance(value, datetime) and value.tzinfo is not None:  # fastavro gives these
        return round(value.timestamp() * 1000)
    raise EventDecodeError(f"field 'ts' must be an ISO 8601 UTC timestamp, got {value!r}")


def _typed_fields(kind: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    if kind == DTMF:
        return {"digit": _choice(raw, "digit", DIGITS)}
    if kind == CALL_STARTED:
        fields = {name: _optional_text(raw, name) for name in FIELDS_BY_TYPE[CALL_STARTED]}
        fields["direction"] = _choice(raw, "direction", DIRECTIONS)
        if fields["related_call_id"] is None and fields["related_reason"] is not None:
            raise EventDecodeError("related_reason is set but related_call_id is null")
        return fields
    if kind == CALL_DIALED:
        return {
            "called_number": _text(raw, "called_number"),
            "call_category": _choice(raw, "call_category", _CATEGORIES),
        }
    if kind == CALL_RELEASED:
        releasing = raw.get("releasing_party")
        valid = type(releasing) is str and releasing in RELEASING_PARTIES
        if releasing is not None and not valid:
            raise EventDecodeError(
                f"field 'releasing_party' must be 'local', 'remote' or null, got {releasing!r}"
            )
        return {"cause": _text(raw, "cause"), "releasing_party": releasing}
    return {}


_SIMPLE_TYPES: Final = frozenset({CALL_ANSWERED, CALL_HELD, CALL_RETRIEVED})


def decode_event(raw: Any) -> Event:
    """Check a decoded JSON or Avro mapping and build the Event it describes."""
    if type(raw) is dict:
        event = _decode_well_formed(raw)
        if event is not None:
            return event
    return _decode_checked(raw)


def _decode_well_formed(raw: dict[str, Any]) -> Event | None:
    """The fast path of `decode_event`: the Event where every check passes, else None
    (and `_decode_checked` says what is wrong). Checks the same as `_decode_checked`."""
    seq = raw.get("seq")
    event_id = raw.get("event_id")
    switch_id = raw.get("switch_id")
    user_id = raw.get("user_id")
    group_id = raw.get("group_id")
    call_id = raw.get("call_id")
    if not (
        type(seq) is int and seq >= 0
        and type(event_id) is str and event_id and type(switch_id) is str and switch_id
        and type(user_id) is str and user_id and type(group_id) is str and group_id
        and type(call_id) is str and call_id
    ):
        return None
    ts = raw.get("ts")
    if type(ts) is str:
        text = ts
        ts = parse_canonical_iso(text)
        if ts < 0:
            try:
                moment = _fromisoformat(text)
            except ValueError:
                return None
            if moment.tzinfo is None:
                return None
            ts = round(moment.timestamp() * 1000)
    elif type(ts) is not int:
        return None
    kind = raw.get("type")
    if type(kind) is not str:
        return None
    if kind == DTMF:
        digit = raw.get("digit")
        if type(digit) is str and digit in DIGITS:
            return _new(Event, (
                event_id, kind, ts, switch_id, user_id, group_id, call_id, seq,
                None, None, None, None, None, None, None, None, None, None, digit,
            ))
    elif kind in _SIMPLE_TYPES:
        return _new(Event, (
            event_id, kind, ts, switch_id, user_id, group_id, call_id, seq,
            None, None, None, None, None, None, None, None, None, None, None,
        ))
    elif kind == CALL_RELEASED:
        cause = raw.get("cause")
        releasing = raw.get("releasing_party")
        if type(cause) is str and cause and (releasing is None or releasing in _RELEASING):
            return _new(Event, (
                event_id, kind, ts, switch_id, user_id, group_id, call_id, seq,
                None, None, None, None, None, None, None, None, cause, releasing, None,
            ))
    elif kind == CALL_DIALED:
        called = raw.get("called_number")
        category = raw.get("call_category")
        if type(called) is str and called and type(category) is str and category in _CATEGORIES:
            return _new(Event, (
                event_id, kind, ts, switch_id, user_id, group_id, call_id, seq,
                None, None, called, None, None, None, None, category, None, None, None,
            ))
    elif kind == CALL_STARTED:
        direction = raw.get("direction")
        calling = raw.get("calling_number")
        called = raw.get("called_number")
        network = raw.get("network_call_id")
        related = raw.get("related_call_id")
        reason = raw.get("related_reason")
        zone = raw.get("user_timezone")
        if (
            type(direction) is str and direction in DIRECTIONS
            and (calling is None or type(calling) is str)
            and (called is None or type(called) is str)
            and (network is None or type(network) is str)
            and (related is None or type(related) is str)
            and (reason is None or type(reason) is str)
            and (zone is None or type(zone) is str)
            and not (related is None and reason is not None)
        ):
            return _new(Event, (
                event_id, kind, ts, switch_id, user_id, group_id, call_id, seq,
                direction, calling, called, network, related, reason, zone,
                None, None, None, None,
            ))
    return None


_new = tuple.__new__
_fromisoformat = datetime.fromisoformat
_RELEASING: Final = ("local", "remote")


def _decode_checked(raw: Any) -> Event:
    if not isinstance(raw, Mapping):
        raise EventDecodeError(f"an event must be an object, got {type(raw).__name__}")
    kind = raw.get("type")
    if type(kind) is not str or kind not in EVENT_TYPES:
        raise EventDecodeError(f"unknown event type {kind!r}")
    seq = raw.get("seq")
    if type(seq) is not int or seq < 0:
        raise EventDecodeError(f"field 'seq' must be an integer >= 0, got {seq!r}")
    return Event(
        _text(raw, "event_id"), kind, _timestamp(raw.get("ts")), _text(raw, "switch_id"),
        _text(raw, "user_id"), _text(raw, "group_id"), _text(raw, "call_id"), seq,
        **_typed_fields(kind, raw),
    )
