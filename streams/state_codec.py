"""The worker's table: each user's engine state as pieces named by a per-user manifest,
so that a change writes what changed, and a crash never leaves a user half written.

A user's state is its legs, the CDRs it has issued (latest version, while the call is in
memory), its tombstones and two scalars (when it is next due, whether a call waits).
Each leg and each issued CDR is a piece of its own, the tombstones together are one
piece, and every piece's table key ends with a digest of its value: a changed piece is a
new key, never an overwrite. The user's manifest (`<user_id> NUL M`) holds the scalars,
the keys of its pieces, and the offsets its state has applied (per event topic, the last
offset of the user's partition whose event is in this state). A checkpoint writes, for
each changed user and in this order: the new pieces, then the manifest, then deletions of
the pieces the manifest no longer names. All of a user's keys are in one changelog
partition, so a crash part-way leaves either the old manifest with all its pieces, or the
new one with all of its; what is not named by a manifest is garbage, deleted at the next
checkpoint after a restore.

An event changes one leg, so it writes that leg and a small manifest, however many calls
the user has in memory. (Whole-user values, an earlier format, made the changelog grow
with the state: each checkpoint rewrote every changed user entirely.) A small user, of
at most INLINE_PIECES pieces (most users: a call's two or three legs, then its CDR and
tombstones), holds them in its manifest's value instead: one record a change, and one
deletion when it leaves memory; the manifest is one key, so it is never torn either.

A leg piece is JSON (orjson): its key, whether it was closed, and an array of its events,
each as its field values and its origin. An event's part is encoded once, when its leg is
first written with it, and kept: a leg that gained an event writes the parts it had plus
the new one, instead of pickling every event again (a leg of a long call has dozens,
and pickling them took most of a checkpoint's time).

A value is 4 bytes of partition number, 1 byte of format version, then a pickle (a leg:
its JSON). The partition lets a worker rebuild each partition's engine from the table
after a restart or a rebalance without knowing the producers' partitioner. The format
version guards upgrades: a worker reads its own format and the one before it, and refuses
any other (reset the changelog, or replay, to move on). Watermarks are kept under their
own keys, one per partition: its event time, the largest ts read from each topic, and the
offsets every user's state in the table has applied.

The applied offsets exist because the committed consumer offsets can be far behind the
table: a checkpoint persists the state, and only a later commit takes its offsets. A
worker restarted after a crash reads again from the committed offsets, and over a backlog
that can be hours of event time that the table already has, calls whose tombstones have
long expired (see `streams.engine`). The offsets tell it which of those events to pass
over instead of taking them for new calls.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.cdr import Cdr
from streams.deadletter import Origin
from streams.engine import Tombstone, UserState
from streams.errors import WorkerError
from streams.events import Event, LegKey
from streams.legs import Leg
from streams.timefmt import Millis

# 2: events, legs, tombstones, origins pickled as value classes, not tuples
# 3: a manifest per user naming its pieces (legs, issued CDRs, tombstones)
# 4: legs as JSON, built from each event's part
# 5: applied offsets in manifests and watermarks
# 6: a small user's pieces in its manifest's value (5 is read as having none there)
FORMAT_VERSION = 6
READABLE_FORMATS = (5, 6)
WATERMARK_PREFIX = b"\x00watermark/"
_HEADER = struct.Struct(">IB")
_SEPARATOR = b"\x00"
MANIFEST, LEG, ISSUED, TOMBSTONES = b"M", b"L", b"I", b"T"


def encode_value(partition: int, value: object) -> bytes:
    return _HEADER.pack(partition, FORMAT_VERSION) + pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def partition_of(value: bytes) -> int:
    partition, version = _HEADER.unpack_from(value)
    if version not in READABLE_FORMATS:
        raise WorkerError(
            f"state format {version} is not one this worker reads {READABLE_FORMATS}: "
            "reset the changelog"
        )
    return int(partition)


def decode_value(value: bytes) -> Any:
    partition_of(value)
    return pickle.loads(value[_HEADER.size:])


def user_of(key: bytes) -> tuple[str, bytes]:
    """The user and the kind of entry (M, L, I or T) of a state key."""
    user, separator, rest = key.partition(_SEPARATOR)
    if not separator or not rest:
        raise WorkerError(f"table key {key!r} is not a user state key")
    return user.decode(), rest[:1]


def manifest_key(user_id: str) -> bytes:
    return user_id.encode() + _SEPARATOR + MANIFEST


def _event_part(event: Event, origin: Origin | None) -> bytes:
    """An event's part of its leg's value. Parts are kept for as long as their call is in
    memory, so each is copied to its own size: orjson (3.12 on) returns its whole output
    buffer, at least 4 KiB, for even a 100-byte document (see docs/decisions.md)."""
    where = None if origin is None else (origin.source, origin.partition, origin.offset)
    return b"".join((orjson.dumps((event.values(), where)), b""))


def encode_leg(partition: int, leg: Leg, parts: list[bytes]) -> bytes:
    """A leg piece's value, from the parts of its events (`_event_part`, in order)."""
    head = orjson.dumps((tuple(leg.key), leg.closed))
    return b"".join((
        _HEADER.pack(partition, FORMAT_VERSION), head[:-1], b",[", b",".join(parts), b"]]",
    ))


