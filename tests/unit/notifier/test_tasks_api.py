"""The tasks API (services/notifier/api.py ``tasks_router``) with the in-memory store and a
recording publisher: who may do what (admin keys, tasks:own keys bound to a member of staff),
what each change publishes (before the store changes; nothing when Kafka is away) and what a
repeated request does."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from services.notifier.api import tasks_router
from services.notifier.publisher import SOURCE, TaskEvents
from services.notifier.tasks import InMemoryTaskStore, Task
from shared.apikeys import (
    NOTIFIER_ADMIN,
    TASKS_OWN,
    WRITE_EVENTS,
    ApiKeySpec,
    KeyRing,
    digest,
    main,
)
from shared.errors import TransientError
from shared.events.envelope import CanonicalEvent
from shared.events.types import TaskCompleted, TaskReassigned, TaskSnoozed
from shared.kafka.messages import Outgoing
from tests.unit.notifier.task_scenarios import T0, task

ADMIN, OWN_S1, OWN_S2, WRITER = "upk_admin", "upk_s1", "upk_s2", "upk_writer"
EVENTS = "upkeep.events.v1"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> Any:
        return self.now


class RecordingPublish:
    """Stands in for :meth:`shared.kafka.producer.Publisher.publish`; ``down`` plays Kafka away."""

    def __init__(self) -> None:
        self.messages: list[Outgoing] = []
        self.down = False

    async def __call__(self, messages: Sequence[Outgoing]) -> None:
        if self.down:
            raise TransientError("Kafka producer is not connected yet")
        self.messages.extend(messages)

    def events(self) -> list[CanonicalEvent]:
        found = [CanonicalEvent.from_json(m.value) for m in self.messages]
        for message, event in zip(self.messages, found, strict=True):
            assert message.topic == EVENTS
            assert message.key == event.subject.encode()  # keyed by the task's subject
            assert event.source == SOURCE
        return found


class Api:
    def __init__(self) -> None:
        self.store, self.publish, self.clock = InMemoryTaskStore(), RecordingPublish(), Clock()
        ring = KeyRing(
            [
                ApiKeySpec(name="ops", sha256=digest(ADMIN), scopes=[NOTIFIER_ADMIN]),
                ApiKeySpec(name="s1", sha256=digest(OWN_S1), scopes=[TASKS_OWN], staff_id="S-1"),
                ApiKeySpec(name="s2", sha256=digest(OWN_S2), scopes=[TASKS_OWN], staff_id="S-2"),
                ApiKeySpec(name="crm", sha256=digest(WRITER), scopes=[WRITE_EVENTS]),
            ]
        )
        app = FastAPI()
        events = TaskEvents(self.publish, EVENTS)
        app.include_router(tasks_router(ring, self.store, events, self.clock))
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n")

    async def post(
        self, path: str, key: str | None, body: Any = None, **params: str
    ) -> httpx.Response:
        headers = {"X-API-Key": key} if key else {}
        return await self.http.post(path, json=body, headers=headers, params=params)

    async def get(self, key: str | None, **params: str) -> httpx.Response:
        headers = {"X-API-Key": key} if key else {}
        return await self.http.get("/v1/tasks", headers=headers, params=params)

    def task(self, task_id: str) -> Task:
        return self.store.tasks[task_id]


@pytest.fixture
async def api() -> Api:
    made = Api()
    await made.store.create(task("T-1", "S-1", due=timedelta(hours=1), subject="channel:CH-1"))
    await made.store.create(task("T-2", "S-2", due=-timedelta(hours=1)))
    return made


CHANGES = [
    ("/v1/tasks/{}/complete", None),
    ("/v1/tasks/{}/snooze", {"hours": 2}),
    ("/v1/tasks/{}/reassign", {"owner_id": "S-9"}),
]


@pytest.mark.parametrize(("path", "body"), CHANGES)
async def test_who_may_change_a_task(api: Api, path: str, body: Any) -> None:
    assert (await api.post(path.format("T-1"), None, body)).status_code == 401
    assert (await api.post(path.format("T-1"), "upk_guess", body)).status_code == 401
    assert (await api.post(path.format("T-1"), WRITER, body)).status_code == 403
    assert (await api.post(path.format("T-1"), OWN_S2, body)).status_code == 403  # S-1's
    assert (await api.post(path.format("T-404"), ADMIN, body)).status_code == 404
    assert api.publish.messages == []
    assert (await api.post(path.format("T-1"), OWN_S1, body)).status_code == 200
    assert (await api.post(path.format("T-2"), ADMIN, body)).status_code == 200
    assert len(api.publish.messages) == 2


async def test_listing_with_an_own_key_shows_only_its_tasks(api: Api) -> None:
    assert (await api.get(None)).status_code == 401
    assert (await api.get(WRITER)).status_code == 403
    every = await api.get(ADMIN)
    assert [t["id"] for t in every.json()] == ["T-2", "T-1"]  # oldest due first
    assert [t["id"] for t in (await api.get(OWN_S1)).json()] == ["T-1"]
    assert [t["id"] for t in (await api.get(OWN_S1, owner="S-1")).json()] == ["T-1"]
    assert (await api.get(OWN_S1, owner="S-2")).status_code == 403
    assert [t["id"] for t in (await api.get(ADMIN, overdue="true")).json()] == ["T-2"]
    assert [t["id"] for t in (await api.get(ADMIN, overdue="false")).json()] == ["T-1"]
    assert [t["id"] for t in (await api.get(ADMIN, owner="S-2", status="open")).json()] == ["T-2"]
    assert (await api.get(ADMIN, status="closed")).status_code == 422


async def test_completing_publishes_once_and_a_repeat_changes_nothing(api: Api) -> None:
    api.clock.now = T0 + timedelta(minutes=3)
    first = await api.post("/v1/tasks/T-1/complete", OWN_S1, {"note": "visited, ordered 40 units"})
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["completed_by"]) == ("done", "S-1")
    api.clock.now += timedelta(minutes=1)
    again = await api.post("/v1/tasks/T-1/complete", OWN_S1)
    assert again.status_code == 200
    assert again.json() == first.json()

    (event,) = api.publish.events()
    payload = event.payload()
    assert isinstance(payload, TaskCompleted)
    assert (event.type, event.subject) == ("upkeep.task.completed.v1", "channel:CH-1")
    assert (payload.task_id, payload.about, payload.completed_by) == ("T-1", "channel:CH-1", "S-1")
    assert (payload.completed_at, payload.note) == (
        T0 + timedelta(minutes=3),
        "visited, ordered 40 units",
    )


async def test_an_admin_names_who_did_it_in_the_body_or_the_query(api: Api) -> None:
    assert (await api.post("/v1/tasks/T-1/complete", ADMIN, by="M-1")).json()[
        "completed_by"
    ] == "M-1"
    reassigned = await api.post("/v1/tasks/T-2/reassign", ADMIN, {"owner_id": "S-3", "by": "M-2"})
    assert reassigned.json()["reassigned_by"] == "M-2"
    # an own key always acts as its own member of staff
    snoozed = await api.post("/v1/tasks/T-3/snooze", OWN_S1, {"hours": 1, "by": "M-1"})
    assert snoozed.status_code == 404
    await api.store.create(task("T-3", "S-1"))
    snoozed = await api.post("/v1/tasks/T-3/snooze", OWN_S1, {"hours": 1, "by": "M-1"})
    assert snoozed.json()["snoozed_by"] == "S-1"
    assert (await api.post("/v1/tasks/T-1/complete", ADMIN, by="not an id")).status_code == 422


async def test_kafka_away_is_503_and_changes_nothing_and_the_retry_publishes_the_same_id(
    api: Api,
) -> None:
    api.publish.down = True
    refused = await api.post("/v1/tasks/T-1/complete", OWN_S1)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert api.task("T-1").status == "open"
    api.publish.down = False
    api.clock.now += timedelta(seconds=30)
    assert (await api.post("/v1/tasks/T-1/complete", OWN_S1)).status_code == 200
    expected = str(uuid.uuid5(uuid.UUID("5b0e2f7a-9c1d-4e63-8a4f-2d7c6b1e90a3"), "T-1|completed"))
    assert [e.id for e in api.publish.events()] == [expected]


async def test_snoozing_moves_the_due_time_into_the_future_only(api: Api) -> None:
    past = (T0 - timedelta(minutes=1)).isoformat()
    for body in (
        {"until": past},
        {"until": "2026-06-03T09:00:00"},  # no offset
        {"hours": 0},
        {"hours": 2, "until": "2026-06-03T09:00:00Z"},
        {},
        {"until": (T0 + timedelta(days=400)).isoformat()},
    ):
        answer = await api.post("/v1/tasks/T-1/snooze", ADMIN, body)
        assert answer.status_code == 422, body
    assert api.publish.messages == []

    until = "2026-06-03T09:00:00+08:00"
    snoozed = await api.post("/v1/tasks/T-1/snooze", OWN_S1, {"until": until})
    assert snoozed.status_code == 200
    assert snoozed.json()["due_at"] == "2026-06-03T01:00:00Z"
    assert (await api.post("/v1/tasks/T-1/snooze", OWN_S1, {"until": until})).status_code == 200
    by_hours = await api.post("/v1/tasks/T-1/snooze", OWN_S1, {"hours": 1.5})
    assert by_hours.json()["due_at"] == "2026-06-01T13:30:00Z"

    first, second = api.publish.events()  # the repeated snooze published nothing
    assert isinstance(first.payload(), TaskSnoozed)
    assert first.subject == "channel:CH-1"
    assert api.task("T-1").snoozed_by == "S-1"
    assert [e.data["due_at"] for e in (first, second)] == [
        "2026-06-03T01:00:00Z",
        "2026-06-01T13:30:00Z",
    ]
    assert first.id != second.id


async def test_reassigning_publishes_one_event_per_reassignment(api: Api) -> None:
    moved = await api.post("/v1/tasks/T-1/reassign", OWN_S1, {"owner_id": "S-2"})
    assert moved.status_code == 200
    assert moved.json()["owner"] == "S-2"
    # now it is S-2's: S-1 may no longer touch it, S-2 may
    assert (await api.post("/v1/tasks/T-1/complete", OWN_S1)).status_code == 403
    assert (
        await api.post("/v1/tasks/T-1/reassign", OWN_S2, {"owner_id": "S-2"})
    ).status_code == 200
    back = await api.post("/v1/tasks/T-1/reassign", OWN_S2, {"owner_id": "S-1"})
    assert back.json()["reassignments"] == 2
    again = await api.post("/v1/tasks/T-1/reassign", ADMIN, {"owner_id": "S-2"})
    assert again.json()["reassignments"] == 3

    events = api.publish.events()
    payloads = [e.payload() for e in events]
    assert all(isinstance(p, TaskReassigned) for p in payloads)
    assert [(p.previous_owner_id, p.owner_id, p.reassigned_by) for p in payloads] == [  # type: ignore[attr-defined]
        ("S-1", "S-2", "S-1"),
        ("S-2", "S-1", "S-2"),
        ("S-1", "S-2", None),
    ]
    assert len({e.id for e in events}) == 3  # to S-2 twice, yet two events
    assert (
        await api.post("/v1/tasks/T-1/reassign", ADMIN, {"owner_id": "not an id"})
    ).status_code == 422
    assert (await api.post("/v1/tasks/T-1/reassign", ADMIN, {})).status_code == 422


async def test_a_done_task_is_neither_snoozed_nor_reassigned(api: Api) -> None:
    assert (await api.post("/v1/tasks/T-1/complete", OWN_S1)).status_code == 200
    assert (await api.post("/v1/tasks/T-1/snooze", OWN_S1, {"hours": 1})).status_code == 409
    assert (await api.post("/v1/tasks/T-1/reassign", ADMIN, {"owner_id": "S-2"})).status_code == 409
    assert len(api.publish.messages) == 1


# the keys -------------------------------------------------------------------------------------


def test_an_own_key_is_bound_to_a_member_of_staff() -> None:
    with pytest.raises(ValidationError, match="staff_id"):
        ApiKeySpec(name="s1", sha256=digest(OWN_S1), scopes=[TASKS_OWN])
    old = ApiKeySpec.model_validate(
        {"name": "ops", "sha256": digest(ADMIN), "scopes": [NOTIFIER_ADMIN]}
    )
    assert old.staff_id is None


def test_the_cli_makes_own_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "wang-fang", "--scope", TASKS_OWN, "--staff-id", "S-1"]) == 0
    out = capsys.readouterr().out
    entry = ApiKeySpec.model_validate_json(out.split("API_KEYS: ", 1)[1])
    key = out.split("shown once): ", 1)[1].split()[0]
    assert (entry.scopes, entry.staff_id, entry.sha256) == ([TASKS_OWN], "S-1", digest(key))
    assert main(["new", "crm"]) == 0
    assert "staff_id" not in capsys.readouterr().out  # as before for every other key
    with pytest.raises(SystemExit):
        main(["new", "nobody", "--scope", TASKS_OWN])
