"""De-duplication of events by CloudEvents identity (``source`` + ``id``).

A *claim* records that an event identity was first seen at a given position (``topic/partition/
offset``). Claiming again from the **same** position is a redelivery of the same record — after a
crash or a rolled-back batch — and succeeds again, so the event is republished inside the new
transaction; claiming from any **other** position is a duplicate and fails. Together with the
transactional publish of the consumer loop this keeps ``upkeep.events.v1`` free of repeats: a
claim whose transaction aborted is simply re-claimed by the redelivered record.

Claims expire after the retention window (a TTL index); a replay older than that window is
published again. The window is ``UPKEEP_INGEST_DEDUP_RETENTION_DAYS`` (30 by default).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from shared.mongo import Document

DUPLICATE_KEY = 11000


@dataclass(frozen=True, slots=True)
class Claim:
    key: str  # CloudEvents identity
    position: str  # "topic/partition/offset" of the record carrying it


class DedupStore(abc.ABC):
    """Port: which event identities have been published already."""

    @abc.abstractmethod
    async def claim(self, claims: Sequence[Claim]) -> set[str]:
        """Claim each key for its position; return the keys this batch may publish.

        Keys must be distinct within one call. Idempotent for the same (key, position)."""


class InMemoryDedupStore(DedupStore):
    """Fake for unit tests and benchmarks."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    async def claim(self, claims: Sequence[Claim]) -> set[str]:
        won = set()
        for claim in claims:
            if self.seen.setdefault(claim.key, claim.position) == claim.position:
                won.add(claim.key)
        return won


class MongoDedupStore(DedupStore):
    """Claims are documents ``{_id: key, pos: position, at: first seen}``.

    One unordered ``insert_many`` per batch; only the keys that collide are read back.
    """

    def __init__(self, collection: AsyncCollection[Document], retention_days: int) -> None:
        self._collection = collection
        self._retention_s = retention_days * 24 * 3600

    async def ensure_indexes(self) -> None:
        await self._collection.create_index(
            [("at", ASCENDING)], expireAfterSeconds=self._retention_s, name="ttl_at"
        )

    async def claim(self, claims: Sequence[Claim]) -> set[str]:
        if not claims:
            return set()
        now = datetime.now(UTC)
        docs = [{"_id": c.key, "pos": c.position, "at": now} for c in claims]
        try:
            await self._collection.insert_many(docs, ordered=False)
            return {c.key for c in claims}
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            collided = {claims[e["index"]].key for e in errors}
        won = {c.key for c in claims} - collided
        positions = {c.key: c.position for c in claims}
        async for doc in self._collection.find({"_id": {"$in": sorted(collided)}}, {"pos": 1}):
            if doc.get("pos") == positions[doc["_id"]]:
                won.add(doc["_id"])
        return won
