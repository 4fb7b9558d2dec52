"""`cdrstream worker`: the Faust shell around the engine (SPEC sections 3 to 5).

The event topics (co-partitioned by user_id) are read in batches straight from Faust's
consumer (`streams.worker_consumer`: one handler call per fetch, off Faust's per-message
stream path). A `StreamProcessor` keeps one engine per partition; per-user state lives in
the Faust table `user-state` (changelog-backed; memory or RocksDB). Each batch's CDRs and
dead letters are sent at once. A checkpoint (every half commit interval, on revocation
and when the fetcher stops) takes what was done so far and persists it in the background,
a slice of users at a time, while batches go on being handled; in this order:

1. every CDR and dead letter sent so far is delivered (awaited);
2. each user state changed since the last checkpoint goes to the table, and its
   changelog records are delivered;
3. only then do the handled events' offsets become committable.

A crash at any point replays events whose effects were not all persisted; the engine
ignores re-deliveries and issues the same CDR versions again (same key, same content), so
the final CDR set does not change: at-least-once, idempotent by `cdr_id` and `version`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import weakref
from collections import Counter as Tally
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from streams.cdr import Cdr
from streams.engine import Output
from streams.errors import WorkerError
from streams.gcpolicy import SurvivorFreezer, collect_rarely
from streams.partitioner import partition_for_key
from streams.serialization import encode_cdr_message, encode_dead_letter_message
from streams.settings import Settings
from streams.stream_processor import StateChanges, StateWrite, StreamProcessor
from streams.worker_consumer import Batch, BatchApp

TABLE_NAME = "user-state"
RECORD_BATCH_BYTES = 512 * 1024  # below the broker's default message.max.bytes (1 MiB)
CHECKPOINT_SLICE_USERS = 200  # users encoded between two chances to handle a batch
log = logging.getLogger(__name__)


class _PartitionEvent:
    """Stands in for a Faust event of a partition while writing table keys, so the table
    sends each key's change to that partition of its changelog (and RocksDB store)."""

    class _Message:
        def __init__(self, topic: str, partition: int):
            self.topic = topic
            self.partition = partition

    def __init__(self, topic: str, partition: int):
        self.message = self._Message(topic, partition)


@contextlib.contextmanager
def _in_partition(topic: str, partition: int) -> Iterator[None]:
    stand_in = _PartitionEvent(topic, partition)
    token = _current_event.set(weakref.ref(stand_in))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


