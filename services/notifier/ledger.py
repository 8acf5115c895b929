"""The delivery ledger: one document per action key, the single source of truth for what was
sent. An action published twice, redelivered or replayed finds its key here and is never sent
again once sent.

An entry's states are :mod:`services.notifier.entry`'s. A final state is written right after
the attempt that decided it, with ``unpublished`` set; the dispatcher publishes the outcome to
``upkeep.deliveries.v1`` in its next transaction, and once that commits the cleared flag rides
with the next tick's writes. Entries are indexed by (partition, state, next_at) so a dispatch
tick asks, in one query, only for what is due in the partitions this replica owns.

Retention: the write that makes an entry final also sets ``final_at`` (MongoDB only), and a TTL
index deletes the entry ``keep`` after it — the replay horizon plus its grace
(:mod:`shared.retention`), so every copy of its action on ``upkeep.actions.v1`` is gone first.
A pending entry (due, deferred, waiting for its digest or its contact) has no ``final_at`` and
never expires.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING, UpdateMany, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from services.notifier.entry import FINAL, Entry
from shared.groupcommit import GroupCommit
from shared.mongo import Document
from shared.retention import DEFAULT_GUARD, TtlIndex, ensure_ttl_index

MUTABLE = {
    "digest_id",
    "state",
    "next_at",
    "attempts",
    "deferrals",
    "reason",
    "detail",
    "sent_at",
    "unpublished",
    "updated_at",
}


class Ledger(abc.ABC):
    @abc.abstractmethod
    async def record(self, entries: Sequence[Entry]) -> int:
        """Insert the entries whose keys are new; returns how many were new."""

    @abc.abstractmethod
    async def due(self, partitions: Collection[int], now: datetime, limit: int) -> list[Entry]:
        """Pending entries of these partitions due at or before ``now``, earliest first (one
        query for all the partitions a tick owns)."""

    @abc.abstractmethod
    async def unpublished(self, partitions: Collection[int], limit: int) -> list[Entry]:
        """Final entries of these partitions whose outcome is not known to be published."""

    @abc.abstractmethod
    async def save(self, entry: Entry) -> None:
        """Write an entry's state after an attempt (one write, right after the attempt)."""

    @abc.abstractmethod
    async def mark_published(self, keys: Collection[str]) -> None:
        """Clear the flag of entries whose outcomes are committed. It may be queued to ride
        with the next write (:meth:`flush` writes it at the latest): until then a crash or a
        new owner of the partition publishes those outcomes once more, never fewer."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Write what :meth:`mark_published` queued, if anything is still queued."""

    @abc.abstractmethod
    async def sent_counts(self, recipients: Collection[str], since: datetime) -> dict[str, int]:
        """Marketing messages sent to each recipient since ``since`` (for frequency caps), for
        all of a tick's recipients at once; a recipient with none is left out."""

    @abc.abstractmethod
    async def get(self, key: str) -> Entry | None: ...

    @abc.abstractmethod
    async def get_many(self, keys: Collection[str]) -> dict[str, Entry]:
        """The entries of these keys that exist (one query for a tick's digests)."""

    @abc.abstractmethod
    async def members(self, digest_id: str) -> list[Entry]:
        """Pending entries folded into a digest (from any partition)."""

    @abc.abstractmethod
    async def mark_digested(self, keys: Collection[str], now: datetime) -> None:
        """Members delivered by their digest: sent, outcome to publish by their partition."""


def _doc(entry: Entry) -> Document:
    doc = entry.model_dump(mode="python")
    doc["_id"] = doc.pop("key")
    doc["action"] = entry.action.model_dump(mode="json")
    doc["recipient"] = entry.recipient
    doc["priority"] = entry.action.priority
    if entry.state in FINAL:  # recorded final at once: its retention starts now
        doc["final_at"] = datetime.now(UTC)
    return doc


def _entry(doc: Document) -> Entry:
    doc = dict(doc)
    doc["key"] = doc.pop("_id")
    doc.pop("recipient", None)
    doc.pop("priority", None)
    doc.pop("final_at", None)
    return Entry.model_validate(doc)


