"""File mode over several processes (`process --jobs N`, streams/sharded.py): the same
files as one engine, byte for byte, whatever the faults of the feed."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams import sharded
from streams.cli import main
from streams.errors import FileModeError, SerializationError
from streams.filemode import dead_letter_path, process_file
from streams.serialization import read_events
from streams.settings import load_settings
from streams.sharded import default_jobs

CONFIG = Path(__file__).parent / "examples" / "config.toml"


def simulate(path: Path, users: int, seed: int, *faults: str) -> Path:
    arguments = ["simulate", "--users", str(users), "--seed", str(seed), "--output", str(path)]
    assert main([*arguments, *faults]) == 0
    return path


def outputs(tmp_path: Path, events: Path, name: str, fmt: str, jobs: int) -> tuple[bytes, bytes]:
    out = tmp_path / f"{name}.{fmt}"
    stats = process_file(load_settings(None), events, out, fmt, jobs=jobs)  # type: ignore[arg-type]
    letters = dead_letter_path(out)
    assert stats.dead_letters == (letters.read_bytes().count(b"\n") if letters.exists() else 0)
    return out.read_bytes(), letters.read_bytes() if letters.exists() else b""


FAULTS = ("--resend-rate", "0.03", "--disorder-ms", "2500", "--malformed-rate", "0.01")


@pytest.mark.parametrize("seed", [1, 7, 23])
@pytest.mark.parametrize("jobs", [2, 3])
def test_shards_write_the_files_one_engine_writes(tmp_path: Path, seed: int, jobs: int) -> None:
    """A day with re-sent, disordered and malformed lines: every CDR version and dead
    letter, in the same order, byte for byte."""
    events = simulate(tmp_path / "day.jsonl", 30, seed, *FAULTS)
    one = outputs(tmp_path, events, "one", "jsonl", 1)
    assert one[0] and one[1]  # CDRs, and dead letters of the malformed lines
    assert outputs(tmp_path, events, "sharded", "jsonl", jobs) == one


@pytest.mark.parametrize("fmt", ["csv", "avro"])
def test_shards_write_every_output_format_alike(tmp_path: Path, fmt: str) -> None:
    faults = ("--resend-rate", "0.05", "--disorder-ms", "2000")
    events = simulate(tmp_path / "day.avro", 12, 5, *faults)
    assert outputs(tmp_path, events, "sharded", fmt, 2) == outputs(tmp_path, events, "one", fmt, 1)


def test_more_shards_than_users(tmp_path: Path) -> None:
    events = simulate(tmp_path / "day.jsonl", 2, 3, *FAULTS)
    assert outputs(tmp_path, events, "sharded", "jsonl", 4) == outputs(
        tmp_path, events, "one", "jsonl", 1
    )


def test_an_empty_input_gives_empty_files(tmp_path: Path) -> None:
    events = tmp_path / "empty.jsonl"
    events.write_bytes(b"")
    assert outputs(tmp_path, events, "sharded", "jsonl", 2) == (b"", b"")


def test_the_cli_takes_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = simulate(tmp_path / "day.jsonl", 10, 2, *FAULTS)
    capsys.readouterr()
    for jobs in ("1", "2"):
        arguments = ["--input", str(events), "--output", str(tmp_path / f"cdrs{jobs}.jsonl")]
        assert main(["process", *arguments, "--jobs", jobs]) == 0
    said = capsys.readouterr().err.splitlines()
    assert said[0].replace("cdrs1", "cdrs2") == said[1]
    assert (tmp_path / "cdrs1.jsonl").read_bytes() == (tmp_path / "cdrs2.jsonl").read_bytes()


def test_jobs_must_be_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["process", "--input", "x.jsonl", "--output", "y.jsonl", "--jobs", "0"])
    assert stopped.value.code == 2
    assert "--jobs: expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_small_inputs_run_in_one_process(tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"{}\n")
    assert default_jobs(small) == 1
    assert default_jobs(tmp_path / "missing.jsonl") == 1


def test_a_shard_that_fails_stops_the_run_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shards are forked: a failure inside one is raised in the parent, which does
    not wait for the others."""
    events = simulate(tmp_path / "day.jsonl", 10, 4)

    def broken(path: object) -> Iterator[object]:
        yield from itertools.islice(read_events(path), 50)  # type: ignore[arg-type]
        raise ValueError("reading broke")

    monkeypatch.setattr(sharded, "read_events", broken)
    with pytest.raises(FileModeError, match="reading broke"):
        process_file(load_settings(None), events, tmp_path / "cdrs.jsonl", jobs=2)


@pytest.mark.parametrize("failing_shard", [0, 1])
def test_a_shard_that_fails_at_the_end_does_not_leave_the_others_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_shard: int
) -> None:
    """One shard sends its last outputs and fails instead of reporting the event time it
    reached; the other has reported its own and waits for the largest. The merge, which
    may be waiting on the other shard, must stop: the run fails, it does not hang."""
    events = simulate(tmp_path / "day.jsonl", 10, 4)
    send = sharded._Shard.send

    def failing(self: sharded._Shard, kind: str, *extra: object) -> None:
        if kind == "watermark" and self.index == failing_shard:
            send(self, "out")
            raise ValueError(f"shard {failing_shard} broke at the end")
        send(self, kind, *extra)

    monkeypatch.setattr(sharded._Shard, "send", failing)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            process_file(load_settings(None), events, tmp_path / "cdrs.jsonl", jobs=2)
        except BaseException as error:
            failed.append(error)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "file mode hung on a failed shard"
    assert len(failed) == 1 and isinstance(failed[0], FileModeError)
    assert f"shard {failing_shard} broke at the end" in str(failed[0])


def test_a_file_that_cannot_be_read_is_the_same_error(tmp_path: Path) -> None:
    with pytest.raises(SerializationError, match="cannot read"):
        process_file(load_settings(None), tmp_path / "missing.jsonl", tmp_path / "out.jsonl",
                     jobs=2)
