"""Retention tied to the replay horizon (``UPKEEP_REPLAY_HORIZON_DAYS``): how long the topics
that can be replayed keep their records, and how long MongoDB keeps what makes a replay harmless.

**Why the guards outlive the topics.** A replay repeats nothing only while the document that
guards each replayed record still exists: ingest's de-duplication claim, the notifier's ledger
entry, analytics' fact claim. The topics keep a record ``horizon`` days after it was written, and
Kafka deletes whole segments only (a segment goes once its *newest* record is past retention),
so a record may be read up to ``segment.ms`` later still — 7 days, set on those topics so that
bound holds whatever the broker's defaults. A guard is written when its record is handled, never
before the record was written, and is kept ``horizon + GRACE_DAYS`` days from then: longer than
any replay can reach back.

**Why TTLs count from a date in the document** (``expireAfterSeconds`` = the guard period) and not
to an absolute expiry date: a changed horizon then applies to every document at the next start (the
index is dropped and created again), not only to those written afterwards, so raising it never
leaves guards that expire before their records. A document without that date — a pending ledger
entry, an open task, a claim that must last — never expires.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure

from shared.mongo import Document
from shared.settings import DEFAULT_REPLAY_HORIZON_DAYS

log = logging.getLogger(__name__)

DAY_S = 24 * 3600
SEGMENT_DAYS = 7  # segment.ms of the topics kept for the horizon
GRACE_DAYS = SEGMENT_DAYS + 1  # a segment's lifetime beyond retention, and a day for clocks
INDEX_NOT_FOUND = 27
INDEX_CONFLICTS = (85, 86)  # an index of that name exists with other options


def topic_retention_ms(horizon_days: int) -> int:
    """``retention.ms`` of the topics a replay reads."""
    return horizon_days * DAY_S * 1000


def segment_ms() -> int:
    return SEGMENT_DAYS * DAY_S * 1000


def guard_days(horizon_days: int) -> int:
    """How long a replay guard is kept after its record was handled."""
    return horizon_days + GRACE_DAYS


def guard_period(horizon_days: int) -> timedelta:
    return timedelta(days=guard_days(horizon_days))


DEFAULT_GUARD = guard_period(DEFAULT_REPLAY_HORIZON_DAYS)  # what stores keep unless told


@dataclass(frozen=True, slots=True)
class TtlIndex:
    """Documents expire ``seconds`` after the date in ``field``; documents without a date there
    (or outside the partial filter ``only``) never do. MongoDB's monitor deletes them within a
    minute or so of that moment (it runs every 60 s)."""

    name: str
    field: str
    seconds: int
    only: Mapping[str, Any] | None = None  # partialFilterExpression

    def options(self) -> Document:
        options: Document = {"name": self.name, "expireAfterSeconds": self.seconds}
        if self.only:
            options["partialFilterExpression"] = dict(self.only)
        return options


async def ensure_ttl_index(collection: AsyncCollection[Document], ttl: TtlIndex) -> None:
    """Create the index, or — if it exists on the same field with another
    ``expireAfterSeconds`` (the horizon was changed) — drop it and create it again, which
    applies to the documents already stored. (``collMod`` would change it in place, but the
    services' ``readWrite`` user may not run it on mongod, while it may drop and create
    indexes; for the moment between the two, nothing expires — harmless.) Any other conflict
    under the same name (another field or filter) is raised."""
    try:
        await collection.create_index([(ttl.field, ASCENDING)], **ttl.options())
    except OperationFailure as exc:
        # mongod answers 85 (IndexOptionsConflict); some MongoDB-wire servers 86
        if exc.code not in INDEX_CONFLICTS:
            raise
        existing = (await collection.index_information()).get(ttl.name, {})
        same_index = list(existing.get("key", [])) == [(ttl.field, ASCENDING)] and dict(
            existing.get("partialFilterExpression", {})
        ) == dict(ttl.only or {})
        if not same_index:
            raise
        try:
            await collection.drop_index(ttl.name)
        except OperationFailure as dropped:
            if dropped.code != INDEX_NOT_FOUND:  # another replica dropped it first: fine
                raise
        try:
            await collection.create_index([(ttl.field, ASCENDING)], **ttl.options())
        except OperationFailure as again:
            # another replica created it meanwhile; with the wanted options, that is done
            current = (await collection.index_information()).get(ttl.name, {})
            if again.code not in INDEX_CONFLICTS or current.get("expireAfterSeconds") != (
                ttl.seconds
            ):
                raise
        log.warning(
            "TTL index changed to the configured retention",
            extra={
                "collection": collection.name,
                "index": ttl.name,
                "before_s": existing.get("expireAfterSeconds"),
                "seconds": ttl.seconds,
            },
        )
