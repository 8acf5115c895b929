"""Retention against the real servers: the TTL indexes each service creates for the configured
replay horizon, a changed horizon applied to an existing index, what expires and what never
does, and the topics' retention on the real broker (created, and brought in line)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from services.analytics.aggregates import Aggregates, Placed
from services.analytics.facts import Fact
from services.analytics.service import build as build_analytics
from services.analytics.settings import AnalyticsSettings
from services.ingest.dedup import Claim, MongoDedupStore
from services.ingest.service import build as build_ingest
from services.ingest.settings import IngestSettings
from services.notifier.entry import Entry
from services.notifier.ledger import MongoLedger
from services.notifier.service import build as build_notifier
from services.notifier.settings import NotifierSettings
from services.notifier.tasks import Task, TaskStore
from services.rules.service import build as build_rules
from services.rules.settings import RulesSettings
from shared.events.actions import ActionMessage
from shared.kafka.clients import make_admin
from shared.kafka.topics import ensure_topics
from shared.mongo import Document
from shared.retention import DAY_S, guard_period
from shared.runtime import Service
from shared.settings import KafkaSettings, MongoSettings, RetentionSettings, TopicSettings
from tests.conftest import unique_topics

pytestmark = pytest.mark.integration

HORIZON = RetentionSettings(replay_horizon_days=123)
GUARD_S = (123 + 8) * DAY_S
DAY_MS = DAY_S * 1000


async def poll(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def db(mongo_settings: MongoSettings) -> AsyncIterator[AsyncDatabase[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        mongo_settings.uri.get_secret_value(), tz_aware=True
    )
    yield client[f"retention_{uuid.uuid4().hex[:8]}"]
    await client.close()


async def ttl_indexes(collection: AsyncCollection[Document]) -> dict[str, Document]:
    info = await collection.index_information()
    return {name: spec for name, spec in info.items() if "expireAfterSeconds" in spec}


async def created_ttls(
    collection: AsyncCollection[Document], names: set[str], timeout: float = 60
) -> dict[str, Document]:
    async def found() -> dict[str, Document] | None:
        ttls = await ttl_indexes(collection)
        return ttls if names <= set(ttls) else None

    result: dict[str, Document] = await poll(found, timeout, f"{collection.name}: {names}")
    return result


# --- what the services create ------------------------------------------------------------


def common(
    kafka: KafkaSettings, mongo: MongoSettings, topics: TopicSettings, db: str
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    return {
        "kafka": kafka,
        "mongo": mongo.model_copy(update={"database": db}),
        "topics": topics,
        "retention": HORIZON,
        "consumer_group": f"retention-{tag}",
        "instance_id": tag,
    }


async def started(
    build: Callable[[Any], AbstractAsyncContextManager[Service]],
    settings: Any,
    check: Callable[[], Awaitable[None]],
) -> None:
    """Enter a service's real wiring (its index tasks run; its loops are not started)."""
    async with build(settings):
        await check()


async def test_each_service_creates_ttl_indexes_for_the_configured_horizon(
    kafka_settings: KafkaSettings,
    mongo_settings: MongoSettings,
    topics: TopicSettings,
    db: AsyncDatabase[Document],
) -> None:
    base = common(kafka_settings, mongo_settings, topics, db.name)

    async def ingest() -> None:
        ttls = await created_ttls(db["ingest_dedup"], {"ttl_at"})
        assert ttls["ttl_at"]["key"] == [("at", 1)]
        assert ttls["ttl_at"]["expireAfterSeconds"] == GUARD_S

    async def notifier() -> None:
        ledger = await created_ttls(db["deliveries"], {"ttl_final_at"})
        assert ledger["ttl_final_at"]["key"] == [("final_at", 1)]
        assert ledger["ttl_final_at"]["expireAfterSeconds"] == GUARD_S
        tasks = await created_ttls(db["tasks"], {"ttl_completed_at"})
        assert tasks["ttl_completed_at"]["key"] == [("completed_at", 1)]
        assert tasks["ttl_completed_at"]["expireAfterSeconds"] == GUARD_S

    async def analytics() -> None:
        facts = await created_ttls(db["analytics_facts"], {"ttl_claimed_at"})
        assert facts["ttl_claimed_at"]["key"] == [("claimed_at", 1)]
        assert facts["ttl_claimed_at"]["expireAfterSeconds"] == GUARD_S
        hours = (await created_ttls(db["analytics_buckets"], {"ttl_hour_start"}))["ttl_hour_start"]
        assert hours["key"] == [("start", 1)]
        assert hours["expireAfterSeconds"] == 45 * DAY_S
        assert hours["partialFilterExpression"] == {"g": "hour"}

    async def rules() -> None:
        """Subjects are state and timers are work to do: neither expires."""
        for name in ("subjects", "timers"):

            async def indexed(collection: AsyncCollection[Document] = db[name]) -> bool:
                return len(await collection.index_information()) > 1  # beyond _id

            await poll(indexed, 60, f"rules' indexes on {name}")
            assert await ttl_indexes(db[name]) == {}

    await started(build_ingest, IngestSettings(**base), ingest)
    await started(build_notifier, NotifierSettings(**base), notifier)
    await started(build_analytics, AnalyticsSettings(**base, hour_bucket_days=45), analytics)
    await started(build_rules, RulesSettings(**base), rules)


