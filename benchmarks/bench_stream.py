"""Streaming benchmark (issue 3): one worker on a real broker.

In one run, on the same broker and the same messages:
1. pass-through: a plain aiokafka consume-and-produce of the event topics (no decoding,
   no engine), with a `send` per record, and again with record batches (as the worker
   produces): the ceiling for any Python processor here;
2. the worker's sustained rate over a backlog of a simulated day;
3. CDR latency, release event produced to CDR readable on `cdr` (p50, p99), with events
   produced live at half the sustained rate, stamped with the wall clock. "Readable" is
   the broker's append time of the CDR's record (the bench's `cdr` topic has
   `message.timestamp.type = LogAppendTime`), so the benchmark's own reader, which shares
   a process with the feed, adds nothing to it.

usage: python benchmarks/bench_stream.py [--events 300000] [--latency-seconds 60]
Uses $KAFKA_BOOTSTRAP_SERVERS, else starts deploy/kafka-local.sh on port 19192.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import fastavro
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.cdr import CALL  # noqa: E402
from streams.events import CALL_RELEASED, DTMF, Event  # noqa: E402
from streams.gcpolicy import collect_rarely  # noqa: E402
from streams.kafka_io import client_options, follow_cdr_records, publish_file  # noqa: E402
from streams.serialization import encode_event_message  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.simulate import SimulationOptions, iter_events  # noqa: E402
from streams.timefmt import format_iso  # noqa: E402
from tests.worker_harness import WorkerProcess, cli, free_port, write_config  # noqa: E402

TIMELINE_STEP = 5.0  # seconds of the latency window, for its p99 over time
EVENTS_PER_USER_DAY = 278  # events of one simulated user's day, on average


def broker() -> str:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    env = dict(os.environ, KAFKA_PORT="19192")
    out = subprocess.run(
        ["bash", "deploy/kafka-local.sh", "start"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def setup(
    workdir: Path, bootstrap: str, partitions: int, commit_interval: float,
    batch_size: int | None = None,
) -> tuple[Path, Settings]:
    prefix = f"bench-{uuid.uuid4().hex[:6]}-"
    config = workdir / f"{prefix}config.toml"
    settings = write_config(config, bootstrap, prefix, partitions=partitions)
    # the worker as deployed: the defaults of the idle flush (settle_seconds), the fetch
    # wait and the commit interval, not the tests' shorter ones
    text = config.read_text().replace("idle_flush_seconds = 1", "idle_flush_seconds = 5")
    text = text.replace(
        "commit_interval_seconds = 0.5", f"commit_interval_seconds = {commit_interval}"
    )
    text = text.replace("batch_timeout_seconds = 0.05", "batch_timeout_seconds = 0.25")
    if batch_size is not None:  # the [worker] table is the last
        text += f"batch_size = {batch_size}\n"
    config.write_text(text)
    cli("topics", "create", "--config", str(config))
    return config, settings


def metric(port: int, name: str) -> float:
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return -1.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith(name))


async def pass_through(settings: Settings, total: int, *, batched: bool) -> float:
    """Consume the event topics and produce every message again, nothing else: with a
    `send` per record (the plain way), or `batched` into one record batch per partition
    per fetch (as the worker produces its outputs: the ceiling for that way)."""
    kafka = settings.kafka
    consumer = AIOKafkaConsumer(
        kafka.call_events_topic,
        kafka.dtmf_events_topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"passthrough-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, linger_ms=5, acks="all",
        max_batch_size=512 * 1024, max_request_size=1024 * 1024,
    )
    await consumer.start()
    await producer.start()
    seen, started = 0, None
    out_topic = kafka.cdr_topic + "-passthrough"
    out_partitions = len(await producer.partitions_for(out_topic))  # auto-created
    try:
        while seen < total:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and fetched:
                started = time.perf_counter()
            futures = []
            for tp, records in fetched.items():
                if batched:
                    partition = tp.partition % out_partitions
                    futures += await _send_batched(producer, out_topic, partition, records)
                else:
                    for record in records:
                        futures.append(await producer.send(out_topic, record.value, key=record.key))
                seen += len(records)
            if futures:
                await asyncio.gather(*futures)
                await consumer.commit()
        return seen / (time.perf_counter() - (started or time.perf_counter()))
    finally:
        await consumer.stop()
        await producer.stop()


async def _send_batched(
    producer: AIOKafkaProducer, topic: str, partition: int, records: list[Any]
) -> list[Any]:
    futures = []
    batch = producer.create_batch()
    for record in records:
        if batch.append(key=record.key, value=record.value, timestamp=None) is None:  # full
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=record.key, value=record.value, timestamp=None)
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


def sustained(config: Path, settings: Settings, workdir: Path, total: int) -> float:
    port = free_port()
    worker = WorkerProcess(config, workdir / "sustained-worker.log", port)
    try:
        first = None
        while True:
            count = metric(port, "cdrstream_events_in_total")
            now = time.perf_counter()
            if count > 0 and first is None:
                first = (now, count)
            if count >= total:
                assert first is not None
                return (count - first[1]) / (now - first[0])
            time.sleep(0.2)
    finally:
        worker.terminate()


class Latencies(NamedTuple):
    rate: float  # events/s actually sent
    behind: float  # how far sending fell behind its schedule, at most (s)
    all: list[float]  # seconds from release produced to CDR readable, sorted
    held: list[float]  # the same for calls with a hold (may wait for a second line)
    plain: list[float]  # calls without a hold, and code-entry records
    feed_delay: list[float]  # release events: from their ts to their acknowledgement (s)
    legs: int  # legs released within the window
    unissued: int  # of those, legs no CDR read by the end covers (the worker fell behind)
    by_step: list[list[float]]  # latencies of the releases in each TIMELINE_STEP of the window
    worker_cpu: float | None  # CPU seconds the worker used while the feed ran (Linux)
    sent: int  # events the feed sent


class Prepared(NamedTuple):
    """An event of the live feed, encoded before the clock starts but for its ts."""

    topic: str
    partition: int
    key: bytes
    head: bytes  # the message value up to its ts
    tail: bytes  # and after it
    json: bool  # ts as ISO text (JSON), else an Avro long
    leg: str | None  # the leg's cdr id, for a release


AVRO_LONG = fastavro.parse_schema("long")


def avro_long(value: int) -> bytes:
    """`value` as an Avro long (binary), as the event messages carry their ts."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, AVRO_LONG, value)
    return out.getvalue()