def _saved(entry: Entry, now: datetime) -> Document:
    """The update an attempt writes: the fields it changes and, once the entry is final, the
    date its retention counts from (never on a pending entry: that is work still to do)."""
    update: Document = {"$set": entry.model_dump(mode="python", include=MUTABLE)}
    if entry.state in FINAL:
        update["$set"]["final_at"] = now
    else:
        update["$unset"] = {"final_at": ""}
    return update


class MongoLedger(Ledger):
    def __init__(
        self,
        collection: AsyncCollection[Document],
        group_commit: bool = True,
        keep: timedelta = DEFAULT_GUARD,
    ) -> None:
        """``keep``: how long a final entry is kept (the service passes its replay horizon)."""
        self._collection = collection
        self._saves = GroupCommit(collection) if group_commit else None  # off: bench baseline
        self._publishing: set[str] = set()  # flags cleared in memory, write still queued
        self._keep = keep

    @property
    def ttl(self) -> TtlIndex:
        return TtlIndex("ttl_final_at", "final_at", int(self._keep.total_seconds()))

    async def ensure_indexes(self) -> None:
        await self._collection.create_index(
            [("partition", ASCENDING), ("state", ASCENDING), ("next_at", ASCENDING)], name="due"
        )
        await self._collection.create_index(
            [("partition", ASCENDING), ("unpublished", ASCENDING)], name="unpublished"
        )
        await self._collection.create_index(
            [("recipient", ASCENDING), ("sent_at", ASCENDING)], name="recipient_sent"
        )
        await self._collection.create_index([("digest_id", ASCENDING)], name="digest")
        await ensure_ttl_index(self._collection, self.ttl)

    async def record(self, entries: Sequence[Entry]) -> int:
        if not entries:
            return 0
        result = await self._collection.bulk_write(
            [UpdateOne({"_id": e.key}, {"$setOnInsert": _doc(e)}, upsert=True) for e in entries],
            ordered=False,
        )
        if result.upserted_count < len(entries):
            # a copy of an action already final (a replay of rules) lives a horizon from now:
            # so does the entry that keeps it from being sent again
            await self._collection.update_many(
                {"_id": {"$in": sorted(e.key for e in entries)}, "final_at": {"$exists": True}},
                {"$max": {"final_at": datetime.now(UTC)}},
            )
        return result.upserted_count

    async def due(self, partitions: Collection[int], now: datetime, limit: int) -> list[Entry]:
        if not partitions:
            return []
        cursor = (
            self._collection.find(
                {
                    "partition": {"$in": sorted(partitions)},
                    "state": "pending",
                    "next_at": {"$lte": now},
                }
            )
            .sort("next_at", ASCENDING)
            .limit(limit)
        )
        return [_entry(doc) async for doc in cursor]

    async def unpublished(self, partitions: Collection[int], limit: int) -> list[Entry]:
        if not partitions:
            return []
        query: Document = {"partition": {"$in": sorted(partitions)}, "unpublished": True}
        if self._publishing:  # published, their flags not written yet: not to publish again
            query["_id"] = {"$nin": sorted(self._publishing)}
        cursor = self._collection.find(query).limit(limit)
        return [_entry(doc) async for doc in cursor]

    async def save(self, entry: Entry) -> None:
        """Only the fields an attempt changes, written at once: the saves of concurrent
        attempts share a bulk write (group commit), so none waits for a timer or a batch."""
        update = _saved(entry, datetime.now(UTC))
        if self._saves is None:
            await self._collection.update_one({"_id": entry.key}, update)
        else:
            await self._saves.write(UpdateOne({"_id": entry.key}, update))

    async def mark_published(self, keys: Collection[str]) -> None:
        if not keys:
            return
        update = UpdateMany({"_id": {"$in": sorted(keys)}}, {"$set": {"unpublished": False}})
        if self._saves is None:
            await self._collection.bulk_write([update])
            return
        # rides with the next tick's saves; until it is written, unpublished() leaves them out
        self._publishing.update(keys)
        self._saves.carry(update).add_done_callback(
            lambda _: self._publishing.difference_update(keys)
        )

    async def flush(self) -> None:
        if self._saves is not None:
            await self._saves.flush()

    async def sent_counts(self, recipients: Collection[str], since: datetime) -> dict[str, int]:
        if not recipients:
            return {}
        cursor = self._collection.find(
            {
                "recipient": {"$in": sorted(recipients)},
                "sent_at": {"$gte": since},
                "priority": "marketing",
            },
            {"recipient": 1, "_id": 0},
        )
        return dict(Counter([doc["recipient"] async for doc in cursor]))

    async def get(self, key: str) -> Entry | None:
        doc = await self._collection.find_one({"_id": key})
        return _entry(doc) if doc is not None else None

    async def get_many(self, keys: Collection[str]) -> dict[str, Entry]:
        if not keys:
            return {}
        cursor = self._collection.find({"_id": {"$in": sorted(keys)}})
        return {entry.key: entry for entry in [_entry(doc) async for doc in cursor]}

    async def members(self, digest_id: str) -> list[Entry]:
        cursor = self._collection.find({"digest_id": digest_id, "state": "pending"})
        return [e for e in [_entry(doc) async for doc in cursor] if e.key != digest_id]

    async def mark_digested(self, keys: Collection[str], now: datetime) -> None:
        if keys:
            await self._collection.update_many(
                {"_id": {"$in": sorted(keys)}, "state": "pending"},
                {"$set": {**_digested(now), "final_at": datetime.now(UTC)}},
            )


