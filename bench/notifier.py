"""``make bench-notifier``: deliveries per second to a local SMTP server and webhook receiver,
with the MongoDB ledger on, against the same notifier with an in-memory ledger ("ledger off":
no durable record, nothing exactly-once), in the same run on the same broker.

The notifier runs in this process with its real consumer loop and Kafka transactions (the SMTP
server and webhook receiver in another, :mod:`bench.sinks`); a delivery counts once it is
accepted and its outcome committed. The
actions (80% e-mail, 20% webhook) and their recipients are on the topics before it starts, so
the figure is the notifier's own pace: consume, record, decide, render, send, record, publish.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime

from bench.sinks import Sinks, sinks_process
from bench.summary import per_1000, requests_here, write_summary
from deploy.local.stack import ephemeral_stack
from services.notifier.ledger import InMemoryLedger, MongoLedger
from services.notifier.outcomes import OUTCOMES
from services.notifier.service import build
from services.notifier.settings import NotifierSettings
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.kafka.messages import Outgoing
from shared.kafka.topics import ensure_topics
from shared.mongo import database, make_client
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.kafka_helpers import publish_events

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def contacts(n: int) -> list[CanonicalEvent]:
    model = resolve_type("customer.upserted")
    assert model is not None
    return [
        CanonicalEvent.build(
            event_id=f"p-{i}",
            source="bench",
            payload=model.model_validate(
                {
                    "customer_id": f"C-{i}",
                    "name": f"客户 {i}",
                    "timezone": "UTC",
                    "email": f"c{i}@example.com",
                }
            ),
            time=datetime(2026, 1, 1, tzinfo=UTC),
            source_offset="Z",
        )
        for i in range(n)
    ]


def actions(n: int, topic: str) -> list[Outgoing]:
    now = datetime.now(UTC).isoformat()
    out = []
    for i in range(n):
        body = {
            "key": f"followup:O-{i}",
            "rule": "followup",
            "subject": f"customer:C-{i}",
            "kind": "webhook" if i % 5 == 0 else "email",
            "recipient": {"kind": "customer", "id": f"C-{i}"},
            "template": "followup_order",
            "locale": "zh-CN" if i % 2 else "en",
            "due_at": now,
            "priority": "transactional",
            "data": {
                "customer_id": f"C-{i}",
                "customer_name": f"客户 {i}",
                "interaction_id": f"O-{i}",
                "tier": "B",
            },
            "created_at": now,
        }
        out.append(Outgoing.json(topic, body["subject"], body))  # type: ignore[arg-type]
    return out


async def publish(kafka: KafkaSettings, messages: list[Outgoing]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(m.topic, m.value, key=m.key) for m in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def run_once(
    kafka: KafkaSettings, mongo: MongoSettings, n: int, *, ledger: str
) -> tuple[float, float]:
    """``ledger``: "grouped" (the service), "single" (one update_one per save) or "memory"."""
    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings.model_validate(
        {k: f"bench.{v}.{tag}" for k, v in TopicSettings().model_dump().items()}
    )
    await ensure_topics(kafka, topics)
    await publish_events(kafka, topics.events, contacts(n))
    await publish(kafka, actions(n, topics.actions))
    with sinks_process() as sinks:
        return await _measure(kafka, mongo, n, ledger, tag, topics, sinks)


async def _measure(
    kafka: KafkaSettings,
    mongo: MongoSettings,
    n: int,
    ledger: str,
    tag: str,
    topics: TopicSettings,
    sinks: Sinks,
) -> tuple[float, float]:
    settings = NotifierSettings(
        kafka=kafka,
        mongo=mongo.model_copy(update={"database": f"bench_{tag}"}),
        topics=topics,
        consumer_group=f"bench-{tag}",
        instance_id=tag,
        smtp_port=sinks.smtp_port,
        smtp_pool_size=8,
        webhook_url=f"{sinks.http_url}/hook",
        webhook_secrets=[SECRET],
        allow_private_destinations=True,
        quiet_hours_start=None,
        quiet_hours_end=None,
        unknown_recipient_retry_s=0.2,
        dispatch_interval_s=0.05,
        dispatch_limit=500,
        batch_timeout_ms=50,
    )
    baseline_client = make_client(settings.mongo, "bench")
    chosen = {
        "grouped": None,
        "single": MongoLedger(
            database(baseline_client, settings.mongo)["deliveries"], group_commit=False
        ),
        "memory": InMemoryLedger(),
    }[ledger]
    try:
        async with build(settings, ledger=chosen) as service:
            (loop,) = service.loops
            requests_before, sent_before = requests_here(), sent()
            started = time.perf_counter()
            task = asyncio.create_task(loop.run())
            try:
                while sent() - sent_before < n:  # accepted by the sinks and committed
                    await asyncio.sleep(0.02)
                    if time.perf_counter() - started > 600:
                        raise TimeoutError("deliveries did not finish")
                elapsed = time.perf_counter() - started
                requests = requests_here() - requests_before
            finally:
                loop.stop()
                await task
    finally:
        await baseline_client.close()
    return n / elapsed, per_1000(requests, n)


def sent() -> float:
    """Deliveries this process has sent and published (the notifier's own counter)."""
    return sum(
        sample.value
        for metric in OUTCOMES.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("outcome") == "sent"
    )


async def main_async(n: int, repeat: int) -> None:
    with ephemeral_stack("bench-notifier") as stack:
        kafka = KafkaSettings(bootstrap_servers=stack.kafka_node.bootstrap)
        mongo = MongoSettings(uri=stack.mongo_uri, database="bench")
        runs = {
            kind: [await run_once(kafka, mongo, n, ledger=kind) for _ in range(repeat)]
            for kind in ("grouped", "single", "memory")
        }
        server = stack.mongo_server.kind
    rates = {kind: max(rate for rate, _ in found) for kind, found in runs.items()}
    requests = {kind: min(per_k for _, per_k in found) for kind, found in runs.items()}
    on, single, off = rates["grouped"], rates["single"], rates["memory"]
    sys.stdout.write(
        f"deliveries ({n} actions: 80% e-mail to the local SMTP server, 20% signed webhooks; "
        f"best of {repeat})\n"
        f"  ledger on, saves group-committed  : {on:8.0f} deliveries/s\n"
        f"  ledger on, one update per save    : {single:8.0f} deliveries/s\n"
        f"  ledger off (in memory)            : {off:8.0f} deliveries/s\n"
        f"  ratio grouped/single: {on / single:.2f}, grouped/off: {on / off:.2f}\n"
    )
    write_summary(
        "notifier",
        {
            "actions": n,
            "runs": repeat,
            "mongo_server": server,
            "deliveries_per_s": round(on),
            "deliveries_per_s_ledger_off": round(off),
            "deliveries_per_s_one_update_per_save": round(single),
            "ratio_ledger_on_off": round(on / off, 3),
            "mongo_requests_per_1000_deliveries": requests["grouped"],
            "mongo_requests_per_1000_deliveries_one_update_per_save": requests["single"],
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--actions", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.actions, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
