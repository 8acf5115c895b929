"""Every MongoDB feature Upkeep relies on, against the MongoDB-wire server the harness starts:
``secantusd-rs`` by default, ``secantusdb`` with ``UPKEEP_LOCAL_MONGO=python`` (and nothing here
is specific to either: the same checks hold on a real ``mongod``). Each check asserts the values
MongoDB defines, through the services' own client (``shared.mongo.make_client``).

- retryable writes: what a driver needs from ``hello`` (a replica set, logical sessions), a write
  in a session, and — with the ``failCommand`` failpoint — a retried write applied exactly once,
  whether the first attempt failed before the write or after it (a lost reply);
- TTL: an expired document is removed (and one without a date, a future date or a non-date is kept);
  a TTL index re-created with another ``expireAfterSeconds`` conflicts (code 85; secantusdb: 86) and
  ``shared.retention.ensure_ttl_index`` drops and creates it again. mongod's monitor, and both
  embedded servers', sweeps every 60 s; the check asks for 1 s with mongod's runtime ``setParameter
  ttlMonitorSleepSecs`` (secantusd-rs honours it within half a second, so the removal takes about a
  second) and, where the server refuses that (secantusdb), waits for its own sweep: up to 60 s;
- indexes: ``create_index`` repeated with the same spec is a no-op; a unique index refuses a
  duplicate with code 11000; each compound index of the services answers its equality + range +
  sort query from the index (``explain``);
- updates: upserts with ``$setOnInsert`` / ``$inc`` / ``$min`` / ``$max`` (insert, then update),
  ``$setOnInsert`` of the ``_id``, dotted paths, the guarded upsert of analytics' buckets,
  ``$set`` / ``$unset``, ``replace_one`` / ``delete_one``, ``update_many``;
- bulk writes: unordered ``insert_many`` / ``bulk_write`` with duplicate keys (every failed index
  reported with code 11000, the rest written, the originals kept) and ordered ones (stopping at
  the first error);
- queries: ``$in`` over ``_id``, projections (dotted too), dotted filters, ``$exists``, date
  ranges, sort + limit (both directions), a result larger than one batch, ``count_documents``,
  ``listCollections`` with a filter and ``nameOnly`` (``shared.mongo.can_use``);
- ``--auth``: a user with ``readWrite`` on one database (as ``deploy/mongo/init-upkeep-user.js``
  and ``tests/e2e/test_secured_infra.py`` create it) may use that database, is refused on another,
  may change a TTL that way but not with ``collMod`` (as on mongod; secantusdb allows it); a
  wrong password and no login are refused.

The services use no aggregation pipeline of their own (``count_documents`` runs one, checked
here), no transactions, no array operators (``$push``, ``$addToSet``, ``$pull``, ``$each``,
``arrayFilters``), so none is checked; the partial TTL index of analytics' hour buckets is
checked in ``tests/integration/test_retention.py``.

The failpoint and ``--auth`` checks run on servers of this module's own, started the way the
harness starts its one (``LocalStack.start_mongo``, the same server choice): the failpoint needs
mongod's test commands (``--enable-test-commands``), and ``--auth`` a restart after the user is
created (as ``tests/e2e/test_secured_infra.py`` does with ``StackConfig.mongo_auth``).

Where the chosen server is known to differ from MongoDB harmlessly for Upkeep, the check is an
``xfail(strict=True)`` on that server only (``known_difference``), saying what differs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo import ASCENDING, DESCENDING, DeleteOne, InsertOne, MongoClient, ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from deploy.local.kafka import free_port, wait_for_port
from deploy.local.mongo_choice import ServerChoice
from deploy.local.stack import LocalStack, StackConfig
from shared.mongo import Document, can_use, make_client
from shared.retention import TtlIndex, ensure_ttl_index
from shared.settings import MongoSettings

pytestmark = pytest.mark.integration

DUPLICATE_KEY = 11000
UNAUTHORIZED = 13
AUTHENTICATION_FAILED = 18
INDEX_OPTIONS_CONFLICT = 85
INVALID_OPTIONS = 72  # setParameter of a parameter the server does not know
T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(stack: LocalStack) -> str:
    """Which embedded server the harness runs: ``rust`` or ``python``."""
    return stack.mongo_server.kind


def known_difference(request: pytest.FixtureRequest, server: str, on: str, reason: str) -> None:
    """This check fails on server ``on`` for ``reason`` (a difference harmless to Upkeep)."""
    if server == on:
        request.applymarker(pytest.mark.xfail(reason=f"{on}: {reason}", strict=True))


@pytest.fixture(scope="module")
async def client(mongo_settings: MongoSettings) -> AsyncIterator[AsyncMongoClient[Document]]:
    mongo = make_client(mongo_settings, "features-test")
    try:
        yield mongo
    finally:
        await mongo.close()


@pytest.fixture
async def coll(
    client: AsyncMongoClient[Document], mongo_settings: MongoSettings
) -> AsyncIterator[AsyncCollection[Document]]:
    """A collection of this test's own, dropped afterwards."""
    collection = client[mongo_settings.database][f"features_{uuid.uuid4().hex[:12]}"]
    try:
        yield collection
    finally:
        await collection.drop()


def wait_for_mongo(local: LocalStack, timeout: float = 60) -> None:
    """As ``LocalStack.wait_infra``, for the MongoDB-wire server alone."""
    wait_for_port("127.0.0.1", local.config.mongo_port, timeout)
    deadline = time.monotonic() + timeout
    mongo: MongoClient[Document]
    with MongoClient(local.mongo_uri, serverSelectionTimeoutMS=2000) as mongo:
        while True:
            try:
                mongo.admin.command("ping")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


class FailPointStack(LocalStack):
    """The harness's server choice with mongod's test commands on (``configureFailPoint``)."""

    @property
    def mongo_server(self) -> ServerChoice:
        chosen = super().mongo_server
        return dataclasses.replace(chosen, argv=[*chosen.argv, "--enable-test-commands"])


def own_server(stack: LocalStack, name: str, kind: type[LocalStack] = LocalStack) -> LocalStack:
    """A MongoDB-wire server of this module's own (state beside the session's, removed with it),
    on a free port; only its ``mongo`` process is ever started."""
    return kind(StackConfig(state_dir=stack.config.state_dir / name, mongo_port=free_port()))