def decode_leg(value: bytes) -> Leg:
    partition_of(value)
    (switch_id, call_id), closed, parts = orjson.loads(value[_HEADER.size:])
    events = tuple(Event(*values) for values, _ in parts)
    origins = tuple(None if where is None else Origin(*where) for _, where in parts)
    return Leg(LegKey(switch_id, call_id), events, origins, bool(closed))


def _leg_parts(leg: Leg, before: WrittenLeg | None) -> list[bytes]:
    """The parts of a leg's events: those already written (legs only grow) and the new."""
    done = 0
    parts: list[bytes] = []
    if before is not None:
        old = before.leg.events
        if leg.events[: len(old)] == old and leg.origins[: len(old)] == before.leg.origins:
            done, parts = len(old), list(before.parts)
    events, origins = leg.events, leg.origins
    parts.extend(_event_part(events[i], origins[i]) for i in range(done, len(events)))
    return parts


def _piece_key(user_id: str, kind: bytes, value: bytes) -> bytes:
    digest = hashlib.blake2b(value, digest_size=10).hexdigest().encode()
    return user_id.encode() + _SEPARATOR + kind + digest


# topic -> the last offset of the user's (or partition's) events applied to the state
Applied = dict[str, int]
# a user's scalars (due, waiting), the keys of its pieces, the offsets applied
Manifest = tuple[Millis | None, bool, tuple[bytes, ...], Applied]
# A user with at most this many pieces (legs, issued CDRs, its tombstones) holds them in
# its manifest's value rather than under keys of their own: one record per change and
# one deletion when the user leaves memory, instead of a record per piece changed, the
# manifest and a deletion per piece replaced. Most users are that small (a call of two
# or three legs, then its CDR and tombstones for the correction window); a user with
# more calls in memory has its pieces under their own keys, so that an event writes one
# leg and a small manifest however many calls the user holds.
INLINE_PIECES = 4


@dataclass(frozen=True, slots=True)
class WrittenLeg:
    """A leg as the table holds it: the leg, its key (None: in the manifest's value),
    and its events' encoded parts."""

    leg: Leg
    key: bytes | None
    parts: list[bytes]


@dataclass
class Written:
    """What the table holds for a user: its state's pieces (by identity) and their keys
    (None: held in the manifest's value, see INLINE_PIECES)."""

    legs: dict[LegKey, WrittenLeg] = field(default_factory=dict)
    issued: dict[str, tuple[Cdr, bytes | None]] = field(default_factory=dict)
    tombstones: tuple[dict[LegKey, Tombstone], bytes | None] | None = None
    manifest: Manifest | None = None

    def keys(self) -> set[bytes]:
        """The keys of the pieces stored under keys of their own."""
        keys = {leg.key for leg in self.legs.values() if leg.key is not None}
        keys.update(key for _, key in self.issued.values() if key is not None)
        if self.tombstones is not None and self.tombstones[1] is not None:
            keys.add(self.tombstones[1])
        return keys


def pieces_of(state: UserState) -> int:
    return len(state.legs) + len(state.issued) + (1 if state.tombstones else 0)