async def test_a_changed_horizon_changes_the_existing_ttl_indexes(
    db: AsyncDatabase[Document],
) -> None:
    await MongoLedger(db["deliveries"], keep=guard_period(123)).ensure_indexes()
    await MongoDedupStore(db["dedup"], 131).ensure_indexes()
    await MongoLedger(db["deliveries"], keep=guard_period(500)).ensure_indexes()
    await MongoDedupStore(db["dedup"], 508).ensure_indexes()
    ledger = await ttl_indexes(db["deliveries"])
    assert ledger["ttl_final_at"]["expireAfterSeconds"] == 508 * DAY_S
    assert (await ttl_indexes(db["dedup"]))["ttl_at"]["expireAfterSeconds"] == 508 * DAY_S
    # the other indexes are untouched by the change
    assert {"due", "unpublished", "recipient_sent", "digest"} <= set(
        await db["deliveries"].index_information()
    )
    # an index of that name on another field is not "changed": that conflict is raised
    await db["tasks"].create_index([("due_at", 1)], name="ttl_completed_at", expireAfterSeconds=1)
    with pytest.raises(OperationFailure):
        await TaskStore(db["tasks"]).ensure_indexes()
    assert (await ttl_indexes(db["tasks"]))["ttl_completed_at"]["key"] == [("due_at", 1)]


# --- the ledger: final entries expire, pending ones never ----------------------------------


def entry(key: str, now: datetime, **changes: Any) -> Entry:
    action = ActionMessage.model_validate(
        {
            "key": key,
            "rule": "birthday",
            "subject": "customer:C-1",
            "kind": "email",
            "recipient": {"kind": "customer", "id": "C-1"},
            "template": "birthday_greeting",
            "locale": "en",
            "due_at": now,
            "priority": "transactional",
            "data": {},
            "created_at": now,
        }
    )
    fields: dict[str, Any] = {
        "key": key,
        "action": action,
        "partition": 0,
        "offset": 0,
        "next_at": now,
        "created_at": now,
        **changes,
    }
    return Entry.model_validate(fields)


async def stored(collection: AsyncCollection[Document]) -> dict[str, Document]:
    return {doc["_id"]: doc async for doc in collection.find()}


async def test_an_entry_gets_its_expiry_when_it_becomes_final_and_never_while_pending(
    db: AsyncDatabase[Document],
) -> None:
    ledger = MongoLedger(db["deliveries"])  # the group-committed saves of the service
    await ledger.ensure_indexes()
    now = datetime.now(UTC)
    keys = ["sent", "deferred", "digested", "due", "failed"]
    assert await ledger.record([entry(k, now) for k in keys]) == len(keys)
    before = datetime.now(UTC) - timedelta(seconds=1)
    await ledger.save(entry("sent", now, state="sent", attempts=1, sent_at=now, unpublished=True))
    later = now + timedelta(hours=9)
    await ledger.save(entry("deferred", now, next_at=later, deferrals=1, reason="quiet_hours"))
    await ledger.save(entry("failed", now, state="failed", attempts=8, unpublished=True))
    await ledger.mark_digested(["digested"], now)
    docs = await stored(db["deliveries"])
    for key in ("sent", "failed", "digested"):
        assert before <= docs[key]["final_at"] <= datetime.now(UTC), key
    for key in ("deferred", "due"):
        assert "final_at" not in docs[key], key
    assert docs["deferred"]["state"] == "pending"
    # the field is the ledger's own: an entry read back is the entry written
    sent = await ledger.get("sent")
    assert sent is not None
    assert sent.state == "sent"


async def sweep(client: AsyncMongoClient[Document]) -> None:
    """An immediate TTL pass where the server offers one (SecantusDB), else nothing: the
    server's own monitor (every 60 s, like mongod's) is then waited for."""
    with suppress(OperationFailure):
        await client.admin.command("secantusAdmin.pruneTtl")