def stop_own(local: LocalStack) -> None:
    local.managed("mongo").stop()
    shutil.rmtree(local.config.state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def test_commands_mongo(stack: LocalStack) -> Iterator[LocalStack]:
    local = own_server(stack, "features-failpoints", FailPointStack)
    try:
        local.start_mongo()
        wait_for_mongo(local)
        yield local
    finally:
        stop_own(local)


AUTH_USER, AUTH_PASSWORD = "upkeep", "mongo-" + secrets.token_hex(8)
OWN_DB, OTHER_DB = "upkeep_features_own", "upkeep_features_other"


@pytest.fixture(scope="module")
def secured_mongo(stack: LocalStack) -> Iterator[LocalStack]:
    """As ``tests/e2e/test_secured_infra.py``'s ``secured``: a user with ``readWrite`` on one
    database only, then the server restarted with ``--auth`` (``StackConfig.mongo_auth``)."""
    local = own_server(stack, "features-auth")
    try:
        local.start_mongo()
        wait_for_mongo(local)
        mongo: MongoClient[Document]
        with MongoClient(local.mongo_uri) as mongo:
            mongo.admin.command(
                "createUser",
                AUTH_USER,
                pwd=AUTH_PASSWORD,
                roles=[{"role": "readWrite", "db": OWN_DB}],
            )
        local.managed("mongo").stop()
        local.config.mongo_auth = True
        local.start_mongo()
        wait_for_mongo(local)
        yield local
    finally:
        stop_own(local)


def login(local: LocalStack, database: str, password: str | None = AUTH_PASSWORD) -> MongoSettings:
    """What a service is configured with: the user's URI (or none) and its database."""
    user = f"{AUTH_USER}:{password}@" if password else ""
    return MongoSettings(
        uri=f"mongodb://{user}127.0.0.1:{local.config.mongo_port}/?authSource=admin",
        database=database,
        server_selection_timeout_ms=5000,
    )


def ids(docs: list[Document]) -> list[Any]:
    return [doc["_id"] for doc in docs]


async def all_docs(collection: AsyncCollection[Document]) -> dict[Any, Document]:
    return {doc["_id"]: doc async for doc in collection.find()}


# -- sessions and retryable writes --------------------------------------------------------------


async def test_the_server_advertises_what_retryable_writes_need(
    client: AsyncMongoClient[Document],
) -> None:
    """Retryable writes need a replica-set member with logical sessions (a standalone gets no
    ``txnNumber``, so the driver would never retry); the batch limits are mongod's."""
    hello = await client.admin.command("hello")
    assert isinstance(hello["setName"], str)
    assert hello["setName"]
    assert isinstance(hello["logicalSessionTimeoutMinutes"], int)
    assert hello["logicalSessionTimeoutMinutes"] >= 1
    assert hello["isWritablePrimary"] is True
    assert hello["maxWireVersion"] >= 6  # 3.6: retryable writes
    assert hello["maxBsonObjectSize"] == 16 * 1024 * 1024
    assert hello["maxMessageSizeBytes"] == 48_000_000
    assert hello["maxWriteBatchSize"] == 100_000
    assert client.options.retry_writes is True
    assert client.topology_description.topology_type_name == "ReplicaSetWithPrimary"


async def test_writes_and_reads_in_a_session(
    client: AsyncMongoClient[Document], coll: AsyncCollection[Document]
) -> None:
    async with client.start_session() as session:
        await coll.insert_one({"_id": "w", "n": 1}, session=session)
        result = await coll.update_one({"_id": "w"}, {"$inc": {"n": 1}}, session=session)
        assert (result.matched_count, result.modified_count) == (1, 1)
        assert await coll.find_one({"_id": "w"}, session=session) == {"_id": "w", "n": 2}
        assert session.cluster_time is not None  # the server gossips $clusterTime
        assert session.operation_time is not None


RETRY_APP = "features-retry"  # make_client calls it upkeep-features-retry


def attempts(command: str) -> float:
    """Commands of that name started by every ``make_client`` client so far (each attempt of
    a retried write is one: the services' own ``upkeep_mongo_requests_total``)."""
    value = REGISTRY.get_sample_value("upkeep_mongo_requests_total", {"command": command})
    return value or 0.0


@pytest.fixture
async def retrying(
    test_commands_mongo: LocalStack,
) -> AsyncIterator[tuple[AsyncMongoClient[Document], AsyncCollection[Document]]]:
    settings = MongoSettings(uri=test_commands_mongo.mongo_uri, database="upkeep_features")
    mongo = make_client(settings, RETRY_APP)
    collection = mongo[settings.database][f"retry_{uuid.uuid4().hex[:12]}"]
    try:
        yield mongo, collection
    finally:
        await mongo.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        await collection.drop()
        await mongo.close()


async def fail_next(mongo: AsyncMongoClient[Document], command: str, **data: Any) -> None:
    """mongod's ``failCommand`` failpoint: the next ``command`` of this client fails."""
    await mongo.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": [command], "appName": f"upkeep-{RETRY_APP}", **data},
        }
    )


# HostUnreachable: a retryable error that says nothing of the server's state (91
# ShutdownInProgress, as the drivers' spec tests use, makes the driver mark the server Unknown
# and wait for its monitor's next check, up to heartbeatFrequencyMS = 10 s: longer than the
# services' 5 s server selection)
RETRYABLE = 6
# as the retryable-writes spec's "InsertOne succeeds after retryable writeConcernError": the
# write is applied, then its reply carries a write-concern error, labelled by the failpoint
LOST_REPLY = {
    "errorLabels": ["RetryableWriteError"],
    "writeConcernError": {"code": RETRYABLE, "errmsg": "no route to a secondary"},
}


async def test_a_write_refused_before_it_was_applied_is_retried_and_applied_once(
    retrying: tuple[AsyncMongoClient[Document], AsyncCollection[Document]],
) -> None:
    mongo, collection = retrying
    await fail_next(mongo, "insert", errorCode=RETRYABLE)
    before = attempts("insert")
    await collection.insert_one({"_id": "claim", "pos": "t|0|1"})
    assert attempts("insert") - before == 2  # refused once, retried once
    assert await all_docs(collection) == {"claim": {"_id": "claim", "pos": "t|0|1"}}


