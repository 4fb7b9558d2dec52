"""Smoke test of the session Kafka broker (Kafka 4.x) with both client libraries we use.

kafka-python (admin/producer/consumer, sync) and aiokafka (what faust-streaming runs on).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AIOTopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin import NewTopic as AIONewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

pytestmark = pytest.mark.kafka

PARTITIONS = 3
KEYS = [f"key-{i}" for i in range(5)]
TIMEOUT_S = 30


def _messages() -> list[tuple[bytes, bytes]]:
    # every key twice, so we can check that a key always lands in the same partition
    return [(k.encode(), f"{k}-v{n}".encode()) for n in range(2) for k in KEYS]


def _check_received(received: list[tuple[bytes, bytes, int]]) -> None:
    expected = _messages()
    assert sorted((k, v) for k, v, _ in received) == sorted(expected)
    partitions_by_key: dict[bytes, set[int]] = {}
    for key, _, partition in received:
        partitions_by_key.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in partitions_by_key.values()), partitions_by_key
    assert all(0 <= next(iter(p)) < PARTITIONS for p in partitions_by_key.values())
    # per key, values arrive in produce order
    for key in partitions_by_key:
        values = [v for k, v, _ in received if k == key]
        assert values == [v for k, v in expected if k == key]


def test_kafka_python_roundtrip(kafka_bootstrap: str, kafka_topic_prefix: str) -> None:
    topic = f"{kafka_topic_prefix}kp"
    group = f"{kafka_topic_prefix}kp-group"

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="test-admin")
    try:
        admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=PARTITIONS,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"},
                )
            ]
        )
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        # kafka-python 3.x returns a nested dict, 2.x a list of responses
        if isinstance(configs, dict):
            assert configs["topic"][topic]["cleanup.policy"]["value"] == "compact"
        else:
            assert "compact" in repr(configs)

        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        try:
            for key, value in _messages():
                producer.send(topic, key=key, value=value)
            producer.flush(timeout=TIMEOUT_S)
        finally:
            producer.close()

        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        try:
            assert consumer.partitions_for_topic(topic) == set(range(PARTITIONS))
            received: list[tuple[bytes, bytes, int]] = []
            deadline = time.monotonic() + TIMEOUT_S
            while len(received) < len(_messages()) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    received.extend((r.key, r.value, r.partition) for r in records)
            _check_received(received)
            consumer.commit()
            committed = sum(
                consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)
            )
            assert committed == len(_messages())
        finally:
            consumer.close()

        admin.delete_topics([topic])
    finally:
        admin.close()


def test_aiokafka_roundtrip(kafka_bootstrap: str, kafka_topic_prefix: str) -> None:
    topic = f"{kafka_topic_prefix}aio"
    group = f"{kafka_topic_prefix}aio-group"

    async def scenario() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    AIONewTopic(
                        topic,
                        num_partitions=PARTITIONS,
                        replication_factor=1,
                        topic_configs={"cleanup.policy": "compact"},
                    )
                ]
            )

            producer = AIOKafkaProducer(
                bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
            )
            await producer.start()
            try:
                for key, value in _messages():
                    await producer.send_and_wait(topic, key=key, value=value)
            finally:
                await producer.stop()

            consumer = AIOKafkaConsumer(
                topic,
                bootstrap_servers=kafka_bootstrap,
                group_id=group,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
            )
            await consumer.start()
            try:
                received: list[tuple[bytes, bytes, int]] = []

                async def consume() -> None:
                    async for record in consumer:
                        received.append((record.key, record.value, record.partition))
                        if len(received) == len(_messages()):
                            return

                await asyncio.wait_for(consume(), TIMEOUT_S)
                _check_received(received)
                await consumer.commit()
                committed = 0
                for p in range(PARTITIONS):
                    committed += await consumer.committed(AIOTopicPartition(topic, p)) or 0
                assert committed == len(_messages())
            finally:
                await consumer.stop()

            await admin.delete_topics([topic])
        finally:
            await admin.close()

    asyncio.run(scenario())
