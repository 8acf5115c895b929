"""Exact, batched aggregates in MongoDB.

**Why the counters are exact under at-least-once delivery.** Three rules, each a single-document
atomic write:

1. *Identity.* Every fact is first claimed in ``facts`` under its identity (``_id``), together
   with the position of the record that carries it (topic, partition, offset) and its
   attribution (owner, channel, tier as known then). A fact counts only for the record whose
   position is stored: the same occurrence arriving in another record (an action republished
   with the same key, an outcome published again after a crash) is a repeat and counts nothing.
   A redelivered record finds its own position and counts again — rule 2 keeps that from
   counting twice — and is attributed, and placed in time, exactly as the first time.
2. *Offset guard.* Each bucket document keeps, per source partition, the last offset whose
   increments it holds. A batch adds to a bucket only what comes from records after that
   offset, and sets it — ``$inc`` and ``$set`` in one update, conditional on the offset it read.
   A batch redelivered after a crash (whatever its boundaries) adds only what the bucket has
   not seen; a replay from offset 0 adds nothing.
3. *One write per touched bucket per batch* (unordered bulk): the batch is pre-aggregated in
   memory first.

If the conditional update finds the offset moved (another writer: a zombie replica), the batch
fails with a transient error and is recomputed from fresh reads.

**Scoped facts.** A fact with a ``scope`` (a journey's: its steps mean something only within
it) is counted in the buckets of that one dimension's value and not overall, and also in one
all-time bucket of it (granularity ``total``, starting at :data:`ALL_TIME`), under the same three
rules; the journeys' figures without a window are read from there.

**Retention.** A claim of one occurrence carries ``claimed_at`` and a TTL index deletes it the
replay horizon plus its grace later (:mod:`shared.retention`): by then every record that could
carry it is gone from the topics. Claims that distinct records share
(:data:`services.analytics.facts.LASTING_CLAIMS`) have no ``claimed_at`` and are kept. Hour
buckets are deleted ``keep_hours`` after their start (``UPKEEP_ANALYTICS_HOUR_BUCKET_DAYS``);
day buckets, from which weeks and months are summed, are kept.
"""

from __future__ import annotations

import abc
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

from pymongo import ASCENDING, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from services.analytics.facts import Fact, claim_expires
from shared.events.fields import zone
from shared.mongo import Document
from shared.retention import DEFAULT_GUARD, TtlIndex, ensure_ttl_index
from shared.settings import DEFAULT_REPLAY_HORIZON_DAYS

GRANULARITIES = ("hour", "day")  # stored
ROLLUPS = ("week", "month")  # summed from the days when asked
TOTAL = "total"  # the all-time bucket of a scoped fact's value
ALL_TIME = datetime(1970, 1, 1, tzinfo=UTC)  # where it starts
DIMENSIONS = ("rule", "kind", "owner", "channel", "tier", "team")
SUBJECT_KINDS = ("customer", "channel")  # what may be owned


class GuardMoved(ConnectionError):
    """A bucket changed between our read and our write: recompute the batch (transient)."""


@dataclass(frozen=True, slots=True)
class Placed:
    """A fact and the record that carries it."""

    fact: Fact
    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> str:
        return f"{self.topic}|{self.partition}".replace(".", "_")


def field(counter: str) -> str:
    """Counter names carry dots (``events.customer.upserted``); stored keys cannot."""
    return counter.replace(".", "~")


def counter_name(stored: str) -> str:
    return stored.replace("~", ".")


def bucket_start(at: datetime, granularity: str, tz: str) -> datetime:
    """The UTC instant a bucket starts: the hour or the day, in the reporting time zone."""
    local = at.astimezone(zone(tz))
    if granularity == "hour":
        local = local.replace(minute=0, second=0, microsecond=0)
    else:
        # fold=0: on a day whose midnight repeats (clocks back at 01:00), the first midnight
        local = local.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
    return local.astimezone(UTC)


