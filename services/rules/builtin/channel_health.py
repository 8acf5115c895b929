"""Channel health: "tell the channel manager when a channel has had no orders for 30 days, or its
orders over the last 30 days fell by more than half against its own trailing baseline."

No scanning: every order *moves* the channel's single ``inactive`` timer to N days after it, so
the timer fires only if no order came since. Decline is checked by one weekly ``review`` timer
per channel. Alerts are keyed by the last order date (inactive) or the review date (decline), so
each situation is reported once. ``no_orders_days_by_tier`` gives each channel tier (from
``channel-tiering``) its own patience: an A-tier distributor quiet for two weeks matters more
than a C-tier one quiet for a month.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from services.rules.calendar import at_local, local_date
from services.rules.sdk import (
    Action,
    ActionKind,
    Decision,
    Event,
    RuleContext,
    SetTimer,
    Timer,
    Unrouted,
)
from services.rules.state import ChannelState, SubjectState, Tier
from shared.events.types import ChannelOrder, ChannelTierChanged, ChannelUpserted

_CHANNEL = frozenset({"channel_id", "channel_name"})


class ChannelHealthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    no_orders_days: int = Field(default=30, ge=1)
    no_orders_days_by_tier: dict[Tier, int] = Field(default_factory=dict)  # overrides by tier
    window_days: int = Field(default=30, ge=1)
    baseline_days: int = Field(default=90, ge=1)
    drop_percent: float = Field(default=50, gt=0, le=100)
    min_baseline_amount: Decimal = Decimal(0)
    review_every_days: int = Field(default=7, ge=1)
    local_time: time = time(9, 0)
    kind: ActionKind = "email"


def window_totals(
    channel: ChannelState, today: date, window: int, baseline: int
) -> tuple[Decimal, Decimal]:
    """(orders in the last ``window`` days, the baseline before it scaled to ``window`` days)."""
    recent, earlier = Decimal(0), Decimal(0)
    for day_text, amount in channel.daily_orders.items():
        age = (today - date.fromisoformat(day_text)).days
        if 0 <= age < window:
            recent += amount
        elif window <= age < window + baseline:
            earlier += amount
    return recent, earlier * Decimal(window) / Decimal(baseline)


@dataclass
class ChannelHealth:
    config: ChannelHealthConfig = field(default_factory=ChannelHealthConfig)
    name: str = "channel-health"
    templates: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: {
            "channel_inactive": _CHANNEL | {"last_order_date", "days_without_orders"},
            "channel_declining": _CHANNEL | {"recent", "baseline", "drop_percent"},
        }
    )

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        channel, payload = subject.channel, event.payload
        if not isinstance(payload, ChannelUpserted | ChannelOrder | ChannelTierChanged):
            return
        if channel is None or not channel.active:
            return
        tz, cfg = channel.timezone, self.config
        if channel.last_order_at is not None:
            by_tier = cfg.no_orders_days_by_tier
            patience = by_tier.get(channel.tier, cfg.no_orders_days) if channel.tier else None
            patience = patience or cfg.no_orders_days
            quiet = local_date(channel.last_order_at, tz) + timedelta(days=patience)
            yield SetTimer(
                "inactive",
                at_local(quiet, cfg.local_time, tz),
                {"last_order": local_date(channel.last_order_at, tz).isoformat()},
            )
        if isinstance(payload, ChannelUpserted):
            first = local_date(ctx.now, tz) + timedelta(days=cfg.review_every_days)
            yield SetTimer("review", at_local(first, cfg.local_time, tz))

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        channel, cfg = subject.channel, self.config
        if channel is None or not channel.active:
            return
        tz = channel.timezone
        today = local_date(timer.due_at, tz)
        base = {"channel_id": channel.channel_id, "channel_name": channel.name}
        if timer.name == "inactive":
            if channel.last_order_at is None:
                return
            last = local_date(channel.last_order_at, tz)
            if last.isoformat() != timer.data.get("last_order"):
                return  # an order came since; its own timer is pending
            yield self._alert(
                f"inactive:{last}",
                "channel_inactive",
                channel,
                subject,
                ctx,
                timer,
                {
                    **base,
                    "last_order_date": last.isoformat(),
                    "days_without_orders": (today - last).days,
                },
            )
        elif timer.name == "review":
            recent, baseline = window_totals(channel, today, cfg.window_days, cfg.baseline_days)
            threshold = baseline * (Decimal(1) - Decimal(str(cfg.drop_percent)) / 100)
            if baseline > cfg.min_baseline_amount and baseline > 0 and recent < threshold:
                drop = float((baseline - recent) / baseline * 100)
                yield self._alert(
                    f"decline:{today}",
                    "channel_declining",
                    channel,
                    subject,
                    ctx,
                    timer,
                    {
                        **base,
                        "recent": str(recent),
                        "baseline": str(baseline),
                        "drop_percent": round(drop, 1),
                    },
                )
            yield SetTimer(
                "review",
                at_local(today + timedelta(days=cfg.review_every_days), cfg.local_time, tz),
            )

    def _alert(
        self,
        occurrence: str,
        template: str,
        channel: ChannelState,
        subject: SubjectState,
        ctx: RuleContext,
        timer: Timer,
        data: dict[str, object],
    ) -> Action | Unrouted:
        if channel.manager_id is None:
            return Unrouted("no_manager")  # flagged, but nobody to tell
        return Action.to_staff(
            self.name,
            subject,
            f"{self.name}:{channel.channel_id}:{occurrence}",
            channel.manager_id,
            ctx,
            template=template,
            due_at=timer.due_at,
            kind=self.config.kind,
            data=data,
            purpose="channel_alert",
        )
