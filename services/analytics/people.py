"""The people side of maintenance, as read models: tasks and revisit cadences. Pure, no I/O.

**Tasks.** One :class:`Task` per task id, folded from its ``upkeep.task.*`` events. Every field
is a join — the later version of a value wins (ties: the greater value), a minimum, a maximum —
so the fold is idempotent and order-free: a redelivered or replayed event, or the events of a
task in any order, give the same task.

* the owner: created and reassigned set it at their time; overdue and escalated name the owner
  the rules service knew, used only while no created or reassigned one is known;
* the due time: created, then every snooze at its time;
* done stays done: ``completed_at`` is the first completion;
* the escalation level is the highest (with whom it went to);
* overdue: open, and an overdue event was published for the current due time (or a later one),
  so a snooze after it makes the task not overdue until it is overdue again.

**Revisits.** The latest ``upkeep.revisit.status_changed.v1`` per subject (``changed_at``, ties
broken by the event's identity) says whether the subject is in its revisit cadence;
:func:`compliance` is the share in cadence, overall, by tier and by team.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.events.types import (
    EventPayload,
    RevisitStatusChanged,
    TaskCompleted,
    TaskCreated,
    TaskEscalated,
    TaskOverdue,
    TaskReassigned,
    TaskSnoozed,
)

TaskEvent = TaskCreated | TaskCompleted | TaskSnoozed | TaskReassigned | TaskOverdue | TaskEscalated
TASK_EVENTS = (TaskCreated, TaskCompleted, TaskSnoozed, TaskReassigned, TaskOverdue, TaskEscalated)
# how sure a source is of the owner: the rules service's overdue and escalated events name the
# owner it knew, which may predate a reassignment over the notifier's API
SAID, ASSUMED = 1, 0


@dataclass(frozen=True, slots=True)
class Task:
    task_id: str
    about: str
    owner: str | None = None
    owner_version: tuple[int, datetime] | None = None
    team: str | None = None
    rule: str | None = None
    purpose: str | None = None
    title: str | None = None
    priority: str | None = None
    created_at: datetime | None = None
    due_at: datetime | None = None
    due_set_at: datetime | None = None
    completed_at: datetime | None = None
    level: int = 0
    escalated_to: str | None = None
    overdue_for: datetime | None = None  # the latest due time an overdue event was about

    @property
    def status(self) -> str:
        return "done" if self.completed_at is not None else "open"

    @property
    def overdue(self) -> bool:
        return (
            self.completed_at is None
            and self.overdue_for is not None
            and self.due_at is not None
            and self.overdue_for >= self.due_at
        )

    @property
    def time_to_complete(self) -> timedelta | None:
        if self.completed_at is None or self.created_at is None:
            return None
        return self.completed_at - self.created_at


def is_task_event(payload: EventPayload) -> bool:
    return isinstance(payload, TASK_EVENTS)


def _later(
    current: tuple[tuple[int, datetime], str] | None, new: tuple[tuple[int, datetime], str]
) -> bool:
    return current is None or new > current


def _min(a: datetime | None, b: datetime) -> datetime:
    return b if a is None else min(a, b)


def _max(a: datetime | None, b: datetime) -> datetime:
    return b if a is None else max(a, b)


def ms(at: datetime) -> datetime:
    """To the millisecond, as MongoDB keeps it: a value read back compares equal."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def fold(task: Task | None, event: TaskEvent) -> Task:
    """The task after one of its events (``task`` None: the first one seen)."""
    t = task or Task(event.task_id, event.about)
    at = ms(event.event_time() or datetime.min)  # every task event has its time

    def owner(new: str, rank: int, at: datetime) -> Task:
        known = (t.owner_version, t.owner) if t.owner_version and t.owner else None
        if _later(known, ((rank, at), new)):
            return replace(t, owner=new, owner_version=(rank, at))
        return t

    def due(new: datetime, at: datetime) -> Task:
        if t.due_set_at is None or t.due_at is None or (at, new) > (t.due_set_at, t.due_at):
            return replace(t, due_at=new, due_set_at=at)
        return t

    if isinstance(event, TaskCreated):
        t = replace(
            t,
            team=event.team,
            rule=event.rule,
            purpose=event.purpose,
            title=event.title,
            priority=event.priority,
            created_at=at,
        )
        t = owner(event.owner_id, SAID, at)
        t = due(ms(event.due_at), at)
    elif isinstance(event, TaskCompleted):
        t = replace(t, completed_at=_min(t.completed_at, at))
    elif isinstance(event, TaskSnoozed):
        t = due(ms(event.due_at), at)
    elif isinstance(event, TaskReassigned):
        t = owner(event.owner_id, SAID, at)
    elif isinstance(event, TaskOverdue):
        t = owner(event.owner_id, ASSUMED, at)
        t = replace(t, overdue_for=_max(t.overdue_for, ms(event.due_at)))
    else:  # TaskEscalated
        t = owner(event.owner_id, ASSUMED, at)
        if (event.level, event.escalated_to) > (t.level, t.escalated_to or ""):
            t = replace(t, level=event.level, escalated_to=event.escalated_to)
    return t


