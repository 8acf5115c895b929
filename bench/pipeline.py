"""``make bench``: the whole pipeline, run as `make up` runs it, at increasing rates.

Four service processes (ingest, rules, notifier, analytics) on a Kafka and a MongoDB-wire server
of the benchmark's own, with a development SMTP server in this process. Customers are loaded
first; then, for each rate, orders are published to the raw topic for ``--seconds`` at that
rate. Each order becomes a canonical event (ingest), a follow-up action (rules: the follow-up
rule is configured to follow up at once) and an e-mail with its outcome (notifier), and is
counted (analytics). Printed per rate:

* events/s sustained end to end: orders published / seconds from the first publish until rules
  has decided every one (its last action is on ``upkeep.actions.v1``);
* event → action and event → delivery latency, p50/p95/p99, from the raw record's timestamp to
  the action's and to the outcome's (one clock: every process is on this machine);
* the highest consumer lag each service reported during the step;
* the CPU each process used during the step (services, broker, MongoDB-wire server), in cores:
  where the time goes, and so what limits the rate;
* at the end, the peak resident memory of each service (VmHWM).

Each step waits until every order of it is delivered (up to ``--drain`` seconds) before the next
starts, so a step does not inherit the backlog of the one before.

The baseline, measured in the same run on the same broker: a bare aiokafka pass-through that
consumes the raw topic and re-produces every record (no parsing, no MongoDB, no transaction).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.ingest import pass_through
from deploy.local.mailsink import MailSink
from deploy.local.processes import Managed
from deploy.local.stack import LocalStack, ephemeral_stack
from services.rules.testing import follow_up_at_once
from shared.settings import KafkaSettings, TopicSettings

SERVICES = ("ingest", "rules", "notifier", "analytics")


def order(n: int, customers: int, now: datetime) -> bytes:
    return orjson.dumps(
        {
            "type": "customer.interaction",
            "id": f"o-{n}",
            "interaction_id": f"O-{n}",
            "customer_id": f"C-{n % customers}",
            "kind": "order",
            "amount": "99.00",
            "currency": "EUR",
            "occurred_at": now.isoformat(),
        }
    )


def customer(n: int) -> bytes:
    return orjson.dumps(
        {
            "type": "customer.upserted",
            "id": f"c-{n}",
            "customer_id": f"C-{n}",
            "name": f"Customer {n}",
            "timezone": "UTC",
            "email": f"c{n}@example.com",
        }
    )


async def publish_at(
    bootstrap: str, topic: str, values: list[bytes], rate: float
) -> dict[str, float]:
    """Publish at ``rate`` per second (in 20 ms slices); returns each record's send time by id."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    sent: dict[str, float] = {}
    try:
        started, done = time.monotonic(), 0
        while done < len(values):
            due = min(len(values), int((time.monotonic() - started) * rate) + 1)
            for value in values[done:due]:
                sent[orjson.loads(value)["id"]] = time.time()
                await producer.send(topic, value)
            done = due
            await asyncio.sleep(0.02)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def collect(
    bootstrap: str, topic: str, wanted: int, deadline: float, key_of: str
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
                    if key_of == "outcome" and body.get("outcome") != "sent":
                        continue
                    found.setdefault(body["key"], r.timestamp / 1000)
    finally:
        await consumer.stop()
    return found


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49] * 1000:6.0f} ms  p95 {q[94] * 1000:6.0f} ms  p99 {q[98] * 1000:6.0f} ms"


async def lag_of(http: httpx.AsyncClient, url: str) -> float | None:
    """A service's consumer lag summed over its partitions, or ``None`` if it did not answer."""
    try:
        text = (await http.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return None
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("upkeep_consumer_lag_messages{")
    )


async def max_lag(urls: dict[str, str], stop: asyncio.Event, into: dict[str, float]) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        while not stop.is_set():
            for service, url in urls.items():
                lag = await lag_of(http, url)
                if lag is not None:
                    into[service] = max(into.get(service, 0.0), lag)
            await asyncio.sleep(0.5)


async def drained(urls: dict[str, str], within: float) -> None:
    """Wait until every service answers with no consumer lag (twice in a row, a second apart)."""
    deadline, quiet = time.monotonic() + within, 0
    async with httpx.AsyncClient(timeout=2) as http:
        while quiet < 2 and time.monotonic() < deadline:
            await asyncio.sleep(1)
            lags = [await lag_of(http, url) for url in urls.values()]
            quiet = quiet + 1 if all(lag == 0 for lag in lags) else 0


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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


