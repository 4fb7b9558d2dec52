"""One shard of file mode over several processes (`process --jobs N`, streams/sharded.py):
the pure part, compiled with the rest of the core. Lines and other shards' event times
in; tagged, encoded outputs out, for the parent to merge. No I/O: `streams.sharded`
reads the file, moves the bytes between processes, and writes.

Users are independent in the engine except for event time, which in file mode is the
largest ts seen over every user's events. Each line of JSON Lines input is decoded by
one shard: the one its `user_id` hashes to, read from the line's bytes without decoding
it (`claimed_user`); a line where none can be read is decoded by every shard. A shard
tells the others, a chunk of lines at a time, the (line, ts) of its events that moved
its event time on, and moves its own event time on at the same lines from theirs: the
same steps one engine takes, so every user is evaluated at the same moments and lateness
is judged alike. A line whose decoded user is not the one its bytes hinted (escapes, the
key twice, a nested object) is passed on, by number, to its user's shard, which decodes
it again and feeds it at that line.

Tags: one engine's outputs for an input line are the event's own dead letter, if any,
then the evaluations of the users due, in (due time, user) order; at the end, the users
due in that order, then every user still open, in user order. Each group (a dead letter,
an evaluation's outputs) is tagged (line, part, due time, user, running number); the
parent merges the shards' tagged streams in tag order.
"""

from __future__ import annotations

import zlib
from array import array
from typing import Any, Final

from streams.cdr import Cdr
from streams.deadletter import DeadLetter, Origin
from streams.engine import Engine, Output
from streams.errors import FileModeError
from streams.events import Event
from streams.serialization import (
    CdrFormat,
    cdr_encoder,
    claimed_user,
    decode_json_line,
    encode_dead_letter_line,
)
from streams.settings import Settings
from streams.timefmt import Millis

LETTER: Final = 0  # the parts of a line's (or the end's) outputs, in order
DUE: Final = 1
OPEN: Final = 2
# (input position, part, due time, user, running number within the shard)
Tag = tuple[int, int, Millis, str, int]
# an output as written: a CDR (True) or dead letter, whether it is a first version, and
# what the writer takes (`cdr_encoder`, `encode_dead_letter_line`)
Encoded = tuple[bool, bool, Any]
Tagged = tuple[Tag, list[Encoded]]
# How a shard came to decode a line, and what it answers for:
MINE: Final = 0  # claimed by its bytes: counted here; its dead letter, or an event fed here
SENT: Final = 1  # claimed, but its event is another shard's: counted here, passed on
SHARED: Final = 2  # no user in its bytes: every shard decodes it; shard 0 counts it
TAKEN: Final = 3  # passed on to this shard by the one that claimed it: fed here
Decoded = tuple[int, Event | DeadLetter, Origin, int]  # line, item, origin, how


def shard_of(user: bytes, shards: int) -> int:
    """The shard of a user spelled in UTF-8 (its `user_id`, or a line's `claimed_user`)."""
    return zlib.crc32(user) % shards


class LineChunk:
    """Lines a shard read, and what it decoded of them: (line, item, origin, how), the
    flat (line, ts) pairs of its claimed events that moved its event time on, and the
    lines it passes on, by shard."""

    def __init__(
        self, first: int, lines: list[bytes], own: list[Decoded], times: list[int],
        sent: dict[int, list[int]],
    ) -> None:
        self.first: Final = first
        self.lines: Final = lines
        self.own: Final = own
        self.times: Final = times
        self.sent: Final = sent

    def message(self, shard: int) -> bytes:
        """What shard `shard` is told: the first line, the number of lines passed on to
        it and those lines, then the (line, ts) pairs."""
        passed = self.sent.get(shard, [])
        return array("q", [self.first, len(passed), *passed, *self.times]).tobytes()


def _line(decoded: Decoded) -> int:
    return decoded[0]


