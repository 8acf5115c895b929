"""Tasks against the real servers: the MongoDB task store through the same scenarios as the
in-memory one (tests/unit/notifier/task_scenarios.py), and a task that arrives as an action,
is completed over the notifier's API with a tasks:own key and comes back from the events topic
as ``upkeep.task.completed.v1``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.notifier.tasks import Tasks, TaskStore
from services.notifier.templates import Templates
from shared.apikeys import NOTIFIER_ADMIN, TASKS_OWN, ApiKeySpec, digest
from shared.events.envelope import CanonicalEvent
from shared.events.types import TaskCompleted
from shared.mongo import Document, database, make_client
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.integration.test_notifier_kafka import notifier
from tests.kafka_helpers import produce, read_topic
from tests.unit.notifier.task_scenarios import SCENARIOS
from tests.waiting import eventually

pytestmark = pytest.mark.integration

ADMIN, OWN = "upk_integration_admin", "upk_integration_s1"
KEYS = [
    ApiKeySpec(name="ops", sha256=digest(ADMIN), scopes=[NOTIFIER_ADMIN]),
    ApiKeySpec(name="wang-fang", sha256=digest(OWN), scopes=[TASKS_OWN], staff_id="S-1"),
]


@pytest.fixture
async def db(mongo_settings: MongoSettings) -> AsyncIterator[AsyncDatabase[Document]]:
    client = make_client(mongo_settings, "test")
    settings = mongo_settings.model_copy(update={"database": f"tasks_{uuid.uuid4().hex[:8]}"})
    yield database(client, settings)
    await client.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_the_mongodb_store(
    db: AsyncDatabase[Document], scenario: Callable[[Tasks], Awaitable[None]]
) -> None:
    store = TaskStore(db["tasks"])
    await store.ensure_indexes()
    await scenario(store)
    assert {"owner", "team", "status_due", "ttl_completed_at"} <= set(
        await db["tasks"].index_information()
    )


def task_action(key: str, due_at: datetime) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "key": key,
        "rule": "followup",
        "subject": "customer:C-1",
        "kind": "task",
        "recipient": {"kind": "staff", "id": "S-1"},
        "template": "followup_order_task",
        "locale": "en",
        "due_at": now.isoformat(),
        "priority": "transactional",
        "data": Templates().sample("followup_order_task"),
        "task": {"due_at": due_at.isoformat(), "priority": "high", "team": "east"},
        "created_at": now.isoformat(),
    }


async def test_a_task_completed_over_the_api_comes_back_from_the_events_topic(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    due = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    async with notifier(kafka_settings, mongo_settings, topics, api_keys=KEYS) as h:
        assert h.service is not None
        await produce(kafka_settings, topics.actions, [task_action("followup:O-1:task", due)])
        transport = httpx.ASGITransport(app=h.service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notifier") as http:

            async def listed() -> list[dict[str, Any]]:
                answer = await http.get("/v1/tasks", headers={"X-API-Key": OWN})
                assert answer.status_code == 200, answer.text
                found: list[dict[str, Any]] = answer.json()
                return found

            (task,) = await eventually(listed, what="the task is not stored")
            assert (task["id"], task["priority"], task["team"]) == (
                "followup:O-1:task",
                "high",
                "east",
            )
            assert datetime.fromisoformat(task["due_at"]) == due

            async def completed() -> httpx.Response | None:
                # 503 until the API's producer has connected; a retry publishes the same event
                answer = await http.post(
                    f"/v1/tasks/{task['id']}/complete",
                    headers={"X-API-Key": OWN},
                    json={"note": "called, ordering again"},
                )
                assert answer.status_code in (200, 503), answer.text
                return answer if answer.status_code == 200 else None

            done = await eventually(completed, what="the task could not be completed")
            assert (done.json()["status"], done.json()["completed_by"]) == ("done", "S-1")
            again = await http.post(
                f"/v1/tasks/{task['id']}/complete", headers={"X-API-Key": ADMIN}
            )
            assert again.json() == done.json()

        records = await read_topic(kafka_settings, topics.events, expect=1)
        events = [CanonicalEvent.from_json(r.value) for r in records if r.value is not None]
        assert {e.type for e in events} == {"upkeep.task.completed.v1"}
        assert len({e.id for e in events}) == 1  # once, though completed twice
        assert {r.key for r in records} == {b"customer:C-1"}
        payload = events[0].payload()
        assert isinstance(payload, TaskCompleted)
        assert (payload.task_id, payload.about, payload.completed_by, payload.note) == (
            "followup:O-1:task",
            "customer:C-1",
            "S-1",
            "called, ordering again",
        )
