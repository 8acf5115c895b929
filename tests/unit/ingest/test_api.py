"""services/ingest/api.py on shared.http.create_app, driven in-process through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from pymongo.errors import OperationFailure

from services.ingest.api import HttpIngestConfig, events_router
from services.ingest.dedup import InMemoryDedupStore
from services.ingest.normalise import NormaliseContext
from services.ingest.pipeline import IngestConfig, IngestHandler
from shared.apikeys import WRITE_EVENTS, ApiKeySpec, KeyRing, digest
from shared.errors import TransientError
from shared.events.envelope import CONTENT_TYPE, CanonicalEvent
from shared.http import create_app
from shared.kafka.messages import Outgoing, StoredRecord

WRITER_KEY = "upk_writer-key-for-tests"
READER_KEY = "upk_reader-key-for-tests"
RAW_CUSTOMER = "raw.customer.test"
RAW_CHANNEL = "raw.channel.test"
CONFIG = HttpIngestConfig(
    raw_customer_topic=RAW_CUSTOMER,
    raw_channel_topic=RAW_CHANNEL,
    max_body_bytes=4096,
    max_batch_items=3,
    max_message_bytes=1500,
    context=NormaliseContext(default_source="http-test"),
)
KEYS = KeyRing(
    [
        ApiKeySpec(name="writer", sha256=digest(WRITER_KEY), scopes=[WRITE_EVENTS]),
        ApiKeySpec(name="reader", sha256=digest(READER_KEY), scopes=["events:read"]),
    ]
)
AUTH = {"Authorization": f"Bearer {WRITER_KEY}"}
CUSTOMER = {"type": "customer.upserted", "customer_id": "C-1", "name": "Li", "timezone": "UTC"}
CHANNEL = {"type": "channel.upserted", "channel_id": "CH-1", "name": "Acme", "timezone": "UTC"}


class Recorder:
    def __init__(self, error: Exception | None = None) -> None:
        self.batches: list[list[Outgoing]] = []
        self.error = error

    async def __call__(self, messages: Sequence[Outgoing]) -> None:
        if self.error is not None:
            raise self.error
        self.batches.append(list(messages))

    @property
    def messages(self) -> list[Outgoing]:
        return [m for batch in self.batches for m in batch]


def build_app(publish: Recorder, readiness: Mapping[str, Any] | None = None) -> FastAPI:
    app = create_app(service="ingest-test", readiness=readiness or {})
    app.include_router(events_router(CONFIG, KEYS, publish))
    return app


async def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def publish() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(publish: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for(build_app(publish)) as http:
        yield http


async def post(
    client: httpx.AsyncClient, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(
        "/v1/events",
        content=content,
        headers={"content-type": "application/json", **AUTH, **(headers or {})},
    )


async def test_missing_key_is_401(client: httpx.AsyncClient, publish: Recorder) -> None:
    response = await client.post("/v1/events", json=CUSTOMER)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert publish.batches == []


async def test_unknown_key_is_401(client: httpx.AsyncClient, publish: Recorder) -> None:
    response = await post(client, CUSTOMER, {"Authorization": "Bearer upk_nope"})
    assert response.status_code == 401
    assert publish.batches == []


async def test_key_without_write_scope_is_403(client: httpx.AsyncClient, publish: Recorder) -> None:
    response = await post(client, CUSTOMER, {"Authorization": f"Bearer {READER_KEY}"})
    assert response.status_code == 403
    assert WRITE_EVENTS in response.json()["detail"]
    assert publish.batches == []


async def test_bearer_key_is_accepted(client: httpx.AsyncClient) -> None:
    assert (await post(client, CUSTOMER)).status_code == 202


async def test_x_api_key_header_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", json=CUSTOMER, headers={"X-API-Key": WRITER_KEY})
    assert response.status_code == 202


async def test_invalid_json_is_400(client: httpx.AsyncClient, publish: Recorder) -> None:
    response = await post(client, b"{not json")
    assert response.status_code == 400
    assert publish.batches == []


async def test_body_over_limit_is_413(client: httpx.AsyncClient, publish: Recorder) -> None:
    big = {**CUSTOMER, "attributes": {"pad": "x" * 5000}}
    assert (await post(client, big)).status_code == 413
    assert publish.batches == []


async def test_streamed_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000  # no Content-Length: the limit is enforced while reading

    response = await client.post("/v1/events", content=chunks(), headers=AUTH)
    assert response.status_code == 413


async def test_batch_over_max_items_is_413(client: httpx.AsyncClient, publish: Recorder) -> None:
    items = [{**CUSTOMER, "customer_id": f"C-{i}"} for i in range(4)]
    assert (await post(client, items)).status_code == 413
    assert publish.batches == []


async def test_single_event_is_published_to_raw_customer_topic(
    client: httpx.AsyncClient, publish: Recorder
) -> None:
    response = await post(client, CUSTOMER)
    assert response.status_code == 202
    (accepted,) = response.json()["accepted"]
    (message,) = publish.messages
    assert message.topic == RAW_CUSTOMER
    assert message.key == b"customer:C-1"
    assert ("content-type", CONTENT_TYPE.encode()) in message.headers
    event = CanonicalEvent.from_json(message.value)
    assert event.id == accepted
    assert event.source == "http-test"


async def test_channel_and_customer_events_go_to_their_raw_topics(
    client: httpx.AsyncClient, publish: Recorder
) -> None:
    response = await post(client, [CUSTOMER, CHANNEL])
    assert response.status_code == 202
    assert len(publish.batches) == 1  # one publish call per request
    topics = {m.key: m.topic for m in publish.messages}
    assert topics == {b"customer:C-1": RAW_CUSTOMER, b"channel:CH-1": RAW_CHANNEL}


async def test_mixed_batch_is_202_with_per_item_errors(
    client: httpx.AsyncClient, publish: Recorder
) -> None:
    response = await post(client, [CUSTOMER, {**CUSTOMER, "email": "nobody"}, "text"])
    assert response.status_code == 202
    body = response.json()
    assert len(body["accepted"]) == 1
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [
        (1, "invalid_email"),
        (2, "not_an_object"),
    ]
    assert "nobody" not in orjson.dumps(body["errors"]).decode()
    assert len(publish.messages) == 1


async def test_all_items_bad_is_422_and_nothing_published(
    client: httpx.AsyncClient, publish: Recorder
) -> None:
    response = await post(client, [{**CUSTOMER, "type": "nope"}, {"customer_id": "C-1"}])
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == []
    assert [e["reason"] for e in body["errors"]] == ["unknown_type", "missing_type"]
    assert publish.batches == []


async def test_structured_content_type_needs_cloudevents_envelope(
    client: httpx.AsyncClient, publish: Recorder
) -> None:
    ce = {"specversion": "1.0", "id": "e-1", "source": "crm", "type": "customer.upserted"}
    data = {k: v for k, v in CUSTOMER.items() if k != "type"}
    headers = {"content-type": "application/cloudevents+json"}
    good = await post(client, {**ce, "data": data}, headers)
    bad = await post(client, CUSTOMER, headers)
    assert (good.status_code, good.json()["accepted"]) == (202, ["e-1"])
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["reason"] == "invalid_envelope"


async def test_transient_publish_failure_is_503_with_retry_after() -> None:
    app = build_app(Recorder(error=TransientError("kafka down")))
    async with await client_for(app) as http:
        response = await post(http, CUSTOMER)
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()


async def test_openapi_lists_events_endpoint(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "post" in paths["/v1/events"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)


async def test_healthz_is_200(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_without_checks_is_200(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def check(result: bool | Exception) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        if isinstance(result, Exception):
            raise result
        return result

    return probe


@pytest.mark.parametrize("failing", [False, ConnectionError("refused")], ids=["false", "raises"])
async def test_readyz_is_503_when_a_check_fails(failing: bool | Exception) -> None:
    readiness = {"kafka": check(True), "mongodb": check(failing)}
    async with await client_for(build_app(Recorder(), readiness)) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["kafka"] == "ok"
    assert checks["mongodb"] != "ok"


async def test_readyz_names_the_servers_refusal_but_never_its_message() -> None:
    refused = OperationFailure(
        "authentication failed for mongodb://upkeep:hunter2@db",
        code=18,
        details={"ok": 0, "code": 18, "codeName": "AuthenticationFailed"},
    )
    readiness = {"mongodb": check(refused), "kafka": check(ConnectionError("hunter2"))}
    async with await client_for(build_app(Recorder(), readiness)) as http:
        response = await http.get("/readyz")
    assert response.json()["checks"] == {
        "mongodb": "OperationFailure: AuthenticationFailed",
        "kafka": "ConnectionError",
    }
    assert "hunter2" not in response.text


async def test_metrics_count_http_requests(client: httpx.AsyncClient) -> None:
    await client.get("/openapi.json")
    await post(client, CUSTOMER)
    response = await client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert "upkeep_http_requests_total" in text
    assert 'route="/v1/events"' in text
    assert "upkeep_ingest_rejected_total" in text


async def test_retried_request_gets_the_same_event_id(client: httpx.AsyncClient) -> None:
    stamped = {**CUSTOMER, "updated_at": "2026-11-22T10:00:00+08:00"}
    first = (await post(client, stamped)).json()["accepted"]
    retry = (await post(client, stamped)).json()["accepted"]
    assert first == retry


async def test_snapshot_without_id_or_time_gets_a_fresh_id(client: httpx.AsyncClient) -> None:
    first = (await post(client, CUSTOMER)).json()["accepted"]
    again = (await post(client, CUSTOMER)).json()["accepted"]
    assert len(first) == len(again) == 1
    assert first != again


async def test_published_event_passes_the_consumer_path_unchanged(
    client: httpx.AsyncClient, publish: Recorder
) -> None:
    body = {**CUSTOMER, "updated_at": "2026-11-22T10:00:00+08:00"}
    assert (await post(client, body)).status_code == 202
    (message,) = publish.messages
    handler = IngestHandler(IngestConfig("events", 65536, CONFIG.context), InMemoryDedupStore())
    record = StoredRecord(message.topic, 0, 0, message.value, message.key, message.headers)
    result = await handler.handle([record])
    assert result.dead_letters == []
    (canonical,) = result.messages
    assert CanonicalEvent.from_json(canonical.value) == CanonicalEvent.from_json(message.value)
    assert canonical.key == message.key


async def test_an_oversized_item_is_refused_on_its_own(
    client: httpx.AsyncClient, publish: Recorder
) -> None:
    big = {**CUSTOMER, "id": "big", "attributes": {"note": "x" * 2000}}
    answer = await post(client, [big, {**CUSTOMER, "id": "small"}])
    assert answer.status_code == 202
    assert answer.json()["accepted"] == ["small"]
    assert [(e["index"], e["reason"]) for e in answer.json()["errors"]] == [(0, "oversized")]
    assert len(publish.messages) == 1


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({**CUSTOMER, "time": "0001-01-01T00:00:00+01:00"}, "invalid_envelope"),
        ({**CUSTOMER, "updated_at": "0001-01-01T00:00:00+01:00"}, "invalid_data"),
        ({**CUSTOMER, "timezone": "A" * 1000}, "invalid_data"),
        ({**CUSTOMER, "timezone": "Europe/" + "x" * 50}, "bad_timezone"),
    ],
)
async def test_extreme_values_are_refused_not_a_server_error(
    client: httpx.AsyncClient, item: dict[str, object], reason: str
) -> None:
    answer = await post(client, item)
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["reason"] == reason
