"""Kafka tools around the engine, on kafka-python: topic admin, the switch-side
publisher, and the consumer-side readers of the `cdr` topic.

Only this module and `streams.worker` import Kafka client libraries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streams.cdr import Cdr
from streams.deadletter import DeadLetter
from streams.errors import KafkaToolError, SerializationError
from streams.events import DTMF, Event
from streams.serialization import (
    decode_cdr_message,
    encode_event_message,
    latest_versions,
    read_events,
)
from streams.settings import KafkaSettings, Settings


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection options shared by every kafka-python client."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        options |= {
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": kafka.sasl_username,
            "sasl_plain_password": kafka.sasl_password,
        }
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(kafka, name)
        if value:
            options[name] = value
    return options


# ---------------------------------------------------------------- topics


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics cdrstream uses: both event topics with the same partition count (they
    are keyed by user_id and read together), `cdr` compacted, and the dead letters."""
    kafka = settings.kafka
    n = kafka.partitions
    return [
        TopicSpec(kafka.call_events_topic, n, {}),
        TopicSpec(kafka.dtmf_events_topic, n, {}),
        TopicSpec(
            kafka.cdr_topic, n, {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
        ),
        TopicSpec(kafka.dlq_topic, max(1, min(n, 3)), {}),
    ]


def create_topics(settings: Settings) -> list[str]:
    """Create the topics that do not exist yet (idempotent); return one line per topic.

    An existing topic with another partition count is reported, not changed."""
    kafka = settings.kafka
    try:
        admin = KafkaAdminClient(**client_options(kafka), request_timeout_ms=30000)
    except KafkaError as error:
        raise KafkaToolError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {error}") from None
    try:
        report = []
        for spec in topic_specs(settings):
            topic = NewTopic(
                spec.name, spec.partitions, kafka.replication_factor, topic_configs=spec.config
            )
            try:
                admin.create_topics([topic])
                report.append(f"created {spec.name} ({spec.partitions} partitions)")
            except TopicAlreadyExistsError:
                actual = len(admin.describe_topics([spec.name])[0]["partitions"])
                note = "" if actual == spec.partitions else f", not {spec.partitions} as configured"
                report.append(f"exists  {spec.name} ({actual} partitions{note})")
        return report
    except KafkaError as error:
        raise KafkaToolError(f"creating topics: {error}") from None
    finally:
        admin.close()


# ---------------------------------------------------------------- switch side


class EventPublisher:
    """Publishes switch events as a switch would: call events and DTMF to their topics,
    keyed by user_id, Avro single-object or JSON. For a switch integration to embed:

        with EventPublisher(settings) as publisher:
            publisher.publish(event)
    """

    def __init__(self, settings: Settings, linger_ms: int = 5):
        self.kafka = settings.kafka
        try:
            self._producer = KafkaProducer(
                **client_options(self.kafka),
                acks="all",
                linger_ms=linger_ms,
                retries=10,
                max_in_flight_requests_per_connection=1,
                batch_size=256 * 1024,
                compression_type=None,
            )
        except KafkaError as error:
            raise KafkaToolError(
                f"cannot reach Kafka at {self.kafka.bootstrap_servers}: {error}"
            ) from None
        # Both topics' metadata now, not at each topic's first send: that send would block
        # while the other topic's first messages went out, putting one topic ahead of the
        # other by a metadata round trip.
        for topic in (self.kafka.call_events_topic, self.kafka.dtmf_events_topic):
            try:
                self._producer.partitions_for(topic)
            except KafkaError as error:
                raise KafkaToolError(
                    f"no metadata for topic {topic!r} (run `cdrstream topics create`?): {error}"
                ) from None
        self.sent = 0

    def topic_for(self, event: Event) -> str:
        return self.kafka.dtmf_events_topic if event.type == DTMF else self.kafka.call_events_topic

    def publish(self, event: Event) -> None:
        value = encode_event_message(event, self.kafka.encoding)
        self._producer.send(self.topic_for(event), key=event.user_id.encode(), value=value)
        self.sent += 1

    def publish_raw(self, value: bytes, key: bytes | None = None, topic: str | None = None) -> None:
        """Send bytes as they are (malformed-input drills and tests)."""
        self._producer.send(topic or self.kafka.call_events_topic, key=key, value=value)
        self.sent += 1

    def flush(self, timeout: float | None = 60) -> None:
        try:
            self._producer.flush(timeout)
        except KafkaError as error:
            raise KafkaToolError(f"publishing: {error}") from None

    def close(self) -> None:
        self.flush()
        self._producer.close()

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class PublishStats:
    events: int
    malformed: int
    seconds: float


def publish_file(settings: Settings, path: str, send_malformed: bool = False) -> PublishStats:
    """Publish an events file (JSON Lines or Avro) in file order. Lines that are not valid
    events are refused (counted) unless `send_malformed`, which sends them raw to the
    call-events topic, for dead-letter drills."""
    started = time.monotonic()
    malformed = 0
    with EventPublisher(settings) as publisher:
        for item, _origin in read_events(path):
            if isinstance(item, DeadLetter):
                malformed += 1
                if send_malformed:
                    payload = item.payload
                    raw = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
                    publisher.publish_raw(raw)
                continue
            publisher.publish(item)
        sent = publisher.sent
    return PublishStats(sent, malformed, time.monotonic() - started)


def stream_events(settings: Settings, events: Iterable[Event], rate: float | None = None) -> int:
    """Send events in real time, as live switches would.

    With `rate`, N events a second, each stamped with the wall-clock time it is sent, so
    that event time keeps pace with the clock (the simulated day is compressed). Without
    it, events go out at their own pace: the timeline is shifted to start now."""
    count = 0
    with EventPublisher(settings) as publisher:
        started = time.time()
        shift: int | None = None
        for event in events:
            if rate:
                due = started + count / rate
                stamped = event.replace(ts=round(max(time.time(), due) * 1000))
            else:
                if shift is None:
                    shift = round(started * 1000) - event.ts
                stamped = event.replace(ts=event.ts + shift)
                due = stamped.ts / 1000
            wait = due - time.time()
            if wait > 0.002:
                publisher.flush()
                time.sleep(wait)
            publisher.publish(stamped)
            count += 1
    return count


# ---------------------------------------------------------------- consumer side


def _consumer(settings: Settings, **extra: Any) -> KafkaConsumer:
    try:
        return KafkaConsumer(
            **client_options(settings.kafka),
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
            **extra,
        )
    except KafkaError as error:
        raise KafkaToolError(
            f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {error}"
        ) from None


def _partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    deadline = time.monotonic() + 30
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if time.monotonic() > deadline:
            raise KafkaToolError(f"topic {topic!r} does not exist (run `cdrstream topics create`)")
        time.sleep(0.2)


def read_topic_to_end(settings: Settings, topic: str) -> Iterator[Any]:
    """Every record of `topic` from the beginning up to its end as of now."""
    consumer = _consumer(settings, max_partition_fetch_bytes=8 * 1024 * 1024)
    try:
        partitions = _partitions(consumer, topic)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > consumer.position(tp)}
        while remaining:
            for tp, records in consumer.poll(timeout_ms=1000, max_records=10000).items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()


