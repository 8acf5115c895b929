"""The whole local system: Kafka, the MongoDB-wire server, topics and every service (and,
opted into, PostgreSQL with Debezium in Kafka Connect: :mod:`deploy.local.cdc`).

Shared by ``make up`` (fixed ports, state in ``.run/``) and the test harness (free ports, a
state directory of its own), so tests run the system the way a newcomer does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pymongo import MongoClient

from deploy.local.cdc import CdcStack
from deploy.local.kafka import (
    ROOT,
    KafkaNode,
    SaslListener,
    ensure_jars,
    free_port,
    wait_for_port,
)
from deploy.local.mongo_choice import ServerChoice, choose
from deploy.local.processes import Managed
from services.ingest.settings import MAPPINGS_DIR
from shared.apikeys import digest
from shared.kafka.topics import ensure_topics
from shared.settings import KafkaSettings, TopicSettings

# every service of the design, in start order, with its fixed port
SERVICE_PORTS: dict[str, int] = {"ingest": 8001, "rules": 8002, "notifier": 8003, "analytics": 8004}
# the key ``make up`` configures for local use only (never deploy it)
DEV_API_KEY = "upk_local_development_key_do_not_deploy"
# the dashboard's local sign-in (user admin) and session key, for local use only
DEV_ADMIN_PASSWORD = "upkeep-local-admin"  # noqa: S105 - local use only, printed by make up
DEV_SESSION_SECRET = "local-development-session-secret-do-not-deploy"  # noqa: S105


def dev_accounts() -> str:
    """The local accounts: ``admin`` with :data:`DEV_ADMIN_PASSWORD` (hashed now, as a
    deployment's accounts are)."""
    from argon2 import PasswordHasher

    hashed = PasswordHasher().hash(DEV_ADMIN_PASSWORD)
    return f'[{{"username": "admin", "password_hash": "{hashed}", "role": "admin"}}]'


def existing_services() -> list[str]:
    """The services with an entry point (``services/<name>/__main__.py``)."""
    return [name for name in SERVICE_PORTS if (ROOT / "services" / name / "__main__.py").exists()]


@dataclass
class StackConfig:
    state_dir: Path
    cache_dir: Path = ROOT / ".cache"
    kafka_port: int = 9092
    controller_port: int = 9093
    mongo_port: int = 27017
    smtp_port: int = 1025
    mail_dir: Path | None = None
    service_ports: dict[str, int] = field(default_factory=lambda: dict(SERVICE_PORTS))
    kafka_heap: str = "768m"
    kafka_sasl: SaslListener | None = None  # a second listener, SASL over TLS or not (tests)
    mongo_auth: bool = False  # the MongoDB-wire server refuses unauthenticated commands
    rules_overlay: Path | None = None  # UPKEEP_RULES_CONFIG_OVERLAY (make up: the demo's delays)
    cdc: bool = False  # start_infra also starts PostgreSQL and Connect (UPKEEP_LOCAL_CDC=1)
    postgres_port: int = 55432  # beside a PostgreSQL of the machine's own on 5432
    connect_port: int = 8083  # Kafka Connect's REST API


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._mongo_choice: ServerChoice | None = None
        self._cdc: CdcStack | None = None
        self.kafka_node = KafkaNode(
            config.state_dir, config.kafka_port, config.controller_port, sasl=config.kafka_sasl
        )

    # -- processes ---------------------------------------------------------------------------

    def managed(self, name: str) -> Managed:
        return Managed(name, self.config.state_dir)

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.config.mongo_port}"

    def base_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.config.service_ports[service]}"

    def service_env(self, service: str) -> dict[str, str]:
        """The environment a service runs with locally (the same variables Compose sets)."""
        prefix = f"UPKEEP_{service.upper()}_"
        env = {
            "UPKEEP_KAFKA_BOOTSTRAP_SERVERS": self.kafka_node.bootstrap,
            "UPKEEP_MONGO_URI": self.mongo_uri,
            "UPKEEP_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            prefix + "HTTP_PORT": str(self.config.service_ports[service]),
            prefix + "INSTANCE_ID": "local-1",
        }
        if service == "notifier":
            env[prefix + "SMTP_PORT"] = str(self.config.smtp_port)
            env[prefix + "PUBLIC_BASE_URL"] = self.base_url("notifier")
            env[prefix + "API_KEYS"] = (
                f'[{{"name": "local-dev", "sha256": "{digest(DEV_API_KEY)}", '
                '"scopes": ["notifier:admin"]}]'
            )
        if service == "rules" and self.config.rules_overlay is not None:
            env[prefix + "CONFIG_OVERLAY"] = str(self.config.rules_overlay)
        if service == "rules":
            env[prefix + "API_KEYS"] = (
                f'[{{"name": "local-dev", "sha256": "{digest(DEV_API_KEY)}", '
                '"scopes": ["rules:read", "rules:admin"]}]'
            )
        if service == "analytics":
            env[prefix + "API_KEYS"] = (
                f'[{{"name": "local-dev", "sha256": "{digest(DEV_API_KEY)}", '
                '"scopes": ["analytics:read", "analytics:admin"]}]'
            )
            env[prefix + "ACCOUNTS"] = dev_accounts()
            env[prefix + "SESSION_SECRET"] = DEV_SESSION_SECRET
            env[prefix + "COOKIE_SECURE"] = "false"  # plain HTTP on 127.0.0.1
            env[prefix + "DASHBOARD_URL"] = self.base_url("analytics") + "/"
        if service == "ingest" and self.config.cdc:
            # the shipped mappings, example-crm-postgres among them: it reads Connect's topics
            env[prefix + "MAPPINGS_DIR"] = str(MAPPINGS_DIR)
        if service == "ingest":
            env[prefix + "API_KEYS"] = (
                f'[{{"name": "local-dev", "sha256": "{digest(DEV_API_KEY)}", '
                '"scopes": ["events:write"]}]'
            )
        return env

    # -- infrastructure ----------------------------------------------------------------------

    def start_kafka(self) -> None:
        libs = ensure_jars(self.config.cache_dir)
        self.kafka_node.write_config()
        self.kafka_node.format_storage(libs)
        self.managed("kafka").start(self.kafka_node.argv(libs, self.config.kafka_heap))

    @property
    def mongo_server(self) -> ServerChoice:
        """The embedded MongoDB-wire server this stack runs (compiled unless it cannot be)."""
        if self._mongo_choice is None:
            self._mongo_choice = choose()
        return self._mongo_choice

    def start_mongo(self) -> None:
        """Start the chosen server unless one runs already. Each kind keeps its data in a
        directory of its own (``mongo/rust``, ``mongo/python``): their files are not shared."""
        managed = self.managed("mongo")
        if managed.pid() is not None:
            return
        server = self.mongo_server
        data = self.config.state_dir / "mongo" / server.kind
        data.mkdir(parents=True, exist_ok=True)
        managed.start(
            server.command("127.0.0.1", self.config.mongo_port, data, auth=self.config.mongo_auth),
            cwd=ROOT,
        )
        (self.config.state_dir / "mongo.server").write_text(server.why + "\n")

    @property
    def mail_dir(self) -> Path:
        """Where the development SMTP server keeps messages (``.run/mail`` for ``make up``)."""
        return self.config.mail_dir or self.config.state_dir / "mail"

    def start_mailsink(self) -> None:
        self.managed("mailsink").start(
            [
                sys.executable,
                "-m",
                "deploy.local.mailsink",
                "--dir",
                str(self.mail_dir),
                "--port",
                str(self.config.smtp_port),
            ],
            cwd=ROOT,
        )

    def wait_infra(self, timeout: float = 90) -> None:
        wait_for_port("127.0.0.1", self.config.mongo_port, timeout)
        deadline = time.monotonic() + timeout
        client: MongoClient[dict[str, object]]
        with MongoClient(self.mongo_uri, serverSelectionTimeoutMS=2000) as client:
            while True:
                try:
                    client.admin.command("ping")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
        wait_for_port("127.0.0.1", self.config.kafka_port, timeout)

    def create_topics(self, topics: TopicSettings | None = None) -> list[str]:
        kafka = KafkaSettings(bootstrap_servers=self.kafka_node.bootstrap)
        return asyncio.run(ensure_topics(kafka, topics or TopicSettings(), wait_s=90))

    @property
    def cdc(self) -> CdcStack:
        """PostgreSQL and Kafka Connect with Debezium, beside this stack's Kafka (their pid
        files and logs with the others)."""
        if self._cdc is None:
            self._cdc = CdcStack(
                self.config.state_dir,
                self.kafka_node.bootstrap,
                cache_dir=self.config.cache_dir,
                postgres_port=self.config.postgres_port,
                rest_port=self.config.connect_port,
            )
        return self._cdc

    def start_infra(self) -> None:
        self.start_mongo()
        self.start_kafka()
        self.start_mailsink()
        self.wait_infra()
        wait_for_port("127.0.0.1", self.config.smtp_port, 30)
        self.create_topics()
        if self.config.cdc:
            self.cdc.start()

    # -- services ----------------------------------------------------------------------------

    def start_service(
        self, service: str, *, name: str | None = None, env: dict[str, str] | None = None
    ) -> Managed:
        managed = self.managed(name or service)
        managed.start(
            [sys.executable, "-m", f"services.{service}"],
            env={**self.service_env(service), **(env or {})},
            cwd=ROOT,
        )
        return managed

    def wait_ready(self, url: str, timeout: float = 60, proc: Managed | None = None) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if proc is not None and proc.pid() is None:
                raise RuntimeError(f"{proc.name} exited; see {proc.log_file}")
            try:
                answer = httpx.get(f"{url}/readyz", timeout=3)
                if answer.status_code == 200:
                    return
                last = answer.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise TimeoutError(f"{url} not ready after {timeout:.0f}s: {last}")

    def stop_all(self) -> list[str]:
        """Stop services first, then Connect and PostgreSQL, then Kafka, then MongoDB. Returns
        what was running."""
        stopped = []
        pids = self.config.state_dir / "pids"
        names = sorted(p.stem for p in pids.glob("*.pid")) if pids.exists() else []
        infra = ("kafka", "mongo", "mailsink")
        for name in [n for n in names if n not in (*infra, "connect", "postgres")]:
            if self.managed(name).stop():
                stopped.append(name)
        stopped += self.cdc.stop()
        for name in infra:
            if self.managed(name).stop():
                stopped.append(name)
        return stopped


