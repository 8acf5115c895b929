"""Budget alerts: when a budget is forecast to overrun, its owner and the owner's manager are
told, through the notifier (an e-mail action on ``upkeep.actions.v1``), once per budget and
period.

**Once.** Each alert's action key is ``budget-overrun:<budget>:<period>:<recipient>``, which the
notifier's ledger delivers once however often it is published; analytics also records what it
published (``analytics_sent``) so it does not publish it again every check. The record is
written after Kafka acknowledged the actions: a crash in between publishes them once more, and
the ledger absorbs that. Replicas may each check; the ledger absorbs that too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from prometheus_client import Counter
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from services.analytics.budgets import BudgetStatus
from services.analytics.costs import Costing
from services.analytics.staff import Directory, Member
from shared.errors import is_transient
from shared.events.actions import ActionMessage, ActionRecipient
from shared.kafka.messages import Outgoing
from shared.metrics import preinit
from shared.mongo import Document

log = logging.getLogger(__name__)

ALERTS = Counter(
    "upkeep_analytics_budget_alerts_total",
    "Budget overrun alerts published, by recipient role (owner, manager).",
    ["role"],
)
preinit(ALERTS, [("owner",), ("manager",)])
CHECKS = Counter(
    "upkeep_analytics_checks_total",
    "Periodic checks run, by check (budgets, reports) and result (ok, failed).",
    ["check", "result"],
)
preinit(CHECKS, [(j, r) for j in ("budgets", "reports") for r in ("ok", "failed")])
RULE = "budget-watch"


class Sink(Protocol):
    """Where actions go: ``upkeep.actions.v1`` (a :class:`~shared.kafka.producer.Publisher`,
    which waits for the broker's acknowledgement)."""

    async def publish(self, messages: Sequence[Outgoing]) -> None: ...


class Sent:
    """What analytics published once and must not publish again (``analytics_sent``)."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def done(self, key: str) -> bool:
        return await self._collection.find_one({"_id": key}, {"_id": 1}) is not None

    async def mark(self, key: str, **about: Any) -> None:
        # another replica may have published it too: the ledger delivers it once
        with contextlib.suppress(DuplicateKeyError):
            await self._collection.insert_one({"_id": key, "at": datetime.now(UTC), **about})


def money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def alert_data(s: BudgetStatus, role: str) -> dict[str, Any]:
    return {
        "budget_id": s.budget_id,
        "budget_name": s.name,
        "scope_kind": s.scope,
        "scope_id": s.scope_id,
        "period_label": s.period_id,
        "period_from": s.period_from.isoformat(),
        "period_to": s.period_to.isoformat(),
        "currency": s.currency,
        "amount": money(s.amount),
        "used": money(s.used),
        "used_pct": share(s.used_share),
        "forecast": money(s.forecast),
        "forecast_pct": share(s.forecast_share),
        "recipient_role": role,
    }


def alert_actions(
    s: BudgetStatus, owner: Member | None, manager: Member | None, actions_topic: str, now: datetime
) -> list[Outgoing]:
    """One e-mail action to the budget's owner and one to their manager (if known)."""
    found = []
    for role, member in (("owner", owner), ("manager", manager)):
        if member is None:
            continue
        key = f"budget-overrun:{s.budget_id}:{s.period_id}:{member.staff_id}"
        action = ActionMessage(
            key=key,
            rule=RULE,
            subject=f"budget:{s.budget_id}",
            kind="email",
            recipient=ActionRecipient(kind="staff", id=member.staff_id),
            template="budget_overrun",
            locale=member.locale,
            due_at=now,
            data=alert_data(s, role),
            context={k: v for k, v in {"owner": s.owner or ""}.items() if v},
            purpose="budget_alert",
            created_at=now,
        )
        found.append(Outgoing.json(actions_topic, action.subject, action.model_dump(mode="json")))
    return found


class BudgetWatch:
    """Checks the budgets of the current periods every ``every_s`` seconds."""

    def __init__(
        self,
        costing: Costing,
        staff: Directory,
        sink: Sink,
        sent: Sent,
        actions_topic: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        caught_up: Callable[[], bool] = lambda: True,
    ) -> None:
        """``caught_up``: whether the consumer has read what was published (no alert is
        judged on half the costs)."""
        self._costing, self._staff, self._sink, self._sent = costing, staff, sink, sent
        self._topic, self._clock, self._caught_up = actions_topic, clock, caught_up

    async def check(self) -> int:
        """Publish the alerts due now; returns how many budgets were alerted."""
        if not self._caught_up():
            return 0
        now = self._clock()
        alerted = 0
        for s in await self._costing.statuses(now=now):
            once = f"budget-overrun:{s.budget_id}:{s.period_id}"
            if not s.overrun_forecast or s.owner is None or await self._sent.done(once):
                continue
            people = await self._staff.get([s.owner])
            owner = people.get(s.owner)
            boss = owner.manager if owner is not None else None
            manager = (await self._staff.get([boss])).get(boss) if boss else None
            messages = alert_actions(s, owner, manager, self._topic, now)
            if not messages:
                continue  # the owner is not in the directory yet: the next check tries again
            await self._sink.publish(messages)
            await self._sent.mark(once, kind="budget_alert", budget=s.budget_id)
            ALERTS.labels("owner").inc()
            if manager is not None:
                ALERTS.labels("manager").inc()
            alerted += 1
        return alerted


async def run_every(job: Callable[[], Awaitable[int]], every_s: float, name: str) -> None:
    """Run ``job`` every ``every_s`` seconds, forever; one that fails is tried at the next
    (counted in ``upkeep_analytics_checks_total{check=name}``)."""
    while True:
        try:
            await job()
        except Exception as exc:
            CHECKS.labels(name, "failed").inc()
            level = logging.WARNING if is_transient(exc) else logging.ERROR
            log.log(level, "the %s check failed: %s", name, type(exc).__name__, exc_info=True)
        else:
            CHECKS.labels(name, "ok").inc()
        await asyncio.sleep(every_s)
