"""``make bench-analytics``: events aggregated per second and MongoDB writes per 1,000 events,
the batched exact aggregates against a naive one-update-per-event-and-bucket baseline, in the
same run on the embedded MongoDB-wire server.

Runs the aggregation directly (no Kafka: consuming is the shared loop's cost, measured by
``make bench-ingest``) over a day of orders from 500 customers of two owners.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from deploy.local.stack import ephemeral_stack
from services.analytics.aggregates import (
    DIMENSIONS,
    GRANULARITIES,
    Aggregates,
    Placed,
    bucket_id,
    bucket_start,
    field,
)
from services.analytics.facts import event_facts
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.mongo import make_client
from shared.settings import MongoSettings

DAY = datetime(2026, 11, 2, tzinfo=UTC)


def placed(n: int) -> list[Placed]:
    model = resolve_type("customer.interaction")
    assert model is not None
    out = []
    for i in range(n):
        at = DAY + timedelta(seconds=i * 86400 // n)
        event = CanonicalEvent.build(
            event_id=f"o-{i}",
            source="bench",
            payload=model.model_validate(
                {
                    "interaction_id": f"O-{i}",
                    "customer_id": f"C-{i % 500}",
                    "kind": "order",
                    "amount": "10.00",
                    "currency": "EUR",
                    "occurred_at": at.isoformat(),
                }
            ),
            time=at,
            source_offset="Z",
        )
        out += [Placed(f, "events", i % 6, i // 6) for f in event_facts(event, event.payload())]
    return out


def attribution() -> dict[str, dict[str, str]]:
    return {f"customer:C-{c}": {"owner": f"S-{c % 2}", "tier": "ABC"[c % 3]} for c in range(500)}


class Writes:
    """Counts write requests (round trips) and the documents they write."""

    def __init__(self) -> None:
        self.requests = 0
        self.documents = 0


async def batched(db: Any, facts: list[Placed], batch: int) -> tuple[float, Writes]:
    aggregates = Aggregates(db["facts"], db["buckets"])
    known, writes = attribution(), Writes()
    real = db["buckets"].bulk_write, db["facts"].bulk_write

    async def count_buckets(ops: list[Any], **kwargs: Any) -> Any:
        writes.requests += 1
        writes.documents += len(ops)
        return await real[0](ops, **kwargs)

    async def count_facts(ops: list[Any], **kwargs: Any) -> Any:
        writes.requests += 1
        writes.documents += len(ops)
        return await real[1](ops, **kwargs)

    aggregates._buckets.bulk_write = count_buckets  # type: ignore[method-assign,assignment]
    aggregates._facts.bulk_write = count_facts  # type: ignore[method-assign,assignment]
    started = time.perf_counter()
    for i in range(0, len(facts), batch):
        await aggregates.apply(facts[i : i + batch], known)
    return time.perf_counter() - started, writes


async def naive(db: Any, facts: list[Placed]) -> tuple[float, int]:
    """One update per fact and bucket, no identity claims and no guards (and so not exact)."""
    known, buckets, writes = attribution(), db["naive"], 0
    started = time.perf_counter()
    for p in facts:
        dims = known.get(p.fact.subject or "", {})
        for g in GRANULARITIES:
            start = bucket_start(p.fact.at, g, "UTC")
            for dim, value in [("all", "*"), *((d, dims[d]) for d in DIMENSIONS if dims.get(d))]:
                inc = {f"c.{field(k)}": v for k, v in p.fact.counters.items()}
                await buckets.update_one(
                    {"_id": bucket_id(g, start, dim, value)}, {"$inc": inc}, upsert=True
                )
                writes += 1
    return time.perf_counter() - started, writes


async def main_async(events: int, batch: int) -> None:
    facts = placed(events)
    with ephemeral_stack("bench-analytics") as stack:
        client = make_client(MongoSettings(uri=stack.mongo_uri), "bench")
        db = client[f"bench_{uuid.uuid4().hex[:8]}"]
        seconds, writes = await batched(db, facts, batch)
        naive_seconds, naive_writes = await naive(db, facts)
        same = Counter[str]()
        async for doc in db["buckets"].find({"dim": "all", "g": "day"}):
            same.update(doc["c"])
        await client.close()
    sys.stdout.write(
        f"aggregating {events} orders (500 customers, 2 owners, 3 tiers; hour and day buckets; "
        f"batches of {batch})\n"
        f"  batched, exact : {events / seconds:9.0f} events/s  per 1,000 events: "
        f"{1000 * writes.requests / events:7.1f} write requests, "
        f"{1000 * writes.documents / events:7.1f} documents written "
        f"(identity claims + bucket updates)\n"
        f"  naive baseline : {events / naive_seconds:9.0f} events/s  per 1,000 events: "
        f"{1000 * naive_writes / events:7.1f} write requests, "
        f"{1000 * naive_writes / events:7.1f} documents written (not exact)\n"
        f"  speed-up: {naive_seconds / seconds:.1f}x; day total of orders counted: "
        f"{same.get('orders', 0)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.events, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
