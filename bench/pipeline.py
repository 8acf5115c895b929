"""``make bench``: the whole pipeline, run as `make up` runs it: a backfill, then steady rates.

Four service processes (ingest, rules, notifier, analytics) on a Kafka and a MongoDB-wire server
of the benchmark's own, with a development SMTP server in this process, every setting at its
default except the follow-up rule, which follows up today's orders at once by e-mail.

**Backfill** — what a company importing its CRM does: ``--backfill-customers`` customers, then
``--backfill-orders`` orders, published as fast as possible to the raw topic (keyed by customer).
The orders are historic, spread over the last year; one in ten is from today and so owes a
follow-up e-mail. Measured: events/s from the first publish until rules has decided and
analytics has counted every one (their committed consumption of ``upkeep.events.v1``), and
deliveries/s of the follow-ups until the last is sent.

**Steady** — for each of ``--rates``, orders at that rate for ``--seconds``; per step:
* events/s sustained end to end: orders published / seconds from the first publish until rules
  has decided every one (its last action is on ``upkeep.actions.v1``);
* event → action and event → delivery latency, p50/p95/p99, from the raw record's send time to
  the action's and the outcome's record timestamps (one clock: every process is on this host);
* the highest consumer lag each service reported, and the CPU each process used, in cores.
Each step waits until every order of it is delivered (up to ``--drain`` seconds).

At the end: peak resident memory per service, MongoDB requests per 1,000 events per service,
bytes stored per event in MongoDB and in Kafka, and the baseline measured in the same run on the
same broker: a bare aiokafka pass-through of the raw records (consume, re-produce, commit).
Everything is printed and written to ``.run/bench/pipeline.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.ingest import pass_through
from bench.measure import (
    cpu_seconds,
    kafka_bytes,
    max_lag,
    mongo_bytes,
    mongo_requests,
    peak_memory_mb,
    quantiles_ms,
    show,
    wait_consumed,
)
from bench.summary import per_1000, write_summary
from deploy.local.mailsink import MailSink
from deploy.local.processes import Managed
from deploy.local.stack import LocalStack, ephemeral_stack
from services.rules.builtin.followup import settings_to_follow_up_at_once
from shared.settings import KafkaSettings, TopicSettings

SERVICES = ("ingest", "rules", "notifier", "analytics")


def order(n: int, customers: int, at: datetime) -> tuple[bytes, bytes]:
    """(key, value) of a raw order; the key is the customer, as an upstream CRM would key it."""
    customer_id = f"C-{n % customers}"
    body = {
        "type": "customer.interaction",
        "id": f"o-{n}",
        "interaction_id": f"O-{n}",
        "customer_id": customer_id,
        "kind": "order",
        "amount": "99.00",
        "currency": "EUR",
        "occurred_at": at.isoformat(),
    }
    return customer_id.encode(), orjson.dumps(body)


def customer(n: int) -> tuple[bytes, bytes]:
    body = {
        "type": "customer.upserted",
        "id": f"c-{n}",
        "customer_id": f"C-{n}",
        "name": f"Customer {n}",
        "timezone": "UTC",
        "email": f"c{n}@example.com",
    }
    return f"C-{n}".encode(), orjson.dumps(body)


def historic(n: int, now: datetime) -> datetime:
    """One order in ten today (a follow-up is owed), the rest over the last year (none is)."""
    if n % 10 == 0:
        return now - timedelta(seconds=n % 600)
    return now - timedelta(days=2 + n % 363, seconds=n % 86_400)


async def publish_at(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], rate: float | None
) -> dict[str, float]:
    """Publish at ``rate`` per second (in 20 ms slices; ``None``: as fast as possible);
    returns each record's send time by id."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks="all", max_batch_size=256 * 1024
    )
    await producer.start()
    sent: dict[str, float] = {}
    try:
        started, done = time.monotonic(), 0
        while done < len(records):
            if rate is None:
                due = min(len(records), done + 2000)
            else:
                due = min(len(records), int((time.monotonic() - started) * rate) + 1)
            for key, value in records[done:due]:
                sent[orjson.loads(value)["id"]] = time.time()
                await producer.send(topic, value, key=key)
            done = due
            await asyncio.sleep(0 if rate is None else 0.02)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def collect(
    bootstrap: str, topic: str, wanted: int, deadline: float, *, sent_only: bool
) -> dict[str, float]:
    """The record timestamp (ms → s) of each new action or outcome, by key, until ``wanted``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="latest",
        isolation_level="read_committed",
    )
    await consumer.start()
    found: dict[str, float] = {}
    try:
        while len(found) < wanted and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    body = orjson.loads(r.value or b"{}")
                    if sent_only and body.get("outcome") != "sent":
                        continue
                    found.setdefault(body["key"], r.timestamp / 1000)
    finally:
        await consumer.stop()
    return found


def start_services(
    stack: LocalStack, smtp_port: int, rules_yaml: Path, interval: float | None
) -> dict[str, Managed]:
    env = {
        "rules": {
            "UPKEEP_RULES_CONFIG_FILE": str(rules_yaml),
            "UPKEEP_RULES_ENABLED": "followup",
        },
        "notifier": {
            "UPKEEP_NOTIFIER_SMTP_PORT": str(smtp_port),
            "UPKEEP_NOTIFIER_QUIET_HOURS_START": "00:00",
            "UPKEEP_NOTIFIER_QUIET_HOURS_END": "00:00",
        },
    }
    if interval is not None:  # else the defaults (1 s)
        env["rules"]["UPKEEP_RULES_TICK_INTERVAL_S"] = str(interval)
        env["notifier"]["UPKEEP_NOTIFIER_DISPATCH_INTERVAL_S"] = str(interval)
    procs = {
        s: stack.start_service(s, env={"UPKEEP_LOG_LEVEL": "WARNING", **env.get(s, {})})
        for s in SERVICES
    }
    for service, proc in procs.items():
        stack.wait_ready(stack.base_url(service), timeout=90, proc=proc)
    return procs


class Pipeline:
    """The running system and what the steps share."""

    def __init__(self, stack: LocalStack, procs: dict[str, Managed], topics: TopicSettings):
        self.stack, self.procs, self.topics = stack, procs, topics
        self.bootstrap = stack.kafka_node.bootstrap
        self.urls = {s: stack.base_url(s) for s in SERVICES}
        self.watched = {**procs, "kafka": stack.managed("kafka"), "mongodb": stack.managed("mongo")}
        self.published = 0  # raw records so far

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(p.pid()) for name, p in self.watched.items()}

    def cores(self, before: dict[str, float], elapsed: float) -> dict[str, float]:
        after = self.cpu()
        return {n: round((after[n] - before[n]) / elapsed, 2) for n in before}

    async def decided_and_counted(self, within: float) -> float | None:
        """When rules and analytics have consumed every raw record published so far (each raw
        record is one canonical event: every one is valid and new)."""
        want = {"rules": float(self.published), "analytics": float(self.published)}
        return await wait_consumed(self.urls, self.topics.events, want, within)


async def backfill(p: Pipeline, customers: int, orders: int, within: float) -> dict[str, Any]:
    now = datetime.now(UTC)
    records = [customer(n) for n in range(customers)]
    records += [order(n, customers, historic(n, now)) for n in range(orders)]
    owed = sum(1 for n in range(orders) if n % 10 == 0)
    deliveries = asyncio.create_task(
        collect(p.bootstrap, p.topics.deliveries, owed, time.monotonic() + within, sent_only=True)
    )
    await asyncio.sleep(1.5)  # the collector is assigned
    cpu_before, first = p.cpu(), time.time()
    await publish_at(p.bootstrap, p.topics.raw_customer, records, None)
    published_s = time.time() - first
    p.published += len(records)
    done = await p.decided_and_counted(within)
    delivered = await deliveries
    last = max(delivered.values(), default=first)
    elapsed = (done or time.time()) - first
    result: dict[str, Any] = {
        "customers": customers,
        "orders": orders,
        "events": len(records),
        "publish_events_per_s": round(len(records) / published_s),
        "backfill_events_per_s": round(len(records) / elapsed) if done else None,
        "backfill_seconds": round(elapsed, 1),
        "follow_ups_owed": owed,
        "follow_ups_delivered": len(delivered),
        "backfill_deliveries_per_s": round(len(delivered) / max(last - first, 1e-9)),
        "cpu_cores": p.cores(cpu_before, max(time.time() - first, 1e-9)),
    }
    print(
        f"backfill: {len(records)} events ({customers} customers, {orders} orders) in "
        f"{elapsed:.1f} s: {result['backfill_events_per_s']} events/s decided and counted "
        f"(published at {result['publish_events_per_s']}/s); {len(delivered)} of {owed} "
        f"follow-ups delivered, {result['backfill_deliveries_per_s']}/s"
    )
    print(f"{'':10}CPU in cores: " + ", ".join(f"{n} {c}" for n, c in result["cpu_cores"].items()))
    return result


async def steady(
    p: Pipeline, rate: int, seconds: float, customers: int, drain: float
) -> dict[str, Any]:
    start = p.published
    records = [order(start + i, customers, datetime.now(UTC)) for i in range(int(rate * seconds))]
    deadline = time.monotonic() + seconds + drain
    lags: dict[str, float] = {}
    stop = asyncio.Event()
    watcher = asyncio.create_task(max_lag(p.urls, stop, lags))
    actions_task = asyncio.create_task(
        collect(p.bootstrap, p.topics.actions, len(records), deadline, sent_only=False)
    )
    outcomes_task = asyncio.create_task(
        collect(p.bootstrap, p.topics.deliveries, len(records), deadline, sent_only=True)
    )
    await asyncio.sleep(1.5)  # the collectors are assigned
    cpu_before, first = p.cpu(), time.time()
    sent = await publish_at(p.bootstrap, p.topics.raw_customer, records, rate)
    p.published += len(records)
    actions, outcomes = await actions_task, await outcomes_task
    await p.decided_and_counted(60)  # analytics too, before the next step
    elapsed = time.time() - first
    stop.set()
    await watcher
    keyed = {f"followup:O-{k.removeprefix('o-')}": t for k, t in sent.items()}
    to_action = [actions[k] - t for k, t in keyed.items() if k in actions]
    to_delivery = [outcomes[k] - t for k, t in keyed.items() if k in outcomes]
    last_action = max(actions.values(), default=time.time())
    last_outcome = max(outcomes.values(), default=time.time())
    step: dict[str, Any] = {
        "rate": rate,
        "events": len(records),
        "sustained_events_per_s": round(len(actions) / max(last_action - first, 1e-9)),
        "delivered_per_s": round(len(outcomes) / max(last_outcome - first, 1e-9)),
        "not_decided": len(records) - len(actions),
        "not_delivered": len(records) - len(outcomes),
        "event_to_action": quantiles_ms(to_action),
        "event_to_delivery": quantiles_ms(to_delivery),
        "max_consumer_lag": {s: lags.get(s, 0.0) for s in SERVICES},
        "cpu_cores": p.cores(cpu_before, elapsed),
    }
    print(
        f"{rate:>7} {step['sustained_events_per_s']:>12}  {show(step['event_to_action']):44} "
        f"{show(step['event_to_delivery']):44} "
        + "/".join(f"{lags.get(s, 0):.0f}" for s in SERVICES)
        + (f"  ({step['not_decided']} not decided in time)" if step["not_decided"] else "")
        + (f"  ({step['not_delivered']} not delivered in time)" if step["not_delivered"] else "")
    )
    print(
        f"{'':8}delivered {step['delivered_per_s']}/s sustained; CPU in cores over "
        f"{elapsed:.0f} s: " + ", ".join(f"{n} {c}" for n, c in step["cpu_cores"].items())
    )
    return step


async def run(args: argparse.Namespace) -> int:
    followup = settings_to_follow_up_at_once(datetime.now(UTC))
    if followup is None:
        sys.stderr.write("too close to midnight UTC for same-day follow-ups; try later\n")
        return 2
    rates = [int(r) for r in args.rates.split(",") if r]
    with ephemeral_stack("bench-pipeline", kafka_heap="1g") as stack:
        await asyncio.to_thread(stack.create_topics)
        topics = TopicSettings()
        sink = MailSink()
        smtp_port = await sink.start(port=0)
        rules_yaml = stack.config.state_dir / "rules.yaml"
        rules_yaml.write_text(orjson.dumps({"followup": followup}).decode())
        procs = await asyncio.to_thread(start_services, stack, smtp_port, rules_yaml, args.interval)
        p = Pipeline(stack, procs, topics)
        summary: dict[str, Any] = {"mongo_server": stack.mongo_server.kind, "machine_cores": 2}
        try:
            requests_before = await mongo_requests(p.urls)
            print(f"pipeline on this machine ({stack.mongo_server.why})")
            if args.backfill_orders:
                summary["backfill"] = await backfill(
                    p, args.backfill_customers, args.backfill_orders, args.drain
                )
                summary["backfill_events_per_s"] = summary["backfill"]["backfill_events_per_s"]
                summary["backfill_deliveries_per_s"] = summary["backfill"][
                    "backfill_deliveries_per_s"
                ]
            print(
                f"steady rates, {args.seconds:.0f} s each\n{'rate/s':>7} {'sustained/s':>12}  "
                f"event → action{'':30}event → delivery{'':28}max lag "
                "(ingest/rules/notifier/analytics)"
            )
            customers = args.backfill_customers if args.backfill_orders else 0
            if not customers:
                customers = 2000
                await publish_at(
                    p.bootstrap, topics.raw_customer, [customer(n) for n in range(customers)], None
                )
                p.published += customers
                await p.decided_and_counted(300)
            summary["steady"] = [
                await steady(p, rate, args.seconds, customers, args.drain) for rate in rates
            ]
            requests_after = await mongo_requests(p.urls)
            summary["peak_rss_mb"] = {s: peak_memory_mb(m.pid()) for s, m in procs.items()}
            summary["mongo_requests_per_1000_events"] = {
                s: per_1000(requests_after[s] - requests_before[s], p.published) for s in SERVICES
            }
            stored = await asyncio.to_thread(mongo_bytes, stack.mongo_uri, "upkeep")
            in_kafka = kafka_bytes(stack.kafka_node.data_dir)
            summary["stored_bytes_per_event"] = {
                "mongodb_data": round(stored["data_bytes"] / p.published),
                "mongodb_storage": round(stored["storage_bytes"] / p.published),
                "mongodb_indexes": round(stored["index_bytes"] / p.published),
                "kafka": round(in_kafka / p.published),
            }
            summary["events_total"] = p.published
            await admin_topic(p.bootstrap, "bench.passthrough")
            base = await pass_through(
                KafkaSettings(bootstrap_servers=p.bootstrap),
                topics.raw_customer,
                "bench.passthrough",
                p.published,
            )
            summary["pass_through_events_per_s"] = round(base)
            print(
                f"peak memory (VmHWM): {summary['peak_rss_mb']}\n"
                f"MongoDB requests per 1,000 events: {summary['mongo_requests_per_1000_events']}\n"
                f"bytes stored per event: {summary['stored_bytes_per_event']}\n"
                f"baseline, bare aiokafka pass-through of the same {p.published} raw records: "
                f"{base:.0f}/s"
            )
        finally:
            for proc in procs.values():
                proc.stop(timeout=20)
            await sink.stop()
    write_summary("pipeline", summary)
    return 0


async def admin_topic(bootstrap: str, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=6, replication_factor=1)])
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="500,1000,2000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--backfill-customers", type=int, default=20_000)
    parser.add_argument("--backfill-orders", type=int, default=200_000, help="0: no backfill")
    parser.add_argument(
        "--drain", type=float, default=600, help="seconds a step may take to finish its work"
    )
    parser.add_argument(
        "--interval", type=float, default=None, help="rules' and notifier's tick interval (s)"
    )
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
