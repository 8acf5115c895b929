"""Where journeys are kept: MongoDB collections ``journeys`` (one document per journey: its
current version and state) and ``journey_versions`` (every version's definition, and every
change with who made it). An in-memory twin serves the unit tests.

A ``PUT`` whose definition equals the current version's changes nothing (``apply`` of a
directory is idempotent); a different one becomes the next version. Versions are never
deleted: runs still on an old version finish on it.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from services.rules.journeys.catalog import Catalog, Published
from services.rules.journeys.definition import Journey
from shared.mongo import Document

log = logging.getLogger(__name__)


class Conflict(RuntimeError):
    """Another writer made a new version at the same moment: try again."""


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a journey's history."""

    name: str
    version: int
    what: str  # created | updated | enabled | disabled | deleted | restored
    by: str
    at: datetime
    summary: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "what": self.what,
            "by": self.by,
            "at": self.at.isoformat(),
            "summary": self.summary,
        }


def summarise(before: Journey | None, after: Journey) -> list[str]:
    """What a new version changes, in words a reviewer reads: the top-level parts and the
    steps added, removed or changed."""
    if before is None:
        return [f"created with {len(after.steps)} steps"]
    old, new = before.definition(), after.definition()
    lines = [
        f"{key} changed"
        for key in sorted((set(old) | set(new)) - {"steps"})
        if old.get(key) != new.get(key)
    ]
    old_steps = {s["id"]: s for s in old["steps"]}
    new_steps = {s["id"]: s for s in new["steps"]}
    lines += [f"step {i} added" for i in new_steps if i not in old_steps]
    lines += [f"step {i} removed" for i in old_steps if i not in new_steps]
    lines += [
        f"step {i} changed" for i in new_steps if i in old_steps and old_steps[i] != new_steps[i]
    ]
    if not lines and list(old_steps) != list(new_steps):
        lines.append("steps reordered")
    return lines


class JourneyStore(abc.ABC):
    @abc.abstractmethod
    async def all(self) -> list[Published]:
        """Every journey's current version (deleted ones too: their runs still need them)."""

    @abc.abstractmethod
    async def versions(self) -> list[tuple[int, Journey]]:
        """Every version of every journey."""

    @abc.abstractmethod
    async def history(self, name: str) -> list[Change]: ...

    @abc.abstractmethod
    async def _write(
        self, previous: Published | None, new: Published, change: Change, version_new: bool
    ) -> None:
        """Store ``new`` in place of ``previous`` (:class:`Conflict` if that changed meanwhile)
        and record ``change``."""

    async def get(self, name: str) -> Published | None:
        return next((p for p in await self.all() if p.name == name), None)

    async def put(
        self, journey: Journey, by: str, enabled: bool | None = None
    ) -> tuple[Published, Change | None]:
        """Store ``journey`` as the next version unless it equals the current one; ``enabled``
        (when given) switches it on or off too. Returns the journey and the change made
        (``None``: nothing changed)."""
        previous = await self.get(journey.name)
        now = datetime.now(UTC)
        requested = enabled if enabled is not None else journey.enabled
        # a new journey (or one deleted) starts switched off unless asked; an existing one
        # keeps its state, a new version too
        wanted = bool(requested)
        if previous is not None and not previous.deleted:
            same = previous.journey.definition() == journey.definition()
            wanted = previous.enabled if requested is None else requested
            if same and wanted == previous.enabled:
                return previous, None
            if same:
                return await self.set_enabled(journey.name, wanted, by)
        version = previous.version + 1 if previous is not None else 1
        new = Published(
            name=journey.name,
            version=version,
            journey=journey,
            enabled=wanted,
            updated_at=now,
            updated_by=by,
        )
        what = "created" if previous is None else "restored" if previous.deleted else "updated"
        before = previous.journey if previous is not None else None
        change = Change(journey.name, version, what, by, now, summarise(before, journey))
        await self._write(previous, new, change, version_new=True)
        return new, change

    async def set_enabled(self, name: str, enabled: bool, by: str) -> tuple[Published, Change]:
        previous = await self._existing(name)
        now = datetime.now(UTC)
        new = _replace(previous, enabled=enabled, updated_at=now, updated_by=by)
        what = "enabled" if enabled else "disabled"
        change = Change(name, previous.version, what, by, now, [])
        await self._write(previous, new, change, version_new=False)
        return new, change

    async def delete(self, name: str, by: str) -> tuple[Published, Change]:
        """Deleted: no new entries, runs leave at their next step; its versions stay."""
        previous = await self._existing(name)
        now = datetime.now(UTC)
        new = _replace(previous, enabled=False, deleted=True, updated_at=now, updated_by=by)
        change = Change(name, previous.version, "deleted", by, now, [])
        await self._write(previous, new, change, version_new=False)
        return new, change

    async def _existing(self, name: str) -> Published:
        found = await self.get(name)
        if found is None or found.deleted:
            raise KeyError(name)
        return found


