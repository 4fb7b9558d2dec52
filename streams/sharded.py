"""File mode over several processes (`cdrstream process --jobs N`): the same CDR and
dead-letter files as one engine, byte for byte, faster (see docs/benchmarks.md).

Users are spread over shard processes by a hash of `user_id`. The work of a shard is
`streams.shard_engine.ShardEngine` (compiled with the core; how the shards agree on event
time and how outputs are tagged is described there); this module is its I/O: the shard
processes read the input, send each other their event times through pipes, a chunk of
lines at a time, and send their tagged outputs to the parent, which merges them in tag
order and writes them. JSON Lines input is decoded once over all the shards (each
decodes its own users' lines); Avro input is decoded by every shard. The last part of
the end needs the event time all the shards reached, so each shard reports its own and
waits for the largest.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import pickle
import queue
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from streams.errors import CdrStreamError, FileModeError
from streams.serialization import (
    CdrFormat,
    CdrWriter,
    DeadLetterWriter,
    is_avro_path,
    open_events,
    read_events,
)
from streams.settings import Settings
from streams.shard_engine import SHARED, Encoded, LineChunk, ShardEngine, Tagged
from streams.timefmt import Millis

__all__ = ["ShardRun", "default_jobs", "process_sharded"]

CHUNK = 1000  # tagged groups sent to the parent at a time
LINES_BYTES = 256 * 1024  # JSON Lines read and decoded at a time (about 600 events)


class ShardRun(NamedTuple):
    """What every shard of a run is given."""

    settings: Settings
    input_path: str
    fmt: CdrFormat
    shards: int


class Peers(NamedTuple):
    """One shard's pipes from and to every other shard (`shards`, in order)."""

    shards: list[int]
    inbound: list[Connection]
    outbound: list[Connection]


def default_jobs(input_path: str | Path) -> int:
    """`--jobs` unset: the CPUs this process may use (at most 4) for a regular file of
    8 MiB or more, else 1 (starting processes costs more than small inputs take)."""
    path = Path(input_path)
    try:
        if not path.is_file() or path.stat().st_size < 8 * 1024 * 1024:
            return 1
    except OSError:
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0))))


class _Shard:
    """One shard process's I/O: the input's lines, the other shards' event times, the
    tagged outputs to the parent; the work is `ShardEngine`'s."""

    def __init__(self, run: ShardRun, index: int, conn: Connection, peers: Peers):
        self.shard = ShardEngine(run.settings, run.fmt, index, run.shards, run.input_path)
        self.input_path = run.input_path
        self.index = index
        self.conn = conn
        self.peers = peers

    def send(self, kind: str, *extra: object) -> None:
        unsent = self.shard.unsent
        self.conn.send_bytes(pickle.dumps((kind, unsent, *extra), pickle.HIGHEST_PROTOCOL))
        unsent.clear()

    def send_full(self) -> None:
        if len(self.shard.unsent) >= CHUNK:
            self.send("out")

    def run(self) -> None:
        avro = is_avro_path(self.input_path)
        end = (self._run_decoding_all() if avro else self._run_lines()) + 1
        shard = self.shard
        shard.finish_due(end)
        self.send("watermark", shard.watermark, shard.items)
        shard.finish_open(end, self.conn.recv())
        self.send("done")

    def _run_decoding_all(self) -> int:
        """Every shard decodes every record (Avro input); returns the last position."""
        shard, position = self.shard, 0
        for position, (item, origin) in enumerate(read_events(self.input_path), start=1):
            shard.take(position, item, origin, SHARED)
            self.send_full()
        if self.index == 0:
            shard.items = position
        return position

    def _run_lines(self) -> int:
        """JSON Lines: each shard decodes its own users' lines (and those whose user is
        not certain from their bytes) and learns the others' event times from them, a
        chunk of lines at a time. A chunk's times are sent before the previous chunk is
        run, so no shard waits on another's engine. Returns the last line number."""
        shard, peers = self.shard, self.peers
        pending: LineChunk | None = None
        number = 0
        for lines in self.chunks():
            chunk = shard.decode(number + 1, lines)
            number += len(lines)
            for other, conn in zip(peers.shards, peers.outbound, strict=True):
                conn.send_bytes(chunk.message(other))
            if pending is not None:
                self._apply(pending)
            pending = chunk
        if pending is not None:
            self._apply(pending)
        return number

    def chunks(self) -> Iterator[list[bytes]]:
        """The input's lines, about LINES_BYTES at a time (the same chunks in every
        shard)."""
        with open_events(self.input_path) as handle:
            while lines := handle.readlines(LINES_BYTES):
                yield lines

    def _apply(self, chunk: LineChunk) -> None:
        self.shard.apply(chunk, [conn.recv_bytes() for conn in self.peers.inbound])
        self.send_full()


