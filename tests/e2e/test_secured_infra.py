"""Upkeep on secured infrastructure: Kafka that wants a SASL login over TLS (a throwaway CA)
and a MongoDB-wire server that wants a SCRAM login, both of this module's own (the last test
stops the broker).

- every SASL mechanism Upkeep offers (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) carries topics
  creation, a produce and a consume; a wrong password is refused with an authentication error,
  and a broker certificate from a CA the client does not trust is refused;
- all four services run on SASL_SSL Kafka and an authenticated database user that may use only
  its own database, and a channel's events go all the way to a delivered webhook;
- a service missing its database credentials, or with a wrong Kafka password, reports not
  ready and says why, and no password reaches a log line;
- a producer holding records through a broker outage paces its metadata refreshes instead of
  spinning (aiokafka's sender loop), and delivers them once the broker is back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from pymongo import MongoClient

from deploy.local.kafka import SaslListener, free_port
from deploy.local.stack import DEV_API_KEY, LocalStack, ephemeral_stack
from shared.kafka.clients import make_consumer, make_producer
from shared.kafka.topics import ensure_topics
from shared.settings import KafkaSettings
from tests.conftest import unique_topics
from tests.e2e.replicas import Replicas
from tests.receivers import HttpReceiver
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

KAFKA_USER, KAFKA_PASSWORD = "upkeep-svc", "kafka-" + secrets.token_hex(8)
MONGO_USER, MONGO_PASSWORD = "upkeep", "mongo-" + secrets.token_hex(8)
DATABASE = "upkeep_secured"
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)


def make_certificates(into: Path) -> Path:
    """A throwaway CA (``ca.pem``) and a certificate it signed for 127.0.0.1, written with its
    key into one PEM file, which Kafka's PEM key store reads. Returns that key store."""
    steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca",
        "req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj /CN=127.0.0.1",
        "x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.crt"
        " -days 2 -extfile san.cnf",
    ]
    (into / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for step in steps:
        subprocess.run(["openssl", *step.split()], cwd=into, check=True, capture_output=True)
    keystore = into / "broker.pem"
    keystore.write_text((into / "broker.key").read_text() + (into / "broker.crt").read_text())
    return keystore


@pytest.fixture(scope="module")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secured(keystore: Path) -> Iterator[LocalStack]:
    sasl = SaslListener(port=free_port(), users={KAFKA_USER: KAFKA_PASSWORD}, tls=keystore)
    with ephemeral_stack("secured", kafka_sasl=sasl) as stack:
        # as deploy/mongo/init-upkeep-user.js: a user with readWrite on Upkeep's database only
        client: MongoClient[dict[str, Any]]
        with MongoClient(stack.mongo_uri) as client:
            client.admin.command(
                "createUser",
                MONGO_USER,
                pwd=MONGO_PASSWORD,
                roles=[{"role": "readWrite", "db": DATABASE}],
            )
        stack.managed("mongo").stop()
        stack.config.mongo_auth = True
        stack.start_mongo()
        stack.wait_infra()
        yield stack


def sasl_settings(
    stack: LocalStack,
    mechanism: str,
    password: str = KAFKA_PASSWORD,
    trust: str | None = "ca",  # None: the system's default trust, which lacks the test CA
) -> Any:
    """SASL over TLS, trusting the module's CA."""
    sasl = stack.kafka_node.sasl
    assert sasl is not None
    assert sasl.tls is not None
    return KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{sasl.port}",
        security_protocol="SASL_SSL",
        ssl_cafile=str(sasl.tls.with_name("ca.pem")) if trust else None,
        sasl_mechanism=mechanism,
        sasl_username=KAFKA_USER,
        sasl_password=password,
        request_timeout_ms=10_000,
    )


def mongo_uri(stack: LocalStack, password: str | None = MONGO_PASSWORD) -> str:
    login = f"{MONGO_USER}:{password}@" if password else ""
    return f"mongodb://{login}127.0.0.1:{stack.config.mongo_port}/?authSource=admin"