async def test_a_write_whose_reply_was_lost_is_retried_and_applied_once(
    retrying: tuple[AsyncMongoClient[Document], AsyncCollection[Document]],
) -> None:
    """The first attempt is applied and answered with a retryable write-concern error; the
    retry (same session and ``txnNumber``) must get the first reply, not apply ``$inc`` again."""
    mongo, collection = retrying
    await collection.insert_one({"_id": "bucket", "n": 0})
    await fail_next(mongo, "update", **LOST_REPLY)
    before = attempts("update")
    result = await collection.update_one({"_id": "bucket"}, {"$inc": {"n": 1}})
    assert attempts("update") - before == 2
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert await collection.find_one({"_id": "bucket"}) == {"_id": "bucket", "n": 1}


async def test_an_unordered_bulk_write_whose_reply_was_lost_is_applied_once(
    retrying: tuple[AsyncMongoClient[Document], AsyncCollection[Document]],
) -> None:
    """As the progress store and analytics write: upserts with ``$max`` and ``$inc``. A
    re-applied batch would report matches instead of upserts and count twice."""
    mongo, collection = retrying
    await fail_next(mongo, "update", **LOST_REPLY)
    before = attempts("update")
    result = await collection.bulk_write(
        [
            UpdateOne({"_id": "g|t|0"}, {"$max": {"offset": 10}}, upsert=True),
            UpdateOne({"_id": "g|t|1"}, {"$max": {"offset": 20}}, upsert=True),
            UpdateOne({"_id": "bucket"}, {"$inc": {"c.n": 1}}, upsert=True),
        ],
        ordered=False,
    )
    assert attempts("update") - before == 2
    assert (result.upserted_count, result.matched_count) == (3, 0)
    assert await all_docs(collection) == {
        "g|t|0": {"_id": "g|t|0", "offset": 10},
        "g|t|1": {"_id": "g|t|1", "offset": 20},
        "bucket": {"_id": "bucket", "c": {"n": 1}},
    }


# -- TTL -----------------------------------------------------------------------------------------


async def set_ttl_monitor_sleep(admin: AsyncDatabase[Document], seconds: int) -> int | None:
    """mongod's ``setParameter ttlMonitorSleepSecs`` (runtime); returns the value it replaced,
    or ``None`` when the server does not know the parameter (its own cadence then applies)."""
    try:
        reply = await admin.command({"setParameter": 1, "ttlMonitorSleepSecs": seconds})
    except OperationFailure as exc:
        if exc.code != INVALID_OPTIONS:
            raise
        return None
    return int(reply["was"])


async def test_the_ttl_monitor_cadence_can_be_changed_at_runtime(
    request: pytest.FixtureRequest, server: str, client: AsyncMongoClient[Document]
) -> None:
    known_difference(
        request,
        server,
        "python",
        "secantusdb refuses setParameter ttlMonitorSleepSecs (72 InvalidOptions) and getParameter "
        "omits it; its sweep interval is fixed at start ([storage] ttl_sweep_seconds, 60 s). "
        "Harmless: only the TTL check below waits for the 60 s sweep",
    )
    was = await set_ttl_monitor_sleep(client.admin, 7)
    try:
        assert was is not None
        reply = await client.admin.command({"getParameter": 1, "ttlMonitorSleepSecs": 1})
        assert reply["ttlMonitorSleepSecs"] == 7
    finally:
        if was is not None:
            await set_ttl_monitor_sleep(client.admin, was)


@pytest.mark.timeout(240)
async def test_a_ttl_index_removes_an_expired_document_and_keeps_the_rest(
    client: AsyncMongoClient[Document], coll: AsyncCollection[Document]
) -> None:
    """mongod's monitor sweeps every 60 s; this asks for 1 s where the server allows it at
    runtime, else waits for the server's own sweep (150 s deadline, polling)."""
    await coll.create_index([("at", ASCENDING)], name="ttl_at", expireAfterSeconds=60)
    now = datetime.now(UTC)
    await coll.insert_many(
        [
            {"_id": "expired", "at": now - timedelta(hours=1)},
            {"_id": "fresh", "at": now + timedelta(days=1)},
            {"_id": "no-date"},  # a pending ledger entry, an open task: never expires
            {"_id": "not-a-date", "at": "2000-01-01T00:00:00Z"},
        ]
    )
    was = await set_ttl_monitor_sleep(client.admin, 1)
    started = time.monotonic()
    try:
        while await coll.find_one({"_id": "expired"}) is not None:
            assert time.monotonic() - started < 150, "the expired document was not removed"
            await asyncio.sleep(0.5)
    finally:
        if was is not None:
            await set_ttl_monitor_sleep(client.admin, was)
    print(f"TTL removal after {time.monotonic() - started:.1f} s (ttlMonitorSleepSecs was {was})")
    assert sorted(await coll.distinct("_id")) == ["fresh", "no-date", "not-a-date"]


async def test_a_ttl_index_with_another_expiry_conflicts_and_ensure_ttl_index_changes_it(
    coll: AsyncCollection[Document], stack: LocalStack
) -> None:
    """What ``shared.retention.ensure_ttl_index`` relies on when the replay horizon changes:
    asking for another expiry under the same name conflicts (mongod and secantusd-rs: 85
    IndexOptionsConflict; secantusdb: 86), and the index can be dropped and created again."""
    assert await coll.create_index([("at", ASCENDING)], name="ttl_at", expireAfterSeconds=100) == (
        "ttl_at"
    )
    assert await coll.create_index([("at", ASCENDING)], name="ttl_at", expireAfterSeconds=100) == (
        "ttl_at"
    )
    with pytest.raises(OperationFailure) as conflict:
        await coll.create_index([("at", ASCENDING)], name="ttl_at", expireAfterSeconds=200)
    expected = 86 if stack.mongo_server.kind == "python" else INDEX_OPTIONS_CONFLICT
    assert conflict.value.code == expected, conflict.value.details
    await ensure_ttl_index(coll, TtlIndex("ttl_at", "at", 200))
    indexes = await coll.index_information()
    assert indexes["ttl_at"]["expireAfterSeconds"] == 200
    assert indexes["ttl_at"]["key"] == [("at", 1)]
    # the next start asks for the new expiry: now a no-op
    await ensure_ttl_index(coll, TtlIndex("ttl_at", "at", 200))
    assert (await coll.index_information())["ttl_at"]["expireAfterSeconds"] == 200


# -- indexes -------------------------------------------------------------------------------------