def prepare(event: Event, encoding: str, topic: str, partition: int) -> Prepared:
    """Split the encoded message at its ts, which the feed puts in as it sends (checked:
    the parts with the event's own ts put back are its encoding, byte for byte)."""
    value = encode_event_message(event, encoding)
    json = encoding == "json"
    ts = format_iso(event.ts).encode() if json else avro_long(event.ts)
    at = value.find(ts)
    if at < 0 or value.find(ts, at + 1) >= 0:
        raise SystemExit(f"event {event.event_id}: its ts is not once in its encoding")
    head, tail = value[:at], value[at + len(ts):]
    leg = f"{event.switch_id}:{event.call_id}" if event.type == CALL_RELEASED else None
    return Prepared(topic, partition, event.user_id.encode(), head, tail, json, leg)


async def live_feed(
    settings: Settings, rate: float, events: list[Event], seconds: float,
    *, released: dict[str, float], stamps: dict[str, float],
) -> tuple[float, float, float, int]:
    """Send `events` (simulated beforehand) at `rate` per second for `seconds`, each
    stamped with the wall clock as it is sent; note when each release was acknowledged
    by the broker. Returns the rate achieved, how far, at most, sending fell behind its
    schedule (seconds), when sending started (wall clock), and how many were sent.

    The feed stands in for switches on other machines but shares the two cores with the
    worker and the broker, so it is kept cheap: the simulation runs before the clock
    starts, and so does the encoding of every message but for its ts, which goes in as it
    is sent; the messages due at each tick go to one aiokafka record batch per partition
    (keyed as `send` would partition them), a release counting from the acknowledgement
    of its batch. (Encoding each event as it was sent took most of a core at 25,000
    events/s.)"""
    kafka = settings.kafka
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=5, acks="all")
    await producer.start()
    for topic in (kafka.call_events_topic, kafka.dtmf_events_topic):
        await producer.partitions_for(topic)
    encoding = kafka.encoding
    prepared: list[Prepared] = []
    for event in events:
        topic = kafka.dtmf_events_topic if event.type == DTMF else kafka.call_events_topic
        key = event.user_id.encode()
        partition = producer._partition(topic, None, None, None, key, b"")
        prepared.append(prepare(event, encoding, topic, partition))
    events.clear()  # the prepared messages are what is sent

    def acknowledged(legs: list[str]) -> Callable[[Any], None]:
        def note(_: Any) -> None:
            now = time.time()
            for leg in legs:
                released[leg] = now
        return note

    sent, behind = 0, 0.0
    started = time.time()
    try:
        while sent < len(prepared):
            elapsed = time.time() - started
            if elapsed > seconds:
                break
            due = min(len(prepared), int(elapsed * rate))
            if due > sent:
                behind = max(behind, elapsed - sent / rate)
            batches: dict[tuple[str, int], tuple[Any, list[str]]] = {}
            now_ms = round(time.time() * 1000)
            ts_json, ts_avro = format_iso(now_ms).encode(), avro_long(now_ms)
            while sent < due:
                message = prepared[sent]
                value = message.head + (ts_json if message.json else ts_avro) + message.tail
                where = (message.topic, message.partition)
                if where not in batches:
                    batches[where] = (producer.create_batch(), [])
                batch, legs = batches[where]
                if batch.append(key=message.key, value=value, timestamp=None) is None:  # full
                    future = await producer.send_batch(batch, where[0], partition=where[1])
                    future.add_done_callback(acknowledged(legs))
                    batch, legs = batches[where] = (producer.create_batch(), [])
                    batch.append(key=message.key, value=value, timestamp=None)
                if message.leg is not None:
                    legs.append(message.leg)
                    stamps[message.leg] = now_ms / 1000
                sent += 1
            for (topic, partition), (batch, legs) in batches.items():
                future = await producer.send_batch(batch, topic, partition=partition)
                future.add_done_callback(acknowledged(legs))
            await asyncio.sleep(0.002)
        await producer.flush()
        return sent / (time.time() - started), behind, started, sent
    finally:
        await producer.stop()