def read_cdr_records(settings: Settings) -> Iterator[Cdr]:
    """Every CDR version on the `cdr` topic up to its current end (tombstones skipped)."""
    for record in read_topic_to_end(settings, settings.kafka.cdr_topic):
        if record.value is None:
            continue
        try:
            yield decode_cdr_message(record.value)
        except SerializationError as error:
            raise KafkaToolError(
                f"{record.topic}[{record.partition}]@{record.offset}: {error}"
            ) from None


def read_latest_cdrs(settings: Settings) -> dict[str, Cdr]:
    """The latest version of every CDR on the `cdr` topic (the final CDR set)."""
    return latest_versions(read_cdr_records(settings))


def follow_cdrs(
    settings: Settings, from_beginning: bool = False, idle_timeout: float | None = None
) -> Iterator[Cdr]:
    """CDR versions as they arrive on the `cdr` topic; stops after `idle_timeout` seconds
    without one, when given."""

    def idle(quiet: float) -> bool:
        return idle_timeout is not None and quiet > idle_timeout

    for _, cdr in follow_cdr_records(settings, from_beginning, idle):
        yield cdr


def follow_cdr_records(
    settings: Settings, from_beginning: bool, done: Callable[[float], bool]
) -> Iterator[tuple[int, Cdr]]:
    """CDR versions as they arrive on the `cdr` topic, each with its record's timestamp
    (ms); stops when `done` says so, given the seconds since the last record."""
    consumer = _consumer(settings)
    try:
        partitions = _partitions(consumer, settings.kafka.cdr_topic)
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        last = time.monotonic()
        while not done(time.monotonic() - last):
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.value is not None:
                        yield record.timestamp, decode_cdr_message(record.value)
                    last = time.monotonic()
    finally:
        consumer.close()
