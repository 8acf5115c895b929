"""``make bench-ingest``: events per second through ingest against a bare aiokafka pass-through.

Both read the same pre-filled raw topic (6 partitions) on the same broker in the same run:

* **pass-through** — consume a batch, re-produce every record unchanged to another topic, wait
  for the acks, commit offsets; no parsing, no validation, no MongoDB;
* **ingest** — the real consumer loop and handler: decode, validate and normalise each event,
  claim it in MongoDB (one ``insert_many`` per batch), publish the canonical events and commit
  the offsets in one Kafka transaction, save the progress guard.

Each is run ``--repeat`` times with a fresh consumer group; the best run of each is compared.
With ``--kinds`` the same ingest run is measured on records of mapped sources too, against the
same pass-through baseline: ``mapped`` (a shop's own JSON, through a JMESPath mapping) and
``debezium`` (Debezium change events of a CRM's orders table, through the shipped example
mapping): what a mapping costs beside Upkeep's own contract.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic

from bench.summary import per_1000, requests_here, write_summary
from deploy.local.stack import ephemeral_stack
from services.ingest.dedup import DedupStore, InMemoryDedupStore, MongoDedupStore
from services.ingest.normalise import NormaliseContext
from services.ingest.pipeline import IngestConfig, IngestHandler
from services.ingest.sources import MappedSources
from shared.kafka.clients import make_admin, make_consumer, make_producer
from shared.kafka.consumer import ConsumerLoop
from shared.kafka.messages import HandlerResult, Record
from shared.kafka.progress import InMemoryProgressStore, MongoProgressStore, ProgressStore
from shared.kafka.topics import ensure_topics
from shared.mongo import make_client
from shared.settings import KafkaSettings, MongoSettings, TopicSettings


def events(count: int) -> list[bytes]:
    """A realistic mix: plain JSON orders and visits, and structured CloudEvents."""
    out = []
    for n in range(count):
        data = {
            "interaction_id": f"I-{n}",
            "customer_id": f"C-{n % 5000}",
            "kind": "order" if n % 3 else "visit",
            "occurred_at": "2026-11-22T09:15:00+08:00",
            **({"amount": "129.90", "currency": "CNY"} if n % 3 else {}),
        }
        if n % 4 == 0:
            body = {
                "specversion": "1.0",
                "id": f"e-{n}",
                "source": "crm",
                "type": "upkeep.customer.interaction.v1",
                "data": data,
            }
        else:
            body = {"type": "customer.interaction", "id": f"e-{n}", "source": "pos", **data}
        out.append(orjson.dumps(body))
    return out


SHOP_MAPPING = """
name: bench-shop
source: {topics: [TOPIC]}
timezone: Asia/Shanghai
id_prefix: "shop-"
lookups:
  kinds: {paid: order, visit: visit}
produce:
  - type: customer.interaction
    id: text(event_id)
    fields:
      interaction_id: prefix(order.no)
      customer_id: prefix(order.buyer)
      kind: lookup('kinds', order.state)
      amount: order.total
      currency: "order.total && 'CNY'"
      occurred_at: order.at
"""
EXAMPLE = Path(__file__).parents[1] / "services" / "ingest" / "mappings"


def shop_records(count: int) -> list[bytes]:
    """A shop's own JSON, as its platform pushes it."""
    return [
        orjson.dumps(
            {
                "event_id": f"s-{n}",
                "order": {
                    "no": n,
                    "buyer": f"C-{n % 5000}",
                    "state": "paid" if n % 3 else "visit",
                    "at": "2026-11-22 09:15:00",
                    **({"total": "129.90"} if n % 3 else {}),
                },
            }
        )
        for n in range(count)
    ]


def debezium_records(count: int) -> list[bytes]:
    """Debezium change events of a CRM's orders table (JSON converter, with its schema part)."""
    return [
        orjson.dumps(
            {
                "schema": {"type": "struct", "name": "crm.public.orders.Envelope"},
                "payload": {
                    "op": "c",
                    "before": None,
                    "after": {
                        "id": n,
                        "customer_id": n % 5000,
                        "amount": "129.90",
                        "currency": "CNY",
                        "ordered_at": 1795000000000000 + n,
                    },
                    "source": {"db": "crm", "schema": "public", "table": "orders", "lsn": n},
                    "ts_ms": 1795000000000,
                },
            }
        )
        for n in range(count)
    ]


