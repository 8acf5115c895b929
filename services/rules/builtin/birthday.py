"""Birthdays and anniversaries: "greet the customer on their birthday at 09:00 their time, and
thank them on the 1st, 2nd, 5th, 10th … anniversary of becoming a customer."

One pending timer per kind: ``birthday:<year>`` and ``anniversary:<years>``; each fired timer
plans the next one, and a profile change re-plans both. A customer without an e-mail address is
greeted by their owner instead (a task).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

from pydantic import Field

from services.rules.builtin.catchup import CatchUp
from services.rules.calendar import Feb29Policy, anniversary_in, at_local, next_anniversary_moment
from services.rules.sdk import Action, CancelTimers, Decision, Event, RuleContext, SetTimer, Timer
from services.rules.state import CustomerState, SubjectState
from shared.events.types import CustomerUpserted

_CUSTOMER = frozenset({"customer_id", "customer_name"})


class BirthdayConfig(CatchUp):
    enabled: bool = True
    local_time: time = time(9, 0)
    feb29: Feb29Policy = "feb28"
    birthdays: bool = True
    anniversary_years: list[int] = Field(default_factory=lambda: [1, 2, 3, 5, 10, 15, 20, 25])


@dataclass
class BirthdaysAndAnniversaries:
    config: BirthdayConfig = field(default_factory=BirthdayConfig)
    name: str = "birthday"
    # a customer without an e-mail address is greeted by their owner: the ``_task`` variants
    templates: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: {
            "birthday_greeting": _CUSTOMER | {"year"},
            "birthday_greeting_task": _CUSTOMER | {"year"},
            "customer_anniversary": _CUSTOMER | {"years"},
            "customer_anniversary_task": _CUSTOMER | {"years"},
        }
    )

    def on_event(self, event: Event, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        if not isinstance(event.payload, CustomerUpserted) or subject.customer is None:
            return
        yield CancelTimers(prefix="birthday:")
        yield CancelTimers(prefix="anniversary:")
        since = self.config.plan_after(ctx.now)
        yield from self._plan_birthday(subject.customer, since)
        yield from self._plan_anniversary(subject.customer, since)

    def _plan_birthday(self, customer: CustomerState, after: datetime) -> Iterator[Decision]:
        """The next greeting after ``after`` (an event: now less the catch-up; a fired
        greeting: its own moment, so it is never planned again)."""
        if not self.config.birthdays or customer.birthday is None:
            return
        year, due = next_anniversary_moment(
            customer.birthday,
            self.config.local_time,
            customer.timezone,
            after,
            self.config.feb29,
        )
        yield SetTimer(f"birthday:{year}", due, {"year": year})

    def _plan_anniversary(self, customer: CustomerState, after: datetime) -> Iterator[Decision]:
        since = customer.customer_since
        if since is None:
            return
        for years in sorted(set(self.config.anniversary_years)):
            day = anniversary_in(since, since.year + years, self.config.feb29)
            due = at_local(day, self.config.local_time, customer.timezone)
            if due > after:
                yield SetTimer(f"anniversary:{years}", due, {"years": years})
                return

    def on_timer(self, timer: Timer, subject: SubjectState, ctx: RuleContext) -> Iterator[Decision]:
        customer = subject.customer
        if customer is None:
            return
        if timer.name.startswith("birthday:") and customer.birthday is not None:
            year = int(timer.data["year"])
            yield self._greeting(
                f"birthday:{customer.customer_id}:{year}",
                "birthday_greeting",
                customer,
                subject,
                ctx,
                timer,
                {"year": year},
            )
            yield from self._plan_birthday(customer, timer.due_at)
        elif timer.name.startswith("anniversary:") and customer.customer_since is not None:
            years = int(timer.data["years"])
            yield self._greeting(
                f"birthday:anniversary:{customer.customer_id}:{years}y",
                "customer_anniversary",
                customer,
                subject,
                ctx,
                timer,
                {"years": years},
            )
            yield from self._plan_anniversary(customer, timer.due_at)

    def _greeting(
        self,
        key: str,
        template: str,
        customer: CustomerState,
        subject: SubjectState,
        ctx: RuleContext,
        timer: Timer,
        extra: dict[str, Any],
    ) -> Action:
        data = {"customer_id": customer.customer_id, "customer_name": customer.name, **extra}
        if customer.email is None and customer.owner_id is not None:
            return Action.task(
                self.name,
                subject,
                key,
                customer.owner_id,
                ctx,
                template=f"{template}_task",
                due_at=timer.due_at,
                data=data,
                purpose="greeting",
            )
        return Action.to_customer(
            self.name,
            subject,
            key,
            template=template,
            due_at=timer.due_at,
            priority="marketing",
            data=data,
            purpose="greeting",
        )
