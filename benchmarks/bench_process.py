"""File-mode benchmark (issue 2): a simulated 1,000,000-event day through `process`.

Prints, for the same file in the same run:
- the time to merely parse it (read lines, orjson.loads each): the floor for any
  JSON Lines processor in Python;
- the time of `cdrstream process` on it (a subprocess, as a user runs it), events/s, the
  ratio of the two, and the process's peak RSS;
- peak RSS again for two consecutive days (a longer timeline, same concurrency), to show
  memory stays flat as the day gets longer.

usage: python benchmarks/bench_process.py [--events 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


MEASURE = (
    "import resource, sys\n"
    "from streams.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "print(f'PEAK_RSS_KIB={peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run_measured(*args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB, stderr) of `cdrstream ARGS` in its own process."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *args], cwd=ROOT, capture_output=True, text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"cdrstream {' '.join(args)} failed:\n{result.stderr}")
    lines = result.stderr.strip().splitlines()
    peak_kib = int(lines[-1].split("=", 1)[1])
    return elapsed, peak_kib / 1024, "\n".join(lines[:-1])


def parse_only(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    count = 0
    loads = orjson.loads
    with open(path, "rb") as handle:
        for line in handle:
            loads(line)
            count += 1
    return time.perf_counter() - started, count


def simulate(path: Path, users: int, date: str, seed: int) -> None:
    run_measured(
        "simulate",
        "--users",
        str(users),
        "--seed",
        str(seed),
        "--date",
        date,
        "--output",
        str(path),
    )


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the generated files here")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="cdrstream-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)

    probe = workdir / "probe.jsonl"
    simulate(probe, 20, "2026-11-24", 1)
    per_user = count_lines(probe) / 20
    users = max(1, round(args.events / per_user))
    day = workdir / "day.jsonl"
    started = time.perf_counter()
    simulate(day, users, "2026-11-24", 7)
    sim_seconds = time.perf_counter() - started
    events = count_lines(day)
    print(f"simulated {events:,} events ({users} users) in {sim_seconds:.1f} s")

    parse_seconds, _ = parse_only(day)
    print(
        f"parse only (orjson.loads per line): {parse_seconds:.2f} s, "
        f"{events / parse_seconds:,.0f} events/s"
    )

    out = workdir / "cdrs.jsonl"
    seconds, rss, summary = run_measured("process", "--input", str(day), "--output", str(out))
    print(
        f"process: {seconds:.2f} s, {events / seconds:,.0f} events/s, "
        f"{seconds / parse_seconds:.1f}x parse time, peak RSS {rss:.0f} MiB"
    )
    print(f"  {summary}")

    # A longer timeline with the same concurrency: the day, then the next day.
    next_day = workdir / "next-day.jsonl"
    simulate(next_day, users, "2026-11-25", 8)
    two_days = workdir / "two-days.jsonl"
    with open(two_days, "wb") as handle:
        handle.write(day.read_bytes())
        handle.write(next_day.read_bytes())
    events2 = count_lines(two_days)
    seconds2, rss2, _ = run_measured("process", "--input", str(two_days), "--output", str(out))
    print(
        f"process two days ({events2:,} events): {seconds2:.2f} s, "
        f"{events2 / seconds2:,.0f} events/s, peak RSS {rss2:.0f} MiB"
    )


if __name__ == "__main__":
    main()
