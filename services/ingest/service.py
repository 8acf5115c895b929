"""Wires ingest together: settings → adapters → consumer loop + HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from services.ingest.api import HttpIngestConfig, events_router
from services.ingest.dedup import MongoDedupStore
from services.ingest.normalise import NormaliseContext
from services.ingest.pipeline import IngestConfig, IngestHandler
from services.ingest.settings import IngestSettings
from services.ingest.sources import MappedSources, refresh_forever
from services.ingest.webhooks import webhooks_router
from shared.apikeys import KeyRing
from shared.http import create_app
from shared.kafka.clients import make_producer
from shared.kafka.loops import service_loop
from shared.kafka.producer import Publisher
from shared.kafka.progress import MongoProgressStore
from shared.mongo import can_use, database, make_client, retry_until_done
from shared.retention import guard_days
from shared.runtime import Service

log = logging.getLogger(__name__)


def normalise_context(settings: IngestSettings) -> NormaliseContext:
    return NormaliseContext(
        default_source=settings.default_source,
        default_timezone=settings.default_timezone,
        phone_region=settings.phone_region,
    )


@contextlib.asynccontextmanager
async def build(settings: IngestSettings) -> AsyncIterator[Service]:
    mongo = make_client(settings.mongo, settings.service_name)
    progress = MongoProgressStore(database(mongo, settings.mongo)["consumer_progress"])
    dedup = MongoDedupStore(
        database(mongo, settings.mongo)["ingest_dedup"],
        guard_days(settings.retention.replay_horizon_days),
        progress=progress,
        group=settings.group_id,
    )
    indexes = asyncio.create_task(retry_until_done(dedup.ensure_indexes), name="ingest-indexes")
    context = normalise_context(settings)
    topics = settings.topics
    own = [topics.raw_customer, topics.raw_channel, topics.events, topics.actions]
    own += [topics.deliveries, topics.dlq]
    sources = MappedSources(settings.mappings_dir, own)
    sources.refresh()  # a mapping refused (logged with every error) stops nothing
    loop = service_loop(
        settings,
        topics=[topics.raw_customer, topics.raw_channel, *sources.topics()],
        handler=IngestHandler(
            IngestConfig(topics.events, settings.max_message_bytes, context), dedup, sources
        ),
        progress=progress,
    )
    refresher = asyncio.create_task(
        refresh_forever(sources, settings.mappings_refresh_s), name="ingest-mappings"
    )
    publisher = Publisher(lambda: make_producer(settings.kafka, f"{settings.service_name}-http"))
    publisher.start_in_background()

    app = create_app(
        service=settings.service_name,
        description="Takes customer, contract and channel events and publishes canonical "
        "CloudEvents to upkeep.events.v1.",
        readiness={
            "kafka": publisher.probe,
            "mongodb": lambda: can_use(database(mongo, settings.mongo)),
            "consumer": loop.check_ready,
        },
    )
    app.include_router(
        events_router(
            HttpIngestConfig(
                raw_customer_topic=topics.raw_customer,
                raw_channel_topic=topics.raw_channel,
                max_body_bytes=settings.max_body_bytes,
                max_batch_items=settings.max_batch_items,
                max_message_bytes=settings.max_message_bytes,
                context=context,
            ),
            KeyRing(settings.api_keys),
            publisher.publish,
        )
    )
    app.include_router(
        webhooks_router(
            sources,
            settings.source_secrets,
            publisher.publish,
            raw_customer_topic=topics.raw_customer,
            raw_channel_topic=topics.raw_channel,
            max_body_bytes=settings.max_body_bytes,
            context=context,
        )
    )
    try:
        yield Service(app=app, loops=[loop])
    finally:
        refresher.cancel()
        indexes.cancel()
        await publisher.close()
        await mongo.close()
