"""A second record of committed offsets, kept in MongoDB, that closes a rebalance race.

Why: a transactional commit returns before its offset markers reach ``__consumer_offsets``.
The broker protects the next owner of a partition from reading the stale offset only for
clients that ask for stable offsets (KIP-447, OffsetFetch v7); aiokafka does not, so a new owner
could restart a partition behind work whose results were already committed, and publish them
again. The consumer loop therefore saves each batch's offsets here right after the commit, while
a revocation is still waiting for it, and on assignment starts each partition at the greater of
Kafka's committed offset and this one.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping

from aiokafka import TopicPartition
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from shared.mongo import Document


class ProgressStore(abc.ABC):
    @abc.abstractmethod
    async def load(
        self, group: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The saved next offset of each partition that has one."""

    @abc.abstractmethod
    async def save(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        """Record next offsets (never moves one backwards)."""


def _key(group: str, tp: TopicPartition) -> str:
    return f"{group}|{tp.topic}|{tp.partition}"


class MongoProgressStore(ProgressStore):
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def load(
        self, group: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        wanted = {_key(group, tp): tp for tp in partitions}
        if not wanted:
            return {}
        found: dict[TopicPartition, int] = {}
        async for doc in self._collection.find({"_id": {"$in": list(wanted)}}):
            found[wanted[doc["_id"]]] = int(doc["offset"])
        return found

    async def save(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        if offsets:
            await self._collection.bulk_write(
                [
                    UpdateOne({"_id": _key(group, tp)}, {"$max": {"offset": off}}, upsert=True)
                    for tp, off in offsets.items()
                ],
                ordered=False,
            )


class InMemoryProgressStore(ProgressStore):
    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}

    async def load(
        self, group: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return {
            tp: self.offsets[_key(group, tp)]
            for tp in partitions
            if _key(group, tp) in self.offsets
        }

    async def save(self, group: str, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, off in offsets.items():
            key = _key(group, tp)
            self.offsets[key] = max(off, self.offsets.get(key, off))
