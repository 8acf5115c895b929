"""Who works here: the staff directory analytics keeps from ``upkeep.staff.upserted.v1``
(``analytics_staff``), for three things — the team an owner's figures are also counted under,
whom a manager's scope reaches (everyone under them, through the manager chain), and to whom,
in which time zone and language, reports and budget alerts go.

One document per member of staff; the latest profile (by event time) wins, so a redelivered or
late, older profile changes nothing. No e-mail address or phone is kept here: the notifier
resolves a ``staff`` recipient itself.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from shared.events.types import StaffUpserted
from shared.mongo import Document


@dataclass(frozen=True, slots=True)
class Member:
    staff_id: str
    name: str
    timezone: str = "UTC"
    locale: str = "en"
    manager: str | None = None
    team: str | None = None
    active: bool = True
    at: datetime | None = None  # the time of the profile this is

    @classmethod
    def of(cls, profile: StaffUpserted, at: datetime) -> Member:
        return cls(
            staff_id=profile.staff_id,
            name=profile.name,
            timezone=profile.timezone,
            locale=profile.locale,
            manager=profile.manager_id,
            team=profile.team,
            active=profile.active,
            at=at,
        )


def under(manager: str, members: Mapping[str, Member]) -> frozenset[str]:
    """``manager`` and everyone whose manager chain reaches them (a cycle ends the walk)."""
    reports: dict[str, list[str]] = {}
    for m in members.values():
        if m.manager:
            reports.setdefault(m.manager, []).append(m.staff_id)
    found, todo = {manager}, [manager]
    while todo:
        for report in reports.get(todo.pop(), []):
            if report not in found:
                found.add(report)
                todo.append(report)
    return frozenset(found)


def managers(members: Mapping[str, Member]) -> list[Member]:
    """The active members of staff someone active reports to, by id."""
    bosses = {m.manager for m in members.values() if m.active and m.manager}
    return sorted(
        (members[b] for b in bosses if b in members and members[b].active),
        key=lambda m: m.staff_id,
    )


def teams_within(staff: Iterable[str], members: Mapping[str, Member]) -> frozenset[str]:
    """The teams whose every member is among ``staff`` (a team shared with colleagues outside
    is theirs too)."""
    inside = set(staff)
    teams = {m.team for m in members.values() if m.team and m.staff_id in inside}
    outside = {m.team for m in members.values() if m.team and m.staff_id not in inside}
    return frozenset(teams - outside)


class Directory(abc.ABC):
    """The staff directory."""

    @abc.abstractmethod
    async def apply(self, profiles: Sequence[tuple[StaffUpserted, datetime]]) -> None:
        """Keep each profile unless a later one is known."""

    @abc.abstractmethod
    async def get(self, staff_ids: Collection[str]) -> dict[str, Member]: ...

    @abc.abstractmethod
    async def everyone(self) -> dict[str, Member]: ...


def _member(doc: Document) -> Member:
    at = doc.get("at")
    return Member(
        staff_id=doc["_id"],
        name=str(doc.get("name") or doc["_id"]),
        timezone=doc.get("timezone", "UTC"),
        locale=doc.get("locale", "en"),
        manager=doc.get("manager"),
        team=doc.get("team"),
        active=doc.get("active", True),
        at=at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at,
    )


class MongoDirectory(Directory):
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def apply(self, profiles: Sequence[tuple[StaffUpserted, datetime]]) -> None:
        latest: dict[str, Member] = {}
        for profile, at in profiles:
            member = Member.of(profile, at)
            known = latest.get(member.staff_id)
            if known is None or (known.at is not None and at >= known.at):
                latest[member.staff_id] = member
        ops = []
        for m in latest.values():
            doc = {
                "name": m.name,
                "timezone": m.timezone,
                "locale": m.locale,
                "manager": m.manager,
                "team": m.team,
                "active": m.active,
                "at": m.at,
            }
            # an older profile matches nothing and its upsert collides with the newer one
            ops.append(UpdateOne({"_id": m.staff_id, "at": {"$lte": m.at}}, {"$set": doc}, True))
        if not ops:
            return
        try:
            await self._collection.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    async def get(self, staff_ids: Collection[str]) -> dict[str, Member]:
        if not staff_ids:
            return {}
        cursor = self._collection.find({"_id": {"$in": sorted(staff_ids)}})
        return {doc["_id"]: _member(doc) async for doc in cursor}

    async def everyone(self) -> dict[str, Member]:
        return {doc["_id"]: _member(doc) async for doc in self._collection.find({})}
