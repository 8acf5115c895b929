"""Channel tiering: "rank the distributors by what they sell over the last quarter, and move a
fast-growing one up and a shrinking one down a tier" — 分级管理 for channels.

A channel's value is what it ordered (orders and sell-through reports alike) in the last
``window_days`` of its local calendar. Its base tier is A from ``a_value``, B from ``b_value``,
else C; growth against the window before it of at least ``promote_growth_percent`` moves it up
one tier, a fall of ``demote_growth_percent`` down one. A change is published as
``upkeep.channel.tier_changed.v1``, which every rule then sees. It is evaluated at every channel
event and every ``review_every_days`` (a quiet channel's value falls with time).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.rules.builtin.channel_health import window_totals
from services.rules.calendar import at_local, local_date
from services.rules.sdk import Decision, Emit, Event, RuleContext, SetTimer, Timer
from services.rules.state import ChannelState, SubjectState, Tier
from shared.events.types import ChannelOrder, ChannelUpserted

TIERS: tuple[Tier, ...] = ("A", "B", "C")


class ChannelTieringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    window_days: int = Field(default=90, ge=1, le=365)
    a_value: Decimal = Field(default=Decimal(100_000), gt=0)
    b_value: Decimal = Field(default=Decimal(20_000), gt=0)
    promote_growth_percent: float = Field(default=30, gt=0)
    demote_growth_percent: float = Field(default=30, gt=0, le=100)
    review_every_days: int = Field(default=7, ge=1)
    local_time: time = time(6, 0)

    @model_validator(mode="after")
    def _ordered(self) -> ChannelTieringConfig:
        if self.b_value > self.a_value:
            raise ValueError("b_value must not exceed a_value")
        return self


def channel_tier(value: Decimal, growth: float | None, cfg: ChannelTieringConfig) -> Tier:
    base = 0 if value >= cfg.a_value else 1 if value >= cfg.b_value else 2
    if growth is not None and growth >= cfg.promote_growth_percent:
        base = max(base - 1, 0)
    elif growth is not None and growth <= -cfg.demote_growth_percent:
        base = min(base + 1, 2)
    return TIERS[base]


@dataclass
class ChannelTiering:
    config: ChannelTieringConfig = field(default_factory=ChannelTieringConfig)
    name: str = "channel-tiering"
    templates: Mapping[str, frozenset[str]] = field(default_factory=dict)  # it only emits

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        channel = subject.channel
        if isinstance(event.payload, ChannelUpserted | ChannelOrder) and channel is not None:
            yield from self._evaluate(channel, ctx)

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        if subject.channel is not None:
            yield from self._evaluate(subject.channel, ctx)

    def _evaluate(self, channel: ChannelState, ctx: RuleContext) -> Iterator[Decision]:
        cfg, tz = self.config, channel.timezone
        today = local_date(ctx.now, tz)
        window = cfg.window_days
        value, before = window_totals(channel, today, window, window)
        growth = float((value - before) / before * 100) if before > 0 else None
        tier = channel_tier(value, growth, cfg)
        if channel.active and tier != channel.tier:
            yield Emit(
                "upkeep.channel.tier_changed.v1",
                {
                    "channel_id": channel.channel_id,
                    "tier": tier,
                    "previous": channel.tier,
                    "value": str(value),
                    "growth_percent": round(growth, 1) if growth is not None else None,
                    "changed_at": ctx.now.isoformat(),
                },
            )
        if channel.active:
            review = today + timedelta(days=cfg.review_every_days)
            yield SetTimer("review", at_local(review, cfg.local_time, tz))
