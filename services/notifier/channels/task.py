"""Tasks for staff (action kind ``task``): the channel that stores them in our own
:class:`~services.notifier.tasks.TaskStore`, where the API lists and completes them."""

from __future__ import annotations

from services.notifier.channels.base import Delivery
from services.notifier.directory import Contact
from services.notifier.tasks import Task, TaskStore


class TaskChannel:
    kind, needs_contact, concurrency = "task", False, 8

    def __init__(self, store: TaskStore) -> None:
        self._store = store

    def provider(self, contact: Contact | None) -> None:
        return None  # our own database: no provider to protect with a breaker

    async def send(self, delivery: Delivery) -> None:
        action = delivery.action
        await self._store.create(
            Task(
                id=delivery.key,
                owner=action.recipient.id,
                title=delivery.rendered.subject,
                description=delivery.rendered.text,
                rule=action.rule,
                subject=action.subject,
                due_at=action.due_at,
                created_at=delivery.now,
            )
        )
