"""File mode (SPEC section 6): events from a file through the engine to CDR files."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from streams.cdr import Cdr
from streams.deadletter import DeadLetter
from streams.engine import Engine, Output
from streams.serialization import CdrFormat, CdrWriter, DeadLetterWriter, read_events
from streams.settings import Settings
from streams.sharded import process_sharded


@dataclass(frozen=True, slots=True)
class ProcessStats:
    events: int
    cdrs: int
    calls: int  # records: CDRs issued as version 1 (one per cdr_id, call ids being unique)
    dead_letters: int
    dead_letter_path: Path


def dead_letter_path(output: str | Path) -> Path:
    """`CDRS.jsonl` -> `CDRS.dlq.jsonl` (any extension of the output is replaced)."""
    path = Path(output)
    return path.with_name(path.stem + ".dlq.jsonl") if path.suffix else Path(f"{path}.dlq.jsonl")


def process_file(
    settings: Settings, input_path: str | Path, output_path: str | Path,
    fmt: CdrFormat = "jsonl", jobs: int = 1,
) -> ProcessStats:
    """Run every event of `input_path` (in file order) through one engine; write every CDR
    version issued, in issue order, and the dead letters beside the output. With `jobs`
    above 1, users are spread over that many processes (`streams.sharded`): the same
    files, byte for byte."""
    letters_path = dead_letter_path(output_path)
    with CdrWriter(output_path, fmt) as cdrs, DeadLetterWriter(letters_path) as letters:

        def emit(outputs: Iterable[Output]) -> None:
            for item in outputs:
                if isinstance(item, Cdr):
                    cdrs.write(item)
                else:
                    letters.write(item)

        if jobs > 1:
            events = process_sharded(settings, input_path, cdrs, letters, jobs)
        else:
            events = _run_one_engine(settings, input_path, emit, letters)
    # records: the first versions written (counted as written, so memory stays flat)
    return ProcessStats(events, cdrs.count, cdrs.first_versions, letters.count, letters_path)


def _run_one_engine(
    settings: Settings, input_path: str | Path, emit: Callable[[list[Output]], None],
    letters: DeadLetterWriter,
) -> int:
    engine = Engine(settings)
    events = 0
    feed = engine.feed
    for item, origin in read_events(input_path):
        events += 1
        if isinstance(item, DeadLetter):
            letters.write(item)
        else:
            outputs = feed(item, origin)
            if outputs:
                emit(outputs)
    emit(engine.finish())
    return events
