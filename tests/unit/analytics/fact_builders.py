"""Records on the three topics for the tests of services/analytics/facts.py (test_*_facts.py,
test_unreadable_records.py, test_attribution.py, test_contract_terms.py,
test_purpose_and_term.py), and helpers that read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from services.analytics.facts import Fact, read
from shared.events.envelope import CanonicalEvent
from shared.events.types import EventPayload, resolve_type

T = datetime(2026, 11, 2, 10, 15, tzinfo=UTC)
SHANGHAI = timezone(timedelta(hours=8))


def payload_of(type_name: str, **data: Any) -> EventPayload:
    model = resolve_type(type_name)
    assert model is not None, type_name
    return model.model_validate(data)


def event(
    type_name: str, event_id: str = "e-1", source: str = "crm", at: datetime = T, **data: Any
) -> CanonicalEvent:
    return CanonicalEvent.build(
        event_id=event_id,
        source=source,
        payload=payload_of(type_name, **data),
        time=at,
        source_offset="Z",
    )


def event_record(type_name: str, event_id: str = "e-1", source: str = "crm", **data: Any) -> bytes:
    return event(type_name, event_id, source, **data).to_json()


def event_identity(event_id: str = "e-1", source: str = "crm") -> str:
    return f"event:{source}\x1f{event_id}"


def action(key: str, rule: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "rule": rule,
        "subject": "customer:C-1",
        "kind": "email",
        "recipient": {"kind": "staff", "id": "S-1"},
        "template": f"{rule}_reminder",
        "locale": "en",
        "due_at": T.isoformat(),
        "priority": "transactional",
        "data": {},
        "created_at": T.isoformat(),
    }
    return {**body, **changes}


def delivery(
    outcome: str, key: str = "birthday:C-1:2026", rule: str = "birthday", **changes: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"{key}:{outcome}",
        "key": key,
        "outcome": outcome,
        "reason": None,
        "rule": rule,
        "subject": "customer:C-1",
        "kind": "email",
        "recipient": {"kind": "staff", "id": "S-1"},
        "priority": "transactional",
        "template": f"{rule}_reminder",
        "attempts": 1,
        "due_at": T.isoformat(),
        "at": T.isoformat(),
    }
    return {**body, **changes}


def read_json(kind: str, body: dict[str, Any]) -> list[Fact]:
    return read(kind, orjson.dumps(body)).facts


def by_identity(facts: list[Fact]) -> dict[str, Fact]:
    found = {f.identity: f for f in facts}
    assert len(found) == len(facts), "identities within one record must differ"
    return found


CUSTOMER = {"customer_id": "C-1", "name": "Acme", "timezone": "Asia/Shanghai"}


def task_payload(kind: str, task_id: str = "T-1", at: datetime = T, **data: Any) -> dict[str, Any]:
    """The payload of an ``upkeep.task.<kind>.v1`` event about customer C-1, at ``at``."""
    common: dict[str, Any] = {"task_id": task_id, "about": "customer:C-1"}
    defaults: dict[str, dict[str, Any]] = {
        "created": {
            "owner_id": "S-1",
            "team": "north",
            "rule": "followup",
            "due_at": (at + timedelta(days=2)).isoformat(),
            "created_at": at.isoformat(),
        },
        "completed": {"completed_at": at.isoformat()},
        "snoozed": {"due_at": (at + timedelta(days=5)).isoformat(), "snoozed_at": at.isoformat()},
        "reassigned": {
            "owner_id": "S-2",
            "previous_owner_id": "S-1",
            "reassigned_at": at.isoformat(),
        },
        "overdue": {
            "owner_id": "S-1",
            "due_at": (at - timedelta(hours=1)).isoformat(),
            "overdue_at": at.isoformat(),
        },
        "escalated": {
            "owner_id": "S-1",
            "level": 1,
            "escalated_to": "M-1",
            "escalated_at": at.isoformat(),
        },
    }
    return {**common, **defaults[kind], **data}


def task_event(
    kind: str, task_id: str = "T-1", event_id: str = "e-1", at: datetime = T, **data: Any
) -> CanonicalEvent:
    return event(f"task.{kind}", event_id, "rules", at, **task_payload(kind, task_id, at, **data))