def bucket_id(granularity: str, start: datetime, dim: str, value: str) -> str:
    return f"{granularity}|{start.isoformat()}|{dim}|{value}"


class Attribution(abc.ABC):
    """Who a subject belongs to (owner, channel, tier), kept from profile events."""

    @abc.abstractmethod
    async def get(self, subjects: Collection[str]) -> dict[str, dict[str, str]]: ...

    @abc.abstractmethod
    async def update(self, changes: Mapping[str, Mapping[str, str]]) -> None: ...

    @abc.abstractmethod
    async def at_risk(self) -> dict[str, dict[str, str]]:
        """Customers whose last churn-risk change put them at risk."""

    @abc.abstractmethod
    async def unowned(self) -> dict[str, int]:
        """How many customers and channels have no owner now, by kind."""

    @abc.abstractmethod
    async def owned(self, kind: str, owners: Collection[str]) -> set[str]:
        """The ids of the customers or channels (``kind``) one of ``owners`` owns now."""


class MongoAttribution(Attribution):
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    async def get(self, subjects: Collection[str]) -> dict[str, dict[str, str]]:
        if not subjects:
            return {}
        cursor = self._collection.find({"_id": {"$in": sorted(subjects)}})
        return {doc["_id"]: dict(doc.get("dims", {})) async for doc in cursor}

    async def update(self, changes: Mapping[str, Mapping[str, str]]) -> None:
        # a profile without owner or channel is known too: it counts as unowned
        ops = [
            UpdateOne(
                {"_id": subject},
                {"$set": {f"dims.{k}": v for k, v in dims.items()}}
                if dims
                else {"$setOnInsert": {"dims": {}}},
                upsert=True,
            )
            for subject, dims in changes.items()
        ]
        if ops:
            await self._collection.bulk_write(ops, ordered=False)

    async def at_risk(self) -> dict[str, dict[str, str]]:
        cursor = self._collection.find({"dims.at_risk": "yes"}).limit(1000)
        return {doc["_id"]: dict(doc.get("dims", {})) async for doc in cursor}

    async def unowned(self) -> dict[str, int]:
        # the subjects of a kind are the ids from "<kind>:" up to "<kind>;" (";" follows ":")
        return {
            kind: await self._collection.count_documents(
                {"_id": {"$gte": f"{kind}:", "$lt": f"{kind};"}, "dims.owner": {"$exists": False}}
            )
            for kind in SUBJECT_KINDS
        }

    async def owned(self, kind: str, owners: Collection[str]) -> set[str]:
        if not owners:
            return set()
        query = {
            "_id": {"$gte": f"{kind}:", "$lt": f"{kind};"},
            "dims.owner": {"$in": sorted(owners)},
        }
        cursor = self._collection.find(query, {"_id": 1})
        return {doc["_id"].removeprefix(f"{kind}:") async for doc in cursor}


# the default of UPKEEP_ANALYTICS_HOUR_BUCKET_DAYS: as long as the default replay horizon
HOUR_BUCKETS_KEPT = timedelta(days=DEFAULT_REPLAY_HORIZON_DAYS)


