"""What a task store does, as scenarios run against any :class:`Tasks`: the in-memory store
(test_task_store.py) and the MongoDB one on the real server
(tests/integration/test_notifier_tasks.py), so the fake cannot drift from the real thing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.notifier.tasks import Task, Tasks

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def task(task_id: str, owner: str = "S-1", *, due: timedelta = timedelta(0), **fields: Any) -> Task:
    return Task(
        id=task_id,
        owner=owner,
        title=f"Call back {task_id}",
        description="",
        rule="followup",
        subject=fields.pop("subject", "customer:C-1"),
        due_at=T0 + due,
        created_at=T0 - timedelta(days=1),
        updated_at=T0 - timedelta(days=1),
        **fields,
    )


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


async def creating_is_once_per_id(store: Tasks) -> None:
    assert await store.create(task("T-1", priority="urgent", team="east"))
    assert not await store.create(task("T-1", "S-2"))
    found = await store.get("T-1")
    assert found is not None
    assert (found.owner, found.priority, found.team, found.status) == (
        "S-1",
        "urgent",
        "east",
        "open",
    )
    assert await store.get("T-404") is None


async def listing_filters_and_orders_oldest_due_first(store: Tasks) -> None:
    for t in (
        task("late", due=-timedelta(hours=2), team="east"),
        task("later", due=timedelta(hours=5), team="east"),
        task("soon", due=timedelta(hours=1), team="west"),
        task("others", "S-2", due=-timedelta(hours=3), team="west"),
        task("done-late", due=-timedelta(hours=4), team="east"),
    ):
        await store.create(t)
    await store.complete("done-late", "S-1", T0)

    assert ids(await store.list()) == ["done-late", "others", "late", "soon", "later"]
    assert ids(await store.list(owner="S-1", status="open")) == ["late", "soon", "later"]
    assert ids(await store.list(team="east")) == ["done-late", "late", "later"]
    assert ids(await store.list(team="west", owner="S-2")) == ["others"]
    assert ids(await store.list(status="done")) == ["done-late"]
    assert ids(await store.list(overdue=True, now=T0)) == ["others", "late"]
    assert ids(await store.list(owner="S-1", overdue=True, now=T0)) == ["late"]
    assert ids(await store.list(overdue=False, now=T0)) == ["done-late", "soon", "later"]
    assert ids(await store.list(status="open", overdue=False, now=T0)) == ["soon", "later"]
    assert await store.list(status="done", overdue=True, now=T0) == []
    # what is overdue depends on now: an hour and a half later "soon" is late too
    later = T0 + timedelta(hours=1, minutes=30)
    assert ids(await store.list(overdue=True, now=later)) == ["others", "late", "soon"]
    assert ids(await store.list(limit=2)) == ["done-late", "others"]


async def changes_say_whether_they_changed_anything(store: Tasks) -> None:
    await store.create(task("T-1"))
    at = T0 + timedelta(minutes=5)
    until = T0 + timedelta(days=2)

    snoozed = await store.snooze("T-1", until, "S-1", at)
    assert snoozed.changed
    assert snoozed.task is not None
    assert (snoozed.task.due_at, snoozed.task.snoozed_by, snoozed.task.updated_at) == (
        until,
        "S-1",
        at,
    )
    again = await store.snooze("T-1", until, "S-1", at + timedelta(minutes=1))
    assert not again.changed
    assert again.task is not None
    assert again.task.updated_at == at

    moved = await store.reassign("T-1", "S-2", "M-1", at)
    assert moved.changed
    assert moved.task is not None
    assert (moved.task.owner, moved.task.reassigned_by, moved.task.reassignments) == (
        "S-2",
        "M-1",
        1,
    )
    same = await store.reassign("T-1", "S-2", "M-1", at)
    assert not same.changed
    assert same.task is not None
    assert same.task.reassignments == 1
    back = await store.reassign("T-1", "S-1", "M-1", at)
    assert back.changed
    assert back.task is not None
    assert back.task.reassignments == 2

    done = await store.complete("T-1", "S-1", at, "called, all fine")
    assert done.changed
    assert done.task is not None
    assert (done.task.status, done.task.completed_at, done.task.completed_by, done.task.note) == (
        "done",
        at,
        "S-1",
        "called, all fine",
    )
    # a done task keeps its first completion, and is neither snoozed nor reassigned
    for repeat in (
        await store.complete("T-1", "S-2", at + timedelta(hours=1)),
        await store.snooze("T-1", until + timedelta(days=1), "S-1", at),
        await store.reassign("T-1", "S-3", "M-1", at),
    ):
        assert not repeat.changed
        assert repeat.task == done.task

    for missing in (
        await store.complete("T-404", None, at),
        await store.snooze("T-404", until, None, at),
        await store.reassign("T-404", "S-2", None, at),
    ):
        assert (missing.task, missing.changed) == (None, False)


SCENARIOS = [
    creating_is_once_per_id,
    listing_filters_and_orders_oldest_due_first,
    changes_say_whether_they_changed_anything,
]
