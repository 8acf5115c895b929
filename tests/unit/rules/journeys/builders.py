"""Journeys, subjects and staff for the journeys' unit tests, and ways to read what a run did."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from services.rules.journeys.catalog import Catalog, Published
from services.rules.journeys.definition import Journey, validate
from services.rules.journeys.runner import Journeys
from services.rules.sdk import Action
from services.rules.testing import RuleHarness

T0 = datetime(2026, 3, 2, 1, tzinfo=UTC)  # a Monday, 09:00 in Shanghai
ENTERED = "upkeep.journey.entered.v1"
STEP = "upkeep.journey.step_completed.v1"
LEFT = "upkeep.journey.left.v1"
LABELLED = "upkeep.subject.labelled.v1"


def message(subject: str = "Hello {{ subject.name }}", body: str = "Body") -> dict[str, Any]:
    return {"en": {"subject": subject, "body": body}}


def send(to: str = "owner", **extra: Any) -> dict[str, Any]:
    """A send step's body: an inline :func:`message` unless ``template`` is given."""
    written = {} if "template" in extra else {"message": message()}
    return {"send": {"to": to, **written, **extra}}


def document(*steps: Mapping[str, Any], **parts: Any) -> dict[str, Any]:
    """A customer journey entered on ``customer.upserted``, with ``steps`` (each a step's kind
    and body; ids ``s0``, ``s1`` … unless given) and any other top-level ``parts``."""
    written = [
        {"id": f"s{i}", **step} if "id" not in step else dict(step) for i, step in enumerate(steps)
    ]
    return {
        "name": "test-journey",
        "subject": "customer",
        "trigger": {"event": "customer.upserted"},
        "steps": written,
        **parts,
    }


def catalog_of(*journeys: Journey | Mapping[str, Any], version: int = 1) -> Catalog:
    catalog = Catalog()
    published = [
        Published(j.name, version, j, enabled=True)
        for j in (x if isinstance(x, Journey) else validate(x) for x in journeys)
    ]
    catalog.replace(published, [])
    return catalog


def harness(*journeys: Journey | Mapping[str, Any], staff: bool = True) -> RuleHarness:
    """A harness running ``journeys`` (version 1, switched on) with an owner ``S-1`` (English,
    managed by ``M-1``, Chinese) when ``staff``."""
    h = RuleHarness(Journeys(catalog_of(*journeys)))
    if staff:
        add_staff(h, "M-1", locale="zh-CN")
        add_staff(h, "S-1", manager_id="M-1")
    return h


def rule_of(h: RuleHarness) -> Journeys:
    rule = h.rules["journeys"]
    assert isinstance(rule, Journeys)
    return rule


def add_staff(h: RuleHarness, staff_id: str, at: datetime = T0, **extra: Any) -> None:
    h.send(
        "staff.upserted",
        at=at,
        staff_id=staff_id,
        name=f"Staff {staff_id}",
        timezone=extra.pop("timezone", "Asia/Shanghai"),
        email=f"{staff_id.lower()}@example.com",
        **extra,
    )


def customer(h: RuleHarness, at: datetime = T0, **extra: Any) -> list[Action]:
    fields: dict[str, Any] = {
        "customer_id": "C-1",
        "name": "Acme",
        "timezone": "Asia/Shanghai",
        "email": "buyer@acme.example",
        "owner_id": "S-1",
        "updated_at": at.isoformat(),
    }
    fields.update(extra)
    return h.send("customer.upserted", at=at, **{k: v for k, v in fields.items() if v is not None})


def order(h: RuleHarness, at: datetime, n: int = 1, **extra: Any) -> list[Action]:
    return h.send(
        "customer.interaction",
        at=at,
        interaction_id=f"I-{n}",
        customer_id="C-1",
        kind=extra.pop("kind", "order"),
        occurred_at=extra.pop("occurred_at", at.isoformat()),
        **extra,
    )


def emitted(h: RuleHarness, type_name: str) -> list[Mapping[str, Any]]:
    return [e.data for e in h.emitted if e.type == type_name]


def reasons(h: RuleHarness) -> list[str]:
    return [str(e["reason"]) for e in emitted(h, LEFT)]


def outcomes(h: RuleHarness) -> list[tuple[str, str]]:
    return [(str(e["step"]), str(e["outcome"])) for e in emitted(h, STEP)]


def steps_of(actions: list[Action]) -> list[str]:
    return [str(a.data["journey_step"]) for a in actions]