class Metrics:
    """Prometheus metrics served at /metrics on the worker's web port."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "cdrstream_events_in", "Events consumed", ["topic"], registry=self.registry
        )
        self.cdrs = Counter(
            "cdrstream_cdrs_out", "CDR versions published", ["record_type"], registry=self.registry
        )
        self.dead_letters = Counter(
            "cdrstream_dead_letters", "Dead letters published", registry=self.registry
        )
        self.batches = Counter(
            "cdrstream_batches",
            "Fetches of event records handled (events_in / batches: events a fetch)",
            registry=self.registry,
        )
        self.open_legs = Gauge(
            "cdrstream_open_legs", "Call legs held in memory", registry=self.registry
        )
        self.partitions = Gauge(
            "cdrstream_assigned_partitions",
            "Event-topic partitions this worker has",
            registry=self.registry,
        )
        self.lag = Gauge(
            "cdrstream_consumer_lag",
            "Messages not yet consumed",
            ["topic", "partition"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _Batches:
    """Records to produce, gathered into one aiokafka record batch per topic partition
    (partitioned by key as the producer's own `send` would) and handed to the producer a
    batch at a time: appending a record costs a fraction of a `send`."""

    def __init__(self, producer: Any, known_topics: set[str]):
        self._faust_producer = producer
        self._open: dict[tuple[str, int], Any] = {}
        self._sent: list[Awaitable[Any]] = []
        self._known = known_topics  # whose metadata the producer has (shared, kept)

    @property
    def _producer(self) -> Any:
        return self._faust_producer._ensure_producer()  # Faust's Producer: its aiokafka one

    async def add(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        """Add a record (value None: a deletion, for a compacted topic), to `partition`
        or, without one, to the partition its key hashes to."""
        if partition is None:  # partitioning by key needs the topic's metadata
            await self._know(topic)
            producer = self._producer
            if key is None:
                partition = producer._partition(topic, None, None, None, key, value)
            else:  # as the producer's default partitioner would, compiled
                count = len(producer._metadata.partitions_for_topic(topic))
                partition = partition_for_key(key, count)
        await self.add_all(topic, partition, [(key, value)])

    async def _know(self, topic: str) -> None:
        """Have the producer fetch the topic's metadata, once."""
        if topic not in self._known:
            await self._producer.client._wait_on_metadata(topic)
            self._known.add(topic)

    async def add_all(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> None:
        """Add records to one topic partition."""
        if not records:
            return
        await self._know(topic)
        producer = self._producer
        where = (topic, partition)
        batch = self._open.get(where)
        if batch is None:
            batch = self._open[where] = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                await self._send(where, self._open.pop(where))
                batch = self._open[where] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    size = len(value or b"")
                    raise WorkerError(f"a record of {size} bytes does not fit in a batch")

    async def _send(self, where: tuple[str, int], batch: Any) -> None:
        topic, partition = where
        self._sent.append(await self._producer.send_batch(batch, topic, partition=partition))

    async def send(self) -> list[Awaitable[Any]]:
        """Hand every open batch to the producer; the futures of their deliveries."""
        for where, batch in self._open.items():
            await self._send(where, batch)
        self._open.clear()
        return self._sent


def _broker_urls(servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in servers.split(",") if server.strip()]


def create_app(settings: Settings) -> BatchApp:
    """The Faust app of the worker, configured from `settings`."""
    kafka, worker = settings.kafka, settings.worker
    app_options: dict[str, Any] = {}
    if kafka.security_protocol != "PLAINTEXT":
        app_options["broker_credentials"] = _credentials(settings)
    app = BatchApp(
        worker.app_id,
        broker=_broker_urls(kafka.bootstrap_servers),
        store=worker.store,
        datadir=str(Path(worker.data_dir) / worker.app_id),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=worker.batch_size,
        producer_acks=-1,
        # record batches of up to 512 KiB: a checkpoint's changelog records and a fetch's
        # CDRs go out in a few batches, not one per 16 KiB (aiokafka's default)
        producer_max_batch_size=RECORD_BATCH_BYTES,
        producer_max_request_size=2 * RECORD_BATCH_BYTES,
        processing_guarantee="at_least_once",
        broker_commit_interval=worker.commit_interval_seconds,
        broker_rebalance_timeout=worker.rebalance_timeout_seconds,
        broker_session_timeout=worker.session_timeout_seconds,
        broker_heartbeat_interval=worker.heartbeat_interval_seconds,
        web_port=worker.web_port,
        web_bind=worker.web_bind,
        web_in_thread=False,
        stream_wait_empty=False,
        table_cleanup_interval=3600.0,
        **app_options,
    )
    _wire(app, settings)
    return app


def _credentials(settings: Settings) -> Any:
    kafka = settings.kafka
    ssl_context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        ssl_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=kafka.ssl_cafile)
        if kafka.ssl_certfile:
            ssl_context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


def _wire(app: BatchApp, settings: Settings) -> None:
    kafka, worker = settings.kafka, settings.worker
    events_topic = app.topic(
        kafka.call_events_topic, kafka.dtmf_events_topic, key_type=bytes, value_type=bytes
    )
    app.topics.add(events_topic)  # subscribed; read by the batch path, not by an agent
    table = app.Table(TABLE_NAME, key_type=bytes, value_type=bytes, partitions=kafka.partitions)
    processor = StreamProcessor(settings)
    metrics = Metrics()
    lock = asyncio.Lock()
    known_topics: set[str] = set()  # topics whose metadata the producer has fetched

    # What was done since the last checkpoint: deliveries not yet awaited, and the last
    # offset handled of each event partition.
    deliveries: list[Awaitable[Any]] = []
    handled: dict[TP, int] = {}
    last_checkpoint = [time.monotonic()]
    checkpointing: list[asyncio.Future[None] | None] = [None]  # the one running, if any
    survivors = SurvivorFreezer()  # see streams/gcpolicy.py
    checkpoint_every = worker.commit_interval_seconds / 2

    async def publish(outputs: Sequence[Output]) -> None:
        """Send every CDR and dead letter (their deliveries are awaited at the next
        checkpoint): appended to one record batch per topic partition, each batch handed
        to the producer whole, rather than a producer call per record."""
        batches = _Batches(app.producer, known_topics)
        cdrs: Tally[str] = Tally()
        letters = 0
        for item in outputs:
            if isinstance(item, Cdr):
                value = encode_cdr_message(item, kafka.cdr_encoding)
                await batches.add(kafka.cdr_topic, item.cdr_id.encode(), value)
                cdrs[item.record_type] += 1
            else:
                key = None if item.event_id is None else item.event_id.encode()
                value = encode_dead_letter_message(item, kafka.cdr_encoding)
                await batches.add(kafka.dlq_topic, key, value)
                letters += 1
        deliveries.extend(await batches.send())
        for record_type, count in cdrs.items():
            metrics.cdrs.labels(record_type).inc(count)
        if letters:
            metrics.dead_letters.inc(letters)

    def begin_checkpoint() -> None:
        """Start a checkpoint unless one is running: what was done so far is taken now
        (the CDR deliveries, the offsets handled, the changed user states, which are
        immutable values) and persisted by a background task, in slices, while batches
        go on being handled. In order: every CDR and dead letter delivered; every user
        state changed written to the table (one write per user, however many batches
        changed it), its changelog records delivered; only then the offsets committable.
        One checkpoint at a time, each taking what the last one did not. Called with the
        lock held; a checkpoint that failed raises here, as a failed batch would."""
        running = checkpointing[0]
        if running is not None:
            if not running.done():
                return
            checkpointing[0] = None
            running.result()  # raises what the checkpoint raised
        pending = list(deliveries)
        deliveries.clear()
        marks = dict(handled)
        handled.clear()
        changes = processor.take_changes()
        last_checkpoint[0] = time.monotonic()
        checkpointing[0] = asyncio.ensure_future(run_checkpoint(pending, changes, marks))

    async def run_checkpoint(
        pending: list[Awaitable[Any]], changes: list[StateChanges], marks: dict[TP, int]
    ) -> None:
        if pending:
            await asyncio.gather(*pending)
        await persist(changes)
        consumer = app.batch_consumer
        for tp, offset in marks.items():
            consumer.mark_processed(tp, offset)
        metrics.open_legs.set(processor.open_legs)

    async def checkpoint() -> None:
        """A whole checkpoint of everything done so far, awaited (revocation, stop)."""
        await settle_checkpoint()
        begin_checkpoint()
        await settle_checkpoint()

    async def settle_checkpoint() -> None:
        running, checkpointing[0] = checkpointing[0], None
        if running is not None:
            await running

    async def persist(changes: list[StateChanges]) -> None:
        """Write the changed user states to the table, and their changelog records in one
        record batch per partition (not Faust's per-message changelog path, which costs
        far more than the write), awaiting their delivery. Users are encoded a slice at
        a time, letting batches be handled in between. Then, as Faust's own callback
        would, the RocksDB store notes the changelog offset it holds data up to."""
        if not changes:
            return
        store: Any = table.data  # a Faust Store: memory or RocksDB
        changelog = table.changelog_topic.get_topic_name()
        batches = _Batches(app.producer, known_topics)

        async def write(partition: int, writes: list[StateWrite]) -> None:
            """Writes of one partition: to the store, then to the changelog's batch."""
            for entry in writes:
                if entry.value is None:
                    if entry.key in store:
                        del store[entry.key]
                else:
                    store[entry.key] = entry.value
            await batches.add_all(
                changelog, partition, [(entry.key, entry.value) for entry in writes]
            )

        for change in changes:
            slice_writes: list[StateWrite] = []
            # the partition of every write of a change: the store (RocksDB) and the table
            # take it from the current event, which stays set across the awaits
            with _in_partition(kafka.call_events_topic, change.partition):
                for count, writes in enumerate(processor.writes_for(change), start=1):
                    slice_writes.extend(writes)
                    if not count % CHECKPOINT_SLICE_USERS:
                        await write(change.partition, slice_writes)
                        slice_writes = []
                        await asyncio.sleep(0)  # let a fetched batch be handled
                await write(change.partition, slice_writes)
        for metadata in await asyncio.gather(*await batches.send()):
            store.set_persisted_offset(
                faust.types.TP(metadata.topic, metadata.partition), metadata.offset
            )

    def checkpoint_due() -> bool:
        return time.monotonic() - last_checkpoint[0] >= checkpoint_every

    def backlog(topic: str, partition: int) -> bool:
        """True while that topic partition has messages this worker has not read: its
        high-water mark (from the last fetch) is past the next offset to read. Unknown
        (not fetched yet) counts as a backlog."""
        consumer = app.consumer
        tp = faust.types.TP(topic, partition)
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            return True
        if highwater is None:
            return True
        last = processor.positions.get((topic, partition))
        if last is not None:
            return bool(highwater > last + 1)
        # where reading starts, as Faust keeps it
        committed = consumer._read_offset.get(tp)  # type: ignore[attr-defined]
        return bool(highwater > (committed or 0))

    async def process(batch: Batch, revocations: int) -> None:
        """One fetch of event records: fed to the engines, what they issue sent at once;
        a checkpoint when one is due."""
        async with lock:
            if app.batch_consumer.revocations != revocations:
                return  # partitions were revoked since the fetch: Faust reads them again
            processor.restore({tp.partition for tp, _ in batch}, table.data, time.time())
            counts: Tally[str] = Tally()
            for tp, records in batch:
                counts[tp.topic] += len(records)
            for topic, count in counts.items():
                metrics.events.labels(topic).inc(count)
            metrics.batches.inc()
            messages = [record for _, records in batch for record in records]
            outputs = processor.handle(messages, time.time(), backlog)
            for tp, _ in batch:  # records read again after a seek back leave it as it was
                handled[tp] = processor.positions[(tp.topic, tp.partition)]
            await publish(outputs)
            if checkpoint_due():
                begin_checkpoint()

    async def on_stop() -> None:
        """The fetcher has stopped (SIGTERM): persist what was done, so that the
        consumer's last commit takes it."""
        async with lock:
            await checkpoint()

    app.batch_topics = frozenset(events_topic.topics)
    app.batch_handler = process
    app.batch_on_stop = on_stop
    app.batch_wait_seconds = worker.batch_timeout_seconds
    app.batch_fetch_min_bytes = worker.fetch_min_bytes
    app.batch_fetch_max_wait_ms = round(worker.fetch_max_wait_seconds * 1000)

    @app.timer(interval=max(0.2, min(1.0, processor.idle_seconds / 2)))  # type: ignore[untyped-decorator]
    async def idle_flush() -> None:
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        if app.in_recovery or app.rebalancing or not recovered:
            return
        async with lock:
            # engines of partitions that have had no events since this worker got them
            # (after a restart with nothing new to read, their calls still need issuing)
            assigned = {
                tp.partition
                for tp in app.consumer.assignment()
                if tp.topic == kafka.call_events_topic
            }
            metrics.partitions.set(len(assigned))
            processor.restore(assigned, table.data, time.time())
            await publish(processor.idle_flush(time.time(), backlog))
            if checkpoint_due():
                begin_checkpoint()
            _update_lag(app, processor, metrics)
            survivors.tick(time.monotonic())

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        async with lock:
            await checkpoint()  # the state of what was done, for whoever gets them next
            processor.forget(
                {tp.partition for tp in revoked if tp.topic == kafka.call_events_topic}
            )

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

    if settings.export.worker_enabled:
        _wire_daily_export(app, settings)
    app.cdrstream_processor = processor  # type: ignore[attr-defined]


def export_once(settings: Settings, now_ms: int) -> int:
    """The scheduled daily export from the `cdr` topic (idempotent: the delivery ledger
    skips what was sent); returns when the next day falls due."""
    from streams.delivery import run_daily
    from streams.export import next_due_ms
    from streams.kafka_io import read_latest_cdrs

    latest = read_latest_cdrs(settings)
    report = run_daily(settings, latest, now_ms=now_ms)
    for error in report.errors:
        log.warning("daily export: %s", error)
    return next_due_ms(settings, latest.values(), now_ms)


def _wire_daily_export(app: faust.App, settings: Settings) -> None:
    """`[export] worker_enabled`: the leader exports each group's day after its local
    midnight plus the settle time, catching up missed days at start."""
    next_due = [0]
    check_ms = round(settings.export.worker_check_seconds * 1000)

    interval = min(30.0, settings.export.worker_check_seconds)

    @app.timer(interval=interval, on_leader=True)  # type: ignore[untyped-decorator]
    async def daily_export() -> None:
        now_ms = round(time.time() * 1000)
        if now_ms < next_due[0]:
            return
        try:
            due = await asyncio.to_thread(export_once, settings, now_ms)
            next_due[0] = min(due, now_ms + check_ms)
        except Exception as error:  # a failed export is retried on the next tick
            log.warning("daily export failed, retrying in a minute: %s", error)
            next_due[0] = now_ms + 60_000


def _update_lag(app: faust.App, processor: StreamProcessor, metrics: Metrics) -> None:
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return
    for (topic, partition), offset in processor.positions.items():
        with contextlib.suppress(Exception):
            highwater = consumer.highwater(faust.types.TP(topic, partition))
            if highwater is not None:
                metrics.lag.labels(topic, str(partition)).set(max(highwater - offset - 1, 0))


def run_worker(settings: Settings, loglevel: str = "warning") -> None:
    """Run the worker until stopped (SIGTERM or SIGINT stop it cleanly)."""
    Path(settings.worker.data_dir).mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    # No terminal spinner: it puts the root logger at DEBUG, so that every debug call of
    # aiokafka and Faust (several per message produced) builds a log record for nothing.
    worker.spinner = None
    collect_rarely()
    worker.execute_from_commandline()
