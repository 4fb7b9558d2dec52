"""The streaming shell's logic without Kafka: one engine per partition, fed from raw
messages, with per-partition event time and an idle flush by wall-clock time.

Event time of a partition (SPEC rule C8: the largest ts seen, per partition). The two
event topics are read independently, and after a restart or with a backlog one of them
can be read far ahead of the other; a leg's DTMF would then arrive long after its call's
release had been read. So a partition's event time is the largest ts seen only over the
topics that are caught up; while a topic still has messages waiting (its high-water mark
is past what was read), event time goes no further than the largest ts read from it.
In steady state both topics are caught up within a batch and this is exactly the largest
ts seen; with a backlog it is what file mode would see reading both in step.

A feed that resumes after a quiet spell (a restart, a paused switch, a file published in
bulk) can show one topic's messages seconds before the other's: a fetch saying "caught up"
only speaks of what has reached the broker. So for the first RESUME_HOLD_SECONDS of such a
burst, event time runs past a topic that has not delivered lately no faster than the wall
clock runs from the burst's first event: live traffic (whose ts keep pace with the wall
clock) is not held back, while hours of events published in a second cannot carry event
time past the other topic's messages of the same moment before they arrive.

After a restart, the worker reads again from the committed offsets, which can be far
behind the table (see `streams.state_codec`): a `Replay` of each restored partition says
which of the events read again its users' states already have, and those are passed over
(their ts still count for event time) until reading is past every offset the table names.

`streams.worker` wires this to Faust; tests drive it directly too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from streams.cdr import Cdr
from streams.deadletter import DeadLetter, Origin
from streams.engine import Engine, Output, UserState
from streams.serialization import decode_event_message
from streams.settings import Settings
from streams.state_codec import (
    WATERMARK_PREFIX,
    Applied,
    StateBuilder,
    Written,
    decode_watermark,
    encode_watermark,
    partition_of,
    user_writes,
    watermark_key,
)
from streams.timefmt import Millis

# The two topics are produced and fetched separately, so one can show its messages of a
# moment a little before the other does, even when both look caught up. So a topic still
# holds its partition's event time back to what was read from it while it has delivered
# within this many seconds of wall-clock time, and a burst begins when a partition has
# been quiet for this long (a restart, or a feed that resumes).
TOPIC_QUIET_SECONDS = 1.0
# For this long after a quiet spell, event time runs past a topic that has not delivered
# lately no faster than the wall clock (see the module's docstring).
RESUME_HOLD_SECONDS = 5.0

# (topic, partition) -> True while that topic partition has messages not yet read
Backlog = Callable[[str, int], bool]


def no_backlog(topic: str, partition: int) -> bool:
    return False


class Record(Protocol):
    """A consumed message as the processor reads it (a `Message`, or aiokafka's
    ConsumerRecord as the worker's consumer fetched it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


class Message(NamedTuple):
    """One consumed message: where it came from and its raw value."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(slots=True)
class PartitionClock:
    """When a partition last saw an event, by event time and by wall-clock time, and the
    largest ts read from each of its topics."""

    watermark: Millis | None = None
    wall: float = 0.0
    read_up_to: dict[str, Millis] = field(default_factory=dict)
    read_at: dict[str, float] = field(default_factory=dict)  # wall time of the last message
    burst_at: float = 0.0  # wall time of the first message after a quiet spell
    burst_ts: Millis | None = None  # ts of the first event read since then

    def event_time(
        self,
        topics: Iterable[str],
        partition: int,
        backlog: Backlog,
        wall: float,
        idle: bool = False,
    ) -> Millis | None:
        """The largest ts read, held back to the slowest topic that has a backlog or has
        delivered within the last TOPIC_QUIET_SECONDS (the other topic's messages of the
        same moment may still be on their way); early in a burst, past a quiet topic no
        faster than the wall clock from the burst's first event. `idle`: nothing has come
        for the idle time, so only a backlog holds event time back."""
        if not self.read_up_to:
            return None
        limit = max(self.read_up_to.values())
        since_burst = wall - self.burst_at
        for topic in topics:
            seen = self.read_up_to.get(topic)
            read_at = self.read_at.get(topic)
            recent = read_at is not None and wall - read_at < TOPIC_QUIET_SECONDS
            if backlog(topic, partition) or (recent and not idle):
                if seen is None:
                    return None
                limit = min(limit, seen)
            elif since_burst < RESUME_HOLD_SECONDS and not idle:
                if self.burst_ts is None:
                    return None
                paced = self.burst_ts + int(since_burst * 1000)
                limit = min(limit, paced if seen is None else max(seen, paced))
        return limit


@dataclass(slots=True)
class Counters:
    events: int = 0
    cdrs: int = 0
    dead_letters: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Replay:
    """The offsets a restored partition's state has applied: those of the whole
    partition (its watermark entry) and, beyond them, each user's (its manifest), with the
    largest of all by topic (past those, reading is new to every user)."""

    partition: Applied
    users: dict[str, Applied]
    until: Applied

    @staticmethod
    def of(partition: Applied, written: Mapping[str, Written]) -> Replay | None:
        users = {
            user_id: record.manifest[3]
            for user_id, record in written.items()
            if record.manifest is not None and record.manifest[3]
        }
        until = dict(partition)
        for applied in users.values():
            _raise(until, applied)
        return Replay(dict(partition), users, until) if until else None

    def has(self, topic: str, offset: int, user_id: str | None = None) -> bool:
        """Whether the state has the event at `offset` of `topic` (of `user_id`)."""
        if offset > self.until.get(topic, -1):
            return False
        if offset <= self.partition.get(topic, -1):
            return True
        applied = self.users.get(user_id) if user_id is not None else None
        return applied is not None and offset <= applied.get(topic, -1)

    def passed(self, positions: Mapping[str, int]) -> bool:
        """Whether reading (the last offset read, by topic) is past every offset named."""
        return all(positions.get(topic, -1) >= offset for topic, offset in self.until.items())


def _raise(applied: Applied, more: Applied) -> None:
    """Raise each topic's offset in `applied` to the one in `more`, where larger."""
    for topic, offset in more.items():
        applied[topic] = max(offset, applied.get(topic, -1))


def _at_least(applied: Applied, more: Applied | None) -> Applied:
    """`applied` with each topic's offset raised to the one in `more` (a copy)."""
    if not more:
        return applied
    merged = dict(applied)
    _raise(merged, more)
    return merged


class StateWrite(NamedTuple):
    """A table write: key and value (None deletes), on a partition."""

    partition: int
    key: bytes
    value: bytes | None


class StateChanges(NamedTuple):
    """A partition's changes taken at one checkpoint: entries to delete first (garbage
    left by a crash), the changed users' states, then its watermark entry; the offsets
    applied to the partition's states when taken, and for users restored with more, theirs
    (see `Replay`)."""

    partition: int
    garbage: list[bytes]
    users: list[tuple[str, UserState | None]]
    watermark: bytes | None
    applied: Applied
    replayed: dict[str, Applied]


class StreamProcessor:
    """Engines by partition. Not thread-safe: the worker calls it from one task."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.topics = (settings.kafka.call_events_topic, settings.kafka.dtmf_events_topic)
        self.engines: dict[int, Engine] = {}
        self.clocks: dict[int, PartitionClock] = {}
        self.counters = Counters()
        self.positions: dict[tuple[str, int], int] = {}
        # per partition: what the table holds for each user, and entries to delete
        # (pieces no manifest names, left by a crash part-way through a checkpoint)
        self.written: dict[int, dict[str, Written]] = {}
        self.garbage: dict[int, list[bytes]] = {}
        self.replays: dict[int, Replay] = {}  # restored partitions read again (see Replay)
        idle = settings.worker.idle_flush_seconds
        self.idle_seconds = settings.settle_seconds if idle is None else idle

    # ------------------------------------------------------------ state

    def restore(self, partitions: Iterable[int], table: Mapping[bytes, bytes], wall: float) -> None:
        """Build the engines of `partitions` from the table's values (one pass)."""
        wanted = set(partitions) - set(self.engines)
        if not wanted:
            return
        builders = {p: StateBuilder() for p in wanted}
        watermarks: dict[int, tuple[Millis, dict[str, Millis], Applied]] = {}
        for key, value in table.items():
            if value is None:
                continue
            partition = partition_of(value)
            if partition not in wanted:
                continue
            if key.startswith(WATERMARK_PREFIX):
                watermarks[partition] = decode_watermark(value)
            else:
                builders[partition].add(key, value)
        for partition in wanted:
            users, self.written[partition], self.garbage[partition] = builders[partition].build()
            engine = Engine(self.settings, users)
            watermark, read_up_to, applied = watermarks.get(partition, (None, {}, {}))
            replay = Replay.of(applied, self.written[partition])
            if replay is not None:
                self.replays[partition] = replay
            engine.watermark = watermark
            self.engines[partition] = engine
            self.clocks[partition] = PartitionClock(
                engine.watermark,
                wall,
                read_up_to,
                burst_at=wall,
                burst_ts=max(read_up_to.values(), default=None),
            )

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the engines of partitions this worker no longer has."""
        gone = set(partitions)
        for partition in gone:
            self.engines.pop(partition, None)
            self.clocks.pop(partition, None)
            self.written.pop(partition, None)
            self.garbage.pop(partition, None)
            self.replays.pop(partition, None)
        for position in [tp for tp in self.positions if tp[1] in gone]:
            del self.positions[position]

    def state_writes(self) -> Iterator[StateWrite]:
        """The table writes that persist every change since the last call, in the order
        they must be made: for each changed user, its new pieces, its manifest, then the
        pieces it no longer has (see streams/state_codec.py)."""
        for change in self.take_changes():
            for writes in self.writes_for(change):
                yield from writes

    def take_changes(self) -> list[StateChanges]:
        """What changed since the last call, by partition, as it is now: the users' states
        are immutable values, so they can be encoded (`writes_for`) while the engines go on.
        Changes must be encoded in the order taken, each call's before the next's."""
        taken: list[StateChanges] = []
        for partition, engine in self.engines.items():
            garbage = self.garbage.pop(partition, [])
            changed = engine.take_changed()
            if not (garbage or changed):
                continue
            applied = self._applied(partition)
            replay = self.replays.get(partition)
            replayed = {} if replay is None else {
                user_id: replay.users[user_id] for user_id in changed if user_id in replay.users
            }
            watermark = None
            if changed and engine.watermark is not None:
                watermark = encode_watermark(
                    partition, engine.watermark, self.clocks[partition].read_up_to, applied
                )
            users = list(changed.items())
            taken.append(StateChanges(partition, garbage, users, watermark, applied, replayed))
        return taken

    def _applied(self, partition: int) -> Applied:
        """The offsets every state of `partition` has applied: those read, or, while the
        events a restored state had are read again, the ones it was restored with."""
        applied = {
            topic: self.positions[(topic, partition)]
            for topic in self.topics
            if (topic, partition) in self.positions
        }
        replay = self.replays.get(partition)
        return applied if replay is None else _at_least(applied, replay.partition)

    def writes_for(self, change: StateChanges) -> Iterator[list[StateWrite]]:
        """The table writes of a partition's changes, in the order they must be made, a
        list at a time: the garbage's deletions, each changed user's (its new pieces, its
        manifest, then the pieces it no longer has), the watermark, and last the users
        that left memory (so that until the watermark names their offsets, their old
        manifests do). Each user is encoded as its list is asked for, so the caller can
        pause between them."""
        partition = change.partition
        yield [StateWrite(partition, key, None) for key in change.garbage]
        written = self.written.setdefault(partition, {})
        for user_id, state in change.users:
            if state is not None:
                yield self._user_writes(change, written, user_id, state)
        if change.watermark is not None:
            yield [StateWrite(partition, watermark_key(partition), change.watermark)]
        for user_id, state in change.users:
            if state is None:
                yield self._user_writes(change, written, user_id, None)

    @staticmethod
    def _user_writes(
        change: StateChanges, written: dict[str, Written], user_id: str, state: UserState | None
    ) -> list[StateWrite]:
        applied = _at_least(change.applied, change.replayed.get(user_id))
        writes, now = user_writes(change.partition, user_id, written.get(user_id), state, applied)
        if now is None:
            written.pop(user_id, None)
        else:
            written[user_id] = now
        return [StateWrite(change.partition, key, value) for key, value in writes]

    # ------------------------------------------------------------ events

    def handle(
        self, messages: Iterable[Record], wall: float, backlog: Backlog = no_backlog
    ) -> list[Output]:
        """Decode and feed a batch of messages, then move each partition's event time on;
        return what the engines issued. A message at or below the last offset read from
        its topic partition is passed over: Faust seeks back to the committed offsets
        (at the end of a table recovery, after a rebalance), and the engine, which has
        those events, must not take them again once their calls have left memory."""
        outputs: list[Output] = []
        counters = self.counters
        touched: set[int] = set()
        replays = self.replays
        positions = self.positions
        for message in messages:
            where = (message.topic, message.partition)
            if message.offset <= positions.get(where, -1):
                continue  # this engine has it: read again after Faust sought back
            positions[where] = message.offset
            engine = self.engines[message.partition]
            origin = Origin(message.topic, message.partition, message.offset)
            replay = replays.get(message.partition) if replays else None
            counters.events += 1
            counters.by_topic[message.topic] = counters.by_topic.get(message.topic, 0) + 1
            clock = self.clocks[message.partition]
            if wall - clock.wall >= TOPIC_QUIET_SECONDS:
                clock.burst_at = wall
                clock.burst_ts = None
            clock.wall = wall
            touched.add(message.partition)
            if message.value is None:
                if replay is None or not replay.has(message.topic, message.offset):
                    outputs.append(DeadLetter("message has no value", origin, ""))
                continue
            item = decode_event_message(message.value, origin)
            if isinstance(item, DeadLetter):
                if replay is None or not replay.has(message.topic, message.offset):
                    outputs.append(item)
                continue
            if clock.burst_ts is None:
                clock.burst_ts = item.ts
            seen = clock.read_up_to.get(message.topic)
            if seen is None or item.ts > seen:
                clock.read_up_to[message.topic] = item.ts
            clock.read_at[message.topic] = wall
            if replay is not None and replay.has(message.topic, message.offset, item.user_id):
                continue  # the restored state has it
            outputs.extend(engine.feed(item, origin, advance=False))
        for partition in touched & replays.keys():
            replay_done = replays[partition].passed(
                {topic: positions.get((topic, partition), -1) for topic in self.topics}
            )
            if replay_done:
                del replays[partition]
        for partition in sorted(touched):
            outputs.extend(self._advance(partition, backlog, wall))
        self._count(outputs)
        return outputs

    def _advance(
        self, partition: int, backlog: Backlog, wall: float, idle: bool = False
    ) -> list[Output]:
        clock = self.clocks[partition]
        target = clock.event_time(self.topics, partition, backlog, wall, idle)
        if target is None:
            return []
        clock.watermark = target if clock.watermark is None else max(clock.watermark, target)
        return self.engines[partition].advance(target)

    def idle_flush(self, wall: float, backlog: Backlog = no_backlog) -> list[Output]:
        """For partitions without events for the idle time and nothing waiting to be read,
        issue every call released so far (SPEC C8: after settle_seconds of idle wall-clock
        time), without moving event time on (see `Engine.flush_idle`)."""
        outputs: list[Output] = []
        for partition, engine in self.engines.items():
            clock = self.clocks[partition]
            idle = wall - clock.wall
            if idle < self.idle_seconds or any(backlog(t, partition) for t in self.topics):
                continue
            outputs.extend(self._advance(partition, backlog, wall, idle=True))  # largest ts
            outputs.extend(engine.flush_idle())
        self._count(outputs)
        return outputs

    def _count(self, outputs: list[Output]) -> None:
        for item in outputs:
            if isinstance(item, Cdr):
                self.counters.cdrs += 1
            else:
                self.counters.dead_letters += 1

    @property
    def open_legs(self) -> int:
        return sum(engine.open_legs for engine in self.engines.values())
