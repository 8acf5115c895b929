"""Business gauges for Prometheus, refreshed from the aggregates in the background."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import Gauge

from services.analytics.aggregates import Aggregates, bucket_start, totals
from shared.events.fields import zone

log = logging.getLogger(__name__)

AT_RISK = Gauge(
    "upkeep_analytics_customers_at_risk",
    "Customers whose churn risk is above the alert threshold now (entered minus recovered).",
)
RENEWALS_DUE = Gauge(
    "upkeep_analytics_renewals_due_this_week",
    "Contract terms with a renewal reminder due this week (reporting time zone, from Monday).",
)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


async def refresh(aggregates: Aggregates, tz: str, now: datetime) -> None:
    ever = totals(await aggregates.series("day", "all", EPOCH, now + timedelta(days=1)))
    AT_RISK.set(max(0, ever.get("customers.at_risk", 0) - ever.get("customers.recovered", 0)))
    local_now = now.astimezone(zone(tz))
    monday = bucket_start(now - timedelta(days=local_now.weekday()), "day", tz)
    week = totals(await aggregates.series("day", "all", monday, monday + timedelta(days=7)))
    RENEWALS_DUE.set(week.get("renewals.due", 0))


async def refresh_forever(
    aggregates: Aggregates,
    tz: str,
    every_s: float = 30.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    while True:
        try:
            await refresh(aggregates, tz, clock())
        except Exception:  # MongoDB away: the gauges keep their last values
            log.warning("could not refresh the business gauges", exc_info=True)
        await asyncio.sleep(every_s)
