"""File mode over several processes (`process --jobs N`, streams/sharded.py): the same
files as one engine, byte for byte, whatever the faults of the feed."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams import sharded
from streams.cli import main
from streams.errors import FileModeError, SerializationError
from streams.filemode import dead_letter_path, process_file
from streams.serialization import claimed_user, read_events
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
    if fmt == "jsonl":  # the counts as written, in one process or over shards
        versions = [orjson.loads(line)["version"] for line in out.read_bytes().splitlines()]
        assert (stats.cdrs, stats.calls) == (len(versions), versions.count(1))
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


@pytest.mark.parametrize(
    ("line", "user"),
    [
        (b'{"type":"dtmf","user_id":"ann@x.example","ts":"t"}', b"ann@x.example"),
        (b'{"user_id":""}', b""),
        (b'{"user_id":"a\\u0040x"}', b"a\\u0040x"),  # as written: decoding finds a@x
        (b'{"user_id":"ann","user_id":"bob"}', b"ann"),  # decoding takes the last
        (b'{"note":{"user_id":"bob"},"user_id":"ann"}', b"bob"),
        (b'{"user_id": "ann"}', None),  # spaces
        (b'{"user\\u005fid":"ann"}', None),
        (b'{"user_id":7}', None),
        (b'{"user_id":"ann', None),
        (b'{"type":"dtmf"}', None),
        (b"", None),
    ],
)
def test_the_user_a_line_hints(line: bytes, user: bytes | None) -> None:
    """Only a hint (the first `"user_id":"` value as written): the shard that decodes
    the line passes it on when the user it finds is another shard's."""
    assert claimed_user(line) == user


def test_an_event_line_hints_its_own_user(tmp_path: Path) -> None:
    """The lines switches write (and the simulator): the hint is the user, so lines are
    passed on only when spelled otherwise."""
    day = simulate(tmp_path / "day.jsonl", 5, 2)
    lines = day.read_bytes().splitlines()
    for line in lines:
        assert claimed_user(line) == orjson.loads(line)["user_id"].encode()
    assert len(lines) > 500


def respelled(line: bytes, kind: int) -> bytes:
    """An event line spelled so that its user cannot be read from its bytes, or with a
    second `user_id` a nested object holds (the same event, or no event)."""
    record: dict[str, str] = orjson.loads(line)
    if kind == 0:  # spaces after the colons: the same event
        return json.dumps(record).encode()
    if kind == 1:  # an escaped key: the same event
        return line.replace(b'"user_id":', b'"user\\u005fid":')
    if kind == 2:  # another user in a nested object first: the same event (unknown keys pass)
        return orjson.dumps({"note": {"user_id": "someone.else@example"}, **record})
    if kind == 3:  # the user only in a nested object: no event
        return orjson.dumps({"note": {"user_id": record["user_id"]}, "ts": record["ts"]})
    if kind == 4:  # the key twice: the last one counts (another user's event)
        return line[:-1] + b',"user_id":"' + record["user_id"].encode() + b'.2"}'
    # the user with an escaped "@": the same event
    return line.replace(b"@", b"\\u0040", 1)


@pytest.mark.parametrize("jobs", [2, 3])
def test_lines_whose_user_is_not_certain_from_their_bytes(tmp_path: Path, jobs: int) -> None:
    """Each shard decodes only its own users' lines, reading `user_id` from the bytes;
    where that is not certain, every shard decodes the line. Either way the same files."""
    day = simulate(tmp_path / "day.jsonl", 12, 9, *FAULTS)
    lines = day.read_bytes().splitlines()
    for number in range(3, len(lines), 7):
        if lines[number].startswith(b'{"event_id"'):
            lines[number] = respelled(lines[number], number % 6)
    events = tmp_path / "respelled.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    one = outputs(tmp_path, events, "one", "jsonl", 1)
    assert one[1].count(b"\n") > len(lines) // 40  # the kind-3 lines are dead letters
    assert outputs(tmp_path, events, "sharded", "jsonl", jobs) == one


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


@pytest.mark.parametrize("suffix", ["jsonl", "avro"])
def test_a_shard_that_fails_stops_the_run_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """The shards are forked: a failure inside one is raised in the parent, which does
    not wait for the others (one of which waits for the failed one's event times)."""
    events = simulate(tmp_path / f"day.{suffix}", 10, 4)
    if suffix == "avro":  # every shard decodes every record

        def broken(path: object) -> Iterator[object]:
            yield from itertools.islice(read_events(path), 50)  # type: ignore[arg-type]
            raise ValueError("reading broke")

        monkeypatch.setattr(sharded, "read_events", broken)
    else:  # each shard reads every line, a chunk at a time
        chunks = sharded._Shard.chunks

        def breaking(self: sharded._Shard) -> Iterator[list[bytes]]:
            yield from itertools.islice(chunks(self), 2)
            raise ValueError("reading broke")

        monkeypatch.setattr(sharded._Shard, "chunks", breaking)
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
