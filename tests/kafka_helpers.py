"""Producing to and reading from the real broker in tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import (
    AIOKafkaClient,
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared.events.envelope import CanonicalEvent
from shared.kafka.messages import canonical_message
from shared.settings import KafkaSettings, TopicSettings
from tests.waiting import eventually

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
    """Read committed records from the start until ``expect`` arrived and every partition was
    read up to the end it had when the reading began, then ``settle`` seconds more to catch any
    extra (duplicate) records; returns everything read (what arrived by ``timeout``)."""
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
        ends = await consumer.end_offsets(tps)  # read_committed: the last stable offsets
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if settle_until is None and len(records) >= expect:
                # positions move past transaction markers too, so they reach the ends
                positions = [await consumer.position(tp) for tp in tps]
                if all(at >= ends[tp] for at, tp in zip(positions, tps, strict=True)):
                    settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
        return records
    finally:
        await consumer.stop()


async def wait_for_topics(kafka: KafkaSettings, topics: TopicSettings, timeout: float = 60) -> None:
    """Wait until every partition of the freshly created ``topics`` has a leader that answers
    (a ListOffsets request succeeds): a new topic's partitions first answer
    NotLeaderForPartition, and a test that starts its clock before then measures the election."""
    names = sorted(set(topics.model_dump().values()))
    client = AIOKafkaClient(bootstrap_servers=kafka.bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers)
    await client.bootstrap()
    await consumer.start()
    waiting: list[str] = list(names)

    async def answered() -> bool:
        try:
            cluster = await client.fetch_all_metadata()
            tps, waiting[:] = [], []
            for name in names:
                partitions = cluster.partitions_for_topic(name) or set()
                led = cluster.available_partitions_for_topic(name) or set()
                if not partitions or led != partitions:
                    waiting.append(f"{name}: {len(led)} of {len(partitions)} led")
                tps += [TopicPartition(name, p) for p in sorted(partitions)]
            if waiting:
                return False
            await asyncio.wait_for(consumer.end_offsets(tps), timeout=5)
        except (KafkaError, TimeoutError) as exc:
            waiting[:] = [repr(exc)]
            return False
        return True

    try:
        await eventually(answered, timeout, what=lambda: f"topics not ready: {waiting}")
    finally:
        await consumer.stop()
        await client.close()


async def wait_consumed(
    kafka: KafkaSettings, group: str, topics: Sequence[str], timeout: float = 60
) -> None:
    """Wait until consumer group ``group`` has committed, on every partition of ``topics``, the
    offset after the last committed record there now. The services commit a batch's offsets
    only after its effects (in the same transaction as what it publishes), so then everything
    published to ``topics`` before this call has been handled."""
    targets: dict[TopicPartition, int] = {}
    for topic in topics:
        for record in await read_topic(kafka, topic, expect=0, timeout=timeout, settle=0):
            tp = TopicPartition(record.topic, record.partition)
            targets[tp] = max(targets.get(tp, 0), record.offset + 1)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    behind: dict[str, tuple[int, int]] = {}

    async def committed() -> bool:
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        except KafkaError:  # e.g. the coordinator is still loading the group
            return False
        behind.clear()
        for tp, target in targets.items():
            at = offsets[tp].offset if tp in offsets else -1
            if at < target:
                behind[f"{tp.topic}/{tp.partition}"] = (at, target)
        return not behind

    try:
        await eventually(
            committed,
            timeout,
            interval=0.2,
            what=lambda: f"group {group} behind (committed, wanted): {behind}",
        )
    finally:
        await admin.close()


def ids_of(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return [orjson.loads(r.value)["id"] for r in records]


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    headers: Sequence[tuple[str, bytes]] = record.headers  # aiokafka ships no type hints
    for key, value in headers:
        if key == name:
            return value.decode()
    return None