def user_writes(
    partition: int, user_id: str, before: Written | None, after: UserState | None,
    applied: Applied | None = None, *, inline_pieces: int = INLINE_PIECES,
) -> tuple[list[tuple[bytes, bytes | None]], Written | None]:
    """The table writes (key, value; None deletes), in order, that take a user from what
    was written, `before`, to `after` (None: the user left memory), whose state has
    applied the events up to the offsets `applied`; and what is written then. A user of
    at most `inline_pieces` pieces has them in its manifest's value."""
    before = before or Written()
    if after is None:  # the manifest first: without it, the pieces are garbage
        gone = [manifest_key(user_id)] if before.manifest is not None else []
        return [(key, None) for key in gone + sorted(before.keys())], None
    if pieces_of(after) <= inline_pieces:
        return _inline_writes(partition, user_id, before, after, applied)
    writes: list[tuple[bytes, bytes | None]] = []
    now = Written()

    def piece(kind: bytes, value: object) -> bytes:
        encoded = encode_value(partition, value)
        key = _piece_key(user_id, kind, encoded)
        writes.append((key, encoded))
        return key

    for leg_key, leg in after.legs.items():
        seen = before.legs.get(leg_key)
        if seen is not None and seen.leg is leg and seen.key is not None:
            now.legs[leg_key] = seen
            continue
        parts = _leg_parts(leg, seen)
        encoded = encode_leg(partition, leg, parts)
        key = _piece_key(user_id, LEG, encoded)
        writes.append((key, encoded))
        now.legs[leg_key] = WrittenLeg(leg, key, parts)
    for cdr_id, cdr in after.issued.items():
        seen_cdr = before.issued.get(cdr_id)
        now.issued[cdr_id] = (
            seen_cdr
            if seen_cdr is not None and seen_cdr[0] is cdr and seen_cdr[1] is not None
            else (cdr, piece(ISSUED, cdr))
        )
    if after.tombstones:
        seen_tombstones = before.tombstones
        if (
            seen_tombstones is not None
            and seen_tombstones[1] is not None
            and seen_tombstones[0] == after.tombstones
        ):
            now.tombstones = seen_tombstones
        else:
            now.tombstones = (dict(after.tombstones), piece(TOMBSTONES, _stones(after)))
    keys = tuple(sorted(now.keys()))
    now.manifest = (after.due, after.waiting, keys, dict(applied or {}))
    if now.manifest != before.manifest:
        writes.append((manifest_key(user_id), encode_value(partition, now.manifest)))
    writes.extend((key, None) for key in sorted(before.keys() - set(keys)))
    return writes, now


def _stones(state: UserState) -> list[tuple[tuple[str, ...], Tombstone]]:
    return [(tuple(key), stone) for key, stone in state.tombstones.items()]


def _pieces_written(written: Written) -> int:
    return len(written.legs) + len(written.issued) + (written.tombstones is not None)


def _inline_writes(
    partition: int, user_id: str, before: Written, after: UserState, applied: Applied | None,
) -> tuple[list[tuple[bytes, bytes | None]], Written]:
    """A small user's writes: its manifest with every piece in its value (written when
    anything changed), then deletions of the pieces it had under keys of their own."""
    now = Written()
    changed = before.manifest is None or _pieces_written(before) != pieces_of(after)
    for leg_key, leg in after.legs.items():
        seen = before.legs.get(leg_key)
        if seen is not None and seen.leg is leg:
            changed = changed or seen.key is not None
            now.legs[leg_key] = WrittenLeg(leg, None, seen.parts)
        else:
            changed = True
            now.legs[leg_key] = WrittenLeg(leg, None, _leg_parts(leg, seen))
    for cdr_id, cdr in after.issued.items():
        seen_cdr = before.issued.get(cdr_id)
        changed = changed or seen_cdr is None or seen_cdr[0] is not cdr or seen_cdr[1] is not None
        now.issued[cdr_id] = (cdr, None)
    if after.tombstones:
        seen_tombstones = before.tombstones
        changed = changed or (
            seen_tombstones is None
            or seen_tombstones[1] is not None
            or seen_tombstones[0] != after.tombstones
        )
        now.tombstones = (dict(after.tombstones), None)
    now.manifest = (after.due, after.waiting, (), dict(applied or {}))
    writes: list[tuple[bytes, bytes | None]] = []
    if changed or now.manifest != before.manifest:  # every piece goes again with it
        carried = [(LEG, encode_leg(partition, w.leg, w.parts)) for w in now.legs.values()]
        carried += [(ISSUED, encode_value(partition, cdr)) for cdr in after.issued.values()]
        if after.tombstones:
            carried.append((TOMBSTONES, encode_value(partition, _stones(after))))
        value = encode_value(partition, (*now.manifest, tuple(carried)))
        writes.append((manifest_key(user_id), value))
    writes.extend((key, None) for key in sorted(before.keys()))
    return writes, now


