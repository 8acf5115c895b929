"""services/ingest/webhooks.py: a platform's push verified by its source's scheme (Standard
Webhooks, or a header of the mapping's choosing), mapped and published; a wrong secret, a stale
timestamp or a missing signature refused; a replayed delivery gives the same events."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from services.ingest.mapping import Verify
from services.ingest.normalise import NormaliseContext
from services.ingest.sources import MappedSources
from services.ingest.webhooks import Refused, sign, verify, webhooks_router
from shared.errors import TransientError
from shared.events.envelope import CanonicalEvent
from shared.kafka.messages import Outgoing

NOW = 1_800_000_000
URL = "/v1/sources/shop-push/webhook"
SECRET = "whsec_" + base64.b64encode(b"a-shared-secret-of-the-platform!").decode()
STANDARD = Verify(preset="standard-webhooks")
MAPPING = """
name: shop
source:
  http: shop-push
  verify: {preset: standard-webhooks}
timezone: Asia/Shanghai
id_prefix: "shop-"
produce:
  - type: customer.interaction
    fields:
      interaction_id: prefix(order.no)
      customer_id: prefix(order.buyer)
      kind: "'order'"
      amount: order.total
      currency: "'CNY'"
      occurred_at: order.paid_at
"""
PUSH = orjson.dumps(
    {"order": {"no": 42, "buyer": "B-7", "total": "99.50", "paid_at": "2026-11-30 10:00:00"}}
)


def signed(body: bytes = PUSH, delivery: str = "msg_1", at: int = NOW, secret: str = SECRET):  # type: ignore[no-untyped-def]
    return {
        "webhook-id": delivery,
        "webhook-timestamp": str(at),
        "webhook-signature": "v1,bm90LXRoaXMtb25l "
        + sign(secret, STANDARD, body, str(at), delivery),
        "content-type": "application/json",
    }


@asynccontextmanager
async def api(
    tmp_path: Path, kafka_down: bool = False
) -> AsyncIterator[tuple[httpx.AsyncClient, list[Outgoing]]]:
    (tmp_path / "shop.yaml").write_text(MAPPING)
    sources = MappedSources(tmp_path)
    assert sources.refresh() == []
    published: list[Outgoing] = []

    async def publish(messages: Sequence[Outgoing]) -> None:
        if kafka_down:
            raise TransientError("Kafka producer is not connected yet")
        published.extend(messages)

    app = FastAPI()
    app.include_router(
        webhooks_router(
            sources,
            {"shop-push": [SecretStr("whsec_b2xkLXNlY3JldC1ub3QtdGhpcy1vbmU="), SecretStr(SECRET)]},
            publish,
            raw_customer_topic="raw.customer",
            raw_channel_topic="raw.channel",
            max_body_bytes=64 * 1024,
            context=NormaliseContext(),
            clock=lambda: NOW + 10,
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
        yield http, published


async def test_a_signed_push_is_mapped_and_published(tmp_path: Path) -> None:
    async with api(tmp_path) as (http, published):
        answer = await http.post("/v1/sources/shop-push/webhook", content=PUSH, headers=signed())
    assert answer.status_code == 202, answer.text
    (message,) = published
    event = CanonicalEvent.from_json(message.value)
    assert (message.topic, event.type, event.subject) == (
        "raw.customer",
        "upkeep.customer.interaction.v1",
        "customer:shop-B-7",
    )
    assert event.data["occurred_at"] == "2026-11-30T02:00:00Z"  # read in the mapping's zone
    assert answer.json()["accepted"] == [event.id]


async def test_a_replayed_delivery_gives_the_same_event(tmp_path: Path) -> None:
    async with api(tmp_path) as (http, published):
        for _ in range(2):
            answer = await http.post(
                "/v1/sources/shop-push/webhook", content=PUSH, headers=signed()
            )
            assert answer.status_code == 202
        other = await http.post(
            "/v1/sources/shop-push/webhook", content=PUSH, headers=signed(delivery="msg_2")
        )
    first, again, third = (CanonicalEvent.from_json(m.value).id for m in published)
    assert first == again  # ingest's consumer de-duplicates it
    assert other.status_code == 202
    assert third != first


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (signed(secret="whsec_" + base64.b64encode(b"someone-else").decode()), "does not match"),
        (signed(at=NOW - 3600), "outside the tolerance"),
        ({"content-type": "application/json"}, "no webhook-signature header"),
        ({**signed(), "webhook-id": ""}, "no webhook-id header"),
        ({**signed(), "webhook-id": "msg_9"}, "does not match"),  # the id is signed too
    ],
)
async def test_a_push_that_is_not_rightly_signed_is_refused(
    tmp_path: Path, headers: dict[str, str], why: str
) -> None:
    async with api(tmp_path) as (http, published):
        answer = await http.post("/v1/sources/shop-push/webhook", content=PUSH, headers=headers)
    assert answer.status_code == 401
    assert why in answer.json()["detail"]
    assert published == []


async def test_a_tampered_body_is_refused(tmp_path: Path) -> None:
    async with api(tmp_path) as (http, published):
        body = PUSH.replace(b"99.50", b"0.01")
        answer = await http.post("/v1/sources/shop-push/webhook", content=body, headers=signed())
    assert answer.status_code == 401
    assert published == []


async def test_an_unknown_source_and_an_unmappable_push(tmp_path: Path) -> None:
    async with api(tmp_path) as (http, published):
        unknown = await http.post("/v1/sources/nowhere/webhook", content=PUSH, headers=signed())
        body = orjson.dumps({"order": {"no": 1}})
        bad = await http.post("/v1/sources/shop-push/webhook", content=body, headers=signed(body))
    assert unknown.status_code == 404
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["reason"] == "missing_subject"  # no buyer: whose order?
    assert published == []


def test_a_custom_scheme_a_hex_hmac_of_the_body_with_a_prefix() -> None:
    scheme = Verify(header="X-Hub-Signature-256", prefix="sha256=")
    body = b'{"a": 1}'
    header = sign("s3cret", scheme, body)
    assert header.startswith("sha256=")
    assert verify(scheme, ["s3cret"], {"x-hub-signature-256": header}, body, NOW) is None
    with pytest.raises(Refused, match="does not match"):
        verify(scheme, ["other"], {"x-hub-signature-256": header}, body, NOW)
    with pytest.raises(Refused, match="no secret"):
        verify(scheme, [], {"x-hub-signature-256": header}, body, NOW)


async def test_kafka_away_is_a_503_the_platform_retries(tmp_path: Path) -> None:
    async with api(tmp_path, kafka_down=True) as (http, published):
        answer = await http.post(URL, content=PUSH, headers=signed())
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert published == []
