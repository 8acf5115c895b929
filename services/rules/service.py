"""Wires the rules service together: settings → stores → engine → consumer loop + HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from services.rules.api import rules_router
from services.rules.churn.jobs import refit_forever
from services.rules.churn.rule import ChurnRisk
from services.rules.engine import Clock, RulesEngine, utc_now
from services.rules.journeys.service import journeys_part
from services.rules.registry import check_templates, load_rules, read_config
from services.rules.settings import RulesSettings
from services.rules.store import MongoSubjectStore, MongoTimerStore
from services.rules.ticklog import KafkaTickLog
from shared.apikeys import KeyRing
from shared.http import create_app
from shared.kafka.loops import service_loop
from shared.kafka.progress import MongoProgressStore
from shared.mongo import can_use, database, make_client, retry_until_done
from shared.runtime import Service


@contextlib.asynccontextmanager
async def build(settings: RulesSettings, clock: Clock = utc_now) -> AsyncIterator[Service]:
    config = read_config(settings.config_file, settings.config_overlay)
    rules = load_rules(config, settings.enabled_rules())
    check_templates(rules, settings.template_dir)
    mongo = make_client(settings.mongo, settings.service_name)
    db = database(mongo, settings.mongo)
    subjects, timers = MongoSubjectStore(db["subjects"]), MongoTimerStore(db["timers"])
    indexes = [
        asyncio.create_task(retry_until_done(store.ensure_indexes), name="rules-indexes")
        for store in (subjects, timers)
    ]
    topics = settings.topics
    churn = next((r for r in rules if isinstance(r, ChurnRisk)), None)
    ticklog = KafkaTickLog(settings.kafka, topics.rules_ticks)
    engine = RulesEngine(
        rules,
        subjects,
        timers,
        events_topic=topics.events,
        actions_topic=topics.actions,
        config=config,
        clock=clock,
        timers_per_tick=settings.timers_per_tick,
        ticklog=ticklog,
    )
    loop = service_loop(
        settings,
        topics=[topics.events],
        handler=engine,
        progress=MongoProgressStore(db["consumer_progress"]),
        ticker=engine,
        tick_interval_s=settings.tick_interval_s,
    )

    app = create_app(
        service=settings.service_name,
        description="Keeps subject state and timers; decides maintenance actions.",
        readiness={
            "kafka": loop.probe,
            "mongodb": lambda: can_use(db),
            "consumer": loop.check_ready,
        },
    )
    app.include_router(rules_router(engine, subjects, timers, KeyRing(settings.api_keys)))
    journeys = journeys_part(settings, rules, db)
    if journeys is not None:
        app.include_router(journeys.router)
        await journeys.start()
    refitting = (
        asyncio.create_task(
            refit_forever(db["subjects"], db["churn_model"], churn.model, churn.config),
            name="churn-refit",
        )
        if churn is not None
        else None
    )
    try:
        yield Service(app=app, loops=[loop])
    finally:
        for task in indexes:
            task.cancel()
        if refitting is not None:
            refitting.cancel()
        if journeys is not None:
            await journeys.stop()
        await ticklog.close()
        await mongo.close()