class StateBuilder:
    """Rebuilds users' states from a table's entries (in any order): each user as its
    manifest names it (and holds it, see INLINE_PIECES). Entries no manifest names are
    garbage (`garbage`)."""

    def __init__(self) -> None:
        self._manifests: dict[str, Manifest] = {}
        self._carried: dict[str, tuple[tuple[bytes, bytes], ...]] = {}
        self._pieces: dict[bytes, bytes] = {}

    def add(self, key: bytes, value: bytes) -> None:
        user_id, kind = user_of(key)
        if kind == MANIFEST:
            due, waiting, keys, *rest = decode_value(value)
            self._manifests[user_id] = (due, bool(waiting), tuple(keys), _applied_of(rest))
            self._carried[user_id] = tuple(rest[1]) if len(rest) > 1 else ()
        elif kind in (LEG, ISSUED, TOMBSTONES):
            self._pieces[key] = value
        else:
            raise WorkerError(f"table key {key!r} is of no known kind")

    def build(self) -> tuple[dict[str, UserState], dict[str, Written], list[bytes]]:
        """The users' states, what the table holds for each, and the garbage keys."""
        states: dict[str, UserState] = {}
        written: dict[str, Written] = {}
        named: set[bytes] = set()
        for user_id in sorted(self._manifests):
            due, waiting, keys, applied = self._manifests[user_id]
            record = Written(manifest=(due, waiting, keys, applied))
            for key in keys:
                value = self._pieces.get(key)
                if value is None:
                    raise WorkerError(f"the state of {user_id} names a missing entry {key!r}")
                named.add(key)
                self._add_piece(record, user_of(key)[1], key, value, user_id)
            for kind, value in self._carried[user_id]:
                self._add_piece(record, kind, None, value, user_id)
            states[user_id] = UserState(
                {k: written.leg for k, written in record.legs.items()},
                {k: cdr for k, (cdr, _) in record.issued.items()},
                dict(record.tombstones[0]) if record.tombstones is not None else {},
                due, waiting,
            )
            written[user_id] = record
        garbage = sorted(set(self._pieces) - named)
        return states, written, garbage

    @staticmethod
    def _add_piece(
        record: Written, kind: bytes, key: bytes | None, value: bytes, user_id: str
    ) -> None:
        """A piece of `kind` stored under `key` (None: in the manifest's value)."""
        where = f"table key {key!r}" if key is not None else f"the manifest of {user_id}"
        if kind == LEG:
            try:
                leg = decode_leg(value)
            except (orjson.JSONDecodeError, TypeError, ValueError):
                raise WorkerError(f"{where} does not hold a leg") from None
            parts = [
                _event_part(event, origin)
                for event, origin in zip(leg.events, leg.origins, strict=True)
            ]
            record.legs[leg.key] = WrittenLeg(leg, key, parts)
            return
        piece = decode_value(value)
        if kind == ISSUED and isinstance(piece, Cdr):
            record.issued[piece.cdr_id] = (piece, key)
        elif kind == TOMBSTONES and isinstance(piece, list):
            stones = {LegKey(*leg): stone for leg, stone in piece}
            record.tombstones = (stones, key)
        else:
            raise WorkerError(f"{where} does not hold what its kind says")


def watermark_key(partition: int) -> bytes:
    return WATERMARK_PREFIX + str(partition).encode()


def encode_watermark(
    partition: int, watermark: Millis, read_up_to: Mapping[str, Millis], applied: Applied
) -> bytes:
    """A partition's event time, the largest ts read from each of its topics, and the
    offsets of each topic that every user's state in the table has applied."""
    return encode_value(partition, (watermark, dict(read_up_to), dict(applied)))


def decode_watermark(value: bytes) -> tuple[Millis, dict[str, Millis], Applied]:
    watermark, read_up_to, *rest = decode_value(value)
    return int(watermark), dict(read_up_to), _applied_of(rest)


def _applied_of(rest: list[Any]) -> Applied:
    """The applied offsets after a manifest's or watermark's other fields (format 4 has
    none)."""
    return {str(topic): int(offset) for topic, offset in (rest[0] if rest else {}).items()}