# every compound index of the services, with the query it serves:
# (name, keys, equality filter, range field, sort direction)
COMPOUND: dict[str, tuple[str, list[tuple[str, int]], dict[str, Any], str, int]] = {
    "rules timers (partition, due_at)": (
        "partition_due",
        [("partition", ASCENDING), ("due_at", ASCENDING)],
        {"partition": 1},
        "due_at",
        ASCENDING,
    ),
    "notifier ledger (partition, state, next_at)": (
        "due",
        [("partition", ASCENDING), ("state", ASCENDING), ("next_at", ASCENDING)],
        {"partition": 1, "state": "pending"},
        "next_at",
        ASCENDING,
    ),
    "notifier tasks (owner, status, due_at)": (
        "owner",
        [("owner", ASCENDING), ("status", ASCENDING), ("due_at", ASCENDING)],
        {"owner": "S-1", "status": "open"},
        "due_at",
        ASCENDING,
    ),
    "notifier tasks (team, status, due_at)": (
        "team",
        [("team", ASCENDING), ("status", ASCENDING), ("due_at", ASCENDING)],
        {"team": "east", "status": "open"},
        "due_at",
        ASCENDING,
    ),
    "notifier tasks (status, due_at)": (
        "status_due",
        [("status", ASCENDING), ("due_at", ASCENDING)],
        {"status": "open"},
        "due_at",
        ASCENDING,
    ),
    "analytics buckets (g, dim, start)": (
        "query",
        [("g", ASCENDING), ("dim", ASCENDING), ("start", ASCENDING)],
        {"g": "day", "dim": "all"},
        "start",
        ASCENDING,
    ),
}
SINGLE = {
    "subject": [("subject", ASCENDING)],
    "digest": [("digest_id", ASCENDING)],
    "kind_at_risk": [("kind", ASCENDING), ("state.customer.at_risk", ASCENDING)],
    "unpublished": [("partition", ASCENDING), ("unpublished", ASCENDING)],
    "recipient_sent": [("recipient", ASCENDING), ("sent_at", ASCENDING)],
}


async def test_create_index_is_idempotent_for_the_same_spec(
    coll: AsyncCollection[Document],
) -> None:
    specs = {name: keys for name, keys, *_ in COMPOUND.values()} | SINGLE
    for _ in range(2):
        for name, keys in specs.items():
            assert await coll.create_index(keys, name=name) == name
    indexes = await coll.index_information()
    assert set(indexes) == {"_id_", *specs}
    for name, keys in specs.items():
        assert indexes[name]["key"] == keys, name
        assert not indexes[name].get("unique", False)


async def test_a_unique_index_refuses_a_duplicate_with_code_11000(
    coll: AsyncCollection[Document],
) -> None:
    await coll.create_index([("email", ASCENDING)], name="email", unique=True)
    await coll.insert_one({"_id": 1, "email": "a@example.com"})
    with pytest.raises(DuplicateKeyError) as on_insert:
        await coll.insert_one({"_id": 2, "email": "a@example.com"})
    assert on_insert.value.code == DUPLICATE_KEY
    await coll.insert_one({"_id": 3, "email": "b@example.com"})
    with pytest.raises(DuplicateKeyError) as on_update:
        await coll.update_one({"_id": 3}, {"$set": {"email": "a@example.com"}})
    assert on_update.value.code == DUPLICATE_KEY
    with pytest.raises(DuplicateKeyError) as on_id:  # the _id index is unique too
        await coll.insert_one({"_id": 1, "email": "c@example.com"})
    assert on_id.value.code == DUPLICATE_KEY
    assert await all_docs(coll) == {
        1: {"_id": 1, "email": "a@example.com"},
        3: {"_id": 3, "email": "b@example.com"},
    }


def plan_stages(plan: Any) -> list[dict[str, Any]]:
    """Every stage of an explained plan (classic or slot-based ``queryPlan``), outermost first."""
    if not isinstance(plan, dict):
        return []
    found = [plan] if "stage" in plan else []
    for key in ("queryPlan", "inputStage"):
        found += plan_stages(plan.get(key))
    for child in plan.get("inputStages", []):
        found += plan_stages(child)
    return found


@pytest.mark.parametrize("shape", list(COMPOUND))
async def test_a_compound_index_answers_equality_range_and_sort(
    request: pytest.FixtureRequest, server: str, coll: AsyncCollection[Document], shape: str
) -> None:
    name, keys, equal, ranged, direction = COMPOUND[shape]
    await coll.create_index(keys, name=name)
    other = {field: f"other-{value}" for field, value in equal.items()}
    docs = [
        {"_id": f"d{i:03d}", **(equal if i % 3 else other), ranged: T0 + timedelta(minutes=i)}
        for i in range(300)
    ]
    await coll.insert_many(docs)
    until, after = T0 + timedelta(minutes=200), T0 + timedelta(minutes=4)
    query = {**equal, ranged: {"$lte": until, "$gt": after}}
    found = [doc async for doc in coll.find(query).sort(ranged, direction).limit(5)]
    expected = sorted(
        (
            d
            for d in docs
            if all(d[k] == v for k, v in equal.items()) and after < d[ranged] <= until
        ),
        key=lambda d: d[ranged],
        reverse=direction == DESCENDING,
    )
    assert len(expected) == 131
    assert ids(found) == ids(expected[:5])
    known_difference(
        request,
        server,
        "python",
        "secantusdb reads every index key of the equality + range (131 here) and sorts them in "
        "memory (a SORT stage; its explain reports nReturned 131), where mongod reads 5 keys in "
        "index order; same results, only slower for large due sets",
    )
    explained = await coll.database.command(
        "explain",
        {"find": coll.name, "filter": query, "sort": {ranged: direction}, "limit": 5},
        verbosity="executionStats",
    )
    stages = plan_stages(explained["queryPlanner"]["winningPlan"])
    names = [stage["stage"] for stage in stages]
    assert "COLLSCAN" not in names, names
    assert [stage.get("indexName") for stage in stages if stage["stage"] == "IXSCAN"] == [name]
    assert "SORT" not in names, names  # the index order is the sort order
    stats = explained["executionStats"]
    assert stats["nReturned"] == 5
    assert stats["totalKeysExamined"] <= 6  # the limit (and perhaps the key after it)
    assert stats["totalDocsExamined"] <= 6


# -- upserts and updates -------------------------------------------------------------------------


