"""Wires the notifier together: settings → stores and channels → intake and dispatcher →
consumer loop (actions and profile events in, outcomes out) + HTTP app, whose task changes are
published to the events topic by a producer of its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx

from services.notifier.api import admin_router, tasks_router, unsubscribe_router
from services.notifier.breaker import Breakers
from services.notifier.channels.chat import ChatChannel, ChatSender
from services.notifier.channels.email import EmailChannel, SmtpPool, SmtpServer
from services.notifier.channels.task import TaskChannel
from services.notifier.channels.webhook import WebhookChannel, WebhookSender
from services.notifier.digest import Digest
from services.notifier.directory import MongoDirectory
from services.notifier.dispatcher import Clock, Dispatcher, utc_now
from services.notifier.intake import Intake
from services.notifier.ledger import Ledger, MongoLedger
from services.notifier.limits import Limits
from services.notifier.policy import Rules
from services.notifier.preferences import MongoPolicyStore
from services.notifier.publisher import TaskEvents
from services.notifier.settings import NotifierSettings
from services.notifier.tasks import TaskStore
from services.notifier.templates import Templates
from services.notifier.unsubscribe import Unsubscribes
from shared.apikeys import KeyRing
from shared.http import create_app
from shared.kafka.clients import make_producer
from shared.kafka.loops import service_loop
from shared.kafka.producer import Publisher
from shared.kafka.progress import MongoProgressStore
from shared.mongo import can_use, database, make_client, retry_until_done
from shared.retention import guard_period
from shared.runtime import Service


def smtp_server(settings: NotifierSettings) -> SmtpServer:
    return SmtpServer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        timeout_s=settings.smtp_timeout_s,
    )


def policy_rules(settings: NotifierSettings) -> Rules:
    return Rules(
        quiet_start=settings.quiet_hours_start,
        quiet_end=settings.quiet_hours_end,
        quiet_transactional=settings.quiet_hours_transactional,
        marketing_cap=settings.marketing_cap,
        marketing_cap_window=timedelta(days=settings.marketing_cap_days),
    )


@contextlib.asynccontextmanager
async def build(
    settings: NotifierSettings, clock: Clock = utc_now, ledger: Ledger | None = None
) -> AsyncIterator[Service]:
    """``ledger`` replaces the MongoDB ledger (only the benchmark's no-ledger baseline does)."""
    mongo = make_client(settings.mongo, settings.service_name)
    db = database(mongo, settings.mongo)
    keep = guard_period(settings.retention.replay_horizon_days)
    mongo_ledger = MongoLedger(db["deliveries"], keep=keep)
    tasks = TaskStore(db["tasks"], keep=keep)
    ledger = ledger or mongo_ledger
    policy = MongoPolicyStore(db["preferences"], db["suppressions"])
    directory = MongoDirectory(db["contacts"])
    indexes = [
        asyncio.create_task(retry_until_done(step), name="notifier-indexes")
        for step in (mongo_ledger.ensure_indexes, tasks.ensure_indexes)
    ]
    http = httpx.AsyncClient(
        follow_redirects=False,
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
    )
    smtp = SmtpPool(smtp_server(settings), settings.smtp_pool_size)
    unsubscribes = Unsubscribes(
        settings.public_base_url, settings.unsubscribe_secret.get_secret_value().encode()
    )
    templates = Templates(settings.template_dir)
    topics = settings.topics
    dispatcher = Dispatcher(
        ledger,
        directory,
        policy,
        templates,
        [
            EmailChannel(smtp, settings.mail_from, settings.message_id_domain),
            WebhookChannel(
                WebhookSender(
                    http,
                    [s.get_secret_value() for s in settings.webhook_secrets],
                    allow_private=settings.allow_private_destinations,
                    timeout_s=settings.http_timeout_s,
                )
                if settings.webhook_url
                else None,
                settings.webhook_url,
            ),
            ChatChannel(
                ChatSender(
                    http,
                    {url: s.get_secret_value() for url, s in settings.chat_secrets.items()},
                    allow_private=settings.allow_private_destinations,
                    timeout_s=settings.http_timeout_s,
                )
            ),
            TaskChannel(tasks),
        ],
        unsubscribes,
        actions_topic=topics.actions,
        deliveries_topic=topics.deliveries,
        rules=policy_rules(settings),
        limits=Limits(
            max_attempts=settings.max_attempts,
            retry_base_s=settings.retry_base_s,
            retry_max_s=settings.retry_max_s,
            unknown_recipient_wait=timedelta(seconds=settings.unknown_recipient_wait_s),
            unknown_recipient_retry=timedelta(seconds=settings.unknown_recipient_retry_s),
            per_partition=settings.dispatch_limit,
        ),
        digest=Digest(settings.digest_time, frozenset(settings.digest_rules))
        if settings.digest_enabled
        else None,
        breakers=Breakers(
            settings.breaker_failures, timedelta(seconds=settings.breaker_cooldown_s)
        ),
        clock=clock,
    )
    loop = service_loop(
        settings,
        topics=[topics.actions, topics.events],
        handler=Intake(ledger, directory, actions_topic=topics.actions, clock=clock),
        progress=MongoProgressStore(db["consumer_progress"]),
        ticker=dispatcher,
        tick_interval_s=settings.dispatch_interval_s,
    )
    # the API's task changes: acknowledged by Kafka before the store changes (503 until then)
    publisher = Publisher(lambda: make_producer(settings.kafka, f"{settings.service_name}-http"))
    publisher.start_in_background()
    app = create_app(
        service=settings.service_name,
        description="Delivers each action once: e-mail, webhooks, chat bots and tasks.",
        readiness={
            "kafka": loop.probe,
            "mongodb": lambda: can_use(db),
            "consumer": loop.check_ready,
        },
    )
    app.include_router(unsubscribe_router(unsubscribes, policy))
    keys = KeyRing(settings.api_keys)
    app.include_router(admin_router(keys, policy, ledger, templates))
    app.include_router(
        tasks_router(keys, tasks, TaskEvents(publisher.publish, topics.events), clock)
    )
    try:
        yield Service(app=app, loops=[loop])
    finally:
        for task in indexes:
            task.cancel()
        await publisher.close()
        await smtp.close()
        await http.aclose()
        await mongo.close()
