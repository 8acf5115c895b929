"""Running ingest in-process against the real servers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from services.ingest.service import build
from services.ingest.settings import IngestSettings
from shared.apikeys import ApiKeySpec, digest
from shared.kafka.consumer import ConsumerLoop
from shared.runtime import Service
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.waiting import eventually

API_KEY = "upk_integration_test_key"


def ingest_settings(
    kafka: KafkaSettings, mongo: MongoSettings, topics: TopicSettings, **overrides: Any
) -> IngestSettings:
    # a database per test: de-duplication state must not leak between tests
    own_db = mongo.model_copy(update={"database": f"{mongo.database}_{uuid.uuid4().hex[:8]}"})
    values: dict[str, Any] = {
        "kafka": kafka,
        "mongo": own_db,
        "topics": topics,
        "consumer_group": f"ingest-{uuid.uuid4().hex[:8]}",
        "instance_id": uuid.uuid4().hex[:8],
        "batch_timeout_ms": 50,
        "api_keys": [ApiKeySpec(name="test", sha256=digest(API_KEY))],
    }
    values.update(overrides)
    return IngestSettings(**values)


async def wait_assigned(loop: ConsumerLoop, timeout: float = 60) -> None:
    await eventually(
        lambda: loop.ready and bool(loop.assignment), timeout, what="the loop has no partitions"
    )


@asynccontextmanager
async def running_ingest(settings: IngestSettings) -> AsyncIterator[Service]:
    """The real ingest wiring with its consumer loop running; stopped gracefully on exit."""
    async with build(settings) as service:
        tasks = [asyncio.create_task(loop.run()) for loop in service.loops]
        try:
            for loop in service.loops:
                await wait_assigned(loop)
            yield service
        finally:
            for loop in service.loops:
                loop.stop()
            await asyncio.gather(*tasks)