async def test_an_upsert_with_setoninsert_inc_min_and_max(coll: AsyncCollection[Document]) -> None:
    day = timedelta(days=1)
    inserted = await coll.update_one(
        {"_id": "K-1"},
        {
            "$setOnInsert": {"subject": "customer:C-1", "created": T0},
            "$inc": {"n": 2},
            "$min": {"first": T0 + 5 * day},
            "$max": {"last": T0 + 5 * day},
        },
        upsert=True,
    )
    assert (inserted.matched_count, inserted.modified_count, inserted.upserted_id) == (0, 0, "K-1")
    assert await coll.find_one({"_id": "K-1"}) == {
        "_id": "K-1",
        "subject": "customer:C-1",
        "created": T0,
        "n": 2,
        "first": T0 + 5 * day,
        "last": T0 + 5 * day,
    }
    updated = await coll.update_one(
        {"_id": "K-1"},
        {
            "$setOnInsert": {"subject": "customer:other", "created": T0 + 9 * day},
            "$inc": {"n": 3},
            "$min": {"first": T0 + 3 * day},  # earlier: taken
            "$max": {"last": T0 + 3 * day},  # earlier: ignored
        },
        upsert=True,
    )
    assert (updated.matched_count, updated.modified_count, updated.upserted_id) == (1, 1, None)
    assert await coll.find_one({"_id": "K-1"}) == {
        "_id": "K-1",
        "subject": "customer:C-1",
        "created": T0,
        "n": 5,
        "first": T0 + 3 * day,
        "last": T0 + 5 * day,
    }
    later = await coll.update_one(
        {"_id": "K-1"}, {"$min": {"first": T0 + 9 * day}, "$max": {"last": T0 + 9 * day}}
    )
    assert (later.matched_count, later.modified_count) == (1, 1)
    unchanged = await coll.update_one(
        {"_id": "K-1"}, {"$min": {"first": T0 + 9 * day}, "$max": {"last": T0 + 1 * day}}
    )
    assert (unchanged.matched_count, unchanged.modified_count) == (1, 0)
    absent = await coll.update_one({"_id": "K-1"}, {"$min": {"low": 7}, "$max": {"high": 7}})
    assert absent.modified_count == 1
    doc = await coll.find_one({"_id": "K-1"})
    assert doc is not None
    assert (doc["first"], doc["last"], doc["low"], doc["high"]) == (
        T0 + 3 * day,
        T0 + 9 * day,
        7,
        7,
    )


async def test_max_compares_numbers_across_bson_types(coll: AsyncCollection[Document]) -> None:
    """Kafka offsets start as 32-bit integers and grow into 64-bit ones (the progress store)."""
    key = {"_id": "group|topic|0"}
    await coll.update_one(key, {"$max": {"offset": 5}}, upsert=True)
    await coll.update_one(key, {"$max": {"offset": 2**40}}, upsert=True)
    await coll.update_one(key, {"$max": {"offset": 7}}, upsert=True)
    assert await coll.find_one(key) == {**key, "offset": 2**40}
    await coll.update_one(key, {"$max": {"offset": 2**40 + 1.5}}, upsert=True)
    assert await coll.find_one(key) == {**key, "offset": 2**40 + 1.5}


async def test_setoninsert_of_the_id_creates_once(coll: AsyncCollection[Document]) -> None:
    """``TaskStore.create``: the ``_id`` in ``$setOnInsert``, equal to the filter's."""
    task = {"_id": "T-1", "owner": "S-1", "status": "open", "due_at": T0}
    first = await coll.update_one({"_id": "T-1"}, {"$setOnInsert": task}, upsert=True)
    again = await coll.update_one(
        {"_id": "T-1"}, {"$setOnInsert": {**task, "owner": "S-2"}}, upsert=True
    )
    assert (first.upserted_id, again.upserted_id) == ("T-1", None)
    assert (again.matched_count, again.modified_count) == (1, 0)
    assert await all_docs(coll) == {"T-1": task}


async def test_dotted_paths_create_nested_fields(coll: AsyncCollection[Document]) -> None:
    """Attribution's ``dims.<k>``, buckets' ``c.<counter>`` and conversions'
    ``reminded.<date>``: dotted update paths make (and then reach into) nested documents."""
    await coll.bulk_write(
        [
            UpdateOne({"_id": "customer:C-1"}, {"$set": {"dims.owner": "S-1"}}, upsert=True),
            UpdateOne(
                {"_id": "K-1"},
                {
                    "$min": {"reminded.2026-03-31": T0, "renewed.2027-03-31": T0},
                    "$setOnInsert": {"subject": "customer:C-1"},
                },
                upsert=True,
            ),
            UpdateOne({"_id": "b"}, {"$inc": {"c.events~customer~upserted": 2}}, upsert=True),
        ],
        ordered=False,
    )
    await coll.update_one({"_id": "customer:C-1"}, {"$set": {"dims.tier": "gold"}})
    await coll.update_one({"_id": "K-1"}, {"$min": {"reminded.2026-03-31": T0 - timedelta(1)}})
    await coll.update_one({"_id": "b"}, {"$inc": {"c.events~customer~upserted": 1, "c.x": 1}})
    assert await all_docs(coll) == {
        "customer:C-1": {"_id": "customer:C-1", "dims": {"owner": "S-1", "tier": "gold"}},
        "K-1": {
            "_id": "K-1",
            "reminded": {"2026-03-31": T0 - timedelta(1)},
            "renewed": {"2027-03-31": T0},
            "subject": "customer:C-1",
        },
        "b": {"_id": "b", "c": {"events~customer~upserted": 3, "x": 1}},
    }
    assert ids([d async for d in coll.find({"dims.tier": "gold"})]) == ["customer:C-1"]


async def test_a_guarded_upsert_counts_once_and_detects_another_writer(
    coll: AsyncCollection[Document],
) -> None:
    """Analytics' buckets (rule 2 of ``services.analytics.aggregates``): ``$inc`` and ``$set``
    in one update, conditional on the source's last offset (or its absence)."""
    key, src, src2 = "day|2026-01-01|all|*", "upkeep_events_v1|0", "upkeep_actions_v1|3"

    def guarded(guard: Any, offset: int, upsert: bool, source: str = src) -> UpdateOne:
        return UpdateOne(
            {"_id": key, f"applied.{source}": guard},
            {"$inc": {"c.n": 1}, "$set": {f"applied.{source}": offset, "g": "day"}},
            upsert=upsert,
        )

    created = await coll.bulk_write([guarded({"$exists": False}, 7, True)], ordered=False)
    assert (created.upserted_count, created.matched_count) == (1, 0)
    assert await coll.find_one({"_id": key}) == {
        "_id": key,
        "applied": {src: 7},
        "c": {"n": 1},
        "g": "day",
    }
    moved = await coll.bulk_write(
        [guarded(7, 9, False), guarded({"$exists": False}, 1, False, src2)], ordered=False
    )
    assert (moved.matched_count, moved.modified_count, moved.upserted_count) == (2, 2, 0)
    stale = await coll.bulk_write([guarded(7, 11, False)], ordered=False)  # another writer
    assert (stale.matched_count, stale.upserted_count) == (0, 0)
    with pytest.raises(BulkWriteError) as meanwhile:  # created by another writer meanwhile
        await coll.bulk_write([guarded({"$exists": False}, 3, True)], ordered=False)
    errors = meanwhile.value.details["writeErrors"]
    assert [(e["index"], e["code"]) for e in errors] == [(0, DUPLICATE_KEY)]
    assert await coll.find_one({"_id": key}) == {
        "_id": key,
        "applied": {src: 9, src2: 1},
        "c": {"n": 3},
        "g": "day",
    }


