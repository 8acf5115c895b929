"""Task escalation: "remind the owner the morning a task is due; once it is overdue, tell them,
then their manager, then the manager's manager — until somebody does it."

Every task (``upkeep.task.created.v1``, which the engine publishes for each action of kind
``task``) is planned from its due time, in its owner's time zone:

* ``remind``: at ``remind_local_time``, ``remind_days_before`` days before the due day (skipped
  when that moment is not before the due time);
* ``overdue``: at the due time — publishes ``upkeep.task.overdue.v1`` and (``notify_overdue``)
  tells the owner;
* ``escalate:N``: ``escalate_after_hours[N-1]`` hours after the previous step — a message to the
  N-th manager above the owner and ``upkeep.task.escalated.v1``. Without a manager at that level
  the chain stops (counted as unrouted ``no_manager``).

A snooze or a reassignment plans the task again from its new due time or owner; completing it
cancels whatever is left. Timers are named ``<task id>#<step>``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.rules.calendar import at_local, local_date
from services.rules.sdk import (
    Action,
    ActionKind,
    CancelTimers,
    Decision,
    Emit,
    Event,
    RuleContext,
    SetTimer,
    Timer,
    Unrouted,
)
from services.rules.state import StaffState, SubjectState, TaskState
from shared.events.fields import zone
from shared.events.types import (
    TaskCompleted,
    TaskCreated,
    TaskEscalated,
    TaskOverdue,
    TaskReassigned,
    TaskSnoozed,
)

_TASK = frozenset({"task_id", "task_title", "subject_id", "subject_name", "due_local", "priority"})


class TaskEscalationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    remind_days_before: int = Field(default=0, ge=0, le=30)  # 0: the morning of the due day
    remind_local_time: time = time(8, 30)
    notify_overdue: bool = True
    escalate_after_hours: list[float] = Field(default_factory=lambda: [24.0, 48.0])
    # how the owner is reminded: their chat bot when they have one (else e-mail), or always so
    kind: Literal["preferred", "email", "chat"] = "preferred"
    priorities: list[str] = Field(  # which tasks are chased at all
        default_factory=lambda: ["low", "normal", "high", "urgent"]
    )


def preferred_kind(member: StaffState | None, setting: str) -> ActionKind:
    if setting == "chat" or (setting == "preferred" and member and member.chat_webhook_url):
        return "chat"
    return "email"


@dataclass
class TaskEscalation:
    config: TaskEscalationConfig = field(default_factory=TaskEscalationConfig)
    name: str = "task-escalation"
    templates: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: {
            "task_reminder": _TASK,
            "task_overdue": _TASK | {"hours_overdue"},
            "task_escalated": _TASK | {"hours_overdue", "owner_id", "owner_name", "level"},
        }
    )

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        payload = event.payload
        if isinstance(payload, TaskCompleted):
            yield CancelTimers(f"{payload.task_id}#")
        elif isinstance(payload, TaskCreated | TaskSnoozed | TaskReassigned):
            yield CancelTimers(f"{payload.task_id}#")
            task = subject.task(payload.task_id)
            if task is not None and task.priority in self.config.priorities:
                yield from self._plan(task, ctx)

    def _plan(self, task: TaskState, ctx: RuleContext) -> Iterator[Decision]:
        cfg = self.config
        tz = _zone_of(ctx.staff.get(task.owner_id))
        base = {"task_id": task.task_id, "due_at": task.due_at.isoformat(), "owner": task.owner_id}
        day = local_date(task.due_at, tz) - timedelta(days=cfg.remind_days_before)
        remind = at_local(day, cfg.remind_local_time, tz)
        if ctx.now < remind < task.due_at:
            yield SetTimer(f"{task.task_id}#remind", remind, base)
        if not task.overdue:  # once per due time: a reassigned overdue task stays overdue
            yield SetTimer(f"{task.task_id}#overdue", task.due_at, base)
        moment = task.due_at
        for level, hours in enumerate(cfg.escalate_after_hours, start=1):
            moment += timedelta(hours=hours)
            if level > task.level:
                yield SetTimer(f"{task.task_id}#escalate:{level}", moment, {**base, "level": level})

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        task = subject.task(str(timer.data.get("task_id")))
        if task is None or task.due_at.isoformat() != timer.data.get("due_at"):
            return  # done, or snoozed since: planned again from its new due time
        if task.owner_id != timer.data.get("owner"):
            return  # reassigned since: planned again for the new owner
        step = timer.name.rsplit("#", 1)[1]
        owner = ctx.staff.get(task.owner_id)
        data = self._data(task, subject, owner, ctx)
        key = f"{self.name}:{task.task_id}:{task.due_at.isoformat()}"
        if step == "remind":
            yield self._message(f"{key}:remind", task.owner_id, "task_reminder", data, subject, ctx)
        elif step == "overdue" and not task.overdue:
            yield Emit(
                TaskOverdue.type_name,
                {
                    "about": subject.id,
                    "task_id": task.task_id,
                    "owner_id": task.owner_id,
                    "due_at": task.due_at.isoformat(),
                    "overdue_at": ctx.now.isoformat(),
                },
            )
            if self.config.notify_overdue:
                yield self._message(
                    f"{key}:overdue", task.owner_id, "task_overdue", data, subject, ctx
                )
        elif step.startswith("escalate:"):
            yield from self._escalate(task, int(timer.data["level"]), key, data, subject, ctx)

    def _escalate(
        self,
        task: TaskState,
        level: int,
        key: str,
        data: dict[str, Any],
        subject: SubjectState,
        ctx: RuleContext,
    ) -> Iterator[Decision]:
        manager: str | None = task.owner_id
        for _ in range(level):
            manager = ctx.manager_of(manager)
        if manager is None:
            yield Unrouted("no_manager")
            yield CancelTimers(f"{task.task_id}#escalate:")  # nobody further up either
            return
        owner = ctx.staff.get(task.owner_id)
        data = {
            **data,
            "owner_id": task.owner_id,
            "owner_name": owner.name if owner and owner.name else None,
            "level": level,
        }
        yield Emit(
            TaskEscalated.type_name,
            {
                "about": subject.id,
                "task_id": task.task_id,
                "owner_id": task.owner_id,
                "level": level,
                "escalated_to": manager,
                "escalated_at": ctx.now.isoformat(),
            },
        )
        yield self._message(
            f"{key}:{task.owner_id}:escalate:{level}", manager, "task_escalated", data, subject, ctx
        )

    def _message(
        self,
        key: str,
        staff_id: str,
        template: str,
        data: dict[str, Any],
        subject: SubjectState,
        ctx: RuleContext,
    ) -> Action:
        return Action.to_staff(
            self.name,
            subject,
            key,
            staff_id,
            ctx,
            template=template,
            due_at=ctx.now,
            kind=preferred_kind(ctx.staff.get(staff_id), self.config.kind),
            data={k: v for k, v in data.items() if k in self.templates[template]},
            purpose=template,
        )

    def _data(
        self, task: TaskState, subject: SubjectState, owner: StaffState | None, ctx: RuleContext
    ) -> dict[str, Any]:
        tz = _zone_of(owner)
        local = task.due_at.astimezone(zone(tz))
        part = subject.maintained
        return {
            "task_id": task.task_id,
            "task_title": task.title,
            "subject_id": subject.id.split(":", 1)[1],
            "subject_name": (part.name or None) if part is not None else None,
            "due_local": f"{local:%Y-%m-%d %H:%M} ({tz})",
            "priority": task.priority,
            "hours_overdue": max(int((ctx.now - task.due_at).total_seconds() // 3600), 0),
        }


def _zone_of(member: StaffState | None) -> str:
    return member.timezone if member is not None else "UTC"
