"""Where rules keep subject state and timers (MongoDB), with in-memory fakes for unit tests.

Timers: one document per (rule, subject, name), indexed by (partition, due_at), so a tick asks
only for timers that are due in the partitions this replica owns — its cost grows with the
timers due, never with the number of subjects. ``partition`` is the subject's partition of
``upkeep.events.v1``.
"""

from __future__ import annotations

import abc
import asyncio
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DeleteOne, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection

from services.rules.sdk import Roster, Timer
from services.rules.state import StaffState, SubjectState
from shared.mongo import Document


@dataclass(frozen=True, slots=True)
class PlacedTimer:
    timer: Timer
    partition: int


@dataclass
class TimerChanges:
    """Cancellations (by rule, subject and name prefix) and timers to set, in order."""

    cancels: list[tuple[str, str, str]] = field(default_factory=list)
    sets: list[PlacedTimer] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.cancels or self.sets)


class SubjectStore(abc.ABC):
    @abc.abstractmethod
    async def load(self, ids: Collection[str]) -> dict[str, SubjectState]: ...

    @abc.abstractmethod
    async def save(self, states: Iterable[SubjectState]) -> None: ...

    @abc.abstractmethod
    async def find(self, kind: str, where: Mapping[str, Any]) -> list[SubjectState]:
        """The subjects of one kind whose state has these values (dotted paths into the
        state, equality only): what a scheduled job reads, never a per-tick cost."""

    @abc.abstractmethod
    async def roster(self) -> Roster:
        """Every member of staff, and how many subjects and open tasks each has: one pass
        over the subjects, reading only their owners (see ``RulesEngine``'s refresh)."""


class TimerStore(abc.ABC):
    @abc.abstractmethod
    async def apply(self, changes: TimerChanges) -> None:
        """Cancel, then set (a cancel followed by a set of the same timer keeps the set)."""

    @abc.abstractmethod
    async def due(
        self, partitions: Collection[int], rules: Collection[str], now: datetime, limit: int
    ) -> list[PlacedTimer]:
        """Pending timers of these rules due at or before ``now`` in these partitions, earliest
        first (timers of rules another replica runs are left to it)."""

    @abc.abstractmethod
    async def remove_fired(self, fired: Sequence[Timer]) -> None:
        """Delete fired timers — unless they were moved meanwhile (same id, new due time)."""

    @abc.abstractmethod
    async def pending(self, subject: str) -> list[Timer]: ...


def _timer_doc(placed: PlacedTimer) -> Document:
    t = placed.timer
    return {
        "_id": t.id,
        "rule": t.rule,
        "subject": t.subject,
        "name": t.name,
        "due_at": t.due_at,
        "data": dict(t.data),
        "partition": placed.partition,
    }


def _timer_of(doc: Document) -> Timer:
    return Timer(doc["rule"], doc["subject"], doc["name"], doc["due_at"], doc.get("data", {}))


class MongoSubjectStore(SubjectStore):
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def ensure_indexes(self) -> None:
        """The weekly at-risk lists read only the customers at risk."""
        await self._collection.create_index(
            [("kind", ASCENDING), ("state.customer.at_risk", ASCENDING)], name="kind_at_risk"
        )

    async def load(self, ids: Collection[str]) -> dict[str, SubjectState]:
        if not ids:
            return {}
        found = {}
        async for doc in self._collection.find({"_id": {"$in": sorted(ids)}}):
            found[doc["_id"]] = SubjectState.model_validate(doc["state"])
        return found

    async def find(self, kind: str, where: Mapping[str, Any]) -> list[SubjectState]:
        query = {"kind": kind, **{f"state.{path}": value for path, value in where.items()}}
        return [
            SubjectState.model_validate(doc["state"]) async for doc in self._collection.find(query)
        ]

    async def roster(self) -> Roster:
        staff = [s.staff for s in await self.find("staff", {}) if s.staff is not None]
        owners: list[str | None] = []
        tasks: list[str | None] = []
        projection = {"state.customer.owner_id": 1, "state.channel.manager_id": 1}
        query = {"kind": {"$in": ["customer", "channel"]}}
        async for doc in self._collection.find(query, {**projection, "state.tasks.owner_id": 1}):
            state = doc.get("state") or {}
            owners.append(_at(state, "customer.owner_id") or _at(state, "channel.manager_id"))
            tasks += [t.get("owner_id") for t in state.get("tasks") or [] if isinstance(t, dict)]
        return _roster(staff, owners, tasks)

    async def save(self, states: Iterable[SubjectState]) -> None:
        ops = [
            ReplaceOne(
                {"_id": s.id},
                {"_id": s.id, "kind": s.kind, "state": s.model_dump(mode="json")},
                upsert=True,
            )
            for s in states
        ]
        if ops:
            await self._collection.bulk_write(ops, ordered=False)


