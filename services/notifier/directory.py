"""Who the notifier can reach: a contact per customer, channel (a distributor's own address)
and member of staff, kept from the profile events on ``upkeep.events.v1`` (the notifier owns
its copy, so delivering never asks another service). An older profile snapshot never
overwrites a newer one.

A recipient is found by ``<kind>:<id>`` whatever its kind; what is sent to a channel is
transactional unless its action says marketing, as for a customer."""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable
from datetime import datetime

from pydantic import AwareDatetime, BaseModel
from pymongo import ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection

from shared.events.envelope import CanonicalEvent
from shared.events.types import ChannelUpserted, CustomerUpserted, EventPayload, StaffUpserted
from shared.mongo import Document


class Contact(BaseModel):
    id: str  # "customer:C-1", "channel:CH-1", "staff:S-1" — the recipient of an action
    name: str | None = None
    email: str | None = None
    locale: str = "en"
    timezone: str = "UTC"
    chat_webhook_url: str | None = None
    chat_platform: str | None = None
    marketing_opt_in: bool = True
    active: bool = True
    updated_at: AwareDatetime


def contact_from(event: CanonicalEvent, payload: EventPayload) -> Contact | None:
    """The contact a profile event describes; ``None`` for every other event."""
    at: datetime = getattr(payload, "updated_at", None) or event.time
    if isinstance(payload, CustomerUpserted):
        return Contact(
            id=f"customer:{payload.customer_id}",
            name=payload.name,
            email=payload.email,
            locale=payload.locale,
            timezone=payload.timezone,
            marketing_opt_in=payload.marketing_opt_in,
            updated_at=at,
        )
    if isinstance(payload, ChannelUpserted):
        return Contact(
            id=f"channel:{payload.channel_id}",
            name=payload.name,
            email=payload.email,
            locale=payload.locale,
            timezone=payload.timezone,
            active=payload.active,
            updated_at=at,
        )
    if isinstance(payload, StaffUpserted):
        return Contact(
            id=f"staff:{payload.staff_id}",
            name=payload.name,
            email=payload.email,
            locale=payload.locale,
            timezone=payload.timezone,
            chat_webhook_url=str(payload.chat_webhook_url) if payload.chat_webhook_url else None,
            chat_platform=payload.chat_platform,
            active=payload.active,
            updated_at=at,
        )
    return None


def newest(contacts: Iterable[Contact]) -> list[Contact]:
    """One contact per id: the most recent snapshot of each."""
    found: dict[str, Contact] = {}
    for c in contacts:
        if c.id not in found or c.updated_at >= found[c.id].updated_at:
            found[c.id] = c
    return list(found.values())


class Directory(abc.ABC):
    @abc.abstractmethod
    async def upsert(self, contacts: Collection[Contact]) -> None: ...

    @abc.abstractmethod
    async def get(self, ids: Collection[str]) -> dict[str, Contact]: ...


class MongoDirectory(Directory):
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def upsert(self, contacts: Collection[Contact]) -> None:
        contacts = newest(contacts)
        if not contacts:
            return
        stored = await self.get([c.id for c in contacts])
        ops = [
            ReplaceOne({"_id": c.id}, {"_id": c.id, **c.model_dump(mode="python")}, upsert=True)
            for c in contacts
            if c.id not in stored or c.updated_at >= stored[c.id].updated_at
        ]
        if ops:
            await self._collection.bulk_write(ops, ordered=False)

    async def get(self, ids: Collection[str]) -> dict[str, Contact]:
        if not ids:
            return {}
        return {
            doc["_id"]: Contact.model_validate(doc)
            async for doc in self._collection.find({"_id": {"$in": sorted(ids)}})
        }


class InMemoryDirectory(Directory):
    def __init__(self) -> None:
        self.contacts: dict[str, Contact] = {}

    async def upsert(self, contacts: Collection[Contact]) -> None:
        for c in newest(contacts):
            old = self.contacts.get(c.id)
            if old is None or c.updated_at >= old.updated_at:
                self.contacts[c.id] = c

    async def get(self, ids: Collection[str]) -> dict[str, Contact]:
        return {i: self.contacts[i] for i in ids if i in self.contacts}