async def test_what_expires_goes_and_pending_work_and_lasting_claims_stay(
    db: AsyncDatabase[Document],
) -> None:
    """With no time to keep (keep = 0), everything that may expire is gone at the next TTL
    pass; what must never expire is still there."""
    zero = timedelta(0)
    ledger, tasks = MongoLedger(db["deliveries"], keep=zero), TaskStore(db["tasks"], keep=zero)
    facts, buckets = db["analytics_facts"], db["analytics_buckets"]
    aggregates = Aggregates(facts, buckets, keep_facts=zero, keep_hours=timedelta(days=1))
    dedup = MongoDedupStore(db["dedup"], 0)
    for store in (ledger, tasks, aggregates, dedup):
        await store.ensure_indexes()

    now = datetime.now(UTC)
    await ledger.record([entry("final", now), entry("pending", now)])
    await ledger.save(entry("final", now, state="sent", sent_at=now, unpublished=True))
    for task_id in ("done", "open"):
        task = Task(
            id=task_id,
            owner="S-1",
            title="Call back",
            description="",
            rule="followup",
            subject="customer:C-1",
            due_at=now,
            created_at=now,
        )
        await tasks.create(task)
    await tasks.complete("done", "S-1", now)
    last_year = now - timedelta(days=365)
    await aggregates.apply(
        [
            Placed(Fact("event:crm\x1fe-1", last_year, {"events": 1}), "events", 0, 1),
            Placed(Fact("new-customer:C-1", last_year, {"customers.new": 1}), "events", 0, 1),
        ],
        {},
    )
    assert await dedup.claim([Claim("crm\x1fe-1", "raw/0/1")]) == {"crm\x1fe-1"}

    async def expired() -> bool:
        await sweep(db.client)
        left = [
            await db["deliveries"].count_documents({"_id": "final"}),
            await db["tasks"].count_documents({"_id": "done"}),
            await facts.count_documents({"_id": "event:crm\x1fe-1"}),
            await buckets.count_documents({"g": "hour"}),
            await db["dedup"].count_documents({}),
        ]
        return not any(left)

    await poll(expired, 150, "final entry, done task, claim, hour buckets, dedup claim expired")
    assert await db["deliveries"].count_documents({"_id": "pending"}) == 1
    assert await db["tasks"].count_documents({"_id": "open"}) == 1
    assert await facts.count_documents({"_id": "new-customer:C-1"}) == 1
    assert await buckets.count_documents({"g": "day"}) >= 1  # day buckets are kept


# --- the topics ----------------------------------------------------------------------------


async def topic_configs(
    kafka: KafkaSettings, names: list[str], expect: dict[str, str] | None = None
) -> dict[str, dict[str, str]]:
    """Each topic's configuration as the broker describes it, once every topic shows the
    ``expect``ed values (a topic created or changed a moment ago may be described as it was for
    a moment); the test fails with what was last described if they do not come."""
    admin = make_admin(kafka, "retention-test")
    await admin.start()
    last: dict[str, dict[str, str]] = {}

    async def described() -> dict[str, dict[str, str]] | None:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
        found: dict[str, dict[str, str]] = {}
        for response in responses:
            for resource in response.to_object()["resources"]:
                if resource["error_code"]:
                    return None
                found[resource["resource_name"]] = {
                    e["config_names"]: e["config_value"] for e in resource["config_entries"]
                }
        last.update(found)
        wanted = (expect or {}).items()
        return found if all(found[n].get(k) == v for n in names for k, v in wanted) else None

    try:
        result: dict[str, dict[str, str]] = await poll(
            described, 30, f"{names} with {expect}; last described: {last}"
        )
    finally:
        await admin.close()
    return result


async def test_created_topics_keep_what_the_horizon_says(kafka_settings: KafkaSettings) -> None:
    topics = unique_topics()
    created = await ensure_topics(kafka_settings, topics, retention=HORIZON)
    assert len(created) == 7
    configs = await topic_configs(kafka_settings, created)
    for name in (topics.events, topics.actions, topics.deliveries):
        assert configs[name]["retention.ms"] == str(123 * DAY_MS), name
        assert configs[name]["segment.ms"] == str(7 * DAY_MS), name
    assert configs[topics.raw_customer]["retention.ms"] == str(7 * DAY_MS)
    assert configs[topics.dlq]["retention.ms"] == str(30 * DAY_MS)
    assert configs[topics.rules_ticks]["cleanup.policy"] == "compact"


async def test_an_existing_topic_is_brought_in_line_and_keeps_its_own_settings(
    kafka_settings: KafkaSettings,
) -> None:
    topics = unique_topics()
    admin = make_admin(kafka_settings, "retention-test")
    await admin.start()
    try:  # as an older Upkeep left it: the broker's retention, and an operator's own setting
        await admin.create_topics(
            [NewTopic(topics.events, 6, 1, topic_configs={"max.message.bytes": "2000000"})]
        )
    finally:
        await admin.close()
    before = await topic_configs(kafka_settings, [topics.events])
    assert before[topics.events]["retention.ms"] == str(7 * DAY_MS)  # the broker's 168 hours

    created = await ensure_topics(kafka_settings, topics, retention=HORIZON)
    assert topics.events not in created
    aligned = {"retention.ms": str(123 * DAY_MS), "segment.ms": str(7 * DAY_MS)}
    after = await topic_configs(kafka_settings, [topics.events], aligned)
    assert after[topics.events]["max.message.bytes"] == "2000000"

    # a longer horizon later: every topic that keeps it follows, the topic's own setting stays
    longer = RetentionSettings(replay_horizon_days=500)
    await ensure_topics(kafka_settings, topics, retention=longer)
    names = [topics.events, topics.actions, topics.deliveries]
    configs = await topic_configs(kafka_settings, names, {"retention.ms": str(500 * DAY_MS)})
    assert configs[topics.events]["max.message.bytes"] == "2000000"