async def run(
    rates: list[int], seconds: float, customers: int, drain: float, interval: float | None
) -> int:
    followup = follow_up_at_once(datetime.now(UTC))
    if followup is None:
        sys.stderr.write("too close to midnight UTC for same-day follow-ups; try later\n")
        return 2
    with ephemeral_stack("bench-pipeline", kafka_heap="1g") as stack:
        await asyncio.to_thread(stack.create_topics)
        topics, bootstrap = TopicSettings(), stack.kafka_node.bootstrap
        sink = MailSink()
        smtp_port = await sink.start(port=0)
        rules_yaml = stack.config.state_dir / "rules.yaml"
        rules_yaml.write_text(orjson.dumps({"followup": followup}).decode())
        procs = await asyncio.to_thread(start_services, stack, smtp_port, rules_yaml, interval)
        urls = {s: stack.base_url(s) for s in SERVICES}
        watched = {**procs, "kafka": stack.managed("kafka"), "mongodb": stack.managed("mongo")}
        try:
            await publish_at(
                bootstrap, topics.raw_customer, [customer(n) for n in range(customers)], 5000
            )
            await drained(urls, within=300)  # the profiles are everywhere before the orders come
            print(f"pipeline on this machine: {customers} customers, {seconds:.0f} s per rate")
            print(
                f"{'rate/s':>7} {'sustained/s':>12}  event → action"
                f"{'':38}event → delivery{'':36}max lag (ingest/rules/notifier/analytics)"
            )
            n = 0
            for rate in rates:
                values = [
                    order(i, customers, datetime.now(UTC))
                    for i in range(n, n + int(rate * seconds))
                ]
                n += len(values)
                deadline = time.monotonic() + seconds + 120
                lags: dict[str, float] = {}
                stop = asyncio.Event()
                watcher = asyncio.create_task(max_lag(urls, stop, lags))
                actions_task = asyncio.create_task(
                    collect(bootstrap, topics.actions, len(values), deadline, "key")
                )
                outcomes_task = asyncio.create_task(  # until drained: every order delivered
                    collect(
                        bootstrap,
                        topics.deliveries,
                        len(values),
                        time.monotonic() + seconds + drain,
                        "outcome",
                    )
                )
                await asyncio.sleep(1.5)  # the collectors are assigned
                cpu_before = {name: cpu_seconds(p.pid()) for name, p in watched.items()}
                first = time.time()
                sent = await publish_at(bootstrap, topics.raw_customer, values, rate)
                actions = await actions_task
                outcomes = await outcomes_task
                elapsed = time.time() - first
                cpu = {
                    name: (cpu_seconds(p.pid()) - cpu_before[name]) / elapsed
                    for name, p in watched.items()
                }
                stop.set()
                await watcher
                keyed = {f"followup:O-{k.removeprefix('o-')}": t for k, t in sent.items()}
                to_action = [actions[k] - t for k, t in keyed.items() if k in actions]
                to_delivery = [outcomes[k] - t for k, t in keyed.items() if k in outcomes]
                last = max(actions.values()) if actions else time.time()
                sustained = len(actions) / max(last - first, 1e-9)
                missing = len(values) - len(actions)
                print(
                    f"{rate:>7} {sustained:>12.0f}  {percentiles(to_action):44} "
                    f"{percentiles(to_delivery):44} "
                    + "/".join(f"{lags.get(s, 0):.0f}" for s in SERVICES)
                    + (f"  ({missing} not decided within the step's time)" if missing else "")
                    + (
                        f"  ({len(values) - len(outcomes)} not delivered in time)"
                        if len(outcomes) < len(values)
                        else ""
                    )
                )
                delivered = len(outcomes) / max(max(outcomes.values(), default=0) - first, 1e-9)
                print(
                    f"{'':8}delivered {delivered:.0f}/s sustained; CPU in cores over "
                    f"{elapsed:.0f} s: "
                    + ", ".join(f"{name} {cores:.2f}" for name, cores in cpu.items())
                )
            memory = {s: peak_memory_mb(p.pid()) for s, p in procs.items()}
            print(
                "peak memory (VmHWM): " + ", ".join(f"{s} {mb:.0f} MB" for s, mb in memory.items())
            )
            await admin_topic(bootstrap, "bench.passthrough")
            base = await pass_through(
                KafkaSettings(bootstrap_servers=bootstrap),
                topics.raw_customer,
                "bench.passthrough",
                n,
            )
            print(f"baseline, bare aiokafka pass-through of the same {n} raw records: {base:.0f}/s")
        finally:
            for proc in procs.values():
                proc.stop(timeout=20)
            await sink.stop()
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
    parser.add_argument("--rates", default="50,100,250,1000")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument(
        "--drain", type=float, default=300, help="seconds a step may take to deliver its backlog"
    )
    parser.add_argument(
        "--interval", type=float, default=None, help="rules' and notifier's tick interval (s)"
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    return asyncio.run(run(rates, args.seconds, args.customers, args.drain, args.interval))


if __name__ == "__main__":
    sys.exit(main())
