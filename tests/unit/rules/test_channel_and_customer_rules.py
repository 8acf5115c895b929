"""Channel health, after-sales follow-up and tiering with chosen clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.rules.builtin.channel_health import ChannelHealth, ChannelHealthConfig
from services.rules.builtin.followup import (
    AfterSalesFollowUp,
    FollowUpConfig,
    settings_to_follow_up_at_once,
)
from services.rules.builtin.tiering import Tiering, TieringConfig
from services.rules.testing import RuleHarness

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def channel(h: RuleHarness) -> None:
    h.send(
        "channel.upserted",
        at=T0,
        channel_id="CH-1",
        name="East",
        timezone="Asia/Shanghai",
        manager_id="S-7",
        locale="zh-CN",
    )


def order(h: RuleHarness, n: int, at: datetime, amount: str = "1000") -> None:
    h.send(
        "channel.order",
        at=at,
        channel_id="CH-1",
        order_id=f"O-{n}",
        amount=amount,
        currency="CNY",
        occurred_at=at.isoformat(),
    )


def test_a_quiet_channel_is_reported_once_30_days_after_its_last_order() -> None:
    h = RuleHarness(ChannelHealth())
    channel(h)
    order(h, 1, T0)
    order(h, 2, T0 + timedelta(days=10))  # moves the quiet-timer
    actions = [a for a in h.advance(to=T0 + timedelta(days=60)) if "inactive" in a.key]
    assert [a.key for a in actions] == ["channel-health:CH-1:inactive:2026-01-15"]
    assert actions[0].recipient.id == "S-7"
    assert actions[0].data["days_without_orders"] == 30


def test_an_order_before_the_deadline_means_no_alert() -> None:
    h = RuleHarness(ChannelHealth())
    channel(h)
    for week in range(12):
        order(h, week, T0 + timedelta(days=7 * week))
    assert [a for a in h.actions if "inactive" in a.key] == []


def test_a_drop_against_the_trailing_baseline_is_reported_by_the_weekly_review() -> None:
    h = RuleHarness(ChannelHealth())
    channel(h)
    for day in range(0, 120, 3):  # steady business for four months ...
        order(h, day, T0 + timedelta(days=day))
    for day in range(120, 150, 15):  # ... then a trickle
        order(h, day, T0 + timedelta(days=day), amount="200")
    declines = [a for a in h.advance(to=T0 + timedelta(days=150)) if ":decline:" in a.key]
    assert declines, "the decline was not reported"
    assert declines[0].template == "channel_declining"
    assert declines[0].data["drop_percent"] > 50
    assert all(a.key.startswith("channel-health:CH-1:") for a in h.actions)


def test_follow_up_channel_and_delay_depend_on_the_tier() -> None:
    h = RuleHarness(AfterSalesFollowUp())
    h.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="Li",
        timezone="UTC",
        owner_id="S-1",
        email="li@example.com",
    )
    h.send(
        "customer.interaction",
        at=T0,
        customer_id="C-1",
        interaction_id="I-1",
        kind="order",
        amount="10",
        currency="EUR",
        occurred_at=T0.isoformat(),
    )
    h.send(
        "customer.tier_changed",
        at=T0,
        customer_id="C-1",
        tier="A",
        recency_score=3,
        frequency_score=3,
        monetary_score=3,
        changed_at=T0.isoformat(),
    )
    h.send(
        "customer.interaction",
        at=T0,
        customer_id="C-1",
        interaction_id="T-9",
        kind="ticket",
        ticket_status="closed",
        occurred_at=T0.isoformat(),
    )
    h.send(
        "customer.interaction",
        at=T0,
        customer_id="C-1",
        interaction_id="V-1",
        kind="visit",
        occurred_at=T0.isoformat(),
    )
    actions = h.advance(to=T0 + timedelta(days=30))
    assert [(a.key, a.kind, a.due_at.date().isoformat()) for a in actions] == [
        ("followup:T-9", "task", "2026-01-12"),  # tier A: a call task for the owner after 7 days
        ("followup:I-1", "email", "2026-01-19"),  # before tiering (C): an e-mail after 14 days
    ]
    assert actions[0].recipient.id == "S-1"


def test_tiers_follow_rfm_and_changes_are_published_once() -> None:
    h = RuleHarness(Tiering(TieringConfig(frequency_orders=(3, 2), monetary_value=(300, 100))))
    h.send("customer.upserted", at=T0, customer_id="C-1", name="Li", timezone="UTC")
    for n in range(3):
        at = T0 + timedelta(days=n)
        h.send(
            "customer.interaction",
            at=at,
            customer_id="C-1",
            interaction_id=f"I-{n}",
            kind="order",
            amount="150",
            currency="EUR",
            occurred_at=at.isoformat(),
        )
    tiers = [e.data["tier"] for e in h.emitted]
    assert tiers == ["C", "B", "A"]
    assert h.states["customer:C-1"].customer.tier == "A"  # type: ignore[union-attr]
    # no orders for a while: recency falls at 31 and 91 days without any scan
    h.advance(to=T0 + timedelta(days=200))
    assert [e.data["tier"] for e in h.emitted] == ["C", "B", "A", "B"]
    assert h.pending("tiering") == []


def test_an_order_that_arrives_before_the_customers_profile_waits_for_it() -> None:
    """Upstream systems publish on their own schedules: an order can be seen before the
    customer's profile, and its follow-up can be due at once. The rule looks again every
    minute until the profile is there, instead of following up nobody."""
    h = RuleHarness(AfterSalesFollowUp())
    past = T0 - timedelta(days=14)  # an order whose follow-up (tier C: 14 days) is due now
    h.send(
        "customer.interaction",
        at=past,
        customer_id="C-7",
        interaction_id="I-7",
        kind="order",
        amount="10",
        currency="EUR",
        occurred_at=past.isoformat(),
    )
    assert h.advance(to=T0 + timedelta(hours=10)) == []  # nothing yet: no profile to write to
    (waiting,) = [t for t in h.timers.values() if t.subject == "customer:C-7"]
    assert waiting.data["waited"] >= 1
    h.send(
        "customer.upserted",
        at=T0 + timedelta(hours=10),
        customer_id="C-7",
        name="Wang",
        timezone="UTC",
        email="wang@example.com",
    )
    actions = h.advance(to=T0 + timedelta(hours=10, minutes=2))
    assert [(a.key, a.kind, a.recipient.id) for a in actions] == [("followup:I-7", "email", "C-7")]


def test_an_order_of_a_customer_never_profiled_is_given_up_after_an_hour_of_looking() -> None:
    h = RuleHarness(AfterSalesFollowUp())
    past = T0 - timedelta(days=14)
    h.send(
        "customer.interaction",
        at=past,
        customer_id="C-8",
        interaction_id="I-8",
        kind="order",
        amount="10",
        currency="EUR",
        occurred_at=past.isoformat(),
    )
    assert h.advance(to=T0 + timedelta(days=30)) == []  # nobody to write to, nobody to task
    assert [t for t in h.timers.values() if t.subject == "customer:C-8"] == []  # gave up


def test_the_follow_up_at_once_settings_follow_up_at_the_next_tick_or_decline_near_midnight() -> (
    None
):
    now = datetime(2026, 11, 22, 15, 30, tzinfo=UTC)
    settings = settings_to_follow_up_at_once(now)
    assert settings is not None
    h = RuleHarness(AfterSalesFollowUp(FollowUpConfig.model_validate(settings)))
    h.send(
        "customer.upserted",
        at=now,
        customer_id="C-1",
        name="Li",
        timezone="UTC",
        email="li@example.com",
    )
    h.send(
        "customer.interaction",
        at=now,
        customer_id="C-1",
        interaction_id="I-1",
        kind="order",
        amount="10",
        currency="EUR",
        occurred_at=now.isoformat(),
    )
    assert [a.key for a in h.advance(to=now)] == ["followup:I-1"]  # due already: fires at once
    assert settings_to_follow_up_at_once(datetime(2026, 11, 22, 23, 50, tzinfo=UTC)) is None


def test_an_a_tier_channel_is_flagged_sooner_than_the_default() -> None:

    cfg = ChannelHealthConfig(no_orders_days=30, no_orders_days_by_tier={"A": 14})
    h = RuleHarness(ChannelHealth(cfg))
    start = datetime(2026, 1, 5, 12, tzinfo=UTC)
    h.send(
        "channel.upserted",
        at=start,
        channel_id="CH-A",
        name="Top",
        timezone="UTC",
        manager_id="S-1",
    )
    h.send(
        "channel.tier_changed",
        at=start,
        channel_id="CH-A",
        tier="A",
        value="200000",
        changed_at=start.isoformat(),
    )
    h.send(
        "channel.order",
        at=start,
        order_id="O-1",
        channel_id="CH-A",
        amount="10",
        currency="EUR",
        occurred_at=start.isoformat(),
    )
    h.advance(to=start + timedelta(days=15))
    assert [a.data["days_without_orders"] for a in h.actions] == [14]