def fold_all(tasks: dict[str, Task], events: Iterable[TaskEvent]) -> dict[str, Task]:
    """The tasks (by id) after the events; ``tasks`` is not changed."""
    found = dict(tasks)
    for event in events:
        found[event.task_id] = fold(found.get(event.task_id), event)
    return found


def median_hours(durations: Iterable[timedelta]) -> float | None:
    """The median of the durations in hours (two decimals), None without any."""
    hours = [d.total_seconds() / 3600 for d in durations]
    return round(statistics.median(hours), 2) if hours else None


@dataclass(frozen=True, slots=True)
class Load:
    """Open and overdue tasks of one owner or team; ``oldest``: the oldest open one's creation."""

    value: str
    open: int = 0
    overdue: int = 0
    oldest: datetime | None = None


def loads(tasks: Iterable[Task], by: str) -> list[Load]:
    """Open tasks per ``owner`` or ``team`` (unknown: ``""``), the one with the oldest first."""
    found: dict[str, Load] = {}
    for task in tasks:
        if task.status != "open":
            continue
        value = (task.owner if by == "owner" else task.team) or ""
        load = found.get(value, Load(value))
        oldest = load.oldest
        if task.created_at is not None:
            oldest = task.created_at if oldest is None else min(oldest, task.created_at)
        found[value] = Load(value, load.open + 1, load.overdue + int(task.overdue), oldest)
    return sorted(
        found.values(),
        key=lambda x: (x.oldest is None, x.oldest.timestamp() if x.oldest else 0.0, x.value),
    )


# --- revisits -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revisit:
    """A subject's latest revisit status; ``key``: the identity of the event that said it."""

    about: str
    in_cadence: bool
    tier: str
    every_days: int
    changed_at: datetime
    key: str
    owner: str | None = None
    team: str | None = None
    last_touch_at: datetime | None = None

    @classmethod
    def of(cls, payload: RevisitStatusChanged, key: str) -> Revisit:
        return cls(
            about=payload.about,
            in_cadence=payload.in_cadence,
            tier=payload.tier,
            every_days=payload.every_days,
            changed_at=ms(payload.changed_at),
            key=key,
            owner=payload.owner_id,
            team=payload.team,
            last_touch_at=ms(payload.last_touch_at) if payload.last_touch_at else None,
        )


def latest(current: Revisit | None, new: Revisit) -> Revisit:
    """The later of two statuses of one subject (the same one whichever comes first)."""
    if current is None or (new.changed_at, new.key) > (current.changed_at, current.key):
        return new
    return current


@dataclass(frozen=True, slots=True)
class Share:
    subjects: int = 0
    in_cadence: int = 0

    @property
    def rate(self) -> float | None:
        return round(self.in_cadence / self.subjects, 4) if self.subjects else None

    def add(self, revisit: Revisit) -> Share:
        return Share(self.subjects + 1, self.in_cadence + int(revisit.in_cadence))


def compliance(
    revisits: Iterable[Revisit],
) -> tuple[Share, dict[str, Share], dict[str, Share]]:
    """The share of subjects in cadence: overall, by tier, by team (unknown team: ``""``)."""
    overall, tiers, teams = Share(), dict[str, Share](), dict[str, Share]()
    for r in revisits:
        overall = overall.add(r)
        tiers[r.tier] = tiers.get(r.tier, Share()).add(r)
        teams[r.team or ""] = teams.get(r.team or "", Share()).add(r)
    return overall, dict(sorted(tiers.items())), dict(sorted(teams.items()))
