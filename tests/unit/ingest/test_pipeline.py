"""services/ingest/pipeline.py (with the in-memory dedup store) and shared/kafka/dlq.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from services.ingest.dedup import Claim, InMemoryDedupStore
from services.ingest.normalise import NormaliseContext
from services.ingest.pipeline import IngestConfig, IngestHandler
from shared.events.envelope import CONTENT_TYPE, CanonicalEvent
from shared.kafka.dlq import dead_letter_message, dlq_headers
from shared.kafka.messages import DeadLetter, StoredRecord

RAW = "upkeep.raw.customer"
EVENTS = "upkeep.events.v1"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def dedup() -> InMemoryDedupStore:
    return InMemoryDedupStore()


@pytest.fixture
def handler(dedup: InMemoryDedupStore) -> IngestHandler:
    config = IngestConfig(EVENTS, 4096, NormaliseContext(default_source="crm", now=NOW))
    return IngestHandler(config, dedup)


def customer(customer_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "customer.upserted",
        "id": f"evt-{customer_id}",
        "customer_id": customer_id,
        "name": "Li Wei",
        "timezone": "Asia/Shanghai",
        **extra,
    }


def record(offset: int, body: Any, *, partition: int = 0, **kw: Any) -> StoredRecord:
    value = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    return StoredRecord(RAW, partition, offset, value, **kw)


async def test_valid_events_become_one_keyed_message_each(handler: IngestHandler) -> None:
    records = [record(0, customer("C-1")), record(1, customer("C-2"))]
    result = await handler.handle(records)
    assert result.dead_letters == []
    assert [m.topic for m in result.messages] == [EVENTS, EVENTS]
    assert [m.key for m in result.messages] == [b"customer:C-1", b"customer:C-2"]
    for message in result.messages:
        assert ("content-type", CONTENT_TYPE.encode()) in message.headers
        event = CanonicalEvent.from_json(message.value)
        assert event.subject.encode() == message.key
        assert event.source == "crm"


async def test_binary_and_structured_records_are_published(handler: IngestHandler) -> None:
    data = {"customer_id": "C-9", "name": "Ana", "timezone": "UTC"}
    binary = record(
        0,
        data,
        headers=[
            ("ce_specversion", b"1.0"),
            ("ce_id", b"b-1"),
            ("ce_source", b"erp"),
            ("ce_type", b"customer.upserted"),
        ],
    )
    structured = {"specversion": "1.0", "id": "s-1", "source": "erp", "type": "customer.upserted"}
    result = await handler.handle([binary, record(1, {**structured, "data": data})])
    ids = [CanonicalEvent.from_json(m.value).id for m in result.messages]
    assert ids == ["b-1", "s-1"]


async def test_duplicate_inside_a_batch_is_published_once(handler: IngestHandler) -> None:
    result = await handler.handle([record(0, customer("C-1")), record(1, customer("C-1"))])
    assert len(result.messages) == 1
    assert result.dead_letters == []


async def test_duplicate_in_a_later_batch_is_not_republished(handler: IngestHandler) -> None:
    first = await handler.handle([record(0, customer("C-1"))])
    later = await handler.handle([record(7, customer("C-1")), record(8, customer("C-2"))])
    assert len(first.messages) == 1
    assert [m.key for m in later.messages] == [b"customer:C-2"]


async def test_same_id_from_another_partition_is_a_duplicate(handler: IngestHandler) -> None:
    await handler.handle([record(0, customer("C-1"), partition=0)])
    again = await handler.handle([record(0, customer("C-1"), partition=1)])
    assert again.messages == []


async def test_redelivered_record_is_republished(handler: IngestHandler) -> None:
    batch = [record(5, customer("C-1")), record(6, customer("C-2"))]
    first = await handler.handle(batch)
    redelivered = await handler.handle(batch)
    assert len(first.messages) == 2
    assert [m.value for m in redelivered.messages] == [m.value for m in first.messages]


async def test_same_id_from_another_source_is_not_a_duplicate(handler: IngestHandler) -> None:
    result = await handler.handle(
        [record(0, customer("C-1", source="crm-a")), record(1, customer("C-1", source="crm-b"))]
    )
    assert len(result.messages) == 2


async def test_plain_events_without_id_are_deduplicated_by_content(
    handler: IngestHandler,
) -> None:
    stamped = customer("C-1", updated_at="2026-11-22T10:00:00+08:00")
    body = {k: v for k, v in stamped.items() if k != "id"}
    first = await handler.handle([record(0, body)])
    retry = await handler.handle([record(1, body)])
    changed = await handler.handle([record(2, {**body, "name": "Li Wei Jr"})])
    assert len(first.messages) == 1
    assert retry.messages == []
    assert len(changed.messages) == 1


async def test_snapshots_without_id_or_time_are_not_deduplicated_by_content(
    handler: IngestHandler,
) -> None:
    """A -> B -> A is three changes; only a redelivery of the same record is a repeat."""
    body = {k: v for k, v in customer("C-1").items() if k != "id"}
    first = await handler.handle([record(0, body)])
    redelivered = await handler.handle([record(0, body)])
    changed_back = await handler.handle([record(5, body)])
    assert len(first.messages) == 1
    assert redelivered.messages == first.messages
    assert len(changed_back.messages) == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{oops", "invalid_json"),
        (b"[1]", "not_an_object"),
        (orjson.dumps({"customer_id": "C-1"}), "missing_type"),
        (orjson.dumps({"type": "customer.vanished"}), "unknown_type"),
        (orjson.dumps(customer("C-1", timezone="Nowhere/City")), "bad_timezone"),
        (orjson.dumps(customer("C-1", email="nobody")), "invalid_email"),
        (orjson.dumps(customer("C-1", phone="12")), "invalid_phone"),
        (orjson.dumps(customer("C-1", updated_at="2026-11-22T10:00:00")), "naive_timestamp"),
        (
            orjson.dumps({"type": "customer.upserted", "name": "x", "timezone": "UTC"}),
            "missing_subject",
        ),
        (orjson.dumps(customer("C-1", colour="red")), "invalid_data"),
        (orjson.dumps(customer("C-1", pad="x" * 5000)), "oversized"),
        (None, "invalid_json"),
    ],
)
async def test_bad_records_are_dead_lettered_with_reason(
    handler: IngestHandler, value: bytes | None, reason: str
) -> None:
    bad = record(3, value)
    result = await handler.handle([record(2, customer("C-2")), bad])
    assert len(result.messages) == 1
    (dead,) = result.dead_letters
    assert dead.record is bad
    assert dead.reason == reason
    assert dead.detail


async def test_rejected_records_claim_nothing(
    handler: IngestHandler, dedup: InMemoryDedupStore
) -> None:
    await handler.handle([record(0, b"{oops")])
    assert dedup.seen == {}


async def test_result_carries_an_after_commit_hook(handler: IngestHandler) -> None:
    result = await handler.handle([record(0, customer("C-1")), record(1, b"{oops")])
    assert len(result.after_commit) >= 1
    for hook in result.after_commit:
        assert callable(hook)
        hook()  # metrics updates must not raise


async def test_in_memory_store_claims_per_position() -> None:
    store = InMemoryDedupStore()
    assert await store.claim([Claim("a", "t/0/1"), Claim("b", "t/0/2")]) == {"a", "b"}
    assert await store.claim([Claim("a", "t/0/1"), Claim("b", "t/0/9")]) == {"a"}


def test_dead_letter_message_keeps_original_and_adds_headers() -> None:
    original = StoredRecord(
        RAW,
        4,
        1234,
        b'{"raw": true}',
        key=b"customer:C-1",
        headers=[("trace", b"abc"), ("upkeep-dlq-reason", b"stale")],
    )
    dead = DeadLetter(original, "invalid_email", "email li.wei@example.com is not valid")
    message = dead_letter_message(dead, service="ingest", dlq_topic="upkeep.dlq.v1")
    assert message.topic == "upkeep.dlq.v1"
    assert message.value == b'{"raw": true}'
    assert message.key == b"customer:C-1"
    assert ("trace", b"abc") in message.headers
    added = dlq_headers(message.headers)
    assert added["service"] == "ingest"
    assert added["reason"] == "invalid_email"
    assert added["topic"] == RAW
    assert added["partition"] == "4"
    assert added["offset"] == "1234"
    assert "li.wei@example.com" not in added["detail"]
    assert "[email]" in added["detail"]
    assert datetime.fromisoformat(added["timestamp"]).tzinfo is not None
    names = [name for name, _ in message.headers]
    assert names.count("upkeep-dlq-reason") == 1  # an earlier dead-letter header is replaced


def test_dead_letter_message_of_empty_record() -> None:
    dead = DeadLetter(StoredRecord(RAW, 0, 0, None), "invalid_json", "x" * 5000)
    message = dead_letter_message(dead, service="ingest", dlq_topic="dlq")
    assert message.value == b""
    assert message.key is None
    assert len(dlq_headers(message.headers)["detail"]) <= 1000