def stamp_appended(settings: Settings) -> None:
    """The `cdr` topic's records get the broker's append time as their timestamp."""
    admin = KafkaAdminClient(**client_options(settings.kafka))
    try:
        topic = ConfigResource(ConfigResourceType.TOPIC, settings.kafka.cdr_topic)
        topic.configs = {"message.timestamp.type": "LogAppendTime"}
        admin.alter_configs([topic])
    finally:
        admin.close()


def latency(
    config: Path, settings: Settings, workdir: Path, rate: float, seconds: float,
    *, users: int | None, firm_users: bool,
) -> Latencies:
    port = free_port()
    stamp_appended(settings)
    # Traffic goes on for `tail` seconds after the measured window: a call released near
    # the end of the window is issued by event time, as under steady traffic, not by the
    # idle flush of a feed that has stopped. Only releases within the window count.
    tail = settings.settle_seconds + 5
    wanted = int(rate * (seconds + tail)) + 1
    # enough users for the feed not to run out of the day (with a margin)
    users = users or max(2000, round(1.4 * wanted / EVENTS_PER_USER_DAY))
    # A day's calls sent in a minute: under the firm's own users, each user would make
    # a call every second or so and hold every call of the run in memory for the
    # correction window, far from any real user. By default each call (an activity of
    # the simulator, with its code entries) is its own user's, as busy as a real user is
    # over a few minutes; --latency-firm-users keeps the firm's users.
    options = SimulationOptions(users=users, seed=99, user_per_activity=not firm_users)
    simulated = iter_events(settings, options)
    events = list(itertools.islice(simulated, wanted))  # before the clock
    if len(events) < wanted:
        raise SystemExit(f"{users} users' day has {len(events):,} events, {wanted:,} wanted")
    spread = len({event.user_id for event in events})
    print(
        f"latency feed: {len(events):,} events of {users:,} users' day"
        + ("" if firm_users else f", each call under a user of its own ({spread:,} users)")
    )
    # The feed shares this process with the reader: without this, each collection of
    # the oldest generation scanned the simulated events (a second or more), and the
    # feed sent in bursts every two seconds, which the latency then measured.
    collect_rarely()
    worker = WorkerProcess(config, workdir / "latency-worker.log", port)
    released: dict[str, float] = {}  # cdr id of a leg -> wall time its release was acked
    stamps: dict[str, float] = {}  # cdr id of a leg -> its release's ts (s)
    # cdr id -> (latency, a call with a hold, when its release was acknowledged)
    seen: dict[str, tuple[float, bool, float]] = {}
    covered: set[str] = set()  # legs of the CDRs read
    try:
        while metric(port, "cdrstream_assigned_partitions ") < settings.kafka.partitions:
            time.sleep(0.5)
        stop = threading.Event()

        def read() -> None:
            def done(quiet: float) -> bool:  # stopped, and a second without a CDR
                return stop.is_set() and quiet > 1

            for appended_ms, cdr in follow_cdr_records(settings, False, done):
                appended = appended_ms / 1000
                if cdr.cdr_id not in seen and cdr.version == 1:
                    legs = [cdr.cdr_id] + [f"{cdr.switch_id}:{leg.call_id}" for leg in cdr.legs]
                    if all(leg in released for leg in legs):
                        at = max(released[leg] for leg in legs)
                        held = cdr.record_type == CALL and cdr.hold_ms > 0
                        seen[cdr.cdr_id] = (appended - at, held, at)
                        covered.update(legs)
                if stop.is_set():
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(2)
        cpu_before = cpu_seconds(worker.process.pid)
        achieved, behind, started, sent = asyncio.run(
            live_feed(settings, rate, events, seconds + tail, released=released, stamps=stamps)
        )
        cpu_after = cpu_seconds(worker.process.pid)
        window_end = started + seconds
        time.sleep(5)  # CDRs of the window's last calls still on their way
        stop.set()
        reader.join(120)  # it reads on until a second without a CDR
        values = [(v, held) for v, held, at in list(seen.values()) if at <= window_end]
        by_step: list[list[float]] = [[] for _ in range(int(seconds // TIMELINE_STEP) + 1)]
        for v, _, at in list(seen.values()):
            if started <= at <= window_end:
                by_step[int((at - started) // TIMELINE_STEP)].append(v)
        window = [leg for leg, at in list(released.items()) if at <= window_end]
        return Latencies(
            achieved,
            behind,
            sorted(v for v, _ in values),
            sorted(v for v, held in values if held),
            sorted(v for v, held in values if not held),
            sorted(released[leg] - stamps[leg] for leg in window if leg in stamps),
            len(window),
            sum(1 for leg in window if leg not in covered),
            by_step,
            None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
            sent,
        )
    finally:
        worker.terminate()


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user and system) a process has used so far, from /proc (None elsewhere):
    the worker's CPU per event is steadier across this host's slow and fast minutes than
    its latency, and what an A/B of two builds compares."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15


def throughput(config: Path, settings: Settings, workdir: Path, events: int) -> float:
    """Publish a simulated day of about `events` events; print the pass-through rates and
    the worker's sustained rate over that backlog, and return the latter."""
    day = workdir / "day.jsonl"
    users = max(1, events // EVENTS_PER_USER_DAY)
    cli("simulate", "--users", str(users), "--seed", "3", "--output", str(day))
    stats = publish_file(settings, str(day))
    total = stats.events
    print(f"published {total:,} events in {stats.seconds:.1f} s ({total / stats.seconds:,.0f}/s)")

    ceiling = asyncio.run(pass_through(settings, total, batched=False))
    print(f"pass-through, a send per record (aiokafka, no processing): {ceiling:,.0f} events/s")
    batched = asyncio.run(pass_through(settings, total, batched=True))
    print(f"pass-through, record batches (aiokafka, no processing): {batched:,.0f} events/s")
    rate = sustained(config, settings, workdir, total)
    print(
        f"worker, sustained over a backlog: {rate:,.0f} events/s "
        f"({rate / ceiling:.0%} of the plain pass-through, {rate / batched:.0%} of the batched)"
    )
    return rate


PROBE_LINE = (
    b'{"event_id":"sw2-u3159c1-0","type":"call_started","ts":"2026-11-24T13:00:00.288Z",'
    b'"switch_id":"sw2","user_id":"nina.hill5@acmecorp.example","group_id":"acme-corp",'
    b'"call_id":"u3159c1","seq":0,"direction":"inbound","calling_number":"+17133270644"}'
)


def host_probe() -> float:
    """Seconds to decode the same JSON line 300,000 times (best of 3): how fast this
    shared host runs at the moment, to read the latency figures by."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(300_000):
            orjson.loads(PROBE_LINE)
        best = min(best, time.perf_counter() - started)
    return best


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--latency-seconds", type=float, default=60)
    parser.add_argument(
        "--latency-users", type=int,
        help="users of the live feed's day (default: enough for the run, at least 2,000)",
    )
    parser.add_argument(
        "--latency-firm-users", action="store_true",
        help="the live feed under the firm's users, each holding many calls of the run at "
        "once (default: each call under a user of its own)",
    )
    parser.add_argument(
        "--latency-rate", type=float, help="events/s of the live feed (half the sustained rate)"
    )
    parser.add_argument(
        "--commit-interval", type=float,
        default=Settings.model_fields["worker"].default.commit_interval_seconds,
        help="the worker's commit_interval_seconds (the default config's)",
    )
    parser.add_argument(
        "--batch-size", type=int,
        help="the worker's batch_size (default: the default config's)",
    )
    parser.add_argument(
        "--latency-only", action="store_true", help="only the latency run (needs --latency-rate)"
    )
    args = parser.parse_args()
    if args.latency_only and not args.latency_rate:
        parser.error("--latency-only needs --latency-rate")
    workdir = Path(tempfile.mkdtemp(prefix="cdrstream-bench-stream-"))
    bootstrap = broker()
    config, settings = setup(
        workdir, bootstrap, args.partitions, args.commit_interval, args.batch_size
    )

    rate = 0.0 if args.latency_only else throughput(config, settings, workdir, args.events)

    print(f"host probe before the latency run: {host_probe():.3f} s")
    config2, settings2 = setup(
        workdir, bootstrap, args.partitions, args.commit_interval, args.batch_size
    )
    live = args.latency_rate or rate / 2
    lat = latency(
        config2, settings2, workdir, live, args.latency_seconds, users=args.latency_users,
        firm_users=args.latency_firm_users,
    )
    print(
        f"CDR latency, events sent live at {lat.rate:,.0f} events/s (asked {live:,.0f}, "
        f"at most {lat.behind:.2f} s behind schedule), "
        f"settle_seconds = {settings2.settle_seconds:g}:"
    )
    if lat.feed_delay:
        print(
            "  the feed's own delay, release ts to acknowledged by the broker: "
            f"p50 {percentile(lat.feed_delay, 0.5):.2f} s, "
            f"p99 {percentile(lat.feed_delay, 0.99):.2f} s"
        )
    print(
        f"  {lat.legs:,} legs released in the window; {lat.unissued:,} of them in no CDR read "
        f"5 s after the feed stopped ({lat.unissued / max(1, lat.legs):.1%})"
        + (": the worker fell behind, the percentiles below leave those out and are not "
           "the latency" if lat.unissued > lat.legs / 1000 else "")
    )
    for name, values in (
        ("all CDRs", lat.all), ("calls with a hold", lat.held), ("the others", lat.plain)
    ):
        if values:
            print(
                f"  {name}: p50 {percentile(values, 0.5):.2f} s, "
                f"p99 {percentile(values, 0.99):.2f} s, max {values[-1]:.2f} s "
                f"over {len(values)} CDRs"
            )
    steps = [
        f"{percentile(sorted(step), 0.99):.1f}" for step in lat.by_step if len(step) >= 100
    ]
    print(f"  p99 of each {TIMELINE_STEP:g} s of the window, in order: {' '.join(steps)}")
    if lat.worker_cpu is not None and lat.sent:
        print(
            f"  worker CPU while the feed ran: {lat.worker_cpu:.1f} s, "
            f"{lat.worker_cpu / lat.sent * 1e6:.1f} us per event sent"
        )
    print(f"host probe after: {host_probe():.3f} s")


if __name__ == "__main__":
    main()
