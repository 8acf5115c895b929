"""A dry run over history: a hand-built list of events-topic records replayed with one journey
switched on; it answers who entered, what each step did and sent, and sample messages —
and publishes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from services.rules.journeys.definition import Journey, validate
from services.rules.journeys.dryrun import dry_run
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.templates import TEMPLATE_ROOT
from tests.unit.rules.journeys.builders import T0, document, message, send

TEXTS = {
    "en": {"subject": "Welcome, {{ subject.name }}", "body": "Dear {{ subject.name }}"},
    "zh-CN": {"subject": "欢迎，{{ subject.name }}", "body": "尊敬的 {{ subject.name }}"},
}
UNTIL = T0 + timedelta(days=10)


def journey() -> Journey:
    return validate(
        document(
            {"id": "welcome", "send": {"to": "customer", "message": TEXTS}},
            {
                "id": "listen",
                "wait_for": {
                    "event": "customer.interaction",
                    "when": "event.kind == 'order'",
                    "timeout": "3d",
                    "on_timeout": "call",
                },
            },
            {"id": "thanks", **send("owner")},
            {"id": "stop", "exit": {}},
            {
                "id": "call",
                "send": {
                    "kind": "task",
                    "to": "owner",
                    "message": message("Call {{ subject.name }}"),
                },
            },
            reentry={"mode": "every_time"},
        )
    )


def record(
    offset: int, event_id: str, type_name: str, at: datetime, **data: Any
) -> ConsumerRecord[bytes, bytes]:
    model = resolve_type(type_name)
    assert model is not None
    payload = model.model_validate(data)
    event = CanonicalEvent.build(
        event_id=event_id,
        source="test",
        payload=payload,
        time=payload.event_time() or at,
        source_offset="Z",
    )
    value, key = event.to_json(), event.subject.encode()
    return ConsumerRecord(
        "upkeep.events.v1",
        0,
        offset,
        int(at.timestamp() * 1000),
        0,
        key,
        value,
        None,
        len(key),
        len(value),
        [],
    )


def history() -> list[ConsumerRecord[bytes, bytes]]:
    def profile(offset: int, n: int, at: datetime, **extra: Any) -> ConsumerRecord[bytes, bytes]:
        return record(
            offset,
            f"crm-{n}",
            "customer.upserted",
            at,
            customer_id=f"C-{n}",
            name=f"Customer {n}",
            timezone="Asia/Shanghai",
            email=f"c{n}@example.com",
            owner_id="S-1",
            **extra,
        )

    return [
        record(
            0,
            "hr-1",
            "staff.upserted",
            T0,
            staff_id="S-1",
            name="Wang",
            timezone="Asia/Shanghai",
            email="w@example.com",
        ),
        profile(1, 1, T0, locale="zh-CN"),
        profile(2, 2, T0 + timedelta(hours=1)),
        record(
            3,
            "pos-1",
            "customer.interaction",
            T0 + timedelta(days=1),
            interaction_id="I-1",
            customer_id="C-1",
            kind="order",
            occurred_at=(T0 + timedelta(days=1)).isoformat(),
        ),
        profile(4, 3, UNTIL + timedelta(days=1)),  # after the window: not read
    ]


async def rehearse(since: datetime | None = None) -> dict[str, Any]:
    return await dry_run(
        journey(),
        4,
        history(),
        since=since,
        until=UNTIL,
        events_topic="upkeep.events.v1",
        actions_topic="upkeep.actions.v1",
        template_root=TEMPLATE_ROOT,
    )


SINCE = T0 + timedelta(minutes=30)


@pytest.fixture(scope="module")
async def whole() -> dict[str, Any]:
    """The dry run over the whole history (a dry run loads the notifier's templates: once)."""
    return await rehearse()


@pytest.fixture(scope="module")
async def windowed() -> dict[str, Any]:
    return await rehearse(since=SINCE)


async def test_a_dry_run_says_who_entered_what_each_step_did_and_what_it_sent(
    whole: dict[str, Any],
) -> None:
    report = whole
    assert set(report) == {
        "journey",
        "version",
        "from",
        "until",
        "events_read",
        "entered",
        "subjects",
        "steps",
        "left",
        "sends",
        "sends_truncated",
        "samples",
        "published",
    }
    assert (report["journey"], report["version"], report["published"]) == ("test-journey", 4, False)
    assert (report["from"], report["until"]) == (None, UNTIL.isoformat())
    assert (report["entered"], report["subjects"]) == (2, 2)
    assert report["steps"] == [
        {"id": "welcome", "completed": 2, "sent": 2, "outcomes": {"sent": 2}},
        {"id": "listen", "completed": 2, "sent": 0, "outcomes": {"event": 1, "timeout": 1}},
        {"id": "thanks", "completed": 1, "sent": 1, "outcomes": {"sent": 1}},
        {"id": "stop", "completed": 1, "sent": 0, "outcomes": {"exited": 1}},
        {"id": "call", "completed": 1, "sent": 1, "outcomes": {"sent": 1}},
    ]
    assert report["left"] == {"completed": 1, "exited": 1}
    sends = [
        (s["step"], s["subject"], s["kind"], s["recipient"], s["locale"]) for s in report["sends"]
    ]
    assert sends == [
        ("welcome", "customer:C-1", "email", "customer:C-1", "zh-CN"),
        ("welcome", "customer:C-2", "email", "customer:C-2", "en"),
        ("thanks", "customer:C-1", "email", "staff:S-1", "en"),
        ("call", "customer:C-2", "task", "staff:S-1", "en"),
    ]
    assert all(s["key"].startswith("journey:test-journey:v4:") for s in report["sends"])
    assert report["sends"][3]["due_at"] == (T0 + timedelta(hours=1, days=3)).isoformat()
    assert report["sends_truncated"] is False


async def test_samples_are_rendered_as_the_notifier_would_in_the_recipients_language(
    whole: dict[str, Any],
) -> None:
    samples = {(s["step"], s["subject"]): s for s in whole["samples"]}
    welcome_zh = samples[("welcome", "customer:C-1")]
    assert (welcome_zh["locale"], welcome_zh["subject_line"]) == ("zh-CN", "欢迎，Customer 1")
    assert welcome_zh["text"].startswith("尊敬的 Customer 1")
    assert samples[("welcome", "customer:C-2")]["subject_line"] == "Welcome, Customer 2"
    call = samples[("call", "customer:C-2")]
    assert (call["kind"], call["subject_line"]) == ("task", "Call Customer 2")
    assert all("error" not in s for s in samples.values())


async def test_history_before_the_window_builds_the_state_but_enters_no_one(
    windowed: dict[str, Any],
) -> None:
    report = windowed
    assert report["from"] == SINCE.isoformat()
    assert (report["entered"], report["subjects"]) == (1, 1)
    assert [(s["step"], s["subject"]) for s in report["sends"]] == [
        ("welcome", "customer:C-2"),
        ("call", "customer:C-2"),  # its owner's profile came before the window
    ]
    assert report["left"] == {"completed": 1}


async def test_events_read_counts_the_events_of_the_window(
    whole: dict[str, Any], windowed: dict[str, Any]
) -> None:
    assert (whole["events_read"], windowed["events_read"]) == (4, 2)


async def test_a_dry_run_over_no_history_answers_zeros() -> None:
    report = await dry_run(
        journey(),
        1,
        [],
        since=None,
        until=UNTIL,
        events_topic="upkeep.events.v1",
        actions_topic="upkeep.actions.v1",
    )
    assert (report["events_read"], report["entered"], report["sends"], report["samples"]) == (
        0,
        0,
        [],
        [],
    )
    assert {s["id"]: s["completed"] for s in report["steps"]} == dict.fromkeys(
        ["welcome", "listen", "thanks", "stop", "call"], 0
    )
