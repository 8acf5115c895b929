"""Ingest through the real broker and MongoDB-wire server."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import orjson
import pytest

from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.integration.ingest_fixtures import API_KEY, ingest_settings, running_ingest
from tests.kafka_helpers import header, ids_of, produce, read_topic
from tests.waiting import eventually

pytestmark = pytest.mark.integration

INTERACTION = {
    "interaction_id": "I-1",
    "customer_id": "C-1",
    "kind": "order",
    "occurred_at": "2026-11-22T10:00:00+08:00",
    "amount": "99.90",
    "currency": "CNY",
}


def structured(event_id: str, data: Mapping[str, object]) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "crm",
        "type": "upkeep.customer.interaction.v1",
        "data": data,
    }


def binary(event_id: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    order = {
        "order_id": "O-7",
        "channel_id": "CH-7",
        "occurred_at": "2026-11-20T09:30:00-05:00",
        "amount": 1200,
        "currency": "USD",
    }
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", b"erp"),
        ("ce_type", b"channel.order"),
        ("content-type", b"application/json"),
    ]
    return orjson.dumps(order), headers


PLAIN = {
    "type": "customer.upserted",
    "customer_id": "C-2",
    "name": "王芳",
    "timezone": "Asia/Shanghai",
    "birthday": "1990-02-28",
    "email": "Wang.Fang@Example.CN",
    "updated_at": "2026-11-21T18:00:00+08:00",
}


async def test_each_input_form_lands_once_on_the_canonical_topic(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    settings = ingest_settings(kafka_settings, mongo_settings, topics)
    async with running_ingest(settings):
        # every form twice: the second copy is a replay and must not be republished
        for _ in range(2):
            await produce(kafka_settings, topics.raw_customer, [structured("s-1", INTERACTION)])
            await produce(kafka_settings, topics.raw_channel, [binary("b-1")])
            await produce(kafka_settings, topics.raw_customer, [PLAIN, {**PLAIN, "id": "p-1"}])
        records = await read_topic(kafka_settings, topics.events, expect=4, settle=3)

    events = {orjson.loads(r.value)["id"]: (r, orjson.loads(r.value)) for r in records}
    assert len(records) == 4, ids_of(records)
    assert {"s-1", "b-1", "p-1"} <= set(events)
    record, event = events["s-1"]
    assert record.key == b"customer:C-1"
    assert event["time"] == "2026-11-22T02:00:00Z"
    assert event["sourceoffset"] == "+08:00"
    assert event["data"]["occurred_at"] == "2026-11-22T02:00:00Z"
    assert header(record, "content-type") == "application/cloudevents+json; charset=utf-8"
    record, event = events["b-1"]
    assert (record.key, event["type"], event["source"]) == (
        b"channel:CH-7",
        "upkeep.channel.order.v1",
        "erp",
    )
    assert event["time"] == "2026-11-20T14:30:00Z"
    _, event = events["p-1"]
    assert event["data"]["email"] == "Wang.Fang@example.cn"
    assert event["subject"] == "customer:C-2"


BAD_INPUTS: list[tuple[str, bytes | dict[str, object], list[tuple[str, bytes]]]] = [
    ("invalid_json", b'{"type": "customer.upserted", ', []),
    ("invalid_json", b"\x00\xff\xfe random bytes", []),
    ("invalid_json", b"[" * 1500 + b"]" * 1500, []),  # deeper than the parser allows
    ("not_an_object", b"[1, 2, 3]", []),
    ("missing_type", {"customer_id": "C-9"}, []),
    ("unknown_type", {"type": "customer.teleported", "customer_id": "C-9"}, []),
    ("invalid_data", {**PLAIN, "birthday": "not a date"}, []),
    ("invalid_data", {**PLAIN, "customer_id": 42}, []),
    ("missing_subject", {k: v for k, v in PLAIN.items() if k != "customer_id"}, []),
    ("bad_timezone", {**PLAIN, "timezone": "Mars/Olympus_Mons"}, []),
    ("invalid_email", {**PLAIN, "email": "not-an-address"}, []),
    ("invalid_phone", {**PLAIN, "phone": "+1 555"}, []),
    ("naive_timestamp", structured("n-1", {**INTERACTION, "occurred_at": "2026-11-22T10:00"}), []),
    ("invalid_envelope", {**structured("x", INTERACTION), "specversion": "0.3"}, []),
    ("oversized", {**PLAIN, "name": "x" * 5000}, []),
    (
        "unsupported_content_type",
        b"<xml/>",
        [("ce_specversion", b"1.0"), ("ce_type", b"x"), ("content-type", b"application/xml")],
    ),
]


async def test_bad_input_is_dead_lettered_with_reason_and_origin(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    settings = ingest_settings(kafka_settings, mongo_settings, topics, max_message_bytes=4096)
    async with running_ingest(settings):
        sent = await produce(
            kafka_settings,
            topics.raw_customer,
            [(value, headers) for _, value, headers in BAD_INPUTS] + [PLAIN],
            key=b"same-partition",
        )
        dead = await read_topic(kafka_settings, topics.dlq, expect=len(BAD_INPUTS))
        good = await read_topic(kafka_settings, topics.events, expect=1)

    assert len(dead) == len(BAD_INPUTS)
    by_offset = {int(header(r, "upkeep-dlq-offset") or -1): r for r in dead}
    for (reason, value, _), meta in zip(BAD_INPUTS, sent, strict=False):
        record = by_offset[meta.offset]
        assert header(record, "upkeep-dlq-reason") == reason, header(record, "upkeep-dlq-detail")
        assert header(record, "upkeep-dlq-service") == "ingest"
        assert header(record, "upkeep-dlq-topic") == topics.raw_customer
        assert header(record, "upkeep-dlq-partition") == str(meta.partition)
        assert header(record, "upkeep-dlq-detail")
        expected = value if isinstance(value, bytes) else orjson.dumps(value)
        assert record.value == expected  # the original bytes, for replay
    # valid traffic behind the bad input still flows
    assert [orjson.loads(r.value)["subject"] for r in good] == ["customer:C-2"]


async def test_http_batches_reach_the_canonical_topic_once_even_when_retried(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    settings = ingest_settings(kafka_settings, mongo_settings, topics)
    batch = [
        {**PLAIN, "id": "h-1"},
        structured("h-2", INTERACTION),
        {
            "type": "channel.upserted",
            "id": "h-3",
            "channel_id": "CH-1",
            "name": "East",
            "timezone": "Asia/Shanghai",
        },
        {**PLAIN, "id": "h-4", "timezone": "Nowhere/Land"},
    ]
    async with running_ingest(settings) as service:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:

            async def ready() -> bool:  # the HTTP producer connects in the background
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, what="ingest is not ready")
            answers = [
                await client.post("/v1/events", json=batch, headers={"X-API-Key": API_KEY})
                for _ in range(2)  # a client retrying the same request
            ]
        records = await read_topic(kafka_settings, topics.events, expect=3, settle=3)

    for answer in answers:
        assert answer.status_code == 202
        body = answer.json()
        assert body["accepted"] == ["h-1", "h-2", "h-3"]
        assert [(e["index"], e["reason"]) for e in body["errors"]] == [(3, "bad_timezone")]
    assert sorted(ids_of(records)) == ["h-1", "h-2", "h-3"]


async def test_readiness_reports_each_dependency(
    kafka_settings: KafkaSettings, mongo_settings: MongoSettings, topics: TopicSettings
) -> None:
    ok = ingest_settings(kafka_settings, mongo_settings, topics)
    async with running_ingest(ok) as service:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:

            async def ready() -> httpx.Response | None:
                answer = await client.get("/readyz")
                return answer if answer.status_code == 200 else None

            answer = await eventually(ready, what="ingest is not ready")
            assert answer.json()["checks"] == {"kafka": "ok", "mongodb": "ok", "consumer": "ok"}
            metrics = (await client.get("/metrics")).text
            assert "upkeep_consumer_lag_messages" in metrics
            assert 'upkeep_dependency_up{dependency="mongodb"} 1.0' in metrics

    broken_mongo = MongoSettings(uri="mongodb://127.0.0.1:9", server_selection_timeout_ms=300)
    down = ingest_settings(kafka_settings, broken_mongo, topics)
    from services.ingest.service import build

    async with build(down) as service:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["mongodb"] != "ok"
