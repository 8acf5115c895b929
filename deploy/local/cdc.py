"""Change data capture for local runs and tests: a CRM on PostgreSQL whose tables' changes
Debezium's PostgreSQL connector, in a Kafka Connect worker, writes to the local broker.

* **Jars**: Kafka Connect's runtime at the broker's own Kafka version and Debezium's connector
  with its dependencies, resolved once by Maven into ``.cache/`` (as :mod:`deploy.local.kafka`
  resolves the broker's): ``connect-<version>/libs`` is the worker's classpath,
  ``debezium-<version>/plugins`` its ``plugin.path``.
* **PostgreSQL**: Debian's package (installed when missing, as root), a cluster of its own in
  ``<state>/postgres/data`` with logical decoding on, database ``crm`` and its owner ``crm``, who
  may replicate; trust authentication on 127.0.0.1 only (local use, never deploy it). PostgreSQL
  refuses to run as root: as root it runs as the ``postgres`` user the package creates.
* **Connect**: one standalone worker (offsets in ``<state>/connect/offsets.dat``, so a restart
  resumes where it stopped) running connector ``crm-postgres`` (topic prefix ``crm``: topics
  ``crm.public.customers`` and so on, as ``services/ingest/mappings/example-crm-postgres.yaml``
  reads them).

Processes are :class:`~deploy.local.processes.Managed` (pid files, logs in ``<state>/logs/``),
stopped by pid. SQL runs through PostgreSQL's own ``psql``, so no Python driver is needed.

Known: Connect logs one ERROR as it starts (Debezium's CloudEventsConverter wants Kafka 4's
JsonConverter; nothing here uses it). A worker killed before it ever stored its offsets
snapshots the tables again when it starts (``op: r``, new event ids: the rows' upserts come
again); stopped, or killed later, it streams on from its offsets and ingest de-duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from deploy.local.kafka import KAFKA_VERSION, LOG4J, ROOT, free_port
from deploy.local.processes import Managed

DEBEZIUM_VERSION = "3.6.1.Final"
SLF4J_BINDING = ("org.slf4j", "slf4j-reload4j", "1.7.36")  # as the broker logs
CONNECTOR = "crm-postgres"
TOPIC_PREFIX = "crm"
TABLES = ("customers", "contracts", "orders")
TOPICS = tuple(f"{TOPIC_PREFIX}.public.{table}" for table in TABLES)

# The CRM's tables, as services/ingest/mappings/example-crm-postgres.yaml expects them. A
# contract's delete must carry its customer: REPLICA IDENTITY FULL puts the whole old row in
# the WAL (by default a delete names only the primary key).
CRM_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id integer PRIMARY KEY, full_name text NOT NULL, timezone text, locale text, email text,
    phone text, owner_id text, birthday date);
CREATE TABLE IF NOT EXISTS contracts (
    id integer PRIMARY KEY, customer_id integer NOT NULL REFERENCES customers (id),
    start_date date NOT NULL, end_date date NOT NULL, amount numeric(12, 2), currency text,
    status text NOT NULL, auto_renew boolean NOT NULL DEFAULT false,
    updated_at timestamp NOT NULL DEFAULT localtimestamp);
CREATE TABLE IF NOT EXISTS orders (
    id integer PRIMARY KEY, customer_id integer NOT NULL REFERENCES customers (id),
    amount numeric(12, 2), currency text, ordered_at timestamp NOT NULL);
ALTER TABLE contracts REPLICA IDENTITY FULL;
"""

# a few rows for `make up`, relative to today so that reminders are planned
CRM_SAMPLE_ROWS = """
INSERT INTO customers VALUES
    (1, 'Wang Fang', 'Asia/Shanghai', 'zh-CN', 'wang.fang@example.cn', '+8613800138000',
     'sales-1', '1990-02-28'),
    (2, 'Anna Berger', 'Europe/Berlin', 'de-DE', 'anna.berger@example.de', NULL, 'sales-2', NULL)
ON CONFLICT DO NOTHING;
INSERT INTO contracts VALUES
    (1, 1, current_date - 320, current_date + 45, 12000.00, 'CNY', 'signed', false),
    (2, 2, current_date - 10, current_date + 355, 800.00, 'EUR', 'draft', true)
ON CONFLICT DO NOTHING;
INSERT INTO orders VALUES (1, 1, 99.90, 'CNY', localtimestamp - interval '3 days')
ON CONFLICT DO NOTHING;
"""

