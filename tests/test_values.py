"""The core's value classes spell out `__init__`, `__eq__`, `__hash__` and `__reduce__`
(a dataclass's generated methods stay interpreted in the compiled core, see
streams/native.py), so each repeats its field list. These tests derive the fields from
`dataclasses.fields` and check every spelled-out method against them, on values taken
from a simulated day: a field left out of any of them fails here."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from streams.cdr import Cdr, CodeEntry, LegSummary
from streams.deadletter import DeadLetter, Origin
from streams.dialing import EntryAttempt, Keyed
from streams.engine import Engine, Tombstone, UserState
from streams.events import Event
from streams.legs import Hold, Leg, LegFacts, leg_facts
from streams.settings import load_settings
from streams.simulate import SimulationOptions, iter_events


def samples() -> dict[type, list[Any]]:
    """Values of each class as the engine makes them over a simulated day with faults."""
    config = load_settings(None, environ={})
    found: dict[type, list[Any]] = {}

    def note(value: Any) -> None:
        bucket = found.setdefault(type(value), [])
        if len(bucket) < 400:
            bucket.append(value)

    engine = Engine(config)
    events = iter_events(config, SimulationOptions(users=8, seed=11, resend_rate=0.05,
                                                   disorder_ms=30_000))
    for number, event in enumerate(events):
        note(event)
        for out in engine.feed(event, Origin("call-events", 1, number)):
            note(out)
            if isinstance(out, DeadLetter) and out.origin is not None:
                note(out.origin)
            if isinstance(out, Cdr):
                for entry in out.account_code_entries:
                    note(entry)
                for summary in out.legs:
                    note(summary)
        if number % 50 == 0:
            for state in engine.users.values():
                note(state)
                for tombstone in state.tombstones.values():
                    note(tombstone)
                for leg in state.legs.values():
                    note(leg)
                    facts = leg_facts(leg, config)
                    note(facts)
                    for hold in facts.holds:
                        note(hold)
                    if facts.entry is not None:
                        note(facts.entry)
    note(Keyed("7", 1_000))
    note(Keyed("#", 2_000))
    return found


SAMPLES = samples()
CLASSES = [Event, Leg, Hold, LegFacts, Keyed, EntryAttempt, CodeEntry, LegSummary, Cdr,
           Origin, DeadLetter, Tombstone, UserState]


def field_values(value: Any) -> list[Any]:
    return [getattr(value, field.name) for field in dataclasses.fields(value)]


def variant(cls: type, index: int, value: Any) -> Any:
    """Another value for field `index` of a `cls`, of a type the field takes (the compiled
    core checks): another sample's where one differs, else `value` changed."""
    for other in SAMPLES[cls]:
        candidate = field_values(other)[index]
        if candidate != value:
            return candidate
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "~"
    if isinstance(value, tuple):
        return (*value, *value[:1])
    if isinstance(value, dict):
        return {}
    name = dataclasses.fields(cls)[index].name
    raise AssertionError(f"no sample of {cls.__name__} with another {name}: add one")


def same_hash(a: Any, b: Any) -> bool:
    try:
        return hash(a) == hash(b)
    except TypeError:  # a field holds a dict (a user's state, a dead letter's payload)
        return True


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_every_class_has_samples(cls: type) -> None:
    assert len(SAMPLES.get(cls, [])) >= 2, f"no {cls.__name__} made by the simulated day"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_built_from_its_fields_in_order_it_is_equal(cls: type) -> None:
    for value in SAMPLES[cls]:
        again = cls(*field_values(value))
        assert again == value and field_values(again) == field_values(value)
        if cls.__hash__ is not None:
            assert same_hash(again, value)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_equality_sees_every_field(cls: type) -> None:
    value = SAMPLES[cls][0]
    for index, field in enumerate(dataclasses.fields(value)):
        values = field_values(value)
        values[index] = variant(cls, index, values[index])
        assert cls(*values) != value, f"{cls.__name__}.__eq__ ignores {field.name}"


# what is pickled: the worker's table (legs, their events and origins, issued CDRs,
# tombstones) and what crosses a process (dead letters, users' states)
PICKLED = [Event, Leg, Hold, CodeEntry, LegSummary, Cdr, Origin, DeadLetter, Tombstone,
           UserState]


@pytest.mark.parametrize("cls", PICKLED, ids=lambda cls: cls.__name__)
def test_pickled_and_back_every_field_is_kept(cls: type) -> None:
    for value in SAMPLES[cls]:
        again = pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
        assert type(again) is cls
        assert field_values(again) == field_values(value)
