"""The weekly list of at-risk customers, one action per owner ("your customers at risk").

The churn rule declares it as a :class:`~services.rules.sdk.Schedule`: the engine runs it once
per slot (the configured weekday and hour, UTC) on the replica that owns partition 0 of
``upkeep.events.v1``, with the customers flagged at risk. The action key names the owner and
the ISO week, so a rerun after a restart is recognised by the notifier.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.rules.sdk import Action, Recipient
from services.rules.state import SubjectState

WEEKLY_LIST = "weekly-at-risk"


def at_risk_lists(
    subjects: Sequence[SubjectState], slot: datetime, rule: str, limit_per_owner: int = 200
) -> list[Action]:
    """One list per owner of the at-risk customers among ``subjects``, riskiest first."""
    by_owner: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for subject in subjects:
        customer = subject.customer
        if customer is not None and customer.at_risk and customer.owner_id:
            by_owner[customer.owner_id].append(
                {
                    "customer_id": customer.customer_id,
                    "customer_name": customer.name,
                    "risk": customer.churn_risk,
                    "last_order_at": customer.last_order_at,
                }
            )
    year, week, _ = slot.isocalendar()
    actions = []
    for owner, customers in sorted(by_owner.items()):
        customers.sort(key=lambda c: (-(c["risk"] or 0), c["customer_id"]))
        actions.append(
            Action(
                key=f"{rule}:weekly:{owner}:{year}-W{week:02d}",
                rule=rule,
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
