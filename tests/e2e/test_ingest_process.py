"""Ingest as a separate process, the way `make up` runs it: crashes, restarts, rebalances."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import httpx
import pytest

from deploy.local.stack import DEV_API_KEY, LocalStack
from shared.settings import KafkaSettings, TopicSettings
from tests.e2e.replicas import Replicas
from tests.kafka_helpers import ids_of, produce, read_topic

pytestmark = pytest.mark.e2e


@pytest.fixture
def ingest_procs(stack: LocalStack, topics: TopicSettings) -> Iterator[Replicas]:
    procs = Replicas(stack, "ingest", topics)
    try:
        yield procs
    finally:
        procs.stop_all()


def stream(start: int, count: int) -> list[dict[str, object]]:
    """Interactions with ids e-<n>; every tenth is sent twice (an upstream replay)."""
    events: list[dict[str, object]] = []
    for n in range(start, start + count):
        body: dict[str, object] = {
            "type": "customer.interaction",
            "id": f"e-{n}",
            "source": "pos",
            "interaction_id": f"I-{n}",
            "customer_id": f"C-{n % 101}",
            "kind": "order",
            "amount": "10.00",
            "currency": "EUR",
            "occurred_at": "2026-11-22T09:00:00+01:00",
        }
        events.append(body)
        if n % 10 == 0:
            events.append(dict(body))
    return events


async def send_stream(kafka: KafkaSettings, topic: str, total: int, chunk: int = 250) -> None:
    for start in range(0, total, chunk):
        await produce(kafka, topic, stream(start, chunk))
        await asyncio.sleep(0.05)


async def test_kill_9_in_the_middle_of_a_stream_loses_and_repeats_nothing(
    ingest_procs: Replicas, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    total = 6000
    proc = ingest_procs.start("a")
    sending = asyncio.create_task(send_stream(kafka_settings, topics.raw_customer, total))
    await asyncio.sleep(1.0)
    proc.kill()  # SIGKILL: no chance to commit, the open transaction is left behind
    await asyncio.sleep(0.5)
    await asyncio.to_thread(ingest_procs.start, "a")  # same instance id: fences the old one
    await sending
    published = await read_topic(kafka_settings, topics.events, expect=total, settle=3)

    ids = ids_of(published)
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert set(ids) == {f"e-{n}" for n in range(total)}, "an event was lost"


async def test_a_rebalance_between_two_replicas_loses_and_repeats_nothing(
    ingest_procs: Replicas, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    total = 6000
    first = ingest_procs.start("a")
    sending = asyncio.create_task(send_stream(kafka_settings, topics.raw_customer, total))
    await asyncio.sleep(0.8)
    await asyncio.to_thread(ingest_procs.start, "b")  # joins: partitions move to it
    await asyncio.sleep(0.8)
    first.signal(signal.SIGTERM)  # leaves: its partitions move back, after a clean commit
    await sending
    published = await read_topic(kafka_settings, topics.events, expect=total, settle=3)

    ids = ids_of(published)
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert set(ids) == {f"e-{n}" for n in range(total)}, "an event was lost"


async def test_the_running_process_serves_its_api_metrics_and_dead_letters(
    ingest_procs: Replicas, kafka_settings: KafkaSettings, topics: TopicSettings
) -> None:
    ingest_procs.start("a")
    url = ingest_procs.urls["a"]
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.post(
            "/v1/events",
            headers={"Authorization": f"Bearer {DEV_API_KEY}"},
            json=[
                {
                    "type": "staff.upserted",
                    "id": "s-1",
                    "staff_id": "S-1",
                    "name": "Zhang Min",
                    "timezone": "Asia/Shanghai",
                    "email": "zhang.min@example.com",
                },
                {"type": "staff.upserted", "id": "s-2", "staff_id": "S-2"},
            ],
        )
        assert answer.status_code == 202
        assert answer.json()["accepted"] == ["s-1"]
        assert (await client.post("/v1/events", json={})).status_code == 401
        await produce(kafka_settings, topics.raw_channel, [b"\x00garbage"])
        dead = await read_topic(kafka_settings, topics.dlq, expect=1)
        events = await read_topic(kafka_settings, topics.events, expect=1)
        metrics = (await client.get("/metrics")).text
        openapi = (await client.get("/openapi.json")).json()
        health = await client.get("/healthz")

    assert ids_of(events) == ["s-1"]
    assert len(dead) == 1
    assert health.status_code == 200
    assert "/v1/events" in openapi["paths"]
    for name in (
        'upkeep_ingest_events_total{form="structured",outcome="published",path="kafka"} 1.0',
        'upkeep_dead_letters_total{reason="invalid_json"} 1.0',
        "upkeep_consumer_batch_duration_seconds_bucket",
        "upkeep_consumer_lag_messages",
    ):
        assert name in metrics, name
    log = ingest_procs.started[0].log_file.read_text()
    assert "zhang.min@example.com" not in log