def secured_env(stack: LocalStack, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
    kafka = sasl_settings(stack, mechanism)
    return {
        "UPKEEP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "UPKEEP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "UPKEEP_KAFKA_SSL_CAFILE": str(kafka.ssl_cafile),
        "UPKEEP_KAFKA_SASL_MECHANISM": mechanism,
        "UPKEEP_KAFKA_SASL_USERNAME": KAFKA_USER,
        "UPKEEP_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
        "UPKEEP_MONGO_URI": mongo_uri(stack),
    }


async def round_trip(kafka: KafkaSettings, topic: str, value: bytes) -> list[bytes]:
    producer = make_producer(kafka, "secured-test")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    consumer = make_consumer(kafka, "secured-test", group_id=f"g-{topic}", max_records=10)
    await consumer.start()
    try:
        consumer.subscribe([topic])
        batches = await consumer.getmany(timeout_ms=15_000)
        return [r.value for records in batches.values() for r in records if r.value]
    finally:
        await consumer.stop()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_each_sasl_mechanism_creates_topics_produces_and_consumes(
    secured: LocalStack, mechanism: str
) -> None:
    kafka = sasl_settings(secured, mechanism)
    topics = unique_topics()
    created = await ensure_topics(kafka, topics, wait_s=30)
    assert set(created) >= {topics.events, topics.dlq}
    assert await round_trip(kafka, topics.events, f"over {mechanism}".encode()) == [
        f"over {mechanism}".encode()
    ]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_a_wrong_kafka_password_is_refused_as_an_authentication_failure(
    secured: LocalStack, mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    """aiokafka raises a bare "unable to bootstrap"; the reason is in its log line."""
    producer = make_producer(sasl_settings(secured, mechanism, "not-the-password"), "t")
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(producer.start(), timeout=30)
    await producer.stop()
    reasons = [r.getMessage() for r in caplog.records if r.name == "aiokafka"]
    assert any("SaslAuthenticationFailed" in reason for reason in reasons), reasons
    assert not any("not-the-password" in reason for reason in reasons)


async def test_a_broker_certificate_from_an_unknown_ca_is_refused(
    secured: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    """TLS is verified, not merely switched on: without the CA the handshake fails."""
    producer = make_producer(sasl_settings(secured, "SCRAM-SHA-512", trust=None), "t")
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(producer.start(), timeout=30)
    await producer.stop()
    reasons = " ".join(r.getMessage() for r in caplog.records if r.name == "aiokafka")
    assert "CERTIFICATE_VERIFY_FAILED" in reasons, reasons


def channel_events(now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "type": "staff.upserted",
            "id": "s-1",
            "staff_id": "S-1",
            "name": "Zhang Min",
            "timezone": "UTC",
            "email": "zhang.min@example.com",
        },
        {
            "type": "channel.upserted",
            "id": "h-1",
            "channel_id": "CH-1",
            "name": "Dealer One",
            "timezone": "UTC",
            "manager_id": "S-1",
        },
        {
            "type": "channel.order",
            "id": "po-1",
            "order_id": "PO-1",
            "channel_id": "CH-1",
            "occurred_at": (now - timedelta(days=2)).isoformat(),
            "amount": "500.00",
            "currency": "EUR",
        },
    ]


@pytest.mark.timeout(240)
async def test_every_service_runs_on_sasl_kafka_and_an_authenticated_database(
    secured: LocalStack, receiver: tuple[HttpReceiver, str], tmp_path: Path
) -> None:
    webhooks, webhook_url = receiver
    topics = unique_topics()
    await ensure_topics(sasl_settings(secured, "SCRAM-SHA-512"), topics, wait_s=30)
    rules_yaml = tmp_path / "rules.yaml"
    rules_yaml.write_text(
        orjson.dumps(
            {"channel-health": {"no_orders_days": 1, "local_time": "00:00", "kind": "webhook"}}
        ).decode()
    )
    # the database is the one the user's role allows
    env = secured_env(secured) | {"UPKEEP_MONGO_DATABASE": DATABASE}
    extra = {
        "rules": {
            "UPKEEP_RULES_CONFIG_FILE": str(rules_yaml),
            "UPKEEP_RULES_ENABLED": "channel-health",
        },
        "notifier": {
            "UPKEEP_NOTIFIER_QUIET_HOURS_START": "00:00",
            "UPKEEP_NOTIFIER_QUIET_HOURS_END": "00:00",
            "UPKEEP_NOTIFIER_DISPATCH_INTERVAL_S": "0.2",
            "UPKEEP_NOTIFIER_WEBHOOK_URL": f"{webhook_url}/hooks/upkeep",
            "UPKEEP_NOTIFIER_WEBHOOK_SECRETS": f'["{WEBHOOK_SECRET}"]',
            "UPKEEP_NOTIFIER_ALLOW_PRIVATE_DESTINATIONS": "true",
        },
    }
    services = {
        name: Replicas(secured, name, topics, env | extra.get(name, {}))
        for name in ("ingest", "rules", "notifier", "analytics")
    }
    try:
        for replicas in services.values():
            await asyncio.to_thread(replicas.start, "a")  # waits for /readyz 200
        ingest = services["ingest"].urls["a"]
        async with httpx.AsyncClient(timeout=10) as http:
            for event in channel_events(datetime.now(UTC)):
                answer = await http.post(
                    f"{ingest}/v1/events", json=event, headers={"X-API-Key": DEV_API_KEY}
                )
                assert answer.status_code == 202, answer.text

            analytics, rules = services["analytics"].urls["a"], services["rules"].urls["a"]

            async def counters() -> dict[str, int]:
                window = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
                key = {"X-API-Key": DEV_API_KEY}  # analytics:read
                answer = await http.get(f"{analytics}/v1/report", params=window, headers=key)
                assert answer.status_code == 200, answer.text
                found: dict[str, int] = answer.json()["counters"]
                return found

            async def counted(name: str) -> bool:
                return (await counters()).get(name) == 1

            # ingest (SASL, its dedup store) -> events -> analytics (its own store)
            await eventually(lambda: counted("events.channel.order"), 60, what="no event counted")

            async def timers() -> Any:
                key = {"X-API-Key": DEV_API_KEY}  # the rules API's read key
                state = await http.get(f"{rules}/v1/subjects/channel:CH-1", headers=key)
                pending = await http.get(f"{rules}/v1/subjects/channel:CH-1/timers", headers=key)
                return state.text, pending.text

            async def delivered() -> list[Any]:
                return [r for r in webhooks.received if r.path == "/hooks/upkeep"]

            try:
                posted = await eventually(delivered, 90, what="no webhook was delivered")
            except AssertionError as missing:
                raise AssertionError(
                    f"no webhook; rules' state and timers of CH-1: {await timers()}"
                ) from missing
            action = orjson.loads(posted[0].body)["action"]
            assert action["subject"] == "channel:CH-1"
            assert action["rule"] == "channel-health"
            await eventually(lambda: counted("deliveries.sent"), 60, what="delivery not counted")
            # the action is counted from another topic than its delivery: in its own time
            await eventually(lambda: counted("channels.flagged"), 60, what="not flagged once")
    finally:
        for replicas in services.values():
            replicas.stop_all()
    logs = "\n".join(
        p.read_text(errors="replace")
        for p in (secured.config.state_dir / "logs").glob("*.log")
        if p.stem.split("-")[0] in services
    )
    assert KAFKA_PASSWORD not in logs
    assert MONGO_PASSWORD not in logs


@pytest.mark.timeout(180)
async def test_a_service_without_its_credentials_is_not_ready_and_says_why(
    secured: LocalStack,
) -> None:
    topics = unique_topics()
    await ensure_topics(sasl_settings(secured, "SCRAM-SHA-256"), topics, wait_s=30)
    wrong_kafka = secured_env(secured) | {"UPKEEP_KAFKA_SASL_PASSWORD": "kafka-wrong-password"}
    no_login = secured_env(secured) | {"UPKEEP_MONGO_URI": mongo_uri(secured, None)}
    wrong_mongo = secured_env(secured) | {"UPKEEP_MONGO_URI": mongo_uri(secured, "mongo-wrong")}
    # what /readyz must name as failing, and the reason /readyz or else the log gives: a
    # refused login fails the driver's server selection, which outlasts the 2 s probe, so
    # /readyz says TimeoutError and the log says why
    cases = {
        ("kafka", "SaslAuthenticationFailed"): wrong_kafka,
        ("mongodb", "OperationFailure: Unauthorized"): no_login,
        ("mongodb", "AuthenticationFailed"): wrong_mongo,
    }
    started = [
        Replicas(secured, "ingest", topics, env | {"UPKEEP_MONGO_DATABASE": DATABASE})
        for env in cases.values()
    ]
    try:  # all three at once: each must stay not ready for 20 s
        answers = await asyncio.gather(
            *(asyncio.to_thread(replicas.start, "a", 20) for replicas in started),
            return_exceptions=True,
        )
        async with httpx.AsyncClient(timeout=5) as http:
            for (dependency, reason), replicas, answer in zip(cases, started, answers, strict=True):
                assert isinstance(answer, TimeoutError), answer
                text = str(answer)  # "... not ready after 20s: <the last /readyz body>"
                checks = orjson.loads(text[text.index("{") :])["checks"]
                assert checks[dependency] != "ok", text
                log = secured.managed(f"ingest-{replicas.tag}-a").log_file.read_text()
                assert reason in str(answer) or reason in log, (reason, str(answer))
                health = await http.get(f"{replicas.urls['a']}/healthz")
                assert health.status_code == 200  # alive, waiting, not crashed
    finally:
        for replicas in started:
            replicas.stop_all()
    for path in (secured.config.state_dir / "logs").glob("ingest-*.log"):
        text = path.read_text(errors="replace")
        for password in ("kafka-wrong-password", "mongo-wrong", KAFKA_PASSWORD, MONGO_PASSWORD):
            assert password not in text, path.name


@pytest.mark.timeout(180)
async def test_a_producer_paces_metadata_refreshes_through_a_broker_outage(
    secured: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs last in this module: it stops the broker. Without the pacing, aiokafka's sender
    forces a refresh again as soon as one fails: thousands of attempts (and log lines) a second."""
    kafka = KafkaSettings(bootstrap_servers=secured.kafka_node.bootstrap, request_timeout_ms=60_000)
    topics = unique_topics()
    await ensure_topics(kafka, topics, wait_s=30)
    producer = make_producer(kafka, "outage-test")
    await producer.start()
    pending: list[asyncio.Future[Any]] = []
    stop_sending = asyncio.Event()

    async def keep_sending() -> None:
        n = 0
        while not stop_sending.is_set():
            pending.append(await producer.send(topics.events, f"m-{n}".encode(), key=b"k"))
            n += 1
            await asyncio.sleep(0.01)

    sender = asyncio.create_task(keep_sending())
    try:
        await asyncio.sleep(1)
        await asyncio.to_thread(secured.managed("kafka").stop, 30)
        await asyncio.sleep(1)  # the broker's leadership moves and its port closes
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="aiokafka"):
            await asyncio.sleep(3)
            refreshes = sum("Unable to update metadata" in r.getMessage() for r in caplog.records)
        stop_sending.set()
        await sender
        # retry_backoff_ms is 100: about 10 refreshes a second (each logs once), some slack
        print(f"{refreshes} failed metadata refreshes in 3 s of outage")
        assert refreshes <= 3 * 10 * 2, f"{refreshes} failed metadata refreshes in 3 s"
        await asyncio.to_thread(secured.start_kafka)
        await asyncio.to_thread(secured.wait_infra)
        results = await asyncio.wait_for(asyncio.gather(*pending), timeout=90)
    finally:
        stop_sending.set()
        await producer.stop()
    assert len(results) == len(pending) > 100  # every record sent during the outage delivered