def _digested(now: datetime) -> Document:
    return {
        "state": "sent",
        "reason": "digest",
        "sent_at": now,
        "updated_at": now,
        "unpublished": True,
    }


class InMemoryLedger(Ledger):
    """For unit tests and the benchmark's no-ledger baseline."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    async def record(self, entries: Sequence[Entry]) -> int:
        new = [e for e in entries if e.key not in self.entries]
        self.entries.update({e.key: e.model_copy() for e in new})
        return len(new)

    async def due(self, partitions: Collection[int], now: datetime, limit: int) -> list[Entry]:
        due = [
            e
            for e in self.entries.values()
            if e.partition in partitions and e.state == "pending" and e.next_at <= now
        ]
        return [e.model_copy() for e in sorted(due, key=lambda e: e.next_at)[:limit]]

    async def unpublished(self, partitions: Collection[int], limit: int) -> list[Entry]:
        found = [e for e in self.entries.values() if e.partition in partitions and e.unpublished]
        return [e.model_copy() for e in found[:limit]]

    async def save(self, entry: Entry) -> None:
        self.entries[entry.key] = entry.model_copy()

    async def mark_published(self, keys: Collection[str]) -> None:
        for key in keys:
            if key in self.entries:
                self.entries[key].unpublished = False

    async def flush(self) -> None:
        """Nothing is queued: flags are cleared at once."""

    async def sent_counts(self, recipients: Collection[str], since: datetime) -> dict[str, int]:
        return dict(
            Counter(
                e.recipient
                for e in self.entries.values()
                if e.recipient in recipients
                and e.action.priority == "marketing"
                and e.sent_at is not None
                and e.sent_at >= since
            )
        )

    async def get(self, key: str) -> Entry | None:
        entry = self.entries.get(key)
        return entry.model_copy() if entry is not None else None

    async def get_many(self, keys: Collection[str]) -> dict[str, Entry]:
        return {k: self.entries[k].model_copy() for k in keys if k in self.entries}

    async def members(self, digest_id: str) -> list[Entry]:
        return [
            e.model_copy()
            for e in self.entries.values()
            if e.digest_id == digest_id and e.state == "pending" and e.key != digest_id
        ]

    async def mark_digested(self, keys: Collection[str], now: datetime) -> None:
        for key in keys:
            entry = self.entries.get(key)
            if entry is not None and entry.state == "pending":
                self.entries[key] = entry.model_copy(update=_digested(now))
