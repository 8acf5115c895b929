"""Tasks for staff (action kind ``task``): stored in MongoDB, listed and completed through the
API. A task's id is its action's key, so an action delivered twice is still one task.

Retention: a TTL index on ``completed_at`` deletes a done task ``keep`` after its completion
(the replay horizon plus its grace, :mod:`shared.retention`); an open task has no completion
date and is never deleted."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from shared.mongo import Document
from shared.retention import DEFAULT_GUARD, TtlIndex, ensure_ttl_index


class Task(BaseModel):
    id: str
    owner: str  # staff id
    title: str
    description: str
    rule: str
    subject: str
    due_at: AwareDatetime
    created_at: AwareDatetime
    status: Literal["open", "done"] = "open"
    completed_at: AwareDatetime | None = None
    completed_by: str | None = None


class TaskStore:
    def __init__(
        self, collection: AsyncCollection[Document], keep: timedelta = DEFAULT_GUARD
    ) -> None:
        self._collection = collection
        self._keep = keep

    @property
    def ttl(self) -> TtlIndex:
        return TtlIndex("ttl_completed_at", "completed_at", int(self._keep.total_seconds()))

    async def ensure_indexes(self) -> None:
        await self._collection.create_index(
            [("owner", ASCENDING), ("status", ASCENDING), ("due_at", ASCENDING)], name="owner"
        )
        await ensure_ttl_index(self._collection, self.ttl)

    async def create(self, task: Task) -> bool:
        """Store a task unless one with its id exists; returns whether it is new."""
        result = await self._collection.update_one(
            {"_id": task.id},
            {"$setOnInsert": {"_id": task.id, **task.model_dump(mode="python", exclude={"id"})}},
            upsert=True,
        )
        return result.upserted_id is not None

    async def list(self, owner: str | None, status: str | None, limit: int = 100) -> list[Task]:
        query: Document = {}
        if owner is not None:
            query["owner"] = owner
        if status is not None:
            query["status"] = status
        cursor = self._collection.find(query).sort("due_at", DESCENDING).limit(limit)
        return [_task(doc) async for doc in cursor]

    async def get(self, task_id: str) -> Task | None:
        doc = await self._collection.find_one({"_id": task_id})
        return _task(doc) if doc is not None else None

    async def complete(self, task_id: str, by: str | None, at: datetime) -> Task | None:
        """Mark a task done (idempotent: completing a done task keeps its first completion)."""
        await self._collection.update_one(
            {"_id": task_id, "status": "open"},
            {"$set": {"status": "done", "completed_at": at, "completed_by": by}},
        )
        return await self.get(task_id)


def _task(doc: Document) -> Task:
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    return Task.model_validate(doc)
