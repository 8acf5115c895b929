"""Where recipients' preferences and suppressed addresses are kept (MongoDB, or memory for
tests): what :func:`services.notifier.policy.decide` is given, read once per tick."""

from __future__ import annotations

import abc
from collections.abc import Collection
from datetime import datetime

from pymongo.asynchronous.collection import AsyncCollection

from services.notifier.policy import Preferences
from shared.mongo import Document


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
