"""The journeys shipped in ``journeys/``, run through the harness as they are written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.rules.journeys.catalog import Catalog, Published
from services.rules.journeys.definition import Journey, parse_document, validate
from services.rules.journeys.runner import Journeys
from services.rules.sdk import Action
from services.rules.testing import RuleHarness
from shared.templates import TEMPLATE_ROOT

EXAMPLES = Path(__file__).parents[3] / "journeys"
T0 = datetime(2026, 3, 2, 1, tzinfo=UTC)  # 09:00 in Shanghai


def example(name: str) -> Journey:
    path = EXAMPLES / f"{name}.yaml"
    return validate(parse_document(path.read_text(encoding="utf-8"), path.name), TEMPLATE_ROOT)


def harness(name: str) -> RuleHarness:
    catalog = Catalog()
    catalog.replace([Published(name, 1, example(name), enabled=True)], [])
    h = RuleHarness(Journeys(catalog))
    h.send(
        "staff.upserted",
        at=T0,
        staff_id="M-1",
        name="Li Na",
        timezone="Asia/Shanghai",
        email="li.na@example.com",
        locale="zh-CN",
    )
    h.send(
        "staff.upserted",
        at=T0,
        staff_id="S-1",
        name="Wang Fang",
        timezone="Asia/Shanghai",
        email="wang.fang@example.com",
        manager_id="M-1",
    )
    return h


def steps_of(actions: list[Action]) -> list[str]:
    return [str(a.data["journey_step"]) for a in actions]


def reasons(h: RuleHarness) -> list[str]:
    return [str(e.data["reason"]) for e in h.emitted if e.type == "upkeep.journey.left.v1"]


def channel(h: RuleHarness, at: datetime = T0, **extra: Any) -> None:
    h.send(
        "channel.upserted",
        at=at,
        channel_id="CH-1",
        name="Huadong Trading",
        timezone="Asia/Shanghai",
        manager_id="S-1",
        email="buy@huadong.example",
        locale="zh-CN",
        **extra,
    )


def order(h: RuleHarness, at: datetime, n: int = 1, kind: str = "order") -> None:
    h.send(
        "channel.order",
        at=at,
        order_id=f"O-{n}",
        channel_id="CH-1",
        kind=kind,
        occurred_at=at.isoformat(),
        amount="1200",
        currency="CNY",
    )


@pytest.mark.parametrize(
    "name", ["distributor-onboarding", "a-tier-quarterly-review", "churn-win-back"]
)
def test_every_example_validates_and_ships_switched_off(name: str) -> None:
    journey = example(name)
    assert journey.name == name
    assert journey.enabled is None  # created switched off; make demo switches them on


def test_onboarding_welcomes_calls_on_day_7_and_tells_the_regional_manager_on_day_30() -> None:
    h = harness("distributor-onboarding")
    channel(h)
    h.advance(to=T0 + timedelta(days=40))
    welcome, call, tell = h.actions
    assert steps_of(h.actions) == ["welcome", "intro-call", "tell-regional-manager"]
    assert (welcome.recipient.kind, welcome.locale) == ("channel", "zh-CN")
    assert welcome.data["message_subject"] == "欢迎加入我们的合作伙伴计划，Huadong Trading"
    assert welcome.due_at == T0
    assert (call.kind, call.recipient.id) == ("task", "S-1")
    assert call.due_at == datetime(2026, 3, 8, 2, tzinfo=UTC)  # day 7, 10:00 in Shanghai
    assert call.task_spec is not None
    assert call.task_spec.priority == "high"
    assert (tell.recipient.id, tell.locale) == ("M-1", "zh-CN")
    assert tell.due_at == call.due_at + timedelta(days=23)
    assert reasons(h) == ["completed"]


def test_onboarding_ends_as_a_conversion_at_the_first_order_and_sends_nothing_more() -> None:
    h = harness("distributor-onboarding")
    channel(h)
    order(h, T0 + timedelta(days=3), kind="sell_through")  # a reported sale is not the goal
    order(h, T0 + timedelta(days=10), n=2)
    channel(h, at=T0 + timedelta(days=11), region="east")  # a new profile: no new entry
    h.advance(to=T0 + timedelta(days=60))
    assert steps_of(h.actions) == ["welcome", "intro-call"]
    assert reasons(h) == ["converted"]


def test_the_quarterly_review_runs_while_a_tier_and_leaves_when_the_tier_drops() -> None:
    h = harness("a-tier-quarterly-review")
    channel(h)
    assert h.actions == []  # no tier yet: not in the segment

    def tier(value: str, at: datetime) -> None:
        h.send(
            "channel.tier_changed",
            at=at,
            channel_id="CH-1",
            tier=value,
            changed_at=at.isoformat(),
            value="100000",
        )

    tier("A", T0)
    h.advance(to=T0 + timedelta(days=100))
    assert steps_of(h.actions) == ["q1-review", "q1-invitation", "q2-review", "q2-invitation"]
    assert h.actions[2].due_at.astimezone(UTC) == datetime(2026, 6, 1, 1, tzinfo=UTC)
    tier("B", T0 + timedelta(days=120))
    h.advance(to=T0 + timedelta(days=400))
    assert len(h.actions) == 4
    assert reasons(h) == ["exited"]
    tier("A", T0 + timedelta(days=401))  # A again: a new year of reviews
    h.advance(to=T0 + timedelta(days=402))
    assert steps_of(h.actions)[4:] == ["q1-review", "q1-invitation"]


def customer_at_risk(h: RuleHarness, at: datetime, at_risk: bool = True) -> None:
    h.send(
        "customer.churn_risk_changed",
        at=at,
        customer_id="C-1",
        at_risk=at_risk,
        risk=0.8 if at_risk else 0.2,
        changed_at=at.isoformat(),
    )


def win_back() -> RuleHarness:
    h = harness("churn-win-back")
    h.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="Acme",
        timezone="Asia/Shanghai",
        email="buyer@acme.example",
        owner_id="S-1",
    )
    return h


def test_win_back_mails_the_customer_and_has_the_owner_call_when_no_order_comes() -> None:
    h = win_back()
    customer_at_risk(h, T0)
    h.advance(to=T0 + timedelta(days=10))
    mail, call = h.actions
    assert (mail.recipient.kind, mail.priority) == ("customer", "marketing")
    assert mail.data["message_subject"] == "We have missed you, Acme"
    assert (call.kind, call.recipient.id, call.due_at) == ("task", "S-1", T0 + timedelta(days=7))
    assert reasons(h) == ["completed"]
    customer_at_risk(h, T0 + timedelta(days=20), at_risk=False)
    customer_at_risk(h, T0 + timedelta(days=30))  # within 90 days of the last: no new run
    h.advance(to=T0 + timedelta(days=40))
    assert len(h.actions) == 2


def test_win_back_converts_on_an_order_within_the_week() -> None:
    h = win_back()
    customer_at_risk(h, T0)
    h.send(
        "customer.interaction",
        at=T0 + timedelta(days=2),
        interaction_id="I-1",
        customer_id="C-1",
        kind="order",
        occurred_at=(T0 + timedelta(days=2)).isoformat(),
        amount="300",
        currency="CNY",
    )
    h.advance(to=T0 + timedelta(days=10))
    assert steps_of(h.actions) == ["we-miss-you"]
    assert reasons(h) == ["converted"]
