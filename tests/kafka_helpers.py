"""Producing to and reading from the real broker in tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from shared.events.envelope import CanonicalEvent
from shared.kafka.messages import canonical_message
from shared.settings import KafkaSettings

Header = tuple[str, bytes]


async def produce(
    kafka: KafkaSettings,
    topic: str,
    items: Sequence[bytes | dict[str, Any] | tuple[bytes | dict[str, Any], list[Header]]],
    key: bytes | None = None,
) -> list[Any]:
    """Send items (bytes, JSON-able dicts, or (value, headers)); returns the record metadata."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=2)
    await producer.start()
    try:
        futures = []
        for item in items:
            value, headers = item if isinstance(item, tuple) else (item, [])
            raw = value if isinstance(value, bytes) else orjson.dumps(value)
            futures.append(await producer.send(topic, raw, key=key, headers=headers))
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def publish_events(
    kafka: KafkaSettings, topic: str, events: Sequence[CanonicalEvent]
) -> None:
    """Canonical events as the services publish them (structured mode, keyed by subject)."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=2)
    await producer.start()
    try:
        futures = []
        for event in events:
            m = canonical_message(topic, event)
            futures.append(await producer.send(topic, m.value, key=m.key, headers=list(m.headers)))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(
    kafka: KafkaSettings,
    topic: str,
    *,
    expect: int,
    timeout: float = 60,
    settle: float = 1.5,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read committed records from the start until ``expect`` arrived, then ``settle`` seconds
    more to catch any extra (duplicate) records; returns everything read."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        while not partitions:
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if len(records) >= expect and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
        return records
    finally:
        await consumer.stop()


def ids_of(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return [orjson.loads(r.value)["id"] for r in records]


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return value.decode()
    return None


async def wait_until(predicate: Any, timeout: float = 30, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise TimeoutError("condition not met in time")
