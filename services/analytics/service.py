"""Wires analytics together: settings → aggregates in MongoDB → consumer loop over the events,
actions and deliveries topics + HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

from fastapi import Depends

from services.analytics.aggregates import Aggregates, MongoAttribution
from services.analytics.alerts import BudgetWatch, Sent, run_every
from services.analytics.api import analytics_router
from services.analytics.budgets import MongoBudgets
from services.analytics.callers import caller_dependency
from services.analytics.conversions import Conversions
from services.analytics.costs import Costing
from services.analytics.dashboard import dashboard_router
from services.analytics.funnels import JourneyFigures
from services.analytics.gauges import refresh_forever
from services.analytics.handler import AnalyticsHandler
from services.analytics.money_api import money_router
from services.analytics.money_views import money_pages_router
from services.analytics.readmodels import MongoJourneys, MongoRevisits, MongoTasks
from services.analytics.report import People, Reporting
from services.analytics.reports import Reports
from services.analytics.settings import AnalyticsSettings
from services.analytics.signin import Access, AccessSettings, install
from services.analytics.staff import MongoDirectory
from services.notifier.templates import Templates
from shared.http import create_app
from shared.kafka.clients import make_producer
from shared.kafka.loops import service_loop
from shared.kafka.producer import Publisher
from shared.kafka.progress import MongoProgressStore
from shared.mongo import can_use, database, make_client, retry_until_done
from shared.retention import guard_period
from shared.runtime import Service


@contextlib.asynccontextmanager
async def build(
    settings: AnalyticsSettings,
    access_settings: AccessSettings | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> AsyncIterator[Service]:
    """``access_settings``: who may sign in (default: from the environment); ``clock``: now, for
    the budgets' periods and the reports' schedule."""
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
    staff = MongoDirectory(db["analytics_staff"])
    budgets = MongoBudgets(db["analytics_budgets"])

    topics = settings.topics
    attribution = MongoAttribution(db["analytics_subjects"])
    conversions = Conversions(db["analytics_contracts"])
    handler = AnalyticsHandler(
        aggregates, attribution, conversions, tasks, revisits, topics, journeys, staff, budgets
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
    access = Access(access_settings or AccessSettings())
    install(app, access)
    api_caller = caller_dependency(access.api_dependency(), staff, attribution)
    page_caller = caller_dependency(access.page_dependency(), staff, attribution, access.csrf_token)
    costing = Costing(
        reporting, budgets, attribution, settings.rates, settings.budget_min_elapsed, clock
    )
    publisher = Publisher(lambda: make_producer(settings.kafka, f"{settings.service_name}-out"))
    publisher.start_in_background()
    reports = Reports(
        reporting,
        costing,
        staff,
        attribution,
        db["analytics_reports"],
        publisher,
        topics.actions,
        settings.report_send_hour,
        settings.dashboard_url,
        clock,
        lambda: loop.caught_up,
    )

    async def ensure_indexes() -> None:
        await aggregates.ensure_indexes()
        await tasks.ensure_indexes()
        await journeys.ensure_indexes()
        await reports.ensure_indexes()

    indexes = asyncio.create_task(retry_until_done(ensure_indexes), name="analytics-indexes")
    sent = Sent(db["analytics_sent"])
    watch = BudgetWatch(
        costing, staff, publisher, sent, topics.actions, clock, lambda: loop.caught_up
    )
    templates = Templates()
    Who = Depends(api_caller)
    app.include_router(analytics_router(reporting, api_caller))
    app.include_router(money_router(costing, reports, staff, templates, Who))
    app.include_router(dashboard_router(reporting, attribution, page_caller))
    app.include_router(money_pages_router(costing, reports, page_caller))
    background = [
        asyncio.create_task(
            refresh_forever(aggregates, settings.reporting_timezone), name="analytics-gauges"
        ),
        asyncio.create_task(
            run_every(watch.check, settings.budget_check_s, "budgets"), name="budgets"
        ),
        asyncio.create_task(
            run_every(reports.due, settings.report_check_s, "reports"), name="reports"
        ),
    ]
    try:
        yield Service(app=app, loops=[loop])
    finally:
        for task in background:
            task.cancel()
        indexes.cancel()
        await publisher.close()
        await mongo.close()
