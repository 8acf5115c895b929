"""Analytics as a separate process, killed with SIGKILL while it aggregates: after a restart
its counters equal the ground truth (nothing lost, nothing counted twice)."""

from __future__ import annotations

import asyncio

import pytest

from deploy.local.stack import LocalStack
from shared.mongo import make_client
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.e2e.replicas import Replicas
from tests.integration.test_analytics_kafka import TRUTH, counters, publish_all
from tests.kafka_helpers import wait_consumed

pytestmark = pytest.mark.e2e


async def test_kill_9_while_aggregating_leaves_the_counters_exact(
    stack: LocalStack,
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
) -> None:
    procs = Replicas(stack, "analytics", topics, {"UPKEEP_ANALYTICS_BATCH_MAX_RECORDS": "20"})
    client = make_client(mongo_settings.model_copy(update={"database": procs.database}), "test")
    buckets = client[procs.database]["analytics_buckets"]
    try:
        await publish_all(kafka_settings, topics, twice=True)
        proc = await asyncio.to_thread(procs.start, "a")
        for _ in range(3):  # three kills at different points of the stream
            await asyncio.sleep(0.7)
            proc.kill()
            proc = await asyncio.to_thread(procs.start, "a")  # same instance id: fences
        # everything published has been handled (offsets commit after the writes) ...
        await wait_consumed(
            kafka_settings, procs.group, [topics.events, topics.actions, topics.deliveries], 120
        )
        assert await counters(buckets) == TRUTH  # ... and counted exactly once
    finally:
        procs.stop_all()
        await client.close()
