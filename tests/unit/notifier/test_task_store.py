"""The in-memory task store through the shared scenarios (task_scenarios.py; the MongoDB store
runs the same ones in tests/integration/test_notifier_tasks.py), and the task channel filling a
task from its action's task spec."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from services.notifier.channels.base import Delivery
from services.notifier.channels.task import TaskChannel
from services.notifier.tasks import InMemoryTaskStore, Tasks
from services.notifier.templates import Rendered
from shared.events.actions import ActionMessage
from tests.unit.notifier.task_scenarios import SCENARIOS, T0


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_the_in_memory_store(scenario: Callable[[Tasks], Awaitable[None]]) -> None:
    await scenario(InMemoryTaskStore())


async def test_listing_by_overdue_needs_now() -> None:
    with pytest.raises(ValueError, match="needs now"):
        await InMemoryTaskStore().list(overdue=True)


def task_action(key: str, spec: dict[str, str] | None) -> ActionMessage:
    body: dict[str, object] = {
        "key": key,
        "rule": "followup",
        "subject": "channel:CH-1",
        "kind": "task",
        "recipient": {"kind": "staff", "id": "S-1"},
        "template": "followup_order_task",
        "locale": "en",
        "due_at": T0,
        "created_at": T0,
    }
    return ActionMessage.model_validate(body | ({"task": spec} if spec is not None else {}))


async def test_the_task_channel_takes_due_priority_and_team_from_the_task_spec() -> None:
    store = InMemoryTaskStore()
    channel = TaskChannel(store)
    rendered = Rendered(subject="Visit CH-1", text="It has not ordered for 30 days.", html="")
    due = T0 + timedelta(days=3)
    spec = {"due_at": due.isoformat(), "priority": "high", "team": "east"}
    for action in (task_action("with-spec", spec), task_action("without", None)):
        await channel.send(Delivery(action.key, action, None, rendered, T0 + timedelta(seconds=1)))

    with_spec, without = store.tasks["with-spec"], store.tasks["without"]
    assert (with_spec.due_at, with_spec.priority, with_spec.team) == (due, "high", "east")
    assert (with_spec.owner, with_spec.subject, with_spec.title) == (
        "S-1",
        "channel:CH-1",
        "Visit CH-1",
    )
    assert with_spec.updated_at == with_spec.created_at == T0 + timedelta(seconds=1)
    assert (without.due_at, without.priority, without.team) == (T0, "normal", None)
