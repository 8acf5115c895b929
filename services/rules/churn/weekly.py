"""The weekly list of at-risk customers, one action per owner ("your customers at risk").

Runs inside the tick of the replica that owns partition 0 of ``upkeep.events.v1`` (so one replica
in the group), at the configured weekday and hour. The action key names the owner and the ISO
week, so a rerun after a restart is recognised by the notifier. The query reads the customers
flagged at risk — a weekly read, never part of a per-tick cost.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from services.rules.churn.rule import ChurnConfig
from services.rules.sdk import Action, Recipient
from shared.mongo import Document


def last_slot(now: datetime, config: ChurnConfig) -> datetime:
    """The most recent scheduled moment at or before ``now`` (UTC)."""
    slot = now.replace(hour=config.weekly_list_hour_utc, minute=0, second=0, microsecond=0)
    slot -= timedelta(days=(slot.weekday() - config.weekly_list_weekday) % 7)
    return slot if slot <= now else slot - timedelta(days=7)


async def weekly_lists(
    subjects: AsyncCollection[Document], slot: datetime, limit_per_owner: int = 200
) -> list[Action]:
    by_owner: dict[str, list[dict[str, Any]]] = defaultdict(list)
    async for doc in subjects.find(
        {"kind": "customer", "state.customer.at_risk": True}, {"state.customer": 1}
    ):
        customer = doc["state"]["customer"]
        if customer.get("owner_id"):
            by_owner[customer["owner_id"]].append(
                {
                    "customer_id": customer["customer_id"],
                    "customer_name": customer.get("name"),
                    "risk": customer.get("churn_risk"),
                    "last_order_at": customer.get("last_order_at"),
                }
            )
    year, week, _ = slot.isocalendar()
    actions = []
    for owner, customers in sorted(by_owner.items()):
        customers.sort(key=lambda c: -(c["risk"] or 0))
        actions.append(
            Action(
                key=f"churn:weekly:{owner}:{year}-W{week:02d}",
                rule="churn",
                subject=f"staff:{owner}",
                kind="email",
                recipient=Recipient("staff", owner),
                template="churn_weekly_list",
                locale="en",
                due_at=slot,
                data={
                    "week": f"{year}-W{week:02d}",
                    "count": len(customers),
                    "customers": customers[:limit_per_owner],
                },
                purpose="churn_list",
            )
        )
    return actions
