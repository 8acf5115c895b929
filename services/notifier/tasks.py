"""Tasks for staff (action kind ``task``): stored in MongoDB, listed, completed, snoozed and
reassigned through the API. A task's id is its action's key, so an action delivered twice is
still one task.

A task is ``open`` until it is done. Snoozing moves its ``due_at``; reassigning gives it to
another ``owner`` (``reassignments`` counts how often). Both are for open tasks only, and every
change says whether it changed anything (:class:`TaskChange`), so the API can tell a repeated
request from a new one. Completing is idempotent: a done task keeps its first completion.

Retention: a TTL index on ``completed_at`` deletes a done task ``keep`` after its completion
(the replay horizon plus its grace, :mod:`shared.retention`); an open task has no completion
date and is never deleted."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from shared.mongo import Document
from shared.retention import DEFAULT_GUARD, TtlIndex, ensure_ttl_index

Priority = Literal["low", "normal", "high", "urgent"]
Status = Literal["open", "done"]


class Task(BaseModel):
    id: str
    owner: str  # staff id
    team: str | None = None  # the owner's team when the task was made
    title: str
    description: str
    rule: str
    subject: str  # what it is about: "customer:C-1", "channel:CH-1"
    priority: Priority = "normal"
    due_at: AwareDatetime
    created_at: AwareDatetime
    updated_at: AwareDatetime | None = None  # the last change (None: tasks stored before)
    status: Status = "open"
    completed_at: AwareDatetime | None = None
    completed_by: str | None = None
    note: str | None = None  # the completion's
    snoozed_by: str | None = None
    reassigned_by: str | None = None
    reassignments: int = 0


@dataclass(frozen=True, slots=True)
class TaskChange:
    """What a change made: the task as it is now (``None``: no such task) and whether this
    call changed it (``False``: it was done already, or already so)."""

    task: Task | None
    changed: bool


class Tasks(abc.ABC):
    """The task store: :class:`TaskStore` (MongoDB) in service, :class:`InMemoryTaskStore`
    in unit tests."""

    @abc.abstractmethod
    async def create(self, task: Task) -> bool:
        """Store a task unless one with its id exists; returns whether it is new."""

    @abc.abstractmethod
    async def get(self, task_id: str) -> Task | None: ...

    @abc.abstractmethod
    async def list(
        self,
        owner: str | None = None,
        team: str | None = None,
        status: Status | None = None,
        overdue: bool | None = None,
        now: datetime | None = None,
        limit: int = 100,
    ) -> list[Task]:
        """Oldest due first. ``overdue=True``: open and due before ``now``; ``False``: not
        so (done, or due from ``now`` on); ``now`` is needed with ``overdue``."""

    @abc.abstractmethod
    async def complete(
        self, task_id: str, by: str | None, at: datetime, note: str | None = None
    ) -> TaskChange:
        """Mark an open task done (a done one keeps its first completion)."""

    @abc.abstractmethod
    async def snooze(
        self, task_id: str, until: datetime, by: str | None, at: datetime
    ) -> TaskChange:
        """Move an open task's due time to ``until``."""

    @abc.abstractmethod
    async def reassign(self, task_id: str, owner: str, by: str | None, at: datetime) -> TaskChange:
        """Give an open task to ``owner`` (one more reassignment)."""


def _overdue_now(overdue: bool | None, now: datetime | None) -> datetime | None:
    if overdue is not None and now is None:
        raise ValueError("listing by overdue needs now")
    return now