_OWNER_AND_DATABASE = r"""
SELECT format('CREATE ROLE %I LOGIN REPLICATION', :'user')
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
"""

# no ~/.psqlrc, quiet, unaligned, tuples only, stop at the first error
_PSQL_OUTPUT = ("-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1")

# written by _resolve (as deploy/kafka/pom.xml for the broker): mvn dependency:copy-dependencies
_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
  <groupId>io.upkeep</groupId><artifactId>upkeep-local-{name}</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
  <build><plugins><plugin><groupId>org.apache.maven.plugins</groupId>
    <artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version>
    <configuration><includeScope>runtime</includeScope></configuration>
  </plugin></plugins></build>
</project>
"""


def _resolve(
    home: Path, libs: Path, artifacts: list[tuple[str, str, str]], *, exclude_group: str = ""
) -> Path:
    """Copy ``artifacts`` (group, artifact, version) and their runtime dependencies, but none
    of ``exclude_group`` nor what only those need, into ``libs`` once (Maven's repository is
    ``<home>/../m2``, shared with the broker's jars); concurrent callers wait for each other on
    a file lock in ``home``."""
    marker = libs / ".complete"
    if marker.exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return libs
        shutil.rmtree(libs, ignore_errors=True)  # a resolution that did not finish
        excluded = (
            f"<exclusions><exclusion><groupId>{exclude_group}</groupId>"
            "<artifactId>*</artifactId></exclusion></exclusions>"
            if exclude_group
            else ""
        )
        dependencies = "\n".join(
            f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
            f"<version>{v}</version>{excluded}</dependency>"
            for g, a, v in artifacts
        )
        pom = home / "pom.xml"
        pom.write_text(_POM.format(name=home.name, dependencies=dependencies))
        maven = ["mvn", "-B", "-q", "-f", str(pom), f"-Dmaven.repo.local={home.parent / 'm2'}"]
        goal = ["dependency:copy-dependencies", f"-DoutputDirectory={libs}"]
        subprocess.run([*maven, *goal], check=True)
        for _, artifact, version in artifacts:
            if not (libs / f"{artifact}-{version}.jar").exists():
                raise RuntimeError(f"Maven did not produce {artifact}-{version}.jar in {libs}")
        marker.write_text("\n".join(":".join(a) for a in artifacts) + "\n")
    return libs


def ensure_connect_jars(cache: Path) -> Path:
    """Kafka Connect's runtime at the broker's version: the worker's classpath."""
    kafka = [
        ("org.apache.kafka", artifact, KAFKA_VERSION)
        for artifact in ("connect-runtime", "connect-api", "connect-json", "connect-transforms")
    ]
    home = cache / f"connect-{KAFKA_VERSION}"
    return _resolve(home, home / "libs", [*kafka, SLF4J_BINDING])


def ensure_debezium_plugin(cache: Path) -> Path:
    """Debezium's PostgreSQL connector in a plugin folder of its own (Connect loads each
    folder of its ``plugin.path`` in isolation); returns the ``plugin.path``. Kafka's own jars
    stay out: the worker provides Connect's API."""
    home = cache / f"debezium-{DEBEZIUM_VERSION}"
    plugins = home / "plugins"
    _resolve(
        home,
        plugins / "debezium-connector-postgres",
        [("io.debezium", "debezium-connector-postgres", DEBEZIUM_VERSION)],
        exclude_group="org.apache.kafka",
    )
    return plugins


# -- PostgreSQL -------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's ``bin`` (Debian's ``/usr/lib/postgresql/N/bin``);
    installs Debian's package first when missing and this is root."""
    found = _installed()
    if found is None and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env)
        found = _installed()
    if found is None:
        raise RuntimeError("change data capture needs PostgreSQL: sudo apt-get install postgresql")
    return found