def mapped_sources(kind: str, topic: str, folder: Path) -> MappedSources:
    """The mapping of ``kind`` reading ``topic``, in ``folder``."""
    if kind == "mapped":
        text = SHOP_MAPPING.replace("TOPIC", topic)
    else:
        example = (EXAMPLE / "example-crm-postgres.yaml").read_text()
        text = example.replace("crm.public.orders", topic)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{kind}.yaml").write_text(text)
    sources = MappedSources(folder)
    errors = sources.refresh()
    assert not errors, errors
    return sources


async def create_topic(kafka: KafkaSettings, name: str, partitions: int = 6) -> None:
    admin = make_admin(kafka, "bench")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def fill(kafka: KafkaSettings, topic: str, values: Sequence[bytes]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        linger_ms=20,
        max_batch_size=512 * 1024,
        acks="all",
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, v, key=f"C-{i % 5000}".encode())
            for i, v in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def pass_through(kafka: KafkaSettings, source: str, sink: str, total: int) -> float:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"pt-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    await consumer.start()
    seen, started = 0, None
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            if not batch:
                continue
            started = started or time.perf_counter()
            futures = [
                await producer.send(sink, r.value, key=r.key)
                for recs in batch.values()
                for r in recs
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            seen += len(futures)
        return total / (time.perf_counter() - (started or time.perf_counter()))
    finally:
        await consumer.stop()
        await producer.stop()


class Counting:
    """Wraps the real handler; notes when the last record was handled."""

    def __init__(self, inner: IngestHandler, total: int) -> None:
        self.inner, self.total, self.seen = inner, total, 0
        self.started: float | None = None
        self.done = asyncio.Event()

    async def handle(self, records: Sequence[Record]) -> HandlerResult:
        self.started = self.started or time.perf_counter()
        result = await self.inner.handle(records)

        def count() -> None:
            self.seen += len(records)
            if self.seen >= self.total:
                self.done.set()

        result.after_commit.append(count)
        return result


async def ingest(
    kafka: KafkaSettings,
    mongo: MongoSettings,
    topics: TopicSettings,
    total: int,
    dedup: str,
    batch: int,
    topic: str | None = None,
    sources: MappedSources | None = None,
) -> tuple[float, int, float]:
    client = make_client(mongo, "bench")
    db = client[f"bench_{uuid.uuid4().hex[:6]}"]
    group = f"ingest-{uuid.uuid4().hex[:6]}"
    memory_store = InMemoryDedupStore()
    progress: ProgressStore = InMemoryProgressStore()
    store: DedupStore = memory_store
    if dedup == "mongo":
        progress = MongoProgressStore(db["progress"])
        mongo_store = MongoDedupStore(db["dedup"], 1, progress=progress, group=group)
        await mongo_store.ensure_indexes()
        store = mongo_store
    config = IngestConfig(topics.events, 256 * 1024, NormaliseContext())
    handler = Counting(IngestHandler(config, store, sources), total)
    loop = ConsumerLoop(
        service="ingest",
        consumer_factory=lambda: make_consumer(kafka, "bench", group_id=group, max_records=batch),
        topics=[topic or topics.raw_customer],
        handler=handler,
        group_id=group,
        dlq_topic=topics.dlq,
        producer_factory=lambda: make_producer(kafka, "bench", transactional_id=group),
        transactional=True,
        progress=progress,
        batch_timeout_ms=200,
        max_records=batch,
    )
    requests_before = requests_here()
    task = asyncio.create_task(loop.run())
    await handler.done.wait()
    elapsed = time.perf_counter() - (handler.started or time.perf_counter())
    requests = requests_here() - requests_before
    loop.stop()
    await task
    if dedup == "mongo":
        claims = await db["dedup"].count_documents({})
    else:
        claims = len(memory_store.seen)
    await client.drop_database(db.name)
    await client.close()
    return total / elapsed, claims, per_1000(requests, total)


async def run(total: int, repeat: int, dedup: str, batch: int, kinds: list[str]) -> None:
    with ephemeral_stack("bench", kafka_heap="768m") as stack:
        kafka = KafkaSettings(bootstrap_servers=stack.kafka_node.bootstrap)
        mongo = MongoSettings(uri=stack.mongo_uri)
        topics = TopicSettings.model_validate(
            {k: f"bench.{v}" for k, v in TopicSettings().model_dump().items()}
        )
        await ensure_topics(kafka, topics)
        await fill(kafka, topics.raw_customer, events(total))
        mapped: dict[str, tuple[str, MappedSources]] = {}
        for kind in kinds:
            topic = f"bench.{kind}.orders"
            await create_topic(kafka, topic)
            values = shop_records(total) if kind == "mapped" else debezium_records(total)
            await fill(kafka, topic, values)
            mapped[kind] = (topic, mapped_sources(kind, topic, stack.config.state_dir / kind))
        print(
            f"raw topic filled with {total} events (6 partitions); {repeat} run(s) each; "
            f"de-duplication in {dedup}, batches of up to {batch}"
        )
        baseline, ours, requests = [], [], []
        for i in range(repeat):
            baseline.append(await pass_through(kafka, topics.raw_customer, topics.actions, total))
            print(f"  run {i + 1}: pass-through {baseline[-1]:>9,.0f} events/s")
            rate, claims, per_k = await ingest(kafka, mongo, topics, total, dedup, batch)
            ours.append(rate)
            requests.append(per_k)
            print(
                f"  run {i + 1}: ingest       {ours[-1]:>9,.0f} events/s  ({claims} claims, "
                f"{per_k} MongoDB requests per 1,000 events)"
            )
        by_kind: dict[str, float] = {}
        for kind, (topic, sources) in mapped.items():
            runs = []
            for i in range(repeat):
                rate, claims, _ = await ingest(
                    kafka, mongo, topics, total, dedup, batch, topic, sources
                )
                runs.append(rate)
                print(f"  run {i + 1}: ingest, {kind:<9}{rate:>9,.0f} events/s  ({claims} claims)")
            by_kind[kind] = max(runs)
        best_base, best_ours = max(baseline), max(ours)
        print(f"\npass-through (bare aiokafka, no validation): {best_base:,.0f} events/s")
        print(f"ingest (validate, normalise, dedup, txn):    {best_ours:,.0f} events/s")
        print(f"ratio ingest / pass-through:                 {best_ours / best_base:.2f}")
        for kind, rate in by_kind.items():
            label = f"ingest, {kind} records:"
            print(f"{label:<45}{rate:,.0f} events/s (ratio {rate / best_base:.2f})")
        write_summary(
            "ingest",
            {
                "events": total,
                "runs": repeat,
                "dedup": dedup,
                "batch": batch,
                "mongo_server": stack.mongo_server.kind,
                "ingest_events_per_s": round(best_ours),
                "pass_through_events_per_s": round(best_base),
                "ratio": round(best_ours / best_base, 3),
                "mongo_requests_per_1000_events": min(requests),
                "runs_ingest_events_per_s": [round(r) for r in ours],
                "runs_pass_through_events_per_s": [round(r) for r in baseline],
                **{f"ingest_{k}_events_per_s": round(r) for k, r in by_kind.items()},
                **{f"ratio_{k}": round(r / best_base, 3) for k, r in by_kind.items()},
            },
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--dedup",
        choices=["mongo", "memory"],
        default="mongo",
        help="memory: the in-memory fake, to show what MongoDB costs",
    )
    parser.add_argument("--batch", type=int, default=500, help="max records per batch")
    parser.add_argument(
        "--kinds",
        default="mapped,debezium",
        help="mapped sources measured too (comma-separated: mapped, debezium; empty: none)",
    )
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k not in ("mapped", "debezium") for k in kinds):
        parser.error("--kinds takes mapped and debezium")
    asyncio.run(run(args.events, args.repeat, args.dedup, args.batch, kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
