"""The tasks, revisits and journeys read models in MongoDB (``analytics_tasks``,
``analytics_revisits``, ``analytics_journey_runs``): one document per task id, per subject and
per journey run, folded by :mod:`services.analytics.people` and :mod:`services.analytics.journeys`;
and one document per journey (``analytics_journeys``) with the first position of each step.

**Why they are exact under redelivery and replay.** A batch reads the documents it touches,
folds its events into them in memory, and writes back only the documents that changed. The
fold is idempotent and order-free, so an event seen again changes nothing and writes nothing.
Each write is conditional on the revision it read (``rev``; a new document: that none exists);
if another writer got there first (a zombie replica), the batch fails with
:class:`~services.analytics.aggregates.GuardMoved`, a transient error, and is folded again from
fresh reads. A journey's document only takes minima (``$min``), which is order-free and
idempotent by itself. Nothing here expires: a task, a subject's status or a run is kept as long as
analytics is.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo import ASCENDING, InsertOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from services.analytics import journeys
from services.analytics.aggregates import GuardMoved
from services.analytics.journeys import Journey, JourneyEvent, Run, Seen, run_key
from services.analytics.people import Revisit, Task, TaskEvent, fold_all, latest
from shared.mongo import Document

LIST_LIMIT = 1000  # the most tasks one list answers with
_Model = TypeVar("_Model", Task, Revisit, Run)


class Tasks(abc.ABC):
    """The tasks read model: one :class:`Task` per task id."""

    @abc.abstractmethod
    async def apply(self, events: Sequence[TaskEvent]) -> dict[str, Task]:
        """Fold a batch's task events in (idempotent: an event seen before changes nothing);
        returns those tasks as they are now, so the caller need not read them again."""

    @abc.abstractmethod
    async def get(self, task_ids: Collection[str]) -> dict[str, Task]: ...

    @abc.abstractmethod
    async def open(
        self,
        owner: str | None = None,
        team: str | None = None,
        overdue: bool | None = None,
        limit: int = LIST_LIMIT,
        owners: Collection[str] | None = None,
    ) -> list[Task]:
        """Open tasks, the oldest (by creation) first; of ``owner``, ``team``, and of one of
        ``owners`` (None: anyone's)."""

    @abc.abstractmethod
    async def completed(
        self,
        since: datetime,
        until: datetime,
        owner: str | None = None,
        team: str | None = None,
        owners: Collection[str] | None = None,
    ) -> list[Task]:
        """Tasks completed in ``[since, until)``."""


class Revisits(abc.ABC):
    """The latest revisit status of every subject under a cadence."""

    @abc.abstractmethod
    async def apply(self, statuses: Sequence[Revisit]) -> None:
        """Keep the latest status per subject (idempotent and order-free)."""

    @abc.abstractmethod
    async def all(self) -> list[Revisit]: ...


def _utc(value: Any) -> Any:
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and not value.tzinfo else value


class Journeys(abc.ABC):
    """The journeys seen and where their runs are: one :class:`Run` per journey run."""

    @abc.abstractmethod
    async def apply(self, events: Sequence[tuple[JourneyEvent, Seen]]) -> None:
        """Fold a batch's journey events, each with the record that first carried it
        (idempotent and order-free: an event seen before changes nothing)."""

    @abc.abstractmethod
    async def known(self) -> list[Journey]:
        """Every journey seen, by name."""

    @abc.abstractmethod
    async def get(self, name: str) -> Journey | None: ...

    @abc.abstractmethod
    async def waiting(self, name: str, steps: Iterable[str]) -> dict[str, int]:
        """How many runs of the journey wait at each of ``steps`` now."""

    @abc.abstractmethod
    async def active(self, name: str) -> int:
        """How many runs are in the journey now (at a step, or at its start)."""


def to_doc(model: Task | Revisit | Run, key: str) -> Document:
    doc: Document = {"_id": key, **asdict(model)}
    if isinstance(model, Task):
        version = model.owner_version
        doc["owner_version"] = list(version) if version else None
        doc["status"], doc["is_overdue"] = model.status, model.overdue  # for the queries
    if isinstance(model, Run):
        doc["waiting_at"] = model.waiting_at  # for the queries
        doc["live"] = model.waiting_at is not None
    return doc


def from_doc(cls: type[_Model], doc: Document) -> _Model:
    values = {f.name: _utc(doc.get(f.name)) for f in fields(cls) if f.name in doc}
    if cls is Task and values.get("owner_version"):
        rank, at = values["owner_version"]
        values["owner_version"] = (rank, _utc(at))
    return cls(**values)


async def _save(
    collection: AsyncCollection[Document],
    before: dict[str, Document],
    after: dict[str, Document],
) -> None:
    """Write the documents that changed, each conditional on the revision it was read at."""
    ops: list[InsertOne[Document] | ReplaceOne[Document]] = []
    for key, doc in after.items():
        old = before.get(key)
        if old is None:
            ops.append(InsertOne({**doc, "rev": 1}))
        elif {k: v for k, v in old.items() if k != "rev"} != doc:
            rev = old.get("rev", 0)
            ops.append(ReplaceOne({"_id": key, "rev": rev}, {**doc, "rev": rev + 1}))
    if not ops:
        return
    try:
        result = await collection.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        raise GuardMoved(f"{collection.name}: a document was created meanwhile") from exc
    if result.inserted_count + result.matched_count < len(ops):
        raise GuardMoved(f"{collection.name}: a document changed meanwhile")


async def _read(collection: AsyncCollection[Document], keys: Iterable[str]) -> dict[str, Document]:
    found = {}
    async for doc in collection.find({"_id": {"$in": sorted(set(keys))}}):
        found[doc["_id"]] = {k: _utc(v) for k, v in doc.items()}
        if found[doc["_id"]].get("owner_version"):
            rank, at = found[doc["_id"]]["owner_version"]
            found[doc["_id"]]["owner_version"] = [rank, _utc(at)]
    return found


class MongoTasks(Tasks):
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def ensure_indexes(self) -> None:
        await self._collection.create_index(
            [("status", ASCENDING), ("created_at", ASCENDING)], name="open"
        )
        await self._collection.create_index([("completed_at", ASCENDING)], name="completed")

    async def apply(self, events: Sequence[TaskEvent]) -> dict[str, Task]:
        if not events:
            return {}
        before = await _read(self._collection, (e.task_id for e in events))
        tasks = {key: from_doc(Task, doc) for key, doc in before.items()}
        after = fold_all(tasks, events)
        await _save(self._collection, before, {k: to_doc(t, k) for k, t in after.items()})
        return after

    async def get(self, task_ids: Collection[str]) -> dict[str, Task]:
        if not task_ids:
            return {}
        found = await _read(self._collection, task_ids)
        return {key: from_doc(Task, doc) for key, doc in found.items()}

    async def open(
        self,
        owner: str | None = None,
        team: str | None = None,
        overdue: bool | None = None,
        limit: int = LIST_LIMIT,
        owners: Collection[str] | None = None,
    ) -> list[Task]:
        query: dict[str, Any] = {"status": "open"}
        for name, value in (("owner", owner), ("team", team), ("is_overdue", overdue)):
            if value is not None:
                query[name] = value
        if owners is not None:
            query.setdefault("owner", {"$in": sorted(owners)})
            if owner is not None and owner not in owners:
                return []
        cursor = self._collection.find(query).sort("created_at", ASCENDING).limit(limit)
        return [from_doc(Task, {k: _utc(v) for k, v in doc.items()}) async for doc in cursor]

    async def completed(
        self,
        since: datetime,
        until: datetime,
        owner: str | None = None,
        team: str | None = None,
        owners: Collection[str] | None = None,
    ) -> list[Task]:
        query: dict[str, Any] = {"completed_at": {"$gte": since, "$lt": until}}
        for name, value in (("owner", owner), ("team", team)):
            if value is not None:
                query[name] = value
        if owners is not None:
            query.setdefault("owner", {"$in": sorted(owners)})
            if owner is not None and owner not in owners:
                return []
        cursor = self._collection.find(query)
        return [from_doc(Task, {k: _utc(v) for k, v in doc.items()}) async for doc in cursor]


class MongoRevisits(Revisits):
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def apply(self, statuses: Sequence[Revisit]) -> None:
        if not statuses:
            return
        before = await _read(self._collection, (s.about for s in statuses))
        now = {key: from_doc(Revisit, doc) for key, doc in before.items()}
        for status in statuses:
            now[status.about] = latest(now.get(status.about), status)
        await _save(self._collection, before, {k: to_doc(r, k) for k, r in now.items()})

    async def all(self) -> list[Revisit]:
        cursor = self._collection.find({})
        return [from_doc(Revisit, {k: _utc(v) for k, v in doc.items()}) async for doc in cursor]


class MongoJourneys(Journeys):
    """``analytics_journeys`` (one document per journey: the first position of each step and
    of each step's kind, kept with ``$min``) and ``analytics_journey_runs`` (one per run)."""

    def __init__(
        self, journeys: AsyncCollection[Document], runs: AsyncCollection[Document]
    ) -> None:
        self._journeys, self._runs = journeys, runs

    async def ensure_indexes(self) -> None:
        await self._runs.create_index(
            [("journey", ASCENDING), ("live", ASCENDING), ("waiting_at", ASCENDING)],
            name="waiting",
        )

    async def apply(self, events: Sequence[tuple[JourneyEvent, Seen]]) -> None:
        if not events:
            return
        ops = []
        for name, seen in journeys.sightings(events).items():
            least = {"first": seen.first}
            least |= {f"steps.{step}": at for step, at in seen.steps.items()}
            least |= {f"kinds.{step}": at for step, at in seen.kinds.items()}
            ops.append(UpdateOne({"_id": name}, {"$min": least}, upsert=True))
        try:
            await self._journeys.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
            # another replica inserted the same journey at the same moment: now it exists
            await self._journeys.bulk_write(ops, ordered=False)
        keys = {run_key(e.journey, e.run) for e, _ in events}
        before = await _read(self._runs, keys)
        runs = {key: from_doc(Run, doc) for key, doc in before.items()}
        after = journeys.fold_all(runs, events)
        await _save(self._runs, before, {k: to_doc(r, k) for k, r in after.items()})

    async def known(self) -> list[Journey]:
        cursor = self._journeys.find({}).sort("_id", ASCENDING)
        return [_journey(doc) async for doc in cursor]

    async def get(self, name: str) -> Journey | None:
        doc = await self._journeys.find_one({"_id": name})
        return _journey(doc) if doc is not None else None

    async def waiting(self, name: str, steps: Iterable[str]) -> dict[str, int]:
        return {
            step: await self._runs.count_documents(
                {"journey": name, "live": True, "waiting_at": step}
            )
            for step in dict.fromkeys(steps)
        }

    async def active(self, name: str) -> int:
        return await self._runs.count_documents({"journey": name, "live": True})


def _journey(doc: Document) -> Journey:
    return Journey.of(doc["_id"], doc.get("steps", {}), doc.get("kinds", {}))