async def test_set_unset_and_exists(coll: AsyncCollection[Document]) -> None:
    """The ledger's saves: ``final_at`` set when an entry is final, unset when it is not."""
    await coll.insert_many([{"_id": "e1", "state": "pending"}, {"_id": "e2", "state": "pending"}])
    await coll.update_one({"_id": "e1"}, {"$set": {"state": "sent", "final_at": T0}})
    assert ids([d async for d in coll.find({"final_at": {"$exists": True}})]) == ["e1"]
    back = await coll.update_one(
        {"_id": "e1"}, {"$set": {"state": "pending"}, "$unset": {"final_at": ""}}
    )
    assert back.modified_count == 1
    noop = await coll.update_one({"_id": "e2"}, {"$unset": {"final_at": ""}})
    assert (noop.matched_count, noop.modified_count) == (1, 0)
    assert await all_docs(coll) == {
        "e1": {"_id": "e1", "state": "pending"},
        "e2": {"_id": "e2", "state": "pending"},
    }
    assert sorted(ids([d async for d in coll.find({"final_at": {"$exists": False}})])) == [
        "e1",
        "e2",
    ]


async def test_replace_one_upserts_and_delete_one_counts(coll: AsyncCollection[Document]) -> None:
    prefs = {"_id": "r@example.com", "channels": ["email"], "quiet": None}
    first = await coll.replace_one({"_id": prefs["_id"]}, prefs, upsert=True)
    assert (first.matched_count, first.upserted_id) == (0, "r@example.com")
    second = await coll.replace_one(
        {"_id": prefs["_id"]}, {**prefs, "channels": ["sms"]}, upsert=True
    )
    assert (second.matched_count, second.modified_count, second.upserted_id) == (1, 1, None)
    assert await coll.find_one({"_id": prefs["_id"]}) == {**prefs, "channels": ["sms"]}
    assert (await coll.delete_one({"_id": prefs["_id"]})).deleted_count == 1
    assert (await coll.delete_one({"_id": prefs["_id"]})).deleted_count == 0
    assert await coll.find_one({"_id": prefs["_id"]}) is None


async def test_update_many_and_count_documents(coll: AsyncCollection[Document]) -> None:
    """The ledger: digesting pending entries by key, clearing ``unpublished``, the marketing cap."""
    day = timedelta(days=1)
    await coll.insert_many(
        [
            {"_id": "e0", "state": "pending", "recipient": "r1", "priority": "marketing"},
            {"_id": "e1", "state": "pending", "recipient": "r1", "priority": "normal"},
            {"_id": "e2", "state": "sent", "recipient": "r1", "priority": "marketing"},
            {"_id": "e3", "state": "pending", "recipient": "r2", "priority": "marketing"},
        ]
    )
    digested = await coll.update_many(
        {"_id": {"$in": ["e0", "e1", "e2", "missing"]}, "state": "pending"},
        {"$set": {"state": "suppressed", "final_at": T0}},
    )
    assert (digested.matched_count, digested.modified_count) == (2, 2)
    sent = [("e0", T0 - 2 * day), ("e1", T0 - 1 * day), ("e2", T0 - 10 * day), ("e3", T0)]
    for key, at in sent:
        await coll.update_one({"_id": key}, {"$set": {"sent_at": at, "unpublished": True}})
    published = await coll.update_many(
        {"_id": {"$in": ["e0", "e3"]}}, {"$set": {"unpublished": False}}
    )
    assert (published.matched_count, published.modified_count) == (2, 2)
    again = await coll.update_many({"_id": {"$in": ["e0", "e3"]}}, {"$set": {"unpublished": False}})
    assert (again.matched_count, again.modified_count) == (2, 0)
    query = {"recipient": "r1", "sent_at": {"$gte": T0 - 3 * day}, "priority": "marketing"}
    assert await coll.count_documents(query) == 1  # e0 (e1 is not marketing, e2 too old)
    assert await coll.count_documents({"unpublished": True}) == 2
    assert await coll.count_documents({"state": "nothing"}) == 0
    assert sorted((await all_docs(coll))["e0"]) == [
        "_id",
        "final_at",
        "priority",
        "recipient",
        "sent_at",
        "state",
        "unpublished",
    ]


# -- bulk writes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["insert_many", "bulk_write"])
async def test_an_unordered_insert_with_duplicate_keys_writes_the_rest(
    coll: AsyncCollection[Document], how: str
) -> None:
    """Ingest's claims (``insert_many``) and analytics' facts (``bulk_write`` of ``InsertOne``):
    every colliding index reported with 11000, the others written, the originals kept."""
    await coll.insert_many([{"_id": f"k{i:04d}", "pos": "first"} for i in (0, 700, 1199)])
    batch = [{"_id": f"k{i:04d}", "pos": f"p|{i}"} for i in range(1200)]
    batch.append({"_id": "k0005", "pos": "p|repeat"})  # the same key twice in one batch
    write = (
        coll.insert_many(batch, ordered=False)
        if how == "insert_many"
        else coll.bulk_write([InsertOne(doc) for doc in batch], ordered=False)
    )
    with pytest.raises(BulkWriteError) as caught:
        await write
    details = caught.value.details
    failed = sorted((e["index"], e["code"]) for e in details["writeErrors"])
    assert failed == [
        (0, DUPLICATE_KEY),
        (700, DUPLICATE_KEY),
        (1199, DUPLICATE_KEY),
        (1200, DUPLICATE_KEY),
    ]
    assert details["nInserted"] == 1197
    assert await coll.count_documents({}) == 1200
    collided = {"k0000", "k0700", "k1199", "k0005"}
    found = {
        d["_id"]: d["pos"] async for d in coll.find({"_id": {"$in": sorted(collided)}}, {"pos": 1})
    }
    assert found == {"k0000": "first", "k0700": "first", "k1199": "first", "k0005": "p|5"}