class MongoTimerStore(TimerStore):
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def ensure_indexes(self) -> None:
        await self._collection.create_index(
            [("partition", ASCENDING), ("due_at", ASCENDING)], name="partition_due"
        )
        await self._collection.create_index([("subject", ASCENDING)], name="subject")

    async def apply(self, changes: TimerChanges) -> None:
        if not changes:
            return
        ops: list[DeleteOne | ReplaceOne[Document]] = []
        if changes.cancels:
            subjects = sorted({subject for _, subject, _ in changes.cancels})
            async for doc in self._collection.find(
                {"subject": {"$in": subjects}}, {"rule": 1, "subject": 1, "name": 1}
            ):
                if any(
                    doc["rule"] == rule
                    and doc["subject"] == subject
                    and doc["name"].startswith(prefix)
                    for rule, subject, prefix in changes.cancels
                ):
                    ops.append(DeleteOne({"_id": doc["_id"]}))
        ops += [ReplaceOne({"_id": p.timer.id}, _timer_doc(p), upsert=True) for p in changes.sets]
        if ops:
            await self._collection.bulk_write(ops, ordered=True)

    async def due(
        self, partitions: Collection[int], rules: Collection[str], now: datetime, limit: int
    ) -> list[PlacedTimer]:
        """One query per owned partition, each an equality on ``partition`` and a range on
        ``due_at`` — the shape every MongoDB-wire server answers from the (partition, due_at)
        index (a ``$in`` over partitions makes the embedded server scan the collection, and so
        would filtering on ``rule`` in the query: that filter is applied here instead)."""
        pages = await asyncio.gather(  # at once: the driver pools connections
            *(self._due_in(partition, set(rules), now, limit) for partition in sorted(partitions))
        )
        found = [placed for page in pages for placed in page]
        return sorted(found, key=lambda p: p.timer.due_at)[:limit]

    async def _due_in(
        self, partition: int, rules: set[str], now: datetime, limit: int
    ) -> list[PlacedTimer]:
        found: list[PlacedTimer] = []
        after: datetime | None = None
        while len(found) < limit:
            window: Document = {"$lte": now} if after is None else {"$lte": now, "$gt": after}
            page = [
                doc
                async for doc in self._collection.find({"partition": partition, "due_at": window})
                .sort("due_at", ASCENDING)
                .limit(limit)
            ]
            found += [PlacedTimer(_timer_of(d), partition) for d in page if d["rule"] in rules]
            if len(page) < limit:
                break
            after = page[-1]["due_at"]  # a full page of other replicas' rules: look further
        return found[:limit]

    async def remove_fired(self, fired: Sequence[Timer]) -> None:
        if fired:
            await self._collection.bulk_write(
                [DeleteOne({"_id": t.id, "due_at": t.due_at}) for t in fired], ordered=False
            )

    async def pending(self, subject: str) -> list[Timer]:
        cursor = self._collection.find({"subject": subject}).sort("due_at", ASCENDING)
        return [_timer_of(doc) async for doc in cursor]


class InMemorySubjectStore(SubjectStore):
    def __init__(self) -> None:
        self.states: dict[str, SubjectState] = {}

    async def load(self, ids: Collection[str]) -> dict[str, SubjectState]:
        """Copies, as MongoDB hands out: the engine changes what it loads in place."""
        return {i: self.states[i].model_copy(deep=True) for i in ids if i in self.states}

    async def save(self, states: Iterable[SubjectState]) -> None:
        self.states.update({s.id: s for s in states})

    async def roster(self) -> Roster:
        states = sorted(self.states.items())
        return _roster(
            (s.staff for _, s in states if s.staff is not None),
            (s.owner_id for _, s in states if s.kind in ("customer", "channel")),
            (t.owner_id for _, s in states for t in s.tasks),
        )

    async def find(self, kind: str, where: Mapping[str, Any]) -> list[SubjectState]:
        return [
            s.model_copy(deep=True)
            for _, s in sorted(self.states.items())
            if s.kind == kind
            and all(_at(s.model_dump(mode="json"), p) == v for p, v in where.items())
        ]


def _roster(
    staff: Iterable[StaffState], owners: Iterable[str | None], tasks: Iterable[str | None]
) -> Roster:
    owned, open_tasks = Counter(o for o in owners if o), Counter(t for t in tasks if t)
    return Roster(
        staff={m.staff_id: m for m in staff}, owned=dict(owned), open_tasks=dict(open_tasks)
    )


def _at(doc: Any, path: str) -> Any:
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


class InMemoryTimerStore(TimerStore):
    def __init__(self) -> None:
        self.timers: dict[str, PlacedTimer] = {}
        self._owned: dict[tuple[str, str], set[str]] = {}  # (rule, subject) -> timer ids

    async def apply(self, changes: TimerChanges) -> None:
        for rule, subject, prefix in changes.cancels:
            ids = self._owned.get((rule, subject), set())
            for key in [k for k in ids if self.timers[k].timer.name.startswith(prefix)]:
                self._drop(key)
        for placed in changes.sets:
            self.timers[placed.timer.id] = placed
            self._owned.setdefault((placed.timer.rule, placed.timer.subject), set()).add(
                placed.timer.id
            )

    def _drop(self, key: str) -> None:
        placed = self.timers.pop(key)
        self._owned[(placed.timer.rule, placed.timer.subject)].discard(key)

    async def due(
        self, partitions: Collection[int], rules: Collection[str], now: datetime, limit: int
    ) -> list[PlacedTimer]:
        due = [
            p
            for p in self.timers.values()
            if p.partition in partitions and p.timer.rule in rules and p.timer.due_at <= now
        ]
        return sorted(due, key=lambda p: p.timer.due_at)[:limit]

    async def remove_fired(self, fired: Sequence[Timer]) -> None:
        for t in fired:
            placed = self.timers.get(t.id)
            if placed is not None and placed.timer.due_at == t.due_at:
                self._drop(t.id)

    async def pending(self, subject: str) -> list[Timer]:
        return sorted(
            (p.timer for p in self.timers.values() if p.timer.subject == subject),
            key=lambda t: t.due_at,
        )
