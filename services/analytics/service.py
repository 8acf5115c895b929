"""Wires analytics together: settings → aggregates in MongoDB → consumer loop over the events,
actions and deliveries topics + HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from services.analytics.aggregates import Aggregates, MongoAttribution
from services.analytics.api import analytics_router
from services.analytics.conversions import Conversions
from services.analytics.dashboard import dashboard_router
from services.analytics.funnels import JourneyFigures
from services.analytics.gauges import refresh_forever
from services.analytics.handler import AnalyticsHandler
from services.analytics.readmodels import MongoJourneys, MongoRevisits, MongoTasks
from services.analytics.report import People, Reporting
from services.analytics.settings import AnalyticsSettings
from shared.http import create_app
from shared.kafka.loops import service_loop
from shared.kafka.progress import MongoProgressStore
from shared.mongo import can_use, database, make_client, retry_until_done
from shared.retention import guard_period
from shared.runtime import Service


@contextlib.asynccontextmanager
async def build(settings: AnalyticsSettings) -> AsyncIterator[Service]:
    mongo = make_client(settings.mongo, settings.service_name)
    db = database(mongo, settings.mongo)
    aggregates = Aggregates(
        db["analytics_facts"],
        db["analytics_buckets"],
        settings.reporting_timezone,
        keep_facts=guard_period(settings.retention.replay_horizon_days),
        keep_hours=timedelta(days=settings.hour_bucket_days),
    )
    tasks = MongoTasks(db["analytics_tasks"])
    revisits = MongoRevisits(db["analytics_revisits"])
    journeys = MongoJourneys(db["analytics_journeys"], db["analytics_journey_runs"])

    async def ensure_indexes() -> None:
        await aggregates.ensure_indexes()
        await tasks.ensure_indexes()
        await journeys.ensure_indexes()

    indexes = asyncio.create_task(retry_until_done(ensure_indexes), name="analytics-indexes")
    topics = settings.topics
    attribution = MongoAttribution(db["analytics_subjects"])
    conversions = Conversions(db["analytics_contracts"])
    handler = AnalyticsHandler(
        aggregates, attribution, conversions, tasks, revisits, topics, journeys
    )
    loop = service_loop(
        settings,
        topics=[topics.events, topics.actions, topics.deliveries],
        handler=handler,
        progress=MongoProgressStore(db["consumer_progress"]),
    )
    app = create_app(
        service=settings.service_name,
        description="Exact aggregates of events, actions and deliveries; the maintenance report.",
        readiness={
            "kafka": loop.probe,
            "mongodb": lambda: can_use(db),
            "consumer": loop.check_ready,
        },
    )
    reporting = Reporting(
        aggregates,
        settings.minutes_saved,
        settings.hourly_cost,
        settings.cost_currency,
        People(tasks, revisits, attribution),
        JourneyFigures(aggregates, journeys),
    )
    app.include_router(analytics_router(reporting))
    app.include_router(dashboard_router(reporting, attribution))
    gauges = asyncio.create_task(
        refresh_forever(aggregates, settings.reporting_timezone), name="analytics-gauges"
    )
    try:
        yield Service(app=app, loops=[loop])
    finally:
        gauges.cancel()
        indexes.cancel()
        await mongo.close()