async def test_an_ordered_bulk_write_stops_at_its_first_error(
    coll: AsyncCollection[Document],
) -> None:
    """Group commit and the timer store: the operations before the first error are applied,
    the one at it fails, the ones after it are never tried."""
    await coll.insert_many([{"_id": k, "v": 1} for k in ("a", "c", "d")])
    with pytest.raises(BulkWriteError) as caught:
        await coll.bulk_write(
            [
                DeleteOne({"_id": "a"}),
                ReplaceOne({"_id": "b"}, {"_id": "b", "v": 2}, upsert=True),
                InsertOne({"_id": "c", "v": 9}),
                UpdateOne({"_id": "d"}, {"$set": {"v": 2}}),
            ],
            ordered=True,
        )
    details = caught.value.details
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(2, DUPLICATE_KEY)]
    assert (details["nRemoved"], details["nUpserted"], details["nModified"]) == (1, 1, 0)
    assert await all_docs(coll) == {
        "b": {"_id": "b", "v": 2},
        "c": {"_id": "c", "v": 1},
        "d": {"_id": "d", "v": 1},
    }
    with pytest.raises(BulkWriteError) as inserts:
        await coll.insert_many([{"_id": "x"}, {"_id": "c"}, {"_id": "y"}], ordered=True)
    assert [(e["index"], e["code"]) for e in inserts.value.details["writeErrors"]] == [
        (1, DUPLICATE_KEY)
    ]
    assert inserts.value.details["nInserted"] == 1
    assert sorted(await coll.distinct("_id")) == ["b", "c", "d", "x"]


# -- queries -------------------------------------------------------------------------------------


def subject(i: int) -> Document:
    return {
        "_id": f"s{i:03d}",
        "kind": "customer" if i % 2 else "channel",
        "state": {"customer": {"orders": i % 4, "at_risk": i % 3 == 0, "name": f"n{i}"}, "x": i},
        "dims": {"at_risk": "yes" if i % 5 == 0 else "no"},
    }


async def test_find_by_id_in_with_projections_and_dotted_filters(
    coll: AsyncCollection[Document],
) -> None:
    docs = [subject(i) for i in range(250)]
    await coll.insert_many(docs)
    wanted = ["s249", "s001", "s004", "missing"]
    found = [d async for d in coll.find({"_id": {"$in": sorted(wanted)}})]
    assert sorted(ids(found)) == ["s001", "s004", "s249"]
    assert {d["_id"]: d for d in found}["s004"] == subject(4)
    only_id = [d async for d in coll.find({"_id": {"$in": wanted}}, {"_id": 1})]
    assert sorted(only_id, key=lambda d: d["_id"]) == [
        {"_id": "s001"},
        {"_id": "s004"},
        {"_id": "s249"},
    ]
    dims = await coll.find_one({"_id": "s005"}, {"dims": 1})
    assert dims == {"_id": "s005", "dims": {"at_risk": "yes"}}
    # the churn summaries: a dotted filter and a dotted projection
    orders = [
        d
        async for d in coll.find(
            {"kind": "customer", "state.customer.orders": {"$gte": 1}},
            {"state.customer.orders": 1, "state.customer.name": 1},
        )
    ]
    expected = [
        s for s in docs if s["kind"] == "customer" and s["state"]["customer"]["orders"] >= 1
    ]
    assert sorted(ids(orders)) == ids(expected)
    assert {d["_id"]: d for d in orders}["s003"] == {
        "_id": "s003",
        "state": {"customer": {"orders": 3, "name": "n3"}},
    }
    # the weekly lists: a boolean in a dotted filter, a sub-document projected
    at_risk = [
        d
        async for d in coll.find(
            {"kind": "customer", "state.customer.at_risk": True}, {"state.customer": 1}
        )
    ]
    assert sorted(ids(at_risk)) == [f"s{i:03d}" for i in range(250) if i % 2 and i % 3 == 0]
    assert {d["_id"]: d for d in at_risk}["s003"] == {
        "_id": "s003",
        "state": {"customer": subject(3)["state"]["customer"]},
    }
    risky = [d async for d in coll.find({"dims.at_risk": "yes"}).limit(1000)]
    assert len(risky) == 50
    # more than one batch (101 documents first, then getMore)
    assert sorted(ids([d async for d in coll.find()])) == ids(docs)
    channels = [d async for d in coll.find({"kind": {"$in": ["channel"]}}, {"kind": 1})]
    assert len(channels) == 125
    assert all(d == {"_id": d["_id"], "kind": "channel"} for d in channels)


async def test_sort_limit_and_date_ranges(coll: AsyncCollection[Document]) -> None:
    """The timer store's pages (``$lte`` now, ``$gt`` the last page's end), tasks newest first,
    analytics' ``[since, until)`` and a fired timer deleted by its id and due date."""
    minute = timedelta(minutes=1)
    due = {f"t{i:02d}": T0 + i * minute + timedelta(microseconds=123_456) for i in range(20)}
    await coll.insert_many(
        [{"_id": k, "partition": int(k[1:]) % 2, "due_at": at} for k, at in due.items()]
    )
    now = T0 + 10 * minute + timedelta(seconds=1)
    page = [
        d
        async for d in coll.find({"partition": 0, "due_at": {"$lte": now}})
        .sort("due_at", ASCENDING)
        .limit(3)
    ]
    assert ids(page) == ["t00", "t02", "t04"]
    after = page[-1]["due_at"]
    assert after == T0 + 4 * minute + timedelta(microseconds=123_000)  # BSON dates: milliseconds
    assert after.utcoffset() == timedelta(0)  # tz_aware
    page = [
        d
        async for d in coll.find({"partition": 0, "due_at": {"$lte": now, "$gt": after}})
        .sort("due_at", ASCENDING)
        .limit(3)
    ]
    assert ids(page) == ["t06", "t08", "t10"]
    newest = [d async for d in coll.find({"partition": 1}).sort("due_at", DESCENDING).limit(2)]
    assert ids(newest) == ["t19", "t17"]
    window = {"$gte": T0 + 5 * minute, "$lt": T0 + 8 * minute + timedelta(microseconds=123_000)}
    assert ids([d async for d in coll.find({"due_at": window}).sort("due_at", 1)]) == [
        "t05",
        "t06",
        "t07",
    ]
    fired = await coll.bulk_write(
        [
            DeleteOne({"_id": "t04", "due_at": after}),
            DeleteOne({"_id": "t06", "due_at": T0}),  # re-scheduled meanwhile: kept
        ],
        ordered=False,
    )
    assert fired.deleted_count == 1
    assert await coll.count_documents({"_id": {"$in": ["t04", "t06"]}}) == 1