def _installed() -> Path | None:
    versions = glob.glob("/usr/lib/postgresql/*/bin/postgres")
    if not versions:
        return None
    newest = max(versions, key=lambda p: int(Path(p).parts[-3]))
    return Path(newest).parent


def _unprivileged() -> list[str]:
    """The prefix that runs a server program as ``postgres`` when this is root (``setpriv``
    execs it: the pid is the program's own, so it is stopped by pid like any other)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


FALLBACK_ROOT = Path("/var/tmp/upkeep-postgres")  # noqa: S108 - a fixed, root-made folder


@functools.lru_cache(maxsize=16)
def _reachable(folder: str) -> bool:
    """Whether the ``postgres`` user can enter ``folder`` (and so what is below it)."""
    found = subprocess.run([*_unprivileged(), "test", "-x", folder], check=False)
    return found.returncode == 0


@dataclass(frozen=True)
class PostgresNode:
    state_dir: Path
    port: int
    host: str = "127.0.0.1"
    database: str = "crm"
    user: str = "crm"  # owns the database and may replicate (Debezium logs in as it)

    @property
    def data_dir(self) -> Path:
        """In the state dir; when that is closed to the ``postgres`` user (a clone under
        ``/root``), in ``/var/tmp/upkeep-postgres/<hash of the state dir>/``."""
        wanted = self.state_dir / "postgres" / "data"
        if os.geteuid() != 0 or _reachable(str(self.state_dir)):
            return wanted
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:16]
        return FALLBACK_ROOT / digest / "data"

    def init(self, bindir: Path) -> None:
        """Create the cluster once (kept across restarts)."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.data_dir.is_relative_to(FALLBACK_ROOT):
            for folder in (FALLBACK_ROOT, self.data_dir.parent):
                folder.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
        self.data_dir.chmod(0o700)
        reach = subprocess.run([*_unprivileged(), "test", "-w", str(self.data_dir)], check=False)
        if reach.returncode != 0:  # a folder above is closed to others (e.g. /root)
            raise RuntimeError(
                f"PostgreSQL runs as user postgres, who cannot reach {self.data_dir}"
            )
        options = ["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"]
        subprocess.run(
            [*_unprivileged(), str(bindir / "initdb"), "-D", str(self.data_dir), *options],
            check=True,
            stdout=subprocess.DEVNULL,
            cwd=self.data_dir,
        )
        # only TCP from this machine, for anyone: local use and tests
        (self.data_dir / "pg_hba.conf").write_text(
            "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
        )

    def argv(self, bindir: Path) -> list[str]:
        # TCP only; logical decoding for Debezium; a TIMESTAMP's default (localtimestamp) in
        # UTC, as the example mapping reads Debezium's epoch microseconds
        settings = f"""port={self.port} listen_addresses={self.host} unix_socket_directories=
            wal_level=logical max_replication_slots=8 max_wal_senders=8 timezone=UTC
            shared_buffers=64MB log_min_messages=warning"""
        options = [arg for setting in settings.split() for arg in ("-c", setting)]
        return [*_unprivileged(), str(bindir / "postgres"), "-D", str(self.data_dir), *options]

    def psql(self, sql: str, bindir: Path, *, admin: bool = False, **variables: str) -> str:
        """Run ``sql`` (statements, psql's meta-commands; it stops at the first error) in the
        CRM's database as its owner, or with ``admin`` in ``postgres`` as the superuser, and
        return what it printed (unaligned, no headers). ``variables`` are psql's: ``:'name'``
        in ``sql`` is the value quoted."""
        user, db = ("postgres", "postgres") if admin else (self.user, self.database)
        where = ["-h", self.host, "-p", str(self.port), "-U", user, "-d", db]
        defined = [arg for k, v in variables.items() for arg in ("-v", f"{k}={v}")]
        done = subprocess.run(
            [str(bindir / "psql"), *_PSQL_OUTPUT, *where, *defined],
            input=sql,
            capture_output=True,
            text=True,
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()

    def ensure_database(self, bindir: Path) -> None:
        """The replicating owner and its database, once."""
        self.psql(_OWNER_AND_DATABASE, bindir, admin=True, user=self.user, db=self.database)


# -- Kafka Connect ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectWorker:
    state_dir: Path
    rest_port: int
    bootstrap: str
    postgres: PostgresNode
    # how often the worker stores how far it got (and PostgreSQL may drop the WAL before):
    # after a crash it re-sends what it wrote since (ingest de-duplicates)
    offset_flush_ms: int = 5000

    @property
    def config_dir(self) -> Path:
        return self.state_dir / "connect"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def connector_settings(self) -> dict[str, str]:
        pg = self.postgres
        return {
            "name": CONNECTOR,
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "tasks.max": "1",
            "plugin.name": "pgoutput",
            "database.hostname": pg.host,
            "database.port": str(pg.port),
            "database.user": pg.user,
            "database.dbname": pg.database,
            "topic.prefix": TOPIC_PREFIX,
            "table.include.list": ",".join(f"public.{t}" for t in TABLES),
            "decimal.handling.mode": "string",  # NUMERIC as text: no precision lost
            "slot.name": "upkeep_crm",
            "publication.name": "upkeep_crm",
            "publication.autocreate.mode": "filtered",
            "topic.creation.default.replication.factor": "1",
            "topic.creation.default.partitions": "1",
        }

    def write_config(self, plugin_path: Path) -> tuple[Path, Path]:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        json = "org.apache.kafka.connect.json.JsonConverter"
        worker = {
            "bootstrap.servers": self.bootstrap,
            "key.converter": json,
            "value.converter": json,
            "key.converter.schemas.enable": "false",
            "value.converter.schemas.enable": "false",
            "offset.storage.file.filename": str(self.config_dir / "offsets.dat"),
            "offset.flush.interval.ms": str(self.offset_flush_ms),
            "plugin.path": str(plugin_path),
            "plugin.discovery": "service_load",  # every plugin here has its manifests
            "listeners": self.url,
        }
        files = (self.config_dir / "worker.properties", self.config_dir / "connector.properties")
        for path, settings in zip(files, (worker, self.connector_settings()), strict=True):
            path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        return files

    def argv(self, libs: Path, plugin_path: Path, heap: str = "384m") -> list[str]:
        worker, connector = self.write_config(plugin_path)
        # C1 only: starts sooner, and a local worker needs no peak speed
        jvm = [f"-Xmx{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
        jvm += ["-Djava.awt.headless=true", f"-Dlog4j.configuration=file:{LOG4J}"]
        main = "org.apache.kafka.connect.cli.ConnectStandalone"
        return ["java", *jvm, "-cp", f"{libs}/*", main, str(worker), str(connector)]

    def status(self) -> dict[str, Any] | None:
        """Connect's ``/connectors/<name>/status``, or None while it does not answer."""
        try:
            answer = httpx.get(f"{self.url}/connectors/{CONNECTOR}/status", timeout=3)
        except httpx.HTTPError:
            return None
        found: dict[str, Any] = answer.json() if answer.status_code == 200 else {}
        return found or None


async def _create_topics(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for topic in TOPICS:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


class CdcStack:
    """PostgreSQL and the Connect worker, their pid files and logs in ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        bootstrap: str,
        *,
        cache_dir: Path = ROOT / ".cache",
        postgres_port: int | None = None,
        rest_port: int | None = None,
        offset_flush_ms: int = 5000,
    ) -> None:
        self.state_dir, self.cache_dir = state_dir, cache_dir
        self.postgres = PostgresNode(state_dir, postgres_port or free_port())
        self.worker = ConnectWorker(
            state_dir, rest_port or free_port(), bootstrap, self.postgres, offset_flush_ms
        )
        self._bindir: Path | None = None

    def managed(self, name: str) -> Managed:
        return Managed(name, self.state_dir)

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = postgres_bin()
        return self._bindir

    def prepare(self) -> None:
        """Everything that takes long the first time on a machine: packages and jars."""
        _ = self.bindir
        ensure_connect_jars(self.cache_dir)
        ensure_debezium_plugin(self.cache_dir)

    def psql_command(self) -> str:
        """How a person opens the CRM's database."""
        pg = self.postgres
        return f"{self.bindir / 'psql'} -h {pg.host} -p {pg.port} -U {pg.user} {pg.database}"

    def sql(self, statements: str) -> str:
        """Run SQL in the CRM database as its owner."""
        return self.postgres.psql(statements, self.bindir)

    def start_postgres(self, timeout: float = 60) -> None:
        self.postgres.init(self.bindir)
        proc = self.managed("postgres")
        proc.start(self.postgres.argv(self.bindir), cwd=self.postgres.data_dir)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.postgres.psql("SELECT 1", self.bindir, admin=True)
                break
            except RuntimeError:
                if proc.pid() is None:
                    raise RuntimeError(f"PostgreSQL exited; see {proc.log_file}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.postgres.ensure_database(self.bindir)

    def start_connect(self, timeout: float = 120) -> None:
        """Start the worker (its topics first, so consumers find them) and wait until the
        connector streams: its task RUNNING and the replication slot in use by it."""
        libs = ensure_connect_jars(self.cache_dir)
        plugins = ensure_debezium_plugin(self.cache_dir)
        asyncio.run(_create_topics(self.worker.bootstrap))
        proc = self.managed("connect")
        # a worker killed a moment ago may still hold the slot (until PostgreSQL notices)
        before = self._slot_user() if proc.pid() is None else ""
        proc.start(self.worker.argv(libs, plugins), cwd=self.worker.config_dir)
        self.wait_streaming(timeout, proc, not_by=before)

    def wait_streaming(self, timeout: float, proc: Managed | None = None, not_by: str = "") -> None:
        """Wait until the task is RUNNING and a walsender other than ``not_by`` (a pid) uses
        the slot; raises with the task's trace if it failed."""
        deadline = time.monotonic() + timeout
        state: object = "no answer"
        while time.monotonic() < deadline:
            if proc is not None and proc.pid() is None:
                raise RuntimeError(f"Kafka Connect exited; see {proc.log_file}")
            status = self.worker.status()
            if status is not None:
                tasks = status.get("tasks") or []
                state = [t.get("state") for t in tasks] or status.get("connector")
                failed = [t.get("trace", "")[:2000] for t in tasks if t.get("state") == "FAILED"]
                if failed:
                    raise RuntimeError(f"the connector's task failed: {failed[0]}")
                if state == ["RUNNING"] and self._slot_user() not in ("", not_by):
                    return
            time.sleep(0.3)
        raise TimeoutError(f"connector {CONNECTOR} not streaming after {timeout:.0f}s: {state}")

    def _slot_user(self) -> str:
        """The pid of the walsender streaming the connector's slot ("" when none does)."""
        query = "SELECT active_pid FROM pg_replication_slots WHERE slot_name = :'slot'"
        slot = self.worker.connector_settings()["slot.name"]
        return self.postgres.psql(query, self.bindir, admin=True, slot=slot)

    def stop_connect(self, timeout: float = 30) -> bool:
        """Stop the worker gracefully (it commits its offsets); True if it was running."""
        return self.managed("connect").stop(timeout)

    def stop_postgres(self, timeout: float = 30) -> bool:
        """A fast shutdown (SIGINT: sessions are ended, not waited for), then as any process."""
        proc = self.managed("postgres")
        if not proc.signal(signal.SIGINT):
            return False
        deadline = time.monotonic() + timeout
        while proc.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.stop(5)
        return True

    def stop(self) -> list[str]:
        """Connect first (it reads PostgreSQL), then PostgreSQL. Returns what was running."""
        stopped = []
        if self.stop_connect():
            stopped.append("connect")
        if self.stop_postgres():
            stopped.append("postgres")
        return stopped

    def start(self) -> None:
        """For ``make up``: PostgreSQL with the CRM's tables, the worker streaming, and a few
        rows written after it streams (each a change with its own position in the log)."""
        self.prepare()
        self.start_postgres()
        self.sql(CRM_SCHEMA)
        self.start_connect()
        self.sql(CRM_SAMPLE_ROWS)
