"""The worker's table (streams/state_codec.py): a user's state as pieces named by a
manifest, written as they change, rebuilt exactly, and never torn by a crash."""

from __future__ import annotations

import pytest

from streams.deadletter import Origin
from streams.engine import Engine, UserState
from streams.errors import WorkerError
from streams.events import LegKey
from streams.simulate import SimulationOptions, iter_events
from streams.state_codec import (
    FORMAT_VERSION,
    INLINE_PIECES,
    ISSUED,
    LEG,
    MANIFEST,
    StateBuilder,
    Written,
    _event_part,
    _leg_parts,
    decode_leg,
    decode_value,
    decode_watermark,
    encode_leg,
    encode_value,
    partition_of,
    pieces_of,
    user_of,
    user_writes,
)
from tests.builders import ALICE, LegScript, at, events_of, settings, state_fields

Writes = list[tuple[bytes, bytes | None]]
MANIFEST_KEY = ALICE.encode() + b"\x00M"


def checkpoint(
    engine: Engine, written: dict[str, Written], inline: int = INLINE_PIECES
) -> Writes:
    """The writes persisting the engine's changes since the last checkpoint, in order
    (users of at most `inline` pieces hold them in their manifests)."""
    out: Writes = []
    for user_id, state in engine.take_changed().items():
        writes, now = user_writes(7, user_id, written.get(user_id), state, inline_pieces=inline)
        out += writes
        if now is None:
            written.pop(user_id, None)
        else:
            written[user_id] = now
    return out


def apply(table: dict[bytes, bytes], writes: Writes) -> None:
    for key, value in writes:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


def rebuilt(table: dict[bytes, bytes]) -> tuple[dict[str, UserState], list[bytes]]:
    builder = StateBuilder()
    for key, value in table.items():
        assert partition_of(value) == 7
        builder.add(key, value)
    states, _, garbage = builder.build()
    return states, garbage


def day() -> tuple[Engine, list]:
    config = settings(correction_window_seconds=120, redelivery_horizon_seconds=600)
    options = SimulationOptions(users=8, seed=5, resend_rate=0.05, disorder_ms=3000)
    return Engine(config), list(iter_events(config, options))


# pieces under keys of their own (0), in the manifest while a user has one piece (users
# cross between the two all the time), as the worker has it
INLINE = pytest.mark.parametrize("inline", [0, 1, INLINE_PIECES])


@INLINE
def test_the_table_rebuilds_every_user_at_every_checkpoint(inline: int) -> None:
    engine, events = day()
    table: dict[bytes, bytes] = {}
    written: dict[str, Written] = {}
    checked = held = 0
    for number, event in enumerate(events, 1):
        engine.feed(event)
        if number % 97 == 0:
            apply(table, checkpoint(engine, written, inline))
            states, garbage = rebuilt(table)
            assert garbage == []
            assert {u: state_fields(s) for u, s in states.items()} == {
                u: state_fields(s) for u, s in engine.users.items()
            }
            checked += 1
            held += sum(pieces_of(s) > len(written[u].keys()) for u, s in states.items())
    engine.finish()
    apply(table, checkpoint(engine, written, inline))
    assert checked > 20
    assert (held > 20) if inline else (held == 0)  # users with pieces in their manifests
    states, garbage = rebuilt(table)
    assert garbage == [] and states.keys() == engine.users.keys()
    assert all(state_fields(states[u]) == state_fields(engine.users[u]) for u in states)


