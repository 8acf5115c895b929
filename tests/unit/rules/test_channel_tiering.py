"""Channel tiering with chosen clocks: by value over the window, moved by growth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.rules.builtin.channel_tiering import (
    ChannelTiering,
    ChannelTieringConfig,
    channel_tier,
)
from services.rules.testing import RuleHarness

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
CFG = ChannelTieringConfig(window_days=30, a_value=Decimal(10_000), b_value=Decimal(2_000))


def harness() -> RuleHarness:
    h = RuleHarness(ChannelTiering(CFG))
    h.send("channel.upserted", at=T0, channel_id="P-1", name="Dealer", timezone="Asia/Shanghai")
    return h


def orders(h: RuleHarness, start: datetime, days: int, amount: str, first: int = 0) -> None:
    for n in range(days):
        at = start + timedelta(days=n)
        h.send(
            "channel.order",
            at=at,
            order_id=f"O-{first + n}",
            channel_id="P-1",
            occurred_at=at.isoformat(),
            amount=amount,
            currency="CNY",
        )


def tiers(h: RuleHarness) -> list[tuple[str, str | None]]:
    return [(e.data["tier"], e.data["previous"]) for e in h.emitted]


def test_a_new_channel_starts_in_c_and_rises_with_what_it_sells() -> None:
    h = harness()
    assert tiers(h) == [("C", None)]
    orders(h, T0, 20, "600")  # 12,000 in the window: A (growth unknown: nothing before)
    assert tiers(h)[-1][0] == "A"
    state = h.states["channel:P-1"].channel
    assert state is not None
    assert state.tier == "A"  # the emitted event came back and set the state


@pytest.mark.parametrize(
    ("value", "growth", "tier"),
    [
        (Decimal(12_000), None, "A"),
        (Decimal(5_000), None, "B"),
        (Decimal(5_000), 35.0, "A"),  # a fast-growing B moves up
        (Decimal(12_000), -40.0, "B"),  # a shrinking A moves down
        (Decimal(100), -90.0, "C"),  # never below C
        (Decimal(50_000), 80.0, "A"),  # never above A
        (Decimal(5_000), 29.9, "B"),
    ],
)
def test_the_tier_is_the_value_moved_by_growth(
    value: Decimal, growth: float | None, tier: str
) -> None:
    assert channel_tier(value, growth, CFG) == tier


def test_a_channel_that_stops_ordering_falls_at_its_reviews() -> None:
    h = harness()
    orders(h, T0, 20, "600")
    assert tiers(h)[-1][0] == "A"
    h.advance(to=T0 + timedelta(days=120))  # no orders for months: reviewed weekly
    assert tiers(h)[-1][0] == "C"
    assert [t for t, _ in tiers(h)].count("C") == 2  # once at the start, once after the fall
    assert any(t.name == "review" for t in h.pending("channel-tiering"))


def test_an_order_that_does_not_change_the_tier_publishes_nothing() -> None:
    h = harness()
    orders(h, T0, 20, "600")
    emitted = len(h.emitted)
    orders(h, T0 + timedelta(days=20), 3, "600", first=20)  # still A
    assert len(h.emitted) == emitted


def test_b_value_above_a_value_is_refused() -> None:
    with pytest.raises(ValueError, match="b_value"):
        ChannelTieringConfig(a_value=Decimal(10), b_value=Decimal(20))