@contextmanager
def ephemeral_stack(
    purpose: str, kafka_heap: str = "512m", kafka_sasl: SaslListener | None = None
) -> Iterator[LocalStack]:
    """Kafka and the MongoDB-wire server on free ports, for a test session or a benchmark.

    State lives in ``.run/<purpose>-<pid>/`` and is removed afterwards unless
    ``UPKEEP_KEEP_TEST_STATE=1``. Services get free ports too, so this runs beside ``make up``.
    """
    state = ROOT / ".run" / f"{purpose}-{os.getpid()}"
    stack = LocalStack(
        StackConfig(
            state_dir=state,
            kafka_port=free_port(),
            controller_port=free_port(),
            mongo_port=free_port(),
            smtp_port=free_port(),
            service_ports={name: free_port() for name in SERVICE_PORTS},
            postgres_port=free_port(),
            connect_port=free_port(),
            kafka_heap=kafka_heap,
            kafka_sasl=kafka_sasl,
        )
    )
    try:
        stack.start_mongo()
        stack.start_kafka()
        stack.wait_infra(timeout=120)
        yield stack
    finally:
        stack.stop_all()
        if os.environ.get("UPKEEP_KEEP_TEST_STATE") != "1":
            shutil.rmtree(state, ignore_errors=True)