@INLINE
def test_a_crash_part_way_through_a_checkpoint_leaves_each_user_whole(inline: int) -> None:
    """Whatever prefix of a checkpoint's writes reached the table, each user is either
    as at the checkpoint before or as at this one, never a mix; the rest is garbage."""
    engine, events = day()
    table: dict[bytes, bytes] = {}
    written: dict[str, Written] = {}
    crashes = 0
    for start in range(0, len(events), 37):
        before = {u: state_fields(s) for u, s in engine.users.items()}
        for event in events[start:start + 37]:
            engine.feed(event)
        writes = checkpoint(engine, written, inline)
        after = {u: state_fields(s) for u, s in engine.users.items()}
        for cut in range(0, len(writes), max(1, len(writes) // 7)):
            torn = dict(table)
            apply(torn, writes[:cut])
            states, _ = rebuilt(torn)
            for user_id, state in states.items():
                assert state_fields(state) in (before.get(user_id), after.get(user_id)), user_id
            crashes += 1
        apply(table, writes)
    assert crashes > 100


def test_garbage_after_a_crash_is_deleted_by_the_next_checkpoint() -> None:
    engine, events = day()
    table: dict[bytes, bytes] = {}
    written: dict[str, Written] = {}
    half = len(events) // 2
    for event in events[:half]:
        engine.feed(event)
    apply(table, checkpoint(engine, written, 0))
    for event in events[half:half + 40]:
        engine.feed(event)
    writes = checkpoint(engine, written, 0)
    pieces = [i for i, (key, value) in enumerate(writes)
              if value is not None and user_of(key)[1] != MANIFEST]
    assert len(pieces) > 2
    apply(table, writes[:pieces[-1] + 1])  # every new piece out, the last manifest not
    builder = StateBuilder()
    for key, value in table.items():
        builder.add(key, value)
    _, _, garbage = builder.build()
    assert garbage
    apply(table, [(key, None) for key in garbage])
    assert rebuilt(table)[1] == []


def test_an_event_writes_its_leg_and_the_manifest_only() -> None:
    config = settings(correction_window_seconds=120)
    calls = [LegScript(f"a{n}").inbound(10 * n).answer(10 * n + 1).release(10 * n + 5)
             for n in range(6)]
    engine = Engine(config)
    written: dict[str, Written] = {}
    for event in events_of(*calls):
        engine.feed(event)
    table: dict[bytes, bytes] = {}
    apply(table, checkpoint(engine, written))
    assert len([k for k in table if user_of(k)[1] == LEG]) == 6
    engine.feed(LegScript("b1").outbound(57).events[0])  # before a5 settles: nothing issued
    writes = checkpoint(engine, written)
    assert [user_of(k)[1] for k, v in writes if v is not None] == [LEG, MANIFEST]


def test_state_of_another_format_is_refused() -> None:
    value = bytearray(encode_value(3, ("due", False)))
    value[4] = 2  # the format byte
    with pytest.raises(WorkerError, match=r"state format 2 is not one this worker reads"):
        partition_of(bytes(value))


def test_state_of_the_format_before_is_read_with_every_piece_under_its_own_key() -> None:
    """A worker upgraded from format 5 (no pieces in manifests) reads its table: users
    and watermarks as they were; its next change of a small user moves the pieces into
    the manifest and deletes their keys. Format 4 is refused."""
    assert FORMAT_VERSION == 6

    def format_(version: int, partition: int, value: object) -> bytes:
        encoded = bytearray(encode_value(partition, value))
        encoded[4] = version
        return bytes(encoded)

    config = settings(correction_window_seconds=120)
    engine = Engine(config)
    for event in events_of(LegScript("a1").inbound(0).answer(1).release(5)):
        engine.feed(event)
    written: dict[str, Written] = {}
    table: dict[bytes, bytes] = {}
    apply(table, checkpoint(engine, written, 0))
    table = {
        key: format_(5, 7, decode_value(value)) if user_of(key)[1] == MANIFEST else value
        for key, value in table.items()
    }
    builder = StateBuilder()
    for key, value in table.items():
        builder.add(key, value)
    states, restored, garbage = builder.build()
    (user_id,) = states
    assert state_fields(states[user_id]) == state_fields(engine.users[user_id])
    assert garbage == [] and len(restored[user_id].keys()) == 1
    engine = Engine(config, states)
    engine.advance(20_000)  # the call is issued: its CDR and tombstones replace its leg
    writes, _ = user_writes(7, user_id, restored[user_id], engine.users[user_id], {})
    assert [user_of(key)[1] for key, value in writes if value is not None] == [MANIFEST]
    assert [key for key, value in writes if value is None] == sorted(restored[user_id].keys())
    apply(table, writes)
    assert [user_of(key)[1] for key in table] == [MANIFEST]
    assert state_fields(rebuilt(table)[0][user_id]) == state_fields(engine.users[user_id])

    assert decode_watermark(format_(5, 7, (5000, {"c": 4000}, {"c": 12}))) == (
        5000, {"c": 4000}, {"c": 12}
    )
    with pytest.raises(WorkerError, match=r"state format 4 is not one this worker reads"):
        StateBuilder().add(b"alice\x00M", format_(4, 7, (1000, True, ())))


def test_a_small_user_writes_one_record_a_change_and_one_deletion_at_the_end() -> None:
    """A call's user (its legs, then its CDR and tombstones) writes its manifest alone at
    each checkpoint that changed it, and leaves the table by one deletion."""
    config = settings(correction_window_seconds=120)
    engine = Engine(config)
    written: dict[str, Written] = {}
    table: dict[bytes, bytes] = {}
    call = LegScript("a1").outbound(0).keys("*712002", 1).dial(4).answer(5).release(60)
    ring = LegScript("r1").inbound(70).answer(71).release(75)
    for event in events_of(call, ring):
        engine.feed(event)
        writes = checkpoint(engine, written)
        assert [user_of(key)[1] for key, _ in writes] in ([], [MANIFEST])
        apply(table, writes)
        assert list(table) == [MANIFEST_KEY]
        assert state_fields(rebuilt(table)[0][ALICE]) == state_fields(engine.users[ALICE])
        again, _ = user_writes(7, ALICE, written[ALICE], engine.users[ALICE])
        assert again == []  # nothing changed since: nothing written
    engine.advance(at(100))  # both issued, their legs kept for the correction window
    writes = checkpoint(engine, written)
    assert [key for key, _ in writes] == [MANIFEST_KEY]
    apply(table, writes)
    (state,) = rebuilt(table)[0].values()
    assert len(state.issued) == 2 and state_fields(state) == state_fields(engine.users[ALICE])
    engine.advance(at(400))  # the correction window is over: its tombstones stay
    writes = checkpoint(engine, written)
    assert [key for key, _ in writes] == [MANIFEST_KEY]
    apply(table, writes)
    (state,) = rebuilt(table)[0].values()
    assert not state.issued and state.tombstones and not state.legs
    engine.advance(at(4000))  # past the redelivery horizon: the user leaves memory
    writes = checkpoint(engine, written)
    assert writes == [(MANIFEST_KEY, None)]
    apply(table, writes)
    assert table == {}


def test_a_user_crossing_the_limit_moves_its_pieces_both_ways() -> None:
    """A user that grows past INLINE_PIECES gets its pieces under keys of their own, and
    back into its manifest as it shrinks; the table holds it exactly at each step, and a
    crash between the manifest and the deletions leaves garbage only."""
    config = settings(correction_window_seconds=120)
    calls = [LegScript(f"a{n}").inbound(10 * n).answer(10 * n + 1).release(10 * n + 5)
             for n in range(INLINE_PIECES + 2)]
    engine = Engine(config)
    written: dict[str, Written] = {}
    table: dict[bytes, bytes] = {}
    kinds: list[list[bytes]] = []
    for event in events_of(*calls):
        engine.feed(event)
        writes = checkpoint(engine, written)
        kinds.append([user_of(key)[1] for key, value in writes if value is not None])
        apply(table, writes)
        assert state_fields(rebuilt(table)[0][ALICE]) == state_fields(engine.users[ALICE])
    moved_out = [k for k in kinds if len(k) > INLINE_PIECES + 1]  # every piece at once
    assert moved_out and moved_out[0][-1] == MANIFEST and MANIFEST not in moved_out[0][:-1]
    engine.advance(at(10 * len(calls) + 20))  # all issued, legs kept for corrections
    apply(table, checkpoint(engine, written))
    assert state_fields(rebuilt(table)[0][ALICE]) == state_fields(engine.users[ALICE])
    assert {user_of(k)[1] for k in table} == {LEG, ISSUED, MANIFEST}
    now = 10 * len(calls) + 20
    while pieces_of(engine.users[ALICE]) > INLINE_PIECES:  # the first calls leave memory
        now += 1
        engine.advance(at(now))
    shrunk = engine.users[ALICE]
    assert shrunk.issued
    writes = checkpoint(engine, written)
    assert [user_of(key)[1] for key, value in writes if value is not None] == [MANIFEST]
    deleted = [key for key, value in writes if value is None]
    assert deleted and set(deleted) == set(table) - {MANIFEST_KEY}
    torn = dict(table)
    apply(torn, writes[:1])  # the manifest out, the deletions lost
    states, garbage = rebuilt(torn)
    assert state_fields(states[ALICE]) == state_fields(shrunk) and garbage == sorted(deleted)
    apply(table, writes)
    assert list(table) == [MANIFEST_KEY]


def test_a_grown_leg_reuses_its_written_parts_and_reads_back_whole() -> None:
    """A leg that gains events is written from the parts already encoded plus the new
    ones: the same bytes as encoding it from scratch, and it decodes to the same leg,
    origins and all."""
    config = settings()
    events = events_of(LegScript("a1").outbound(0).keys("*712002", 1).dial(4).answer(5).release(60))
    engine = Engine(config)
    written: dict[str, Written] = {}
    origins = [Origin("call-events", 2, 40 + n) for n in range(len(events))]
    origins[1] = None  # an event from a file has none
    for count, (event, origin) in enumerate(zip(events, origins, strict=True), start=1):
        engine.feed(event, origin)
        if count in (2, 5, len(events)):
            checkpoint(engine, written)
    record = next(iter(written.values())).legs[LegKey("sw1", "a1")]
    leg = record.leg
    assert len(leg.events) == len(events) and leg.origins == tuple(origins)
    scratch = [
        _event_part(event, origin) for event, origin in zip(leg.events, leg.origins, strict=True)
    ]
    assert record.parts == scratch
    assert encode_leg(7, leg, record.parts) == encode_leg(7, leg, scratch)
    assert decode_leg(encode_leg(7, leg, record.parts)) == leg
    closed = leg.closed_now()
    assert decode_leg(encode_leg(7, closed, _leg_parts(closed, record))) == closed


def test_a_leg_piece_that_is_not_a_leg_is_refused() -> None:
    builder = StateBuilder()
    builder.add(b"alice\x00M", encode_value(7, (None, False, (b"alice\x00Lx",))))
    builder.add(b"alice\x00Lx", encode_value(7, ("not", "a", "leg")))
    with pytest.raises(WorkerError, match="does not hold a leg"):
        builder.build()


def test_the_parts_kept_for_a_call_cost_their_size() -> None:
    """Event parts stay in memory as long as their call: each must take about its own
    length, not the 4 KiB output buffer orjson 3.12+ hands back for any document (that
    was 4 KB for every event a worker held)."""
    import tracemalloc

    events = events_of(LegScript("a1").outbound(0).keys("*712002", 1).dial(4).answer(5).release(60))
    origin = Origin("call-events", 2, 40)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        parts = [_event_part(event, origin) for event in events * 50]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    payload = sum(len(part) for part in parts)
    assert held < 2 * payload + 100 * len(parts), (held, payload)
