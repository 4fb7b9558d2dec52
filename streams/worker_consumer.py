"""Faust's Kafka consumer with a batch path for the event topics.

Faust hands every fetched message, one at a time, to its conductor, which wakes the topic
channel, the stream and its event objects (and `_drain_messages` waits on a handful of
futures per message). That costs far more than the engine's work per event, so the worker
takes the event topics off that path: this consumer passes each fetch of event-topic
records, as aiokafka returned them, to one batch handler, and keeps Faust's own path for
everything else (the table's changelog during recovery and standby).

Faust keeps doing the rest: group membership and partition assignment, pausing event
partitions while the table recovers, seeking to the committed offsets, and committing.
Offsets of the event topics become committable only when the handler says a batch is
done (`mark_processed`), after its outputs were delivered and its state persisted; the
periodic commit then takes them with the acknowledged offsets of the other topics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from time import monotonic
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service

# One fetch of event-topic records: (topic partition, its records in offset order).
# The records are aiokafka's ConsumerRecord (topic, partition, offset, key, value, ...).
Batch = Sequence[tuple[TP, Sequence[Any]]]
# The handler gets a batch and the consumer's `revocations` count when it was fetched: if
# the count has changed by the time the handler holds the partitions, the batch is stale
# (see `BatchConsumer.revocations`).
BatchHandler = Callable[[Batch, int], Awaitable[None]]


class BatchConsumer(faust_aiokafka.Consumer):
    """The aiokafka consumer of Faust, with event-topic records handed over in batches
    (the topics and the handler are the app's: see `BatchApp`)."""

    app: BatchApp

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # next offset to commit of each event partition, once its batch is done
        self._processed: dict[TP, int] = {}
        # how many times partitions were revoked: a batch fetched before a revocation may
        # hold records of partitions this worker no longer has, and its handler drops it
        # (Faust seeks back to the committed offsets of whatever is assigned next)
        self.revocations = 0

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # ------------------------------------------------------------ offsets

    def mark_processed(self, tp: TP, offset: int) -> None:
        """The records of `tp` up to `offset` are done: they may be committed."""
        if offset + 1 > self._processed.get(tp, -1):
            self._processed[tp] = offset + 1

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        pending = set(super()._filter_tps_with_pending_acks(topics))
        pending.update(
            tp
            for tp in self._processed
            if topics is None or tp in topics or tp.topic in topics
        )
        return iter(pending)

    def _new_offset(self, tp: TP) -> int | None:
        processed = self._processed.pop(tp, None)
        if processed is not None:
            return processed
        return super()._new_offset(tp)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.revocations += 1
        await super().on_partitions_revoked(revoked)  # waits for a batch in progress
        for tp in revoked:
            self._processed.pop(tp, None)

    # ------------------------------------------------------------ fetching

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - with Kafka
        """Faust's fetch loop (see `faust.transport.consumer.Consumer._drain_messages`),
        with one call of the batch handler per fetch for the event topics."""
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                try:
                    await self._fetch_once()
                finally:
                    self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    async def _fetch_once(self) -> None:
        records, active = await self._wait_next_records(self.app.batch_wait_seconds)
        generation = self.app.consumer_generation_id
        await asyncio.sleep(0)
        if not records or self.should_stop:
            return
        if not self.flow_active:
            # as Faust's getmany: records fetched while the flow stopped are dropped,
            # and reading goes back to the committed offsets
            try:
                await self.perform_seek()
            except Exception as error:
                self.log.warning(f"exception performing seek when flow not active {error}")
            return
        batch: list[tuple[TP, Sequence[Any]]] = []
        batch_topics = self.app.batch_topics
        read_offset = self._read_offset
        for tp, fetched in records.items():
            if not fetched:
                continue
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            if tp.topic in batch_topics:
                start = read_offset[tp]
                if start is not None and fetched[0].offset < start:  # read before a seek
                    fetched = [r for r in fetched if r.offset >= start]  # noqa: PLW2901
                if fetched:
                    batch.append((tp, fetched))
            elif not await self._deliver_one_by_one(tp, fetched, generation):
                return
        if not batch or generation != self.app.consumer_generation_id or not self.flow_active:
            return
        monitor = self.app.monitor
        now = monotonic()
        for tp, tp_records in batch:
            read_offset[tp] = tp_records[-1].offset
            if monitor is not None:
                with contextlib.suppress(Exception):
                    monitor.track_tp_end_offset(tp, self.highwater(tp))
                monitor.stream_inbound_time[tp] = now
        await self._handle(batch, self.revocations)

    async def _handle(self, batch: Batch, revocations: int) -> None:
        """Run the handler to its end even when the fetcher is being stopped, so that a
        batch once begun is delivered and persisted before the stop goes on."""
        handler = self.app.batch_handler
        if handler is None:
            raise RuntimeError("no batch handler for the event topics")
        task = asyncio.ensure_future(handler(batch, revocations))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def _deliver_one_by_one(
        self, tp: TP, tp_records: Sequence[Any], generation: int
    ) -> bool:
        """Faust's own path for one partition's records of another topic (the table's
        changelog): one message at a time to the conductor. False when the consumer
        generation changed (a rebalance) and the rest of the fetch must be dropped."""
        read_offset = self._read_offset
        acks_enabled = self.app.topics.acks_enabled_for(tp.topic)
        for count, record in enumerate(tp_records):
            if self.app.consumer_generation_id != generation or not self.flow_active:
                return False
            if count and not count % 100:
                await asyncio.sleep(0)
            offset = record.offset
            r_offset = read_offset[tp]
            if r_offset is not None and offset < r_offset:
                continue
            gap = offset - (r_offset or 0)
            if gap > 1 and r_offset and acks_enabled:
                await self._add_gap(tp, r_offset + 1, offset)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await self.wait_first(
                self.callback(self._to_message(tp, record)), self.suspend_flow.wait()
            )
            read_offset[tp] = offset
        return True


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer lets the broker gather records for
    a fetch: Faust leaves aiokafka's `fetch_min_bytes` at 1 (an answer per record or
    two when traffic is light) and sets no way to change it."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app = cast(BatchApp, self.app)
        # read by AIOKafkaConsumer.start(), when it builds its fetcher
        consumer._fetch_min_bytes = app.batch_fetch_min_bytes
        consumer._fetch_max_wait_ms = app.batch_fetch_max_wait_ms
        return consumer


