"""Whether, and when, an action may be delivered: recipient preferences per category and
channel, unsubscribes and the suppression list, frequency caps, quiet hours.

:func:`decide` is a pure function of what the dispatcher loaded; the stores below keep the
preferences and the suppression list (hard bounces, addresses refused by their server).
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from pydantic import AwareDatetime, BaseModel, Field
from pymongo.asynchronous.collection import AsyncCollection

from services.notifier.directory import Contact
from services.notifier.entry import Entry
from shared.calendar import at_local, local_date
from shared.events.fields import zone
from shared.mongo import Document

MARKETING = "marketing"  # the category every non-transactional message belongs to


class Preferences(BaseModel):
    """A recipient's choices. ``categories`` maps "marketing" or a rule name to opted in/out;
    ``channels`` maps a delivery kind (email, chat, webhook) to allowed or not."""

    recipient: str
    categories: dict[str, bool] = Field(default_factory=dict)
    channels: dict[str, bool] = Field(default_factory=dict)
    updated_at: AwareDatetime | None = None


@dataclass(frozen=True, slots=True)
class Send:
    pass


@dataclass(frozen=True, slots=True)
class Suppress:
    reason: str


@dataclass(frozen=True, slots=True)
class Defer:
    until: datetime
    reason: str


Decision = Send | Suppress | Defer


@dataclass(frozen=True, slots=True)
class Rules:
    """The policy settings (from :class:`~services.notifier.settings.NotifierSettings`)."""

    quiet_start: time | None = time(21, 0)
    quiet_end: time | None = time(8, 0)
    quiet_transactional: bool = True
    marketing_cap: int = 3
    marketing_cap_window: timedelta = field(default=timedelta(days=7))


def decide(
    entry: Entry,
    contact: Contact,
    prefs: Preferences | None,
    *,
    suppressed: bool,
    marketing_sent: int,
    now: datetime,
    rules: Rules,
) -> Decision:
    action = entry.action
    if action.kind == "task":
        return Send()  # work for a colleague: no preferences, caps or quiet hours
    if not contact.active:
        return Suppress("inactive_recipient")
    marketing = action.priority == MARKETING
    if prefs is not None and prefs.channels.get(action.kind) is False:
        return Suppress("channel_opt_out")
    if marketing:
        if not contact.marketing_opt_in or (prefs and prefs.categories.get(MARKETING) is False):
            return Suppress("unsubscribed")
        if prefs is not None and prefs.categories.get(action.rule) is False:
            return Suppress("category_opt_out")
    if action.kind == "email" and suppressed:
        return Suppress("suppressed_address")
    if marketing and marketing_sent >= rules.marketing_cap:
        return Suppress("frequency_cap")
    if action.kind in ("email", "chat") and (marketing or rules.quiet_transactional):
        until = quiet_until(now, contact.timezone, rules.quiet_start, rules.quiet_end)
        if until is not None:
            return Defer(until, "quiet_hours")
    return Send()


def quiet_until(now: datetime, tz: str, start: time | None, end: time | None) -> datetime | None:
    """The end of the quiet hours ``now`` falls in, in the recipient's zone; ``None`` outside
    them. A window such as 21:00-08:00 spans midnight."""
    if start is None or end is None or start == end:
        return None
    wall = now.astimezone(zone(tz)).time().replace(tzinfo=None)
    day = local_date(now, tz)
    if start < end:
        quiet, end_day = start <= wall < end, day
    else:
        quiet = wall >= start or wall < end
        end_day = day + timedelta(days=1) if wall >= start else day
    if not quiet:
        return None
    # the end's wall time may happen twice (clocks going back): the first instance after now
    instances = [
        datetime.combine(end_day, end).replace(tzinfo=zone(tz), fold=fold).astimezone(UTC)
        for fold in (0, 1)
    ]
    later = [moment for moment in instances if moment > now]
    return min(later) if later else at_local(end_day + timedelta(days=1), end, tz)


class PolicyStore(abc.ABC):
    @abc.abstractmethod
    async def preferences(self, recipients: Collection[str]) -> dict[str, Preferences]: ...

    @abc.abstractmethod
    async def set_preferences(self, prefs: Preferences) -> None: ...

    @abc.abstractmethod
    async def suppressed(self, addresses: Collection[str]) -> set[str]: ...

    @abc.abstractmethod
    async def suppress(self, address: str, reason: str, at: datetime) -> None: ...

    @abc.abstractmethod
    async def unsuppress(self, address: str) -> bool: ...


class MongoPolicyStore(PolicyStore):
    def __init__(
        self, preferences: AsyncCollection[Document], suppressions: AsyncCollection[Document]
    ) -> None:
        self._preferences, self._suppressions = preferences, suppressions

    async def preferences(self, recipients: Collection[str]) -> dict[str, Preferences]:
        if not recipients:
            return {}
        cursor = self._preferences.find({"_id": {"$in": sorted(recipients)}})
        return {doc["_id"]: Preferences.model_validate(doc) async for doc in cursor}

    async def set_preferences(self, prefs: Preferences) -> None:
        doc = {"_id": prefs.recipient, **prefs.model_dump(mode="python")}
        await self._preferences.replace_one({"_id": prefs.recipient}, doc, upsert=True)

    async def suppressed(self, addresses: Collection[str]) -> set[str]:
        if not addresses:
            return set()
        cursor = self._suppressions.find({"_id": {"$in": sorted(addresses)}}, {"_id": 1})
        return {doc["_id"] async for doc in cursor}

    async def suppress(self, address: str, reason: str, at: datetime) -> None:
        await self._suppressions.update_one(
            {"_id": address.lower()},
            {"$set": {"reason": reason, "at": at}},
            upsert=True,
        )

    async def unsuppress(self, address: str) -> bool:
        result = await self._suppressions.delete_one({"_id": address.lower()})
        return result.deleted_count == 1


class InMemoryPolicyStore(PolicyStore):
    def __init__(self) -> None:
        self.prefs: dict[str, Preferences] = {}
        self.suppressions: dict[str, str] = {}

    async def preferences(self, recipients: Collection[str]) -> dict[str, Preferences]:
        return {r: self.prefs[r] for r in recipients if r in self.prefs}

    async def set_preferences(self, prefs: Preferences) -> None:
        self.prefs[prefs.recipient] = prefs

    async def suppressed(self, addresses: Collection[str]) -> set[str]:
        return {a for a in addresses if a.lower() in self.suppressions}

    async def suppress(self, address: str, reason: str, at: datetime) -> None:
        self.suppressions[address.lower()] = reason

    async def unsuppress(self, address: str) -> bool:
        return self.suppressions.pop(address.lower(), None) is not None
