"""In-memory read models of the people side (tasks, revisits, subjects' owners) for the tests of
the API, the report and the dashboard: the same fold as the MongoDB ones
(services/analytics/readmodels.py), kept in dicts."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from services.analytics.aggregates import Attribution
from services.analytics.people import Revisit, Task, TaskEvent, fold_all, latest
from services.analytics.readmodels import LIST_LIMIT, Revisits, Tasks
from services.analytics.report import People


class FakeTasks(Tasks):
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}

    async def apply(self, events: Sequence[TaskEvent]) -> dict[str, Task]:
        self.tasks = fold_all(self.tasks, events)
        return {e.task_id: self.tasks[e.task_id] for e in events}

    async def get(self, task_ids: Collection[str]) -> dict[str, Task]:
        return {k: v for k, v in self.tasks.items() if k in task_ids}

    async def open(
        self,
        owner: str | None = None,
        team: str | None = None,
        overdue: bool | None = None,
        limit: int = LIST_LIMIT,
        owners: Collection[str] | None = None,
    ) -> list[Task]:
        found = [
            t
            for t in self.tasks.values()
            if t.status == "open"
            and owner in (None, t.owner)
            and team in (None, t.team)
            and overdue in (None, t.overdue)
            and (owners is None or t.owner in owners)
        ]
        oldest = sorted(found, key=lambda t: t.created_at.timestamp() if t.created_at else 1e12)
        return oldest[:limit]

    async def completed(
        self,
        since: datetime,
        until: datetime,
        owner: str | None = None,
        team: str | None = None,
        owners: Collection[str] | None = None,
    ) -> list[Task]:
        return [
            t
            for t in self.tasks.values()
            if t.completed_at is not None
            and since <= t.completed_at < until
            and owner in (None, t.owner)
            and team in (None, t.team)
            and (owners is None or t.owner in owners)
        ]


class FakeRevisits(Revisits):
    def __init__(self) -> None:
        self.latest: dict[str, Revisit] = {}

    async def apply(self, statuses: Sequence[Revisit]) -> None:
        for status in statuses:
            self.latest[status.about] = latest(self.latest.get(status.about), status)

    async def all(self) -> list[Revisit]:
        return list(self.latest.values())


class FakeSubjects(Attribution):
    """Whom subjects belong to: the dims given per subject."""

    def __init__(
        self,
        subjects: dict[str, dict[str, str]] | None = None,
        at_risk: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.subjects = dict(subjects or {})
        self.found = dict(at_risk or {})

    async def get(self, subjects: Collection[str]) -> dict[str, dict[str, str]]:
        return {s: dict(self.subjects[s]) for s in subjects if s in self.subjects}

    async def update(self, changes: Any) -> None:
        for subject, dims in changes.items():
            self.subjects.setdefault(subject, {}).update(dims)

    async def at_risk(self) -> dict[str, dict[str, str]]:
        return self.found

    async def unowned(self) -> dict[str, int]:
        kinds = [s.split(":", 1)[0] for s, d in self.subjects.items() if not d.get("owner")]
        return {kind: kinds.count(kind) for kind in ("customer", "channel")}

    async def owned(self, kind: str, owners: Collection[str]) -> set[str]:
        return {
            s.split(":", 1)[1]
            for s, d in self.subjects.items()
            if s.startswith(f"{kind}:") and d.get("owner") in owners
        }


def people(
    tasks: FakeTasks | None = None,
    revisits: FakeRevisits | None = None,
    subjects: FakeSubjects | None = None,
) -> People:
    return People(tasks or FakeTasks(), revisits or FakeRevisits(), subjects or FakeSubjects())