async def test_list_collections_with_a_filter_and_name_only(
    coll: AsyncCollection[Document],
) -> None:
    await coll.insert_one({"_id": 1})
    db = coll.database
    reply = await db.command("listCollections", nameOnly=True, filter={"name": coll.name})
    assert reply["cursor"]["firstBatch"] == [{"name": coll.name, "type": "collection"}]
    reply = await db.command("listCollections", nameOnly=True, filter={"name": "__readiness"})
    assert reply["cursor"]["firstBatch"] == []
    assert await can_use(db) is True


# -- --auth --------------------------------------------------------------------------------------


async def test_a_read_write_user_may_use_its_own_database(secured_mongo: LocalStack) -> None:
    settings = login(secured_mongo, OWN_DB)
    mongo = make_client(settings, "features-auth")
    try:
        db = mongo[settings.database]
        assert await can_use(db) is True
        claims = db["claims"]
        assert await claims.create_index([("at", ASCENDING)], name="ttl_at", expireAfterSeconds=60)
        await claims.insert_one({"_id": "k", "at": T0})
        await claims.update_one({"_id": "k"}, {"$set": {"pos": "t|0|1"}}, upsert=True)
        assert await claims.find_one({"_id": "k"}) == {"_id": "k", "at": T0, "pos": "t|0|1"}
        assert await claims.count_documents({}) == 1
        assert (await claims.delete_one({"_id": "k"})).deleted_count == 1
    finally:
        await mongo.close()


async def test_a_read_write_user_is_refused_on_another_database(
    secured_mongo: LocalStack,
) -> None:
    settings = login(secured_mongo, OTHER_DB)
    mongo = make_client(settings, "features-auth")
    try:
        other = mongo[OTHER_DB]["claims"]
        refusals: dict[str, Callable[[], Awaitable[Any]]] = {
            "listCollections": lambda: can_use(mongo[OTHER_DB]),
            "insert": lambda: other.insert_one({"_id": "k"}),
            "find": lambda: other.find_one({"_id": "k"}),
            "update": lambda: other.update_one({"_id": "k"}, {"$set": {"a": 1}}, upsert=True),
            "createIndexes": lambda: other.create_index([("at", ASCENDING)], name="at"),
        }
        for command, attempt in refusals.items():
            with pytest.raises(OperationFailure) as refused:
                await attempt()
            assert refused.value.code == UNAUTHORIZED, (command, refused.value.details)
    finally:
        await mongo.close()


async def test_a_read_write_user_may_change_a_ttl_but_not_with_collmod(
    secured_mongo: LocalStack,
) -> None:
    """``readWrite`` grants createIndex and dropIndex but not collMod on mongod (SERVER-20772),
    so ``shared.retention.ensure_ttl_index`` changes a TTL by dropping and creating it, which
    the services' own user may do. secantusdb lets ``readWrite`` run collMod (a difference
    from mongod that Upkeep no longer depends on)."""
    settings = login(secured_mongo, OWN_DB)
    mongo = make_client(settings, "features-auth")
    try:
        ledger = mongo[OWN_DB]["ledger"]
        await ensure_ttl_index(ledger, TtlIndex("ttl", "final_at", 60))
        await ensure_ttl_index(ledger, TtlIndex("ttl", "final_at", 90))
        assert (await ledger.index_information())["ttl"]["expireAfterSeconds"] == 90
        if secured_mongo.mongo_server.kind != "python":
            with pytest.raises(OperationFailure) as refused:
                await mongo[OWN_DB].command(
                    "collMod", "ledger", index={"name": "ttl", "expireAfterSeconds": 120}
                )
            assert refused.value.code == UNAUTHORIZED, refused.value.details
            assert (await ledger.index_information())["ttl"]["expireAfterSeconds"] == 90
    finally:
        await mongo.close()


async def test_a_wrong_password_is_refused(secured_mongo: LocalStack) -> None:
    """Refused with AuthenticationFailed (18): raised as such, or — the driver marks the server
    Unknown when a login fails (SDAM) — as a server-selection timeout that names it."""
    settings = login(secured_mongo, OWN_DB, "mongo-wrong")
    settings = settings.model_copy(update={"server_selection_timeout_ms": 1000})
    mongo = make_client(settings, "features-auth")
    refusals: dict[str, Callable[[], Awaitable[Any]]] = {
        "listCollections": lambda: can_use(mongo[OWN_DB]),
        "insert": lambda: mongo[OWN_DB]["claims"].insert_one({"_id": "intruder"}),
    }
    try:
        for command, attempt in refusals.items():
            with pytest.raises((OperationFailure, ServerSelectionTimeoutError)) as refused:
                await attempt()
            assert "AuthenticationFailed" in str(refused.value), command
            if isinstance(refused.value, OperationFailure):
                assert refused.value.code == AUTHENTICATION_FAILED, command
    finally:
        await mongo.close()
    await assert_no_intruder(secured_mongo)


async def test_no_login_is_refused(secured_mongo: LocalStack) -> None:
    mongo = make_client(login(secured_mongo, OWN_DB, None), "features-auth")
    try:
        assert (await mongo.admin.command("ping"))["ok"] == 1  # as mongod: ping needs no login
        with pytest.raises(OperationFailure) as listing:
            await can_use(mongo[OWN_DB])
        assert listing.value.code == UNAUTHORIZED, listing.value.details
        with pytest.raises(OperationFailure) as write:
            await mongo[OWN_DB]["claims"].insert_one({"_id": "intruder"})
        assert write.value.code == UNAUTHORIZED, write.value.details
    finally:
        await mongo.close()
    await assert_no_intruder(secured_mongo)


async def assert_no_intruder(secured_mongo: LocalStack) -> None:
    mongo = make_client(login(secured_mongo, OWN_DB), "features-auth")
    try:
        assert await mongo[OWN_DB]["claims"].find_one({"_id": "intruder"}) is None
    finally:
        await mongo.close()
