"""``python -m deploy.local up|down|status|logs`` — the local runner behind ``make up``.

``UPKEEP_LOCAL_CDC=1`` also runs a CRM on PostgreSQL whose changes Debezium captures into Kafka
(:mod:`deploy.local.cdc`); ingest maps them with ``services/ingest/mappings``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from deploy.local.cdc import CONNECTOR
from deploy.local.kafka import ROOT
from deploy.local.stack import (
    DEV_ADMIN_PASSWORD,
    DEV_API_KEY,
    LocalStack,
    StackConfig,
    existing_services,
)

STATE = ROOT / ".run" / "local"
# with UPKEEP_LOCAL_CDC=1: a change in the CRM, and where its renewal reminders show
TRY_SQL = "UPDATE contracts SET end_date = current_date + 30 WHERE id = 1;"
TRY_TIMERS = "/v1/subjects/customer:crm-1/timers"


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def up(stack: LocalStack) -> int:
    started = time.monotonic()
    if stack.managed("mongo").pid() is None:
        _say("MongoDB-wire server: " + stack.mongo_server.why)
    _say("starting the MongoDB-wire server and Kafka (KRaft) ...")
    if stack.config.cdc:
        _say("  and PostgreSQL with Debezium in Kafka Connect (UPKEEP_LOCAL_CDC=1) ...")
    stack.start_infra()
    _say("topics ready; starting services ...")
    for service in existing_services():
        proc = stack.start_service(service)
        stack.wait_ready(stack.base_url(service), timeout=90, proc=proc)
        _say(f"  {service:<10} ready at {stack.base_url(service)}")
    _say(f"\nUpkeep is up ({time.monotonic() - started:.0f}s):")
    status(stack)
    _say(
        "\nTry it:\n"
        f"  curl -X POST {stack.base_url('ingest')}/v1/events -H 'X-API-Key: {DEV_API_KEY}' \\\n"
        '       -H \'content-type: application/json\' -d \'{"type": "customer.upserted", '
        '"customer_id": "C-1", "name": "Ada", "timezone": "Europe/London"}\'\n'
        f"  dashboard: {stack.base_url('analytics')}/  (sign in as admin / {DEV_ADMIN_PASSWORD})\n"
        f"  API docs: {stack.base_url('ingest')}/docs     logs: make logs     stop: make down"
    )
    if stack.config.cdc:
        _say(f"  the CRM: {stack.cdc.psql_command()}   (then e.g. {TRY_SQL})")
        rules = stack.base_url("rules")
        _say(f"  reminders: curl -H 'X-API-Key: {DEV_API_KEY}' {rules}{TRY_TIMERS}")
    return 0


def status(stack: LocalStack) -> int:
    rows = [
        ("kafka", f"{stack.kafka_node.bootstrap} (KRaft, data in {stack.kafka_node.data_dir})"),
        (
            "mongo",
            f"{stack.mongo_uri} (database upkeep, data in {stack.config.state_dir / 'mongo'}; "
            f"{_running_mongo(stack)})",
        ),
    ]
    if stack.config.cdc or stack.managed("connect").pid() or stack.managed("postgres").pid():
        pg, worker = stack.cdc.postgres, stack.cdc.worker
        rows += [
            ("postgres", f"postgresql://{pg.user}@{pg.host}:{pg.port}/{pg.database} (the CRM)"),
            ("connect", f"{worker.url}/connectors/{CONNECTOR}/status (Debezium)"),
        ]
    rows += [
        (s, f"{stack.base_url(s)}  /docs /metrics /healthz /readyz") for s in existing_services()
    ]
    for name, where in rows:
        managed = stack.managed(name)
        pid = managed.pid()
        state = f"running pid {pid}" if pid else "stopped"
        _say(f"  {name:<10} {state:<18} {where}  log {managed.log_file}")
    return 0


def _running_mongo(stack: LocalStack) -> str:
    marker = stack.config.state_dir / "mongo.server"
    if stack.managed("mongo").pid() is None or not marker.exists():
        return "not running"
    return marker.read_text().strip()


def logs(stack: LocalStack, lines: int) -> int:
    for log in sorted((stack.config.state_dir / "logs").glob("*.log")):
        _say(f"==> {log} <==")
        with log.open("rb") as handle:
            tail = handle.readlines()[-lines:]
        _say(b"".join(tail).decode("utf-8", "replace").rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "logs"])
    parser.add_argument("-n", "--lines", type=int, default=30, help="log lines per process")
    args = parser.parse_args(argv)
    stack = LocalStack(
        StackConfig(
            state_dir=STATE,
            mail_dir=ROOT / ".run" / "mail",
            rules_overlay=ROOT / "deploy" / "local" / "rules.demo.yaml",
            cdc=os.environ.get("UPKEEP_LOCAL_CDC") == "1",
        )
    )
    if args.command == "up":
        return up(stack)
    if args.command == "down":
        stopped = stack.stop_all()
        _say("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    if args.command == "status":
        return status(stack)
    return logs(stack, args.lines)


if __name__ == "__main__":
    sys.exit(main())
