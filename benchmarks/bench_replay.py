"""Replay and audit benchmark (issue: replay and audit): a simulated 1,000,000-event day,
rebuilt from Kafka and audited, beside file-mode `process` of the same events.

Steps (each `cdrstream` command runs in its own process, as a user runs it):
1. simulate the day (JSON Lines) and time `cdrstream process` on it;
2. create private topics, publish the events as a switch would, and publish file mode's
   CDRs to the cdr topic as the worker would have (setup, not timed as part of the target);
3. time `cdrstream replay` of the topics to a file, and `cdrstream audit` (a replay of the
   topics, the cdr topic read, the comparison);
4. time `cdrstream archive` and a replay of the archive, for reference.

Target: audit (replay + compare) within 60 s, and within 3 times file-mode process.

usage: python benchmarks/bench_replay.py [--events 1000000] [--bootstrap-servers HOST:PORT]
                                         [--keep DIR] [--reuse PREFIX] [--keep-topics]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.worker_harness import write_config  # noqa: E402  (the same config as the tests)

MEASURE = (
    "import resource, sys\n"
    "from streams.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(f'PEAK_RSS_KIB={max(peak, kids)}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


CPU_USED = [0.0]  # CPU seconds (user + system) of the last measured command and its workers


def run_measured(*args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, float, str, str]:
    """(seconds, peak RSS MiB of the process or its largest worker, stdout, stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(  # stderr is a pipe: no progress line
        [sys.executable, "-c", MEASURE, *args], cwd=ROOT, capture_output=True, text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_USED[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode not in ok:
        raise SystemExit(
            f"cdrstream {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        )
    lines = result.stderr.strip().splitlines()
    peaks = [line for line in lines if line.startswith("PEAK_RSS_KIB=")]
    if not peaks:
        raise SystemExit(f"cdrstream {' '.join(args)}: no measurement ({result.returncode}):\n"
                         f"{result.stderr}")
    peak_kib = int(peaks[-1].split("=", 1)[1])
    rest = [line for line in lines if not line.startswith("PEAK_RSS_KIB=")]
    return elapsed, peak_kib / 1024, result.stdout, "\n".join(rest)


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def publish_cdrs(config: Path, cdrs: Path) -> int:
    """File mode's CDR versions to the cdr topic, in issue order, keyed by cdr_id."""
    from kafka import KafkaProducer

    from streams.serialization import encode_cdr_message, read_cdrs
    from streams.settings import load_settings

    settings = load_settings(config)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers.split(","), acks="all",
        linger_ms=20, batch_size=512 * 1024,
    )
    sent = 0
    for cdr in read_cdrs(cdrs):
        producer.send(settings.kafka.cdr_topic, key=cdr.cdr_id.encode(),
                      value=encode_cdr_message(cdr, settings.kafka.cdr_encoding))
        sent += 1
    producer.flush()
    producer.close()
    return sent


def delete_topics(config: Path) -> None:
    from kafka import KafkaAdminClient

    from streams.settings import load_settings

    kafka = load_settings(config).kafka
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers.split(","))
    try:
        admin.delete_topics([kafka.call_events_topic, kafka.dtmf_events_topic, kafka.cdr_topic,
                             kafka.dlq_topic])
    finally:
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--bootstrap-servers",
                        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--keep", type=Path, help="keep the generated files here")
    parser.add_argument("--reuse", metavar="PREFIX",
                        help="topics of an earlier run (with --keep DIR holding its files)")
    parser.add_argument("--keep-topics", action="store_true", help="do not delete the topics")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="cdrstream-bench-replay-"))
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = args.reuse or f"bench-{uuid.uuid4().hex[:8]}-"
    config = workdir / "config.toml"
    write_config(config, args.bootstrap_servers, prefix, partitions=args.partitions)
    day, cdrs = workdir / "day.jsonl", workdir / "cdrs.jsonl"
    print(f"cdrstream replay/audit benchmark, {os.cpu_count()} CPUs, topics {prefix}*, "
          f"{args.partitions} partitions, files in {workdir}")

    if not args.reuse:
        probe = workdir / "probe.jsonl"
        run_measured("simulate", "--users", "20", "--seed", "1", "--output", str(probe))
        users = max(1, round(args.events / (count_lines(probe) / 20)))
        seconds, _rss, _out, _err = run_measured(
            "simulate", "--users", str(users), "--seed", "7", "--output", str(day))
        print(f"simulated {count_lines(day):,} events ({users} users) in {seconds:.1f} s")
    events = count_lines(day)

    seconds, rss, _out, summary = run_measured(
        "process", "--config", str(config), "--input", str(day), "--output", str(cdrs))
    process_seconds = seconds
    print(f"file-mode process: {seconds:.1f} s ({CPU_USED[0]:.1f} s CPU), "
          f"{events / seconds:,.0f} events/s, peak RSS {rss:.0f} MiB\n  {summary}")

    try:
        if not args.reuse:
            run_measured("topics", "create", "--config", str(config))
            seconds, _rss, _out, summary = run_measured(
                "publish", "--config", str(config), "--input", str(day))
            print(f"setup: {summary} ({seconds:.1f} s)")
            started = time.perf_counter()
            sent = publish_cdrs(config, cdrs)
            print(f"setup: {sent:,} CDR versions published to {prefix}cdr "
                  f"({time.perf_counter() - started:.1f} s)")

        out = workdir / "replay.jsonl"
        seconds, rss, _out, summary = run_measured(
            "replay", "--config", str(config), "--output", str(out))
        print(f"replay of the topics: {seconds:.1f} s ({CPU_USED[0]:.1f} s CPU), "
              f"{events / seconds:,.0f} events/s, "
              f"{seconds / process_seconds:.2f}x process, peak RSS {rss:.0f} MiB\n  {summary}")
        again = workdir / "replay-again.jsonl"
        run_measured("replay", "--config", str(config), "--output", str(again))
        same = out.read_bytes() == again.read_bytes()
        print(f"  a second replay gives {'identical' if same else 'DIFFERENT'} output")

        report = workdir / "audit.json"
        seconds, rss, table, summary = run_measured(
            "audit", "--config", str(config), "--report", str(report), ok=(0, 1))
        verdict = table.splitlines()[0] if table else "?"
        audit_seconds = seconds
        print(f"audit (replay + cdr topic + compare): {seconds:.1f} s ({CPU_USED[0]:.1f} s CPU), "
              f"{events / seconds:,.0f} events/s, {seconds / process_seconds:.2f}x process, "
              f"peak RSS {rss:.0f} MiB: {verdict}")

        archive = workdir / "archive"
        seconds, rss, _out, summary = run_measured(
            "archive", str(archive), "--config", str(config), "--before", "now")
        print(f"archive: {seconds:.1f} s, peak RSS {rss:.0f} MiB\n  {summary}")
        from_archive = workdir / "replay-archive.jsonl"
        seconds, rss, _out, summary = run_measured(
            "replay", "--config", str(config), "--archive", str(archive),
            "--output", str(from_archive))
        same = from_archive.read_bytes() == out.read_bytes()
        print(f"replay of the archive: {seconds:.1f} s, {events / seconds:,.0f} events/s, "
              f"output {'identical to' if same else 'DIFFERENT from'} the topics' replay")

        target = audit_seconds <= 60 and audit_seconds <= 3 * process_seconds
        print(f"target (audit within 60 s and within 3x process): "
              f"{'met' if target else 'NOT met'} ({audit_seconds:.1f} s; 3x process = "
              f"{3 * process_seconds:.1f} s)")
    finally:
        if not (args.keep_topics or args.reuse):
            delete_topics(config)


if __name__ == "__main__":
    main()