class TaskStore(Tasks):
    def __init__(
        self, collection: AsyncCollection[Document], keep: timedelta = DEFAULT_GUARD
    ) -> None:
        self._collection = collection
        self._keep = keep

    @property
    def ttl(self) -> TtlIndex:
        return TtlIndex("ttl_completed_at", "completed_at", int(self._keep.total_seconds()))

    async def ensure_indexes(self) -> None:
        """One index per way of listing: by owner, by team, and all (open, overdue)."""
        for name, first in (("owner", ["owner"]), ("team", ["team"]), ("status_due", [])):
            keys = [(f, ASCENDING) for f in (*first, "status", "due_at")]
            await self._collection.create_index(keys, name=name)
        await ensure_ttl_index(self._collection, self.ttl)

    async def create(self, task: Task) -> bool:
        result = await self._collection.update_one(
            {"_id": task.id},
            {"$setOnInsert": {"_id": task.id, **task.model_dump(mode="python", exclude={"id"})}},
            upsert=True,
        )
        return result.upserted_id is not None

    async def list(
        self,
        owner: str | None = None,
        team: str | None = None,
        status: Status | None = None,
        overdue: bool | None = None,
        now: datetime | None = None,
        limit: int = 100,
    ) -> list[Task]:
        now = _overdue_now(overdue, now)
        query: Document = {}
        if owner is not None:
            query["owner"] = owner
        if team is not None:
            query["team"] = team
        if status is not None:
            query["status"] = status
        if overdue is True:
            if status == "done":
                return []
            query.update(status="open", due_at={"$lt": now})
        elif overdue is False:
            query["$or"] = [{"status": "done"}, {"due_at": {"$gte": now}}]
        # by due_at alone, so that an index (owner/team, status, due_at) gives the order
        cursor = self._collection.find(query).sort("due_at", ASCENDING).limit(limit)
        return [_task(doc) async for doc in cursor]

    async def get(self, task_id: str) -> Task | None:
        doc = await self._collection.find_one({"_id": task_id})
        return _task(doc) if doc is not None else None

    async def complete(
        self, task_id: str, by: str | None, at: datetime, note: str | None = None
    ) -> TaskChange:
        done = {"status": "done", "completed_at": at, "completed_by": by, "note": note}
        return await self._change(task_id, {}, {"$set": {**done, "updated_at": at}})

    async def snooze(
        self, task_id: str, until: datetime, by: str | None, at: datetime
    ) -> TaskChange:
        return await self._change(
            task_id,
            {"due_at": {"$ne": until}},
            {"$set": {"due_at": until, "snoozed_by": by, "updated_at": at}},
        )

    async def reassign(self, task_id: str, owner: str, by: str | None, at: datetime) -> TaskChange:
        return await self._change(
            task_id,
            {"owner": {"$ne": owner}},
            {
                "$set": {"owner": owner, "reassigned_by": by, "updated_at": at},
                "$inc": {"reassignments": 1},
            },
        )

    async def _change(self, task_id: str, unless: Document, update: dict[str, Any]) -> TaskChange:
        """Apply ``update`` to the open task unless it matches ``unless`` already."""
        result = await self._collection.update_one(
            {"_id": task_id, "status": "open", **unless}, update
        )
        return TaskChange(await self.get(task_id), result.modified_count > 0)


def _task(doc: Document) -> Task:
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    return Task.model_validate(doc)


class InMemoryTaskStore(Tasks):
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}

    async def create(self, task: Task) -> bool:
        if task.id in self.tasks:
            return False
        self.tasks[task.id] = task
        return True

    async def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    async def list(
        self,
        owner: str | None = None,
        team: str | None = None,
        status: Status | None = None,
        overdue: bool | None = None,
        now: datetime | None = None,
        limit: int = 100,
    ) -> list[Task]:
        now = _overdue_now(overdue, now)

        def wanted(t: Task) -> bool:
            late = t.status == "open" and now is not None and t.due_at < now
            return (
                owner in (None, t.owner)
                and team in (None, t.team)
                and status in (None, t.status)
                and overdue in (None, late)
            )

        found = sorted(
            (t for t in self.tasks.values() if wanted(t)), key=lambda t: (t.due_at, t.id)
        )
        return found[:limit]

    async def complete(
        self, task_id: str, by: str | None, at: datetime, note: str | None = None
    ) -> TaskChange:
        done = {"status": "done", "completed_at": at, "completed_by": by, "note": note}
        return self._change(task_id, True, done | {"updated_at": at})

    async def snooze(
        self, task_id: str, until: datetime, by: str | None, at: datetime
    ) -> TaskChange:
        task = self.tasks.get(task_id)
        new = task is not None and task.due_at != until
        return self._change(task_id, new, {"due_at": until, "snoozed_by": by, "updated_at": at})

    async def reassign(self, task_id: str, owner: str, by: str | None, at: datetime) -> TaskChange:
        task = self.tasks.get(task_id)
        if task is None or task.owner == owner:
            return TaskChange(task, False)
        changes = {"owner": owner, "reassigned_by": by, "updated_at": at}
        return self._change(task_id, True, changes | {"reassignments": task.reassignments + 1})

    def _change(self, task_id: str, new: bool, changes: dict[str, Any]) -> TaskChange:
        task = self.tasks.get(task_id)
        if task is None or task.status != "open" or not new:
            return TaskChange(task, False)
        self.tasks[task_id] = task = task.model_copy(update=changes)
        return TaskChange(task, True)
