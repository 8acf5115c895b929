"""The consumer loop every service runs: a group consumer reading committed transactions, a
transactional producer named after the replica (a restarted replica fences its predecessor),
dead letters to the DLQ, and the MongoDB progress guard."""

from __future__ import annotations

from collections.abc import Sequence

from shared.kafka.clients import make_consumer, make_producer
from shared.kafka.consumer import ConsumerLoop
from shared.kafka.messages import BatchHandler, Ticker
from shared.kafka.progress import ProgressStore
from shared.settings import ServiceSettings


def service_loop(
    settings: ServiceSettings,
    *,
    topics: Sequence[str],
    handler: BatchHandler,
    progress: ProgressStore,
    ticker: Ticker | None = None,
    tick_interval_s: float = 1.0,
) -> ConsumerLoop:
    return ConsumerLoop(
        service=settings.service_name,
        consumer_factory=lambda: make_consumer(
            settings.kafka,
            settings.service_name,
            group_id=settings.group_id,
            max_records=settings.batch_max_records,
        ),
        topics=topics,
        handler=handler,
        group_id=settings.group_id,
        dlq_topic=settings.topics.dlq,
        producer_factory=lambda: make_producer(
            settings.kafka,
            settings.service_name,
            transactional_id=f"upkeep-{settings.service_name}-{settings.instance_id}",
        ),
        transactional=True,
        progress=progress,
        ticker=ticker,
        tick_interval_s=tick_interval_s,
        batch_timeout_ms=settings.batch_timeout_ms,
        max_records=settings.batch_max_records,
    )