class Aggregates:
    def __init__(
        self,
        facts: AsyncCollection[Document],
        buckets: AsyncCollection[Document],
        reporting_tz: str = "UTC",
        keep_facts: timedelta = DEFAULT_GUARD,
        keep_hours: timedelta = HOUR_BUCKETS_KEPT,
    ) -> None:
        """``keep_facts``: how long an occurrence's claim is kept (the replay horizon and its
        grace); ``keep_hours``: how long an hour bucket is kept after its start."""
        self._facts, self._buckets, self._tz = facts, buckets, reporting_tz
        self._keep_facts, self._keep_hours = keep_facts, keep_hours

    @property
    def ttls(self) -> tuple[TtlIndex, TtlIndex]:
        """The claims' TTL index on ``analytics_facts``, the hour buckets' on the buckets."""
        return (
            TtlIndex("ttl_claimed_at", "claimed_at", int(self._keep_facts.total_seconds())),
            TtlIndex(
                "ttl_hour_start",
                "start",
                int(self._keep_hours.total_seconds()),
                only={"g": "hour"},
            ),
        )

    async def ensure_indexes(self) -> None:
        await self._buckets.create_index(
            [("g", ASCENDING), ("dim", ASCENDING), ("start", ASCENDING)], name="query"
        )
        facts_ttl, hours_ttl = self.ttls
        await ensure_ttl_index(self._facts, facts_ttl)
        await ensure_ttl_index(self._buckets, hours_ttl)

    async def apply(
        self, placed: Sequence[Placed], attribution: Mapping[str, dict[str, str]]
    ) -> int:
        """Count a batch; returns how many facts counted (new, or redelivered from their own
        record). ``attribution`` is what is known now about each fact's subject."""
        return len(await self.count(placed, attribution))

    async def count(
        self, placed: Sequence[Placed], attribution: Mapping[str, dict[str, str]]
    ) -> list[Placed]:
        """As :meth:`apply`, returning the facts that counted, each with the record that
        carries it: a fact whose claim is another record's (a copy published again) is not
        among them, and of the same identity twice in the batch only the first is."""
        counted = await self._claim(placed, attribution)
        if counted:
            await self._add(counted)
        return [p for p, _ in counted]

    async def _claim(
        self, placed: Sequence[Placed], attribution: Mapping[str, dict[str, str]]
    ) -> list[tuple[Placed, dict[str, str]]]:
        """Rule 1: claim every identity; keep the facts whose claim is this record's."""
        if not placed:
            return []
        first: dict[str, Placed] = {}
        for p in placed:
            first.setdefault(p.fact.identity, p)  # the same identity twice in one batch
        docs: dict[str, Document] = {}
        now = datetime.now(UTC)
        for identity, p in first.items():
            dims: dict[str, str] = dict(attribution.get(p.fact.subject or "", {}))
            dims.update(p.fact.dims)
            docs[identity] = {
                "_id": identity,
                "pos": [p.topic, p.partition, p.offset],
                "dims": dims,
                "at": p.fact.at,
            }
            if claim_expires(identity):
                docs[identity]["claimed_at"] = now  # when its retention starts
        try:
            await self._facts.bulk_write([InsertOne(d) for d in docs.values()], ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
        stored = {doc["_id"]: doc async for doc in self._facts.find({"_id": {"$in": sorted(docs)}})}
        counted, repeated = [], []
        for identity, p in first.items():
            doc = stored.get(identity)
            if doc is not None and list(doc["pos"]) == [p.topic, p.partition, p.offset]:
                at = doc.get("at", p.fact.at)  # the time it was claimed with
                fact = replace(p.fact, at=at if at.tzinfo else at.replace(tzinfo=UTC))
                counted.append((replace(p, fact=fact), dict(doc.get("dims", {}))))
            elif doc is not None and "claimed_at" in doc:
                repeated.append(identity)
        if repeated:
            # a copy of the record (a replay upstream) lives a horizon from now: so does its guard
            await self._facts.update_many(
                {"_id": {"$in": repeated}, "claimed_at": {"$exists": True}},
                {"$max": {"claimed_at": now}},
            )
        return counted

    async def _add(self, counted: Iterable[tuple[Placed, dict[str, str]]]) -> None:
        """Rules 2 and 3: pre-aggregate per bucket, read the guards, one guarded write each."""
        plan: dict[str, dict[str, list[tuple[int, Fact]]]] = defaultdict(lambda: defaultdict(list))
        meta: dict[str, dict[str, Any]] = {}
        for p, dims in counted:
            scope = p.fact.scope
            if scope is None:
                targets = [("all", "*"), *((d, dims[d]) for d in DIMENSIONS if dims.get(d))]
            else:
                targets = [(scope, dims[scope])] if dims.get(scope) else []
            for granularity in (*GRANULARITIES, TOTAL) if scope else GRANULARITIES:
                start = (
                    ALL_TIME
                    if granularity == TOTAL
                    else bucket_start(p.fact.at, granularity, self._tz)
                )
                for dim, value in targets:
                    key = bucket_id(granularity, start, dim, value)
                    plan[key][p.source].append((p.offset, p.fact))
                    meta[key] = {"g": granularity, "start": start, "dim": dim, "value": value}
        guards = {
            doc["_id"]: dict(doc.get("applied", {}))
            async for doc in self._buckets.find({"_id": {"$in": sorted(plan)}}, {"applied": 1})
        }
        ops = []
        for key, by_source in plan.items():
            applied = guards.get(key, {})
            inc: dict[str, int] = defaultdict(int)
            sets: dict[str, Any] = {}
            match: dict[str, Any] = {"_id": key}
            for source, items in by_source.items():
                last = applied.get(source, -1)
                fresh = [(offset, fact) for offset, fact in items if offset > last]
                if not fresh:
                    continue
                for _, fact in fresh:
                    for name, amount in fact.counters.items():
                        inc[f"c.{field(name)}"] += amount
                sets[f"applied.{source}"] = max(offset for offset, _ in fresh)
                match[f"applied.{source}"] = last if source in applied else {"$exists": False}
            if not sets:
                continue  # everything here was counted before (a redelivery)
            ops.append(
                UpdateOne(
                    match,
                    {"$inc": dict(inc), "$set": {**sets, **meta[key]}},
                    upsert=key not in guards,
                )
            )
        if not ops:
            return
        try:
            result = await self._buckets.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            raise GuardMoved("a bucket was created meanwhile") from exc
        if result.matched_count + result.upserted_count < len(ops):
            raise GuardMoved("a bucket's offset moved meanwhile")

    @property
    def timezone(self) -> str:
        return self._tz

    async def series(
        self,
        granularity: str,
        dim: str,
        since: datetime,
        until: datetime,
        value: str | None = None,
        values: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Buckets in ``[since, until)``, oldest first, counters with their dotted names; of
        one ``value``, or of those among ``values`` (None: every value).
        ``week`` (from Monday) and ``month`` are rolled up from the day buckets."""
        if granularity in ROLLUPS:
            days = await self.series("day", dim, since, until, value, values)
            return rollup(days, granularity, self._tz)
        query: dict[str, Any] = {
            "g": granularity,
            "dim": dim,
            "start": {"$gte": since, "$lt": until},
        }
        if value is not None:
            query["value"] = value
        if values is not None:
            query["value"] = {"$in": sorted(values if value is None else set(values) & {value})}
        rows = []
        async for doc in self._buckets.find(query).sort("start", ASCENDING):
            rows.append(
                {
                    "start": doc["start"],
                    "dim": doc["dim"],
                    "value": doc["value"],
                    "counters": {counter_name(k): v for k, v in doc.get("c", {}).items()},
                }
            )
        return rows


def period_start(day: datetime, granularity: str, tz: str) -> datetime:
    """The UTC instant the week (from Monday) or month holding a day bucket starts, in ``tz``."""
    local = day.astimezone(zone(tz)).date()
    first = (
        local - timedelta(days=local.weekday()) if granularity == "week" else local.replace(day=1)
    )
    return datetime.combine(first, time(), zone(tz)).astimezone(UTC)


def rollup(days: Iterable[Mapping[str, Any]], granularity: str, tz: str) -> list[dict[str, Any]]:
    """Day rows summed into weeks or months, per dimension value; oldest first."""
    grouped: dict[tuple[datetime, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in days:
        grouped[(period_start(row["start"], granularity, tz), row["dim"], row["value"])].append(row)
    return [
        {"start": start, "dim": dim, "value": value, "counters": totals(rows)}
        for (start, dim, value), rows in sorted(grouped.items(), key=lambda kv: kv[0])
    ]


def totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The sum of every counter over the rows."""
    found: dict[str, int] = defaultdict(int)
    for row in rows:
        for name, amount in row["counters"].items():
            found[name] += amount
    return dict(found)


DAY = timedelta(days=1)
