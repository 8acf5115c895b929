"""Contract renewal: "remind the owner 60, 30, 7 and 1 days before a contract ends, and tell
their manager if it ends without being renewed."

Timers are named ``<contract>:<end date>:<offset>d`` and ``<contract>:<end date>:overdue``; any
contract event cancels the contract's pending timers and plans them again from its current state,
so a renewal (new end date) or a cancellation stops the remaining reminders of the old term.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from typing import Any

from pydantic import Field

from services.rules.builtin.catchup import CatchUp
from services.rules.calendar import at_local
from services.rules.sdk import (
    Action,
    ActionKind,
    CancelTimers,
    Decision,
    Event,
    RuleContext,
    SetTimer,
    Timer,
    Unrouted,
)
from services.rules.state import ContractState, SubjectState
from shared.events.types import ContractCancelled, ContractRenewed, ContractUpserted

PLANNED_STATUSES = ("active", "renewed")
_CONTRACT = frozenset(
    {"contract_id", "end_date", "customer_id", "customer_name", "value", "currency"}
)


class RenewalConfig(CatchUp):
    enabled: bool = True
    offsets_days: list[int] = Field(default_factory=lambda: [60, 30, 7, 1])
    local_time: time = time(9, 0)
    owner_kind: ActionKind = "email"
    notify_customer: bool = False
    escalate_after_days: int = Field(default=1, ge=0)
    remind_auto_renew: bool = True


@dataclass
class ContractRenewal:
    config: RenewalConfig = field(default_factory=RenewalConfig)
    name: str = "renewal"
    templates: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: {
            "renewal_reminder": _CONTRACT | {"days_left"},  # to the owner
            "renewal_customer_notice": _CONTRACT | {"days_left"},  # notify_customer
            "renewal_overdue": _CONTRACT,  # to the owner's manager
        }
    )

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        if not isinstance(event.payload, ContractUpserted | ContractRenewed | ContractCancelled):
            return
        contract_id = event.payload.contract_id
        yield CancelTimers(prefix=f"{contract_id}:")
        contract = subject.contracts.get(contract_id)
        if contract is None or contract.status not in PLANNED_STATUSES:
            return
        if contract.auto_renew and not self.config.remind_auto_renew:
            return
        yield from self._plan(contract, subject, ctx)

    def _plan(
        self, contract: ContractState, subject: SubjectState, ctx: RuleContext
    ) -> Iterator[Decision]:
        tz, end = subject.timezone, contract.end_date
        since = self.config.plan_after(ctx.now)
        base = {"contract_id": contract.contract_id, "end_date": end.isoformat()}
        for days in sorted(set(self.config.offsets_days), reverse=True):
            due = at_local(end - timedelta(days=days), self.config.local_time, tz)
            if due > since:
                yield SetTimer(f"{contract.contract_id}:{end}:{days}d", due, {**base, "days": days})
        overdue_day = end + timedelta(days=self.config.escalate_after_days)
        due = at_local(overdue_day, self.config.local_time, tz)
        if due > since:
            yield SetTimer(f"{contract.contract_id}:{end}:overdue", due, {**base, "overdue": True})

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        contract = subject.contracts.get(str(timer.data.get("contract_id")))
        end = timer.data.get("end_date")
        if contract is None or contract.end_date.isoformat() != end:
            return  # renewed to another date or unknown: this reminder is obsolete
        if contract.status not in PLANNED_STATUSES:
            return
        owner = contract.owner_id or subject.owner_id
        customer = subject.customer
        data: dict[str, Any] = {
            "contract_id": contract.contract_id,
            "end_date": contract.end_date.isoformat(),
            "customer_id": customer.customer_id if customer else None,
            "customer_name": customer.name if customer else None,
            "value": str(contract.value) if contract.value is not None else None,
            "currency": contract.currency,
        }
        key = f"renewal:{contract.contract_id}:{contract.end_date}"
        term = (contract.contract_id, contract.end_date)
        if timer.data.get("overdue"):
            # escalate to the owner's manager; without one, the owner hears it themselves
            manager = ctx.manager_of(owner) or owner
            if manager:
                yield self._to_staff(
                    f"{key}:overdue", manager, "renewal_overdue", data, subject, ctx, timer, term
                )
            else:
                yield Unrouted("no_owner")
            return
        days = int(timer.data["days"])
        data["days_left"] = days
        if owner:
            yield self._to_staff(
                f"{key}:{days}d", owner, "renewal_reminder", data, subject, ctx, timer, term
            )
        else:
            yield Unrouted("no_owner")
        if self.config.notify_customer and customer is not None:
            yield Action.to_customer(
                self.name,
                subject,
                f"{key}:{days}d:customer",
                template="renewal_customer_notice",
                due_at=timer.due_at,
                data=data,
                purpose="renewal_notice",
                term=term,
            )

    def _to_staff(
        self,
        key: str,
        staff_id: str,
        template: str,
        data: dict[str, Any],
        subject: SubjectState,
        ctx: RuleContext,
        timer: Timer,
        term: tuple[str, date],
    ) -> Action:
        """A reminder (``renewal_reminder``) or an escalation (``renewal_overdue``) to staff:
        the template names its purpose."""
        return Action.to_staff(
            self.name,
            subject,
            key,
            staff_id,
            ctx,
            template=template,
            due_at=timer.due_at,
            kind=self.config.owner_kind,
            data=data,
            purpose=template,
            term=term,
        )
