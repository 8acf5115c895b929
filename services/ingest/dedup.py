"""De-duplication of events by CloudEvents identity (``source`` + ``id``).

A *claim* records that an event identity was first seen at a given position (``topic/partition/
offset``). Claiming from any **other** position is a duplicate and fails. Claiming again from the
**same** position means the same record is being handled again, which is right after a crash or
a rolled-back batch (its transaction aborted, so the event must be published again) and wrong if
its transaction committed (the record is re-read only through a stale offset after a rebalance).
The two are told apart by the consumer loop's saved progress (:mod:`shared.kafka.progress`): a
position below the partition's saved next offset was committed, so the event is not republished.
Together with the transactional publish of the consumer loop this keeps ``upkeep.events.v1``
free of repeats.

Claims expire after the replay horizon (a TTL index on ``at``): ``UPKEEP_REPLAY_HORIZON_DAYS``
(400 by default) plus the grace of :mod:`shared.retention`, as the service passes it. An event
re-sent or replayed after its claim expired is published again as new.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import TopicPartition
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from shared.kafka.progress import ProgressStore
from shared.mongo import Document
from shared.retention import TtlIndex, ensure_ttl_index

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

    def __init__(
        self,
        collection: AsyncCollection[Document],
        retention_days: int,
        progress: ProgressStore | None = None,
        group: str = "",
    ) -> None:
        self._collection = collection
        self._retention_s = retention_days * 24 * 3600
        self._progress = progress
        self._group = group

    @property
    def ttl(self) -> TtlIndex:
        return TtlIndex("ttl_at", "at", self._retention_s)

    async def ensure_indexes(self) -> None:
        await ensure_ttl_index(self._collection, self.ttl)

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
        again: dict[str, str] = {}  # same record handled again: key -> position
        found: set[str] = set()
        async for doc in self._collection.find({"_id": {"$in": sorted(collided)}}, {"pos": 1}):
            found.add(doc["_id"])
            if doc.get("pos") == positions[doc["_id"]]:
                again[doc["_id"]] = doc["pos"]
        # a claim that expired between the insert and the read: first sighting after all, and
        # claim it for this position so a later copy is caught (racing writers may both win
        # this rare case; the alternative would be to drop an event)
        vanished = collided - found
        if vanished:
            await self._collection.insert_many(
                [{"_id": k, "pos": positions[k], "at": now} for k in sorted(vanished)],
                ordered=False,
            )
        return won | vanished | await self._uncommitted(again)

    async def _uncommitted(self, again: dict[str, str]) -> set[str]:
        """Of records handled again, those whose earlier attempt did not commit."""
        if not again or self._progress is None:
            return set(again)
        parsed = {key: _parse(pos) for key, pos in again.items()}
        saved = await self._progress.load(self._group, {tp for tp, _ in parsed.values()})
        return {key for key, (tp, offset) in parsed.items() if offset >= saved.get(tp, -1)}


def _parse(position: str) -> tuple[TopicPartition, int]:
    topic, partition, offset = position.rsplit("/", 2)
    return TopicPartition(topic, int(partition)), int(offset)