class ShardEngine:
    """One shard's engine, and the tagged outputs it has not handed over yet (`unsent`)."""

    def __init__(
        self, settings: Settings, fmt: CdrFormat, index: int, shards: int, name: str
    ) -> None:
        self.engine = Engine(settings)
        self.evaluations: list[tuple[Millis, str, int]] = []
        self.engine.evaluations = self.evaluations
        self.encode_cdr = cdr_encoder(fmt)
        self.index = index
        self.shards = shards
        self.name = name
        self.unsent: list[Tagged] = []
        self.number = 0  # groups tagged so far
        # user -> shard, the user by name or as a line's bytes spell it (`claimed_user`)
        self.owners: dict[str | bytes, int] = {}
        self.top: Millis = -1  # the largest ts of this shard's claimed events so far
        self.items = 0  # the input items this shard answers for (events and dead letters)

    @property
    def watermark(self) -> Millis | None:
        return self.engine.watermark

    def shard(self, user: str | bytes) -> int:
        """The shard of a user, by name or as a line's bytes spell it (the same shard
        for the same user: `shard_of`)."""
        owners = self.owners
        shard = owners.get(user)
        if shard is None:
            spelled = user if isinstance(user, bytes) else user.encode()
            shard = owners[user] = shard_of(spelled, self.shards)
        return shard

    # ------------------------------------------------------------ JSON Lines

    def decode(self, first: int, lines: list[bytes]) -> LineChunk:
        """Decode this shard's lines of a chunk (`lines`, the first numbered `first`)."""
        index, name = self.index, self.name
        own: list[Decoded] = []
        times: list[int] = []
        sent: dict[int, list[int]] = {}
        top = self.top
        number = first - 1
        for line in lines:
            number += 1
            user = claimed_user(line)
            if user is not None and self.shard(user) != index:
                continue
            origin = Origin(name, None, number)
            item = decode_json_line(line, origin)
            if item is None:
                continue
            if user is None:
                own.append((number, item, origin, SHARED))
                continue
            how = MINE
            if isinstance(item, Event):
                shard = self.shard(item.user_id)
                if shard != index:
                    how = SENT
                    sent.setdefault(shard, []).append(number)
                if item.ts > top:
                    top = item.ts
                    times.append(number)
                    times.append(top)
            own.append((number, item, origin, how))
        self.top = top
        return LineChunk(first, lines, own, times, sent)

    def apply(self, chunk: LineChunk, messages: list[bytes]) -> None:
        """Run a chunk's lines in order: this shard's items, the lines passed on to it,
        and at the other shards' lines their event times (`messages`: each other
        shard's `LineChunk.message` for this one)."""
        own = chunk.own
        foreign: list[tuple[int, Millis]] = []
        taken = False
        for message in messages:
            values = array("q")
            values.frombytes(message)
            if values[0] != chunk.first:  # every shard reads the same lines at a time
                raise FileModeError(f"shards out of step: line {values[0]}, not {chunk.first}")
            passed = values[1]
            for at in range(2, 2 + passed):
                own.append(self.taken(chunk, values[at]))
                taken = True
            for at in range(2 + passed, len(values), 2):
                foreign.append((values[at], values[at + 1]))
        if taken:  # in line order with this shard's own
            own.sort(key=_line)
        if len(messages) > 1:
            foreign.sort()
        at, count = 0, len(foreign)
        for number, item, origin, how in own:
            while at < count and foreign[at][0] < number:
                self.advance(foreign[at][0], foreign[at][1])
                at += 1
            self.take(number, item, origin, how)
        while at < count:
            self.advance(foreign[at][0], foreign[at][1])
            at += 1

    def taken(self, chunk: LineChunk, number: int) -> Decoded:
        """A line another shard claimed and passed on: decoded again here."""
        origin = Origin(self.name, None, number)
        item = decode_json_line(chunk.lines[number - chunk.first], origin)
        if not isinstance(item, Event) or self.shard(item.user_id) != self.index:
            raise FileModeError(f"line {number} was passed on to shard {self.index}, "
                                "which it is not for")
        return (number, item, origin, TAKEN)

    # ------------------------------------------------------------ any input

    def advance(self, position: int, ts: Millis) -> None:
        """Another shard's event: event time only."""
        watermark = self.engine.watermark
        if watermark is None or ts > watermark:
            self.tag(position, self.engine.advance(ts))

    def take(self, position: int, item: Event | DeadLetter, origin: Origin, how: int) -> None:
        """An item this shard decoded, in input order (`how`: MINE, SENT, SHARED or
        TAKEN)."""
        answers = how in (MINE, SENT) or (how == SHARED and self.index == 0)
        if answers:  # counts the item, and gives its dead letter
            self.items += 1
        if isinstance(item, DeadLetter):
            if answers:
                self.group((position, LETTER, 0, "", self.number), [item])
            return
        mine = how == SHARED and self.shard(item.user_id) == self.index
        if mine or how in (MINE, TAKEN):
            self.tag(position, self.engine.feed(item, origin))
        else:
            self.advance(position, item.ts)

    def finish_due(self, end: int) -> None:
        """The end of the input (`end`: past its last position): the users due."""
        self.tag(end, self.engine.finish_due())

    def finish_open(self, end: int, watermark: Millis) -> None:
        """Then every user still open, at the event time every shard reached."""
        self.tag(end, self.engine.finish_open(watermark), OPEN)

    # ------------------------------------------------------------ outputs

    def tag(self, position: int, outputs: list[Output], part: int = DUE) -> None:
        """Tag what one step of the engine gave: its dead letter first (outputs that no
        evaluation gave), then each evaluation's outputs."""
        evaluations = self.evaluations
        if not outputs:
            evaluations.clear()
            return
        letters = len(outputs)
        for _, _, count in evaluations:
            letters -= count
        if letters:
            self.group((position, LETTER, 0, "", self.number), outputs[:letters])
        at = letters
        for due, user_id, count in evaluations:
            if count:
                self.group((position, part, due, user_id, self.number), outputs[at:at + count])
                at += count
        evaluations.clear()

    def group(self, tag: Tag, outputs: list[Output]) -> None:
        encode_cdr = self.encode_cdr
        encoded: list[Encoded] = []
        for item in outputs:
            if isinstance(item, Cdr):
                encoded.append((True, item.version == 1, encode_cdr(item)))
            else:
                encoded.append((False, False, encode_dead_letter_line(item)))
        self.unsent.append((tag, encoded))
        self.number += 1
