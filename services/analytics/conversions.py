"""Reminder-to-renewal conversion: which reminded contract terms were then renewed.

A term (contract, end date) *converts* when, at or after its first reminder was sent, the
contract is renewed to a later end date. The reminder (``upkeep.deliveries.v1``) and the renewal
(``upkeep.events.v1``) arrive on different topics, in either order, so each contract keeps one
document that both sides write to, order-free and idempotently (``$min`` of the first reminder
per term and of the first renewal per new end date)::

    {_id: contract, subject, reminded: {"2026-12-31": first sent}, renewed: {"2027-12-31": at}}

After writing, every record that touched a contract reads the document back and emits a
``converted:<contract>:<end>`` fact for each term it shows converted. The document only grows,
so whichever side arrives second sees the pair, and a redelivered record sees it again; the
fact's identity claim (rule 1 in :mod:`services.analytics.aggregates`) counts it once, at the
time stored with the claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from services.analytics.aggregates import Placed
from services.analytics.facts import Fact, Touch
from shared.mongo import Document


def converted(doc: Document) -> list[Fact]:
    """The conversions one contract's document shows: for each reminded term, the first renewal
    to a later end date at or after the reminder."""
    renewals = [(date.fromisoformat(end), at) for end, at in doc.get("renewed", {}).items()]
    facts = []
    for end_text, reminded_at in sorted(doc.get("reminded", {}).items()):
        end = date.fromisoformat(end_text)
        after: list[datetime] = [at for new, at in renewals if new > end and at >= reminded_at]
        if after:
            facts.append(
                Fact(
                    f"converted:{doc['_id']}:{end_text}",
                    min(after),
                    {"renewals.converted": 1},
                    doc.get("subject"),
                )
            )
    return facts


class Conversions:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def record(self, touches: Sequence[tuple[Touch, Placed]]) -> list[Placed]:
        """Write a batch's touches; returns the conversion facts they show, each carried by the
        first record of the batch that touched its contract."""
        if not touches:
            return []
        firsts: dict[str, dict[str, datetime]] = {}
        subjects: dict[str, str] = {}
        carrier: dict[str, Placed] = {}
        for touch, placed in touches:
            slot = f"{touch.kind}.{touch.end.isoformat()}"
            seen = firsts.setdefault(touch.contract, {})
            seen[slot] = min(seen.get(slot, touch.at), touch.at)
            subjects.setdefault(touch.contract, touch.subject)
            carrier.setdefault(touch.contract, placed)
        ops = [
            UpdateOne(
                {"_id": contract},
                {"$min": slots, "$setOnInsert": {"subject": subjects[contract]}},
                upsert=True,
            )
            for contract, slots in firsts.items()
        ]
        try:
            await self._collection.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
            # another replica inserted the same contract at the same moment: now it exists
            await self._collection.bulk_write(ops, ordered=False)
        found = []
        async for doc in self._collection.find({"_id": {"$in": sorted(carrier)}}):
            by = carrier[doc["_id"]]
            found += [Placed(fact, by.topic, by.partition, by.offset) for fact in converted(doc)]
        return found
