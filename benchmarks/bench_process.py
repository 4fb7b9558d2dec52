"""File-mode benchmark (issue 2): a simulated 1,000,000-event day through `process`.

Prints, for the same file in the same run:
- the time to merely parse it (read lines, orjson.loads each; best of 3): the floor for
  any JSON Lines processor in Python;
- the time of `cdrstream process` on it (a subprocess, as a user runs it), events/s, the
  ratio of the two, and the process's peak RSS;
- peak RSS again for two consecutive days (a longer timeline, same concurrency), to show
  memory stays flat as the day gets longer.

Wall time and CPU time (user + system) of the process are both printed: on a shared
machine the CPU time is the steadier figure. With --keep, simulated files already in DIR
(named by users and seed) are reused instead of simulated again.

`process` runs in one process (`--jobs 1`) and with users spread over the CPUs (`--jobs
N`, default this machine's CPUs, at most 4; the same output byte for byte), in rounds:
each round times parsing again and takes each ratio against its own round's parse time
(this host's speed drifts by a quarter from one minute to the next), and the summary
gives the median, best and worst ratio over the rounds.

usage: python benchmarks/bench_process.py [--events 1000000] [--keep DIR] [--jobs N]
       [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import orjson

ROOT = Path(__file__).resolve().parents[1]


# Peak RSS is VmHWM of the process's own memory: ru_maxrss would also count what the
# parent (this script) held when it forked the child. With --jobs N, the shards' peaks
# are added: N times the largest shard's (ru_maxrss of the children), shared pages and
# all, so the sum is an upper bound. CPU time includes the shards'.
MEASURE = (
    "import resource, sys\n"
    "from streams.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
    "shards = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "peak = usage.ru_maxrss\n"
    "try:\n"
    "    with open('/proc/self/status') as status:\n"
    "        peak = next(int(l.split()[1]) for l in status if l.startswith('VmHWM:'))\n"
    "except (OSError, StopIteration):\n"
    "    pass\n"
    "jobs = int(sys.argv[sys.argv.index('--jobs') + 1]) if '--jobs' in sys.argv else 1\n"
    "if jobs > 1:\n"
    "    peak += jobs * shards.ru_maxrss\n"
    "cpu = usage.ru_utime + usage.ru_stime + shards.ru_utime + shards.ru_stime\n"
    "print(f'CPU_SECONDS={cpu}', file=sys.stderr)\n"
    "print(f'PEAK_RSS_KIB={peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


class Measured(NamedTuple):
    seconds: float  # wall
    cpu_seconds: float  # user + system
    rss_mib: float  # peak
    stderr: str


def run_measured(*args: str) -> Measured:
    """Wall time, CPU time, peak RSS and stderr of `cdrstream ARGS` in its own process."""
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
    cpu = float(lines[-2].split("=", 1)[1])
    return Measured(elapsed, cpu, peak_kib / 1024, "\n".join(lines[:-2]))


def parse_only(path: Path, runs: int = 3) -> float:
    """The best of `runs` timings of reading the lines and orjson.loads of each."""
    best = float("inf")
    loads = orjson.loads
    for _ in range(runs):
        started = time.perf_counter()
        with open(path, "rb") as handle:
            for line in handle:
                loads(line)
        best = min(best, time.perf_counter() - started)
    return best


def simulate(path: Path, users: int, date: str, seed: int) -> None:
    if path.exists():
        return  # kept from an earlier run: the name says users and seed
    partial = path.with_name(path.name + ".partial")
    run_measured(
        "simulate", "--users", str(users), "--seed", str(seed), "--date", date,
        "--output", str(partial),
    )
    partial.rename(path)


def relabel(source: Path, target: Path, prefix: str) -> None:
    """Copy an events file with its call ids (and event ids) prefixed: the simulator numbers
    every day's calls alike, and a second day must not continue the first day's CDRs."""
    if target.exists():
        return
    partial = target.with_name(target.name + ".partial")
    with open(source, "rb") as lines, open(partial, "wb") as out:
        for line in lines:
            event = orjson.loads(line)
            for name in ("event_id", "call_id", "related_call_id"):
                if event.get(name):
                    event[name] = prefix + event[name]
            out.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
    partial.rename(target)


def default_jobs_here() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the generated files here")
    parser.add_argument(
        "--jobs", type=int, default=default_jobs_here(),
        help="process --jobs of the sharded run (default: this machine's CPUs, at most 4)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="rounds of (parse only, process --jobs 1, process --jobs N), each ratio taken "
        "within its round: this host's speed drifts from minute to minute",
    )
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="cdrstream-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)

    probe = workdir / "probe-20u-seed1.jsonl"
    simulate(probe, 20, "2026-11-24", 1)
    per_user = count_lines(probe) / 20
    users = max(1, round(args.events / per_user))
    day = workdir / f"day-{users}u-seed7.jsonl"
    started = time.perf_counter()
    simulate(day, users, "2026-11-24", 7)
    sim_seconds = time.perf_counter() - started
    events = count_lines(day)
    print(f"simulated {events:,} events ({users} users) in {sim_seconds:.1f} s")

    out = workdir / "cdrs.jsonl"
    ratios: dict[int, list[float]] = {}
    for round_number in range(1, args.rounds + 1):
        parse_seconds = parse_only(day)
        print(
            f"round {round_number}: parse only (orjson.loads per line, best of 3): "
            f"{parse_seconds:.2f} s, {events / parse_seconds:,.0f} events/s"
        )
        for jobs in sorted({1, args.jobs}):
            one = run_measured(
                "process", "--input", str(day), "--output", str(out), "--jobs", str(jobs)
            )
            ratio = one.seconds / parse_seconds
            ratios.setdefault(jobs, []).append(ratio)
            print(
                f"  process --jobs {jobs}: {one.seconds:.2f} s, "
                f"{events / one.seconds:,.0f} events/s, {ratio:.1f}x parse time; "
                f"CPU {one.cpu_seconds:.2f} s ({events / one.cpu_seconds:,.0f} events/CPU-s); "
                f"peak RSS {one.rss_mib:.0f} MiB" + (" (parent + shards)" if jobs > 1 else "")
            )
            if round_number == 1:
                print(f"    {one.stderr}")
    for jobs, seen in ratios.items():
        print(
            f"process --jobs {jobs} over {len(seen)} rounds: ratio to parse time "
            f"median {statistics.median(seen):.1f}x, best {min(seen):.1f}x, "
            f"worst {max(seen):.1f}x"
        )

    # A longer timeline with the same concurrency: the day, then the next day.
    next_day = workdir / f"next-day-{users}u-seed8.jsonl"
    simulate(next_day, users, "2026-11-25", 8)
    relabelled = workdir / f"next-day-{users}u-seed8-d2.jsonl"
    relabel(next_day, relabelled, "d2-")
    two_days = workdir / f"two-days-{users}u-d2.jsonl"
    if not two_days.exists():
        partial = two_days.with_name(two_days.name + ".partial")
        with open(partial, "wb") as handle:
            for part in (day, relabelled):
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, handle)
        partial.rename(two_days)
    events2 = count_lines(two_days)
    two = run_measured(
        "process", "--input", str(two_days), "--output", str(out), "--jobs", str(args.jobs)
    )
    print(
        f"process --jobs {args.jobs}, two days ({events2:,} events): {two.seconds:.2f} s, "
        f"{events2 / two.seconds:,.0f} events/s; CPU {two.cpu_seconds:.2f} s; "
        f"peak RSS {two.rss_mib:.0f} MiB"
    )
    print(f"  {two.stderr}")


if __name__ == "__main__":
    main()
