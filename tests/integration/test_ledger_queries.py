"""The ledger's batched reads — one query per tick, not one per entry — agree between the
MongoDB ledger (on the real server) and the in-memory fake."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from services.notifier.entry import Entry
from services.notifier.ledger import InMemoryLedger, Ledger, MongoLedger
from shared.events.actions import ActionMessage, ActionRecipient
from shared.mongo import database, make_client
from shared.settings import MongoSettings

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def entry(key: str, recipient: str, priority: str) -> Entry:
    action = ActionMessage(
        key=key,
        rule="test",
        subject=f"customer:{recipient}",
        kind="email",
        recipient=ActionRecipient(kind="customer", id=recipient),
        template="t",
        locale="en",
        due_at=NOW,
        priority=priority,
        data={},
        context={},
        created_at=NOW,
    )
    return Entry(key=key, action=action, partition=0, offset=0, next_at=NOW, created_at=NOW)


@pytest.fixture(params=["mongo", "memory"])
async def ledger(
    request: pytest.FixtureRequest, mongo_settings: MongoSettings
) -> AsyncIterator[Ledger]:
    if request.param == "memory":
        yield InMemoryLedger()
        return
    client = make_client(mongo_settings, "test")
    collection = database(client, mongo_settings)[f"ledger_{uuid.uuid4().hex[:8]}"]
    mongo = MongoLedger(collection)
    await mongo.ensure_indexes()
    try:
        yield mongo
    finally:
        await collection.drop()
        await client.close()


async def test_sent_counts_counts_marketing_sent_in_the_window_per_recipient(
    ledger: Ledger,
) -> None:
    plan = [
        ("a1", "A", "marketing", NOW - timedelta(hours=1)),
        ("a2", "A", "marketing", NOW - timedelta(hours=2)),
        ("a3", "A", "marketing", NOW - timedelta(days=9)),  # before the window
        ("a4", "A", "transactional", NOW - timedelta(hours=1)),  # not marketing
        ("b1", "B", "marketing", NOW - timedelta(hours=3)),
        ("c1", "C", "marketing", None),  # never sent
    ]
    entries = [entry(key, who, priority) for key, who, priority, _ in plan]
    assert await ledger.record(entries) == len(entries)
    for e, (_, _, _, sent_at) in zip(entries, plan, strict=True):
        if sent_at is not None:
            e.state, e.sent_at, e.updated_at = "sent", sent_at, sent_at
            await ledger.save(e)
    counts = await ledger.sent_counts(
        {"customer:A", "customer:B", "customer:C", "customer:D"}, NOW - timedelta(days=7)
    )
    assert counts == {"customer:A": 2, "customer:B": 1}
    assert await ledger.sent_counts(set(), NOW) == {}


async def test_get_many_returns_the_entries_that_exist(ledger: Ledger) -> None:
    await ledger.record([entry("k1", "A", "transactional"), entry("k2", "B", "transactional")])
    found = await ledger.get_many({"k1", "k2", "missing"})
    assert sorted(found) == ["k1", "k2"]
    assert found["k2"].recipient == "customer:B"
    assert await ledger.get_many(set()) == {}


async def test_a_repeated_action_keeps_its_final_entry_for_another_horizon(
    mongo_settings: MongoSettings,
) -> None:
    """A replay of rules re-publishes actions already delivered: each copy is on the actions
    topic for a horizon from now, so the entry that stops it being sent again must be too."""
    client = make_client(mongo_settings, "test")
    collection = database(client, mongo_settings)[f"ledger_{uuid.uuid4().hex[:8]}"]
    ledger = MongoLedger(collection)
    try:
        sent, pending = entry("sent", "A", "transactional"), entry("pending", "B", "transactional")
        await ledger.record([sent, pending])
        sent.state, sent.sent_at, sent.updated_at = "sent", NOW, NOW
        await ledger.save(sent)
        long_ago = datetime(2025, 1, 1, tzinfo=UTC)
        await collection.update_one({"_id": "sent"}, {"$set": {"final_at": long_ago}})
        assert await ledger.record([entry("sent", "A", "transactional"), pending]) == 0
        refreshed = await collection.find_one({"_id": "sent"})
        assert refreshed is not None
        assert refreshed["final_at"] > long_ago + timedelta(days=300)
        untouched = await collection.find_one({"_id": "pending"})
        assert untouched is not None
        assert "final_at" not in untouched  # pending: still never expires
    finally:
        await collection.drop()
        await client.close()


async def test_due_is_one_query_for_the_partitions_owned_earliest_first(ledger: Ledger) -> None:
    plan = [("p0-late", 0, 5), ("p1-early", 1, 1), ("p2-mid", 2, 3), ("p3-other", 3, 0)]
    entries = []
    for key, partition, minutes in plan:
        e = entry(key, key, "transactional")
        e.partition, e.next_at = partition, NOW - timedelta(minutes=10 - minutes)
        entries.append(e)
    future = entry("p0-future", "F", "transactional")
    future.next_at = NOW + timedelta(minutes=1)
    await ledger.record([*entries, future])
    due = await ledger.due({0, 1, 2}, NOW, limit=10)
    assert [e.key for e in due] == ["p1-early", "p2-mid", "p0-late"]  # p3 not owned
    assert [e.key for e in await ledger.due({0, 1, 2}, NOW, limit=2)] == ["p1-early", "p2-mid"]
    assert await ledger.due(set(), NOW, limit=10) == []


async def test_published_flags_are_never_published_twice_while_their_write_is_queued(
    ledger: Ledger,
) -> None:
    entries = [entry(k, k, "transactional") for k in ("a", "b", "c")]
    await ledger.record(entries)
    for e in entries:
        e.state, e.unpublished, e.updated_at = "sent", True, NOW
        await ledger.save(e)
    assert {e.key for e in await ledger.unpublished({0}, 10)} == {"a", "b", "c"}
    await ledger.mark_published({"a", "b"})
    # queued to ride with the next write, or written at once: either way not "unpublished"
    assert [e.key for e in await ledger.unpublished({0}, 10)] == ["c"]
    await ledger.flush()
    assert [e.key for e in await ledger.unpublished({0}, 10)] == ["c"]
    if isinstance(ledger, MongoLedger):  # the flags are in the database, not only in memory
        fresh = MongoLedger(ledger._collection)
        assert [e.key for e in await fresh.unpublished({0}, 10)] == ["c"]


async def test_a_queued_published_flag_rides_with_the_next_save(
    mongo_settings: MongoSettings,
) -> None:
    client = make_client(mongo_settings, "test")
    collection = database(client, mongo_settings)[f"ledger_{uuid.uuid4().hex[:8]}"]
    ledger = MongoLedger(collection)
    try:
        done, pending = entry("done", "D", "transactional"), entry("next", "N", "transactional")
        await ledger.record([done, pending])
        done.state, done.unpublished, done.updated_at = "sent", True, NOW
        await ledger.save(done)
        await ledger.mark_published({"done"})
        assert (await collection.find_one({"_id": "done"}) or {})["unpublished"] is True
        pending.state, pending.unpublished, pending.updated_at = "sent", True, NOW
        await ledger.save(pending)  # one bulk write carries both
        assert (await collection.find_one({"_id": "done"}) or {})["unpublished"] is False
        assert (await collection.find_one({"_id": "next"}) or {})["unpublished"] is True
    finally:
        await collection.drop()
        await client.close()
