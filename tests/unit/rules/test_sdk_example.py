"""The worked example of docs/rules.md, run as written (the doc must not rot)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.rules.sdk import Action, Decision, Recipient, RuleContext, SetTimer, Timer
from services.rules.state import SubjectState
from services.rules.testing import RuleHarness
from shared.events.envelope import CanonicalEvent

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


@dataclass
class FirstOrderCall:
    name: str = "first-order-call"

    def on_event(
        self, event: CanonicalEvent, subject: SubjectState, ctx: RuleContext
    ) -> Iterator[Decision]:
        customer = subject.customer
        if (
            event.type == "upkeep.customer.interaction.v1"
            and event.data["kind"] == "order"
            and customer is not None
            and customer.orders == 1
        ):
            yield SetTimer("call", ctx.now + timedelta(days=7))

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        customer = subject.customer
        if customer is not None and customer.owner_id is not None:
            yield Action(
                key=f"{self.name}:{customer.customer_id}",
                rule=self.name,
                subject=subject.id,
                kind="task",
                recipient=Recipient("staff", customer.owner_id),
                template="first_order_call",
                locale=customer.locale,
                due_at=ctx.now,
            )


def test_the_worked_example_calls_a_week_after_the_first_order_only() -> None:
    h = RuleHarness(FirstOrderCall())
    h.send("customer.upserted", at=T0, customer_id="C-1", name="Li", timezone="UTC", owner_id="S-1")
    h.send(
        "customer.interaction",
        at=T0,
        customer_id="C-1",
        interaction_id="I-1",
        kind="order",
        occurred_at=T0.isoformat(),
    )
    h.send(
        "customer.interaction",
        at=T0 + timedelta(days=1),
        customer_id="C-1",
        interaction_id="I-2",
        kind="order",
        occurred_at=(T0 + timedelta(days=1)).isoformat(),
    )
    (call,) = h.advance(to=T0 + timedelta(days=8))
    assert call.recipient.id == "S-1"
    assert call.due_at == T0 + timedelta(days=7)


def make_rule(config: object) -> FirstOrderCall:
    """An entry-point factory, as a plug-in package would ship it."""
    return FirstOrderCall()


def test_plugin_rules_are_found_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from services.rules import registry

    points = [
        EntryPoint("first-order-call", f"{__name__}:make_rule", registry.ENTRY_POINT_GROUP),
        EntryPoint("broken", "no_such_package.rules:make_rule", registry.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: points)
    names = [rule.name for rule in registry.load_rules({})]
    assert "first-order-call" in names  # loaded through EntryPoint.load, like pip-installed ones
    assert "broken" not in names  # a plug-in that fails to import is skipped
    assert [r.name for r in registry.load_rules({}, enabled={"first-order-call"})] == [
        "first-order-call"
    ]