def _replace(published: Published, **changes: Any) -> Published:
    from dataclasses import replace

    return replace(published, **changes)


def _current_doc(p: Published) -> Document:
    return {
        "_id": p.name,
        "version": p.version,
        "enabled": p.enabled,
        "deleted": p.deleted,
        "definition": p.journey.definition(),
        "updated_at": p.updated_at,
        "updated_by": p.updated_by,
    }


def _journey(doc: Document) -> Journey | None:
    """A stored definition, or ``None`` (logged) for one that no longer validates — written by
    hand into MongoDB, or by a version whose model has since changed: one such document must
    not keep the catalogue (and the rules service) from loading."""
    try:
        return Journey.model_validate(doc.get("definition"))
    except ValidationError as exc:
        log.error(
            "stored journey does not validate; skipped",
            extra={"journey_doc": str(doc.get("_id")), "errors": exc.error_count()},
        )
        return None


def _published(doc: Document) -> Published | None:
    journey = _journey(doc)
    if journey is None:
        return None
    return Published(
        name=doc["_id"],
        version=int(doc["version"]),
        journey=journey,
        enabled=bool(doc["enabled"]),
        deleted=bool(doc.get("deleted", False)),
        updated_at=doc.get("updated_at"),
        updated_by=doc.get("updated_by"),
    )


class MongoJourneyStore(JourneyStore):
    def __init__(
        self, journeys: AsyncCollection[Document], versions: AsyncCollection[Document]
    ) -> None:
        self._journeys = journeys
        self._versions = versions

    async def ensure_indexes(self) -> None:
        await self._versions.create_index([("name", ASCENDING), ("at", ASCENDING)], name="name_at")

    async def all(self) -> list[Published]:
        found = [_published(doc) async for doc in self._journeys.find({})]
        return [p for p in found if p is not None]

    async def versions(self) -> list[tuple[int, Journey]]:
        found = []
        async for doc in self._versions.find({"kind": "version"}):
            if (journey := _journey(doc)) is not None:
                found.append((int(doc["version"]), journey))
        return found

    async def history(self, name: str) -> list[Change]:
        cursor = self._versions.find({"name": name}).sort("at", DESCENDING)
        return [
            Change(d["name"], d["version"], d["what"], d["by"], d["at"], d.get("summary", []))
            async for d in cursor
        ]

    async def _write(
        self, previous: Published | None, new: Published, change: Change, version_new: bool
    ) -> None:
        entry: Document = {
            "name": change.name,
            "version": change.version,
            "what": change.what,
            "by": change.by,
            "at": change.at,
            "summary": change.summary,
            "kind": "version" if version_new else "change",
        }
        if version_new:
            entry["_id"] = f"{new.name}@v{new.version}"
            entry["definition"] = new.journey.definition()
            try:
                await self._versions.insert_one(entry)
            except DuplicateKeyError:
                raise Conflict(f"{new.name} v{new.version} was written meanwhile") from None
        if previous is None:
            try:
                await self._journeys.insert_one(_current_doc(new))
            except DuplicateKeyError:
                raise Conflict(f"{new.name} was created meanwhile") from None
        else:
            guard = {
                "_id": new.name,
                "version": previous.version,
                "updated_at": previous.updated_at,
            }
            done = await self._journeys.replace_one(guard, _current_doc(new))
            if done.matched_count != 1:
                raise Conflict(f"{new.name} changed meanwhile")
        if not version_new:
            await self._versions.insert_one(entry)


class InMemoryJourneyStore(JourneyStore):
    def __init__(self) -> None:
        self.current: dict[str, Published] = {}
        self.all_versions: list[tuple[int, Journey]] = []
        self.changes: list[Change] = []

    async def all(self) -> list[Published]:
        return list(self.current.values())

    async def versions(self) -> list[tuple[int, Journey]]:
        return list(self.all_versions)

    async def history(self, name: str) -> list[Change]:
        return [c for c in reversed(self.changes) if c.name == name]

    async def _write(
        self, previous: Published | None, new: Published, change: Change, version_new: bool
    ) -> None:
        if self.current.get(new.name) != previous:
            raise Conflict(f"{new.name} changed meanwhile")
        self.current[new.name] = new
        if version_new:
            self.all_versions.append((new.version, new.journey))
        self.changes.append(change)


async def refresh(store: JourneyStore, into: Catalog) -> None:
    """Read the catalogue's snapshot from ``store`` into ``into`` (a :class:`Catalog`)."""
    into.replace(await store.all(), await store.versions())
