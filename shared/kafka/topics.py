"""Creates Upkeep's topics idempotently: ``python -m shared.kafka.topics``.

Used by ``make up``, the Compose one-shot job and the test harness, so every environment has the
same topics with the same partition counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from shared.kafka.clients import make_admin
from shared.logging import configure_logging
from shared.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)

# name attribute of TopicSettings -> (partitions, extra config)
TOPIC_LAYOUT: dict[str, tuple[int, dict[str, str]]] = {
    "raw_customer": (6, {}),
    "raw_channel": (3, {}),
    "events": (6, {}),
    "actions": (6, {}),
    "deliveries": (6, {}),
    "dlq": (3, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
    # one record per events partition, kept forever by compaction; small segments so that
    # compaction keeps the topic small although every tick that fires timers writes to it
    "rules_ticks": (
        6,
        {
            "cleanup.policy": "compact",
            "segment.ms": str(3600 * 1000),
            "min.cleanable.dirty.ratio": "0.1",
        },
    ),
}


def planned_topics(topics: TopicSettings, replication: int = 1) -> list[NewTopic]:
    return [
        NewTopic(
            getattr(topics, attr),
            num_partitions=partitions,
            replication_factor=replication,
            topic_configs=config,
        )
        for attr, (partitions, config) in TOPIC_LAYOUT.items()
    ]


async def ensure_topics(
    kafka: KafkaSettings, topics: TopicSettings, replication: int = 1, wait_s: float = 60
) -> list[str]:
    """Create missing topics; returns the names created. Waits up to ``wait_s`` for Kafka."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(wait_s),
        wait=wait_exponential(multiplier=0.2, max=3),
        retry=retry_if_exception_type((KafkaConnectionError, OSError)),
        before_sleep=before_sleep_log(log, logging.INFO),
        reraise=True,
    ):
        with attempt:
            admin = make_admin(kafka, "topics")
            await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in planned_topics(topics, replication) if t.name not in existing]
        if missing:
            # another runner may create them at the same moment
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()


def main() -> int:
    configure_logging("topics")
    created = asyncio.run(ensure_topics(KafkaSettings(), TopicSettings()))
    log.info("topics ready", extra={"created": created})
    return 0


if __name__ == "__main__":
    sys.exit(main())