def _shard_main(
    run: ShardRun, index: int, conn: Connection, peers: Peers, others: list[Connection]
) -> None:
    """A shard process: `others` are the pipes between other shards (inherited by the
    fork, closed here, so that a shard that dies leaves its peers an end of file)."""
    for other in others:
        other.close()
    try:
        _Shard(run, index, conn, peers).run()
    except BaseException as error:
        try:
            conn.send_bytes(pickle.dumps(("error", [], error)))
        except Exception:
            conn.send_bytes(pickle.dumps(("error", [], FileModeError(repr(error)))))
    finally:
        conn.close()


class _Shards:
    """The shard processes, and a thread per shard draining its pipe into a queue (so a
    shard never waits on the parent's merge, which waits on the slowest shard)."""

    def __init__(self, run: ShardRun):
        context = multiprocessing.get_context("fork")
        self.jobs = jobs = run.shards
        self.conns: list[Connection] = []
        self.processes: list[Any] = []
        self.queues: list[queue.SimpleQueue[tuple[str, list[Tagged], Any]]] = []
        self.watermarks: dict[int, Millis | None] = {}
        self.events = 0
        self.failure: BaseException | None = None
        self._lock = threading.Lock()
        # pipes[i][j]: shard i's event times to shard j (reading end, writing end)
        pipes = [[context.Pipe(duplex=False) for _ in range(jobs)] for _ in range(jobs)]
        every = [end for row in pipes for pair in row for end in pair]
        for index in range(jobs):
            peers = Peers(
                [other for other in range(jobs) if other != index],
                [pipes[other][index][0] for other in range(jobs) if other != index],
                [pipes[index][other][1] for other in range(jobs) if other != index],
            )
            parent, child = context.Pipe()
            others = [end for end in every if end not in peers.inbound + peers.outbound]
            process = context.Process(
                target=_shard_main, args=(run, index, child, peers, others), daemon=True
            )
            process.start()
            child.close()
            self.conns.append(parent)
            self.processes.append(process)
            self.queues.append(queue.SimpleQueue())
        for end in every:
            end.close()
        self.threads = [
            threading.Thread(target=self._drain, args=(index,), daemon=True)
            for index in range(jobs)
        ]
        for thread in self.threads:
            thread.start()

    def _drain(self, index: int) -> None:
        conn, into = self.conns[index], self.queues[index]
        while True:
            try:
                kind, chunk, *extra = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                self._fail(FileModeError(f"shard {index} of file mode stopped"))
                return
            if kind == "error":
                self._fail(extra[0])
                return
            into.put((kind, chunk, extra))
            if kind == "watermark":
                self._reached(index, extra[0], extra[1])
            elif kind == "done":
                return

    def _fail(self, error: BaseException) -> None:
        """A shard failed: every stream of the merge raises (the others may be waiting
        for the failed one at the end, and the merge for them)."""
        with self._lock:
            if self.failure is not None:
                return
            self.failure = error
        for into in self.queues:
            into.put(("error", [], [error]))

    def _reached(self, index: int, watermark: Millis | None, events: int) -> None:
        with self._lock:
            self.watermarks[index] = watermark
            self.events += events
            if len(self.watermarks) < self.jobs:
                return
            reached = max((w for w in self.watermarks.values() if w is not None), default=0)
        for conn in self.conns:
            conn.send(reached)

    def outputs(self, index: int) -> Iterator[Tagged]:
        source = self.queues[index]
        while True:
            kind, chunk, extra = source.get()
            yield from chunk
            if kind == "done":
                return
            if kind == "error":
                error = extra[0]
                if isinstance(error, CdrStreamError):
                    raise error
                raise FileModeError(f"file mode failed in a shard: {error!r}")

    def merged(self) -> Iterator[list[Encoded]]:
        streams = [self.outputs(index) for index in range(self.jobs)]
        for _, group in heapq.merge(*streams, key=itemgetter(0)):
            yield group

    def stop(self) -> None:
        """Stop the shards (the run failed, or was interrupted)."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        self.join()

    def join(self) -> None:
        """Wait for the shards and their pipes' threads (which end at the pipes' end),
        then close the pipes."""
        for process in self.processes:
            process.join()
        for thread in self.threads:
            thread.join()
        for conn in self.conns:
            conn.close()


def process_sharded(
    settings: Settings, input_path: str | Path, cdrs: CdrWriter, letters: DeadLetterWriter,
    jobs: int,
) -> int:
    """File mode over `input_path` in `jobs` shard processes, its outputs written in one
    engine's order; returns the number of input items."""
    shards = _Shards(ShardRun(settings, str(input_path), cdrs.format, jobs))
    try:
        for group in shards.merged():
            for is_cdr, first, encoded in group:
                if is_cdr:
                    cdrs.write_encoded(encoded, first)
                else:
                    letters.write_encoded(encoded)
    except BaseException:
        shards.stop()
        raise
    shards.join()
    return shards.events
