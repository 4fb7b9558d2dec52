"""What the engine keeps in memory for a call costs little: a worker holds every event of
a call until its correction window has passed, and a forgotten call's tombstones for the
redelivery horizon (docs/benchmarks.md, session 8)."""

from __future__ import annotations

import sys

import orjson

from streams.deadletter import Origin
from streams.engine import Engine
from streams.events import CALL_DIALED, decode_event
from streams.serialization import decode_event_message, encode_event_message
from tests.builders import LegScript, at, events_of, feed_all, settings

ORIGIN = Origin("call-events", 0, 7)


def script() -> LegScript:
    return LegScript("a1").outbound(0).keys("*712002", 1).dial(4).answer(5).release(60)


def test_events_of_a_call_share_their_texts_however_they_arrive() -> None:
    """Each message is decoded on its own, into strings of its own; the texts a call's
    events repeat (switch, user, group, call, type) are kept once."""
    events = events_of(script())
    for encoding in ("json", "avro"):
        decoded = [
            decode_event_message(encode_event_message(event, encoding), ORIGIN) for event in events
        ]
        assert decoded == events
        for field in ("switch_id", "user_id", "group_id", "call_id"):
            assert len({id(getattr(event, field)) for event in decoded}) == 1, (encoding, field)
        [dialed] = [event for event in decoded if event.type == CALL_DIALED]
        assert dialed.type is CALL_DIALED  # the module's constant, not a copy
    # the texts of one field of each type's events: each set in some event here
    zoned = [events[0].replace(user_timezone="America/Chicago"), *events[1:]]
    first, second = (
        [decode_event(orjson.loads(orjson.dumps(event.to_json_dict()))) for event in zoned]
        for _ in range(2)
    )
    for field in ("direction", "user_timezone", "call_category", "cause", "releasing_party"):
        [(one, other)] = [
            (getattr(a, field), getattr(b, field))
            for a, b in zip(first, second, strict=True) if getattr(a, field) is not None
        ]
        assert one is other, field


def test_a_user_left_with_tombstones_holds_no_emptied_tables() -> None:
    """A dict keeps its table when its items are deleted: the state of a user whose calls
    have left memory must not keep those of its legs and CDRs for the redelivery horizon."""
    engine = Engine(settings(max_call_hours=1))
    feed_all(engine, events_of(script()))
    engine.advance(at(65))
    [state] = engine.users.values()
    assert state.tombstones and not state.legs and not state.issued
    assert sys.getsizeof(state.legs) == sys.getsizeof({})
    assert sys.getsizeof(state.issued) == sys.getsizeof({})
