"""Tasks for staff (action kind ``task``): the channel that stores them in our own
:class:`~services.notifier.tasks.TaskStore`, where the API lists, completes, snoozes and
reassigns them."""

from __future__ import annotations

from services.notifier.channels.base import Delivery
from services.notifier.directory import Contact
from services.notifier.tasks import Task, Tasks


class TaskChannel:
    kind, needs_contact, concurrency = "task", False, 8

    def __init__(self, store: Tasks) -> None:
        self._store = store

    def provider(self, contact: Contact | None) -> None:
        return None  # our own database: no provider to protect with a breaker

    async def send(self, delivery: Delivery) -> None:
        """Due, priority and team from the action's task spec; without one (actions from
        before it existed) the task is due when the action is, at normal priority."""
        action, spec = delivery.action, delivery.action.task
        await self._store.create(
            Task(
                id=delivery.key,
                owner=action.recipient.id,
                team=spec.team if spec else None,
                title=delivery.rendered.subject,
                description=delivery.rendered.text,
                rule=action.rule,
                subject=action.subject,
                priority=spec.priority if spec else "normal",
                due_at=spec.due_at if spec else action.due_at,
                created_at=delivery.now,
                updated_at=delivery.now,
            )
        )
