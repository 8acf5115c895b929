"""What people do with their tasks over the API, as canonical events on ``upkeep.events.v1``:
``upkeep.task.completed.v1``, ``.snoozed.v1`` and ``.reassigned.v1``, keyed by the task's
subject (ordered with that customer's or channel's other events; the rules service chases
open tasks from them).

When is this called? By the API *before* it changes the store, and awaited until every
in-sync replica has the event (the publisher is :class:`shared.kafka.producer.Publisher`:
acks=all). A request whose publish fails changes nothing and answers 503; its retry publishes
the same event id again (derived from the task and the change, never from the clock), so
consumers de-duplicate it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from services.notifier.tasks import Task
from shared.events.envelope import CanonicalEvent, format_time
from shared.events.types import EventPayload, TaskCompleted, TaskReassigned, TaskSnoozed
from shared.kafka.messages import Outgoing, canonical_message

Publish = Callable[[Sequence[Outgoing]], Awaitable[None]]
"""Publishes and returns once Kafka acknowledged every message; raises a transient error
(:mod:`shared.errors`) when it cannot."""

SOURCE = "urn:upkeep:notifier"
EVENT_NAMESPACE = uuid.UUID("5b0e2f7a-9c1d-4e63-8a4f-2d7c6b1e90a3")


class TaskEvents:
    def __init__(self, publish: Publish, events_topic: str) -> None:
        self._publish, self._topic = publish, events_topic

    async def completed(
        self, task: Task, by: str | None, at: datetime, note: str | None
    ) -> CanonicalEvent:
        payload = TaskCompleted(
            about=task.subject, task_id=task.id, completed_by=by, completed_at=at, note=note
        )
        return await self._send(f"{task.id}|completed", payload, at)

    async def snoozed(
        self, task: Task, until: datetime, by: str | None, at: datetime
    ) -> CanonicalEvent:
        payload = TaskSnoozed(
            about=task.subject, task_id=task.id, due_at=until, snoozed_by=by, snoozed_at=at
        )
        return await self._send(f"{task.id}|snoozed|{format_time(until)}", payload, at)

    async def reassigned(
        self, task: Task, owner: str, by: str | None, at: datetime
    ) -> CanonicalEvent:
        """One event per reassignment: the same owner again later is a new one."""
        payload = TaskReassigned(
            about=task.subject,
            task_id=task.id,
            owner_id=owner,
            previous_owner_id=task.owner,
            reassigned_by=by,
            reassigned_at=at,
        )
        name = f"{task.id}|reassigned|{owner}|{task.reassignments}"
        return await self._send(name, payload, at)

    async def _send(self, name: str, payload: EventPayload, at: datetime) -> CanonicalEvent:
        event = CanonicalEvent.build(
            event_id=str(uuid.uuid5(EVENT_NAMESPACE, name)),
            source=SOURCE,
            payload=payload,
            time=at,
            source_offset="Z",
        )
        await self._publish([canonical_message(self._topic, event)])
        return event