class BatchTransport(faust_aiokafka.Transport):
    """The aiokafka transport, with `BatchConsumer` as its consumer."""

    Consumer = BatchConsumer


class BatchApp(faust.App):
    """A Faust app whose consumer is a `BatchConsumer` (whatever the broker URL says:
    the worker only speaks Kafka through aiokafka). Set `batch_topics` and
    `batch_handler` before the app starts."""

    batch_topics: frozenset[str] = frozenset()
    batch_handler: BatchHandler | None = None
    batch_wait_seconds: float = 1.0  # how long one fetch waits for records to come
    batch_fetch_min_bytes: int = 1  # aiokafka's fetch_min_bytes and fetch_max_wait_ms
    batch_fetch_max_wait_ms: int = 1500  # (the defaults: as Faust sets them)
    # called once the fetcher has stopped, before the consumer's last commit
    batch_on_stop: Callable[[], Awaitable[None]] | None = None

    async def _stop_fetcher(self) -> None:
        await super()._stop_fetcher()
        if self.batch_on_stop is not None:
            await self.batch_on_stop()

    def _new_transport(self) -> BatchTransport:
        return BatchTransport(self.conf.broker_consumer, self)

    @property
    def batch_consumer(self) -> BatchConsumer:
        return cast(BatchConsumer, self.consumer)
