"""services/ingest/mapping.py, debezium.py and sources.py: mappings validated with every error,
lookups, defaults, missing fields and type errors, Debezium's envelope (create, update, delete,
snapshot, tombstone, truncate, with and without the schema part), and a mapped topic through the
ingest handler: mapped, normalised, de-duplicated, dead-lettered with the mapping and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from services.ingest.debezium import NotAChange, read_change
from services.ingest.dedup import InMemoryDedupStore
from services.ingest.mapping import MappingFailed, MappingInvalid, load, parse
from services.ingest.normalise import NormaliseContext
from services.ingest.pipeline import IngestConfig, IngestHandler
from services.ingest.sources import MappedSources, check_topics, map_record
from shared.events.envelope import CanonicalEvent
from shared.kafka.messages import StoredRecord

EXAMPLE = (
    Path(__file__).parents[3] / "services" / "ingest" / "mappings" / "example-crm-postgres.yaml"
)
CONTRACT = {
    "id": 7,
    "customer_id": 3,
    "start_date": 20500,  # 2026-02-16
    "end_date": 20865,
    "amount": "1200.00",
    "currency": "CNY",
    "status": "signed",
    "auto_renew": True,
    "updated_at": 1764547200000000,
}
SOURCE = {"connector": "postgresql", "db": "crm", "schema": "public", "table": "contracts"}


def change(op: str, *, schema: bool = False, lsn: int = 100, **rows: Any) -> bytes:
    body: dict[str, Any] = {
        "op": op,
        "before": None,
        "after": None,
        "source": {**SOURCE, "lsn": lsn},
    }
    body |= {"ts_ms": 1764547300000, **rows}
    return orjson.dumps({"schema": {"type": "struct"}, "payload": body} if schema else body)


# --- Debezium's envelope ----------------------------------------------------------------------


@pytest.mark.parametrize("schema", [False, True], ids=["plain", "with-schema"])
def test_create_update_and_delete_are_read_with_and_without_the_schema(schema: bool) -> None:
    created = read_change(change("c", schema=schema, after=CONTRACT))
    assert created is not None
    assert (created.op, created.row["id"]) == ("c", 7)
    updated = read_change(change("u", schema=schema, before=CONTRACT, after={**CONTRACT, "id": 8}))
    assert updated is not None
    assert updated.row["id"] == 8  # the row as it is after the change
    deleted = read_change(change("d", schema=schema, before=CONTRACT))
    assert deleted is not None
    assert deleted.row == CONTRACT  # as it was
    assert len({created.identity(), updated.identity(), deleted.identity()}) == 3


def test_tombstones_and_truncates_are_nothing_to_map() -> None:
    assert read_change(None) is None
    assert read_change(b"") is None
    assert read_change(orjson.dumps({"schema": {}, "payload": None})) is None
    assert read_change(change("t")) is None


def test_the_same_change_has_the_same_identity_and_snapshot_rows_differ_by_key() -> None:
    first = read_change(change("c", after=CONTRACT), b'{"id": 7}')
    again = read_change(change("c", after=CONTRACT), b'{"id": 7}')
    assert first is not None
    assert again is not None
    assert first.identity() == again.identity()
    one = read_change(change("r", after=CONTRACT), b'{"id": 7}')
    two = read_change(change("r", after={**CONTRACT, "id": 8}), b'{"id": 8}')
    assert one is not None
    assert two is not None
    assert one.identity() != two.identity()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"not json", "not valid JSON"),
        (orjson.dumps({"after": {}}), "no 'op'"),
        (orjson.dumps({"op": "x", "after": {}}), "unknown Debezium operation"),
        (orjson.dumps({"op": "c", "after": None}), "without its row"),
        (orjson.dumps({"op": "d", "before": None}), "without its row"),
        (orjson.dumps({"op": "c", "after": [1]}), "'after' is not an object"),
    ],
)
def test_what_is_no_change_event_is_refused(value: bytes, message: str) -> None:
    with pytest.raises(NotAChange, match=message):
        read_change(value)


# --- the mapping language's use ----------------------------------------------------------------


def test_the_shipped_example_maps_a_contract_row() -> None:
    mapping = load(EXAMPLE)
    found = read_change(change("c", after=CONTRACT))
    assert found is not None
    (event,) = mapping.apply(found.document(), "x")
    assert event == {
        "type": "contract.upserted",
        "source": "urn:upkeep:mapping:example-crm-postgres",
        "contract_id": "crm-7",
        "customer_id": "crm-3",
        "start_date": "2026-02-16",
        "end_date": "2027-02-16",
        "value": "1200.00",
        "currency": "CNY",
        "status": "active",  # the lookup: signed -> active
        "auto_renew": True,
        "updated_at": "2025-12-01T00:00:00+00:00",
        "id": "x-1",
        "time": "2025-12-01T00:00:00+00:00",
    }


def test_a_value_the_lookup_lacks_fails_with_the_field() -> None:
    mapping = load(EXAMPLE)
    found = read_change(change("c", after={**CONTRACT, "status": "frozen"}))
    assert found is not None
    with pytest.raises(MappingFailed) as failed:
        mapping.apply(found.document(), "x")
    assert (failed.value.mapping, failed.value.field) == ("example-crm-postgres", "status")
    assert "frozen" not in str(failed.value)  # never the record's values


MINIMAL = """
name: shop
source: {http: shop-push}
id_prefix: "shop-"
produce:
  - type: customer.upserted
    id: text(order_no)
    fields:
      customer_id: prefix(buyer.id)
      name: buyer.name
      timezone: "buyer.tz || 'Asia/Shanghai'"
      email: buyer.email
"""


def test_defaults_and_missing_fields() -> None:
    mapping = parse(MINIMAL)
    (event,) = mapping.apply({"order_no": 42, "buyer": {"id": 9, "name": "Li"}}, "x")
    assert event["timezone"] == "Asia/Shanghai"  # the default of the expression
    assert "email" not in event  # null: left out, the field's own default applies
    assert (event["id"], event["customer_id"]) == ("42", "shop-9")


def test_a_function_given_the_wrong_type_fails_with_the_field() -> None:
    mapping = parse(MINIMAL.replace("prefix(buyer.id)", "prefix(buyer)"))
    with pytest.raises(MappingFailed) as failed:
        mapping.apply({"order_no": 1, "buyer": {"id": 9, "name": "Li"}}, "x")
    assert failed.value.field == "customer_id"


def test_a_record_no_rule_applies_to_is_a_failure_unless_skipped() -> None:
    guarded = MINIMAL.replace("  - type:", "  - when: \"kind == 'buyer'\"\n    type:")
    with pytest.raises(MappingFailed, match="no rule applies"):
        parse(guarded).apply({"kind": "refund"}, "x")
    skipping = guarded + "  - when: \"kind == 'refund'\"\n    skip: true\n"
    assert parse(skipping).apply({"kind": "refund"}, "x") == []


def test_a_mapping_that_does_not_validate_names_every_error() -> None:
    broken = """
name: broken
source: {topics: [crm.public.x]}
produce:
  - type: contract.upserted
    when: "op =="
    fields:
      contract_id: lookup('nowhere', row.id)
      colour: row.colour
      id: row.id
  - type: no.such.type
    fields: {a: b}
"""
    with pytest.raises(MappingInvalid) as invalid:
        parse(broken)
    errors = "\n".join(invalid.value.errors)
    for expected in (
        "produce[0].when:",
        "produce[0].fields.contract_id: no lookup table 'nowhere'",
        "produce[0].fields.colour: upkeep.contract.upserted.v1 has no such field",
        "produce[0].fields.id: set it with id:",
        "produce[0].fields: upkeep.contract.upserted.v1 needs customer_id",
        "produce[1].type: unknown event type 'no.such.type'",
    ):
        assert expected in errors, (expected, errors)


@pytest.mark.parametrize(
    "text",
    ["name: x\nsource: {topics: [a], http: b}\nproduce: [{skip: true}]", "[", "name: UPPER"],
)
def test_a_file_that_is_no_mapping_is_refused(text: str) -> None:
    with pytest.raises(MappingInvalid):
        parse(text)


# --- mapped sources ----------------------------------------------------------------------------


def test_a_changed_file_replaces_its_mapping_and_a_broken_one_keeps_the_last(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(MINIMAL)
    sources = MappedSources(tmp_path)
    assert sources.refresh() == []
    assert sources.for_http("shop-push") is not None
    path.write_text(MINIMAL.replace("shop-push", "shop-two") + "  - oops: {}\n")
    errors = sources.refresh()
    assert errors
    assert errors[0].startswith("shop.yaml:")
    assert sources.for_http("shop-push") is not None  # the version before stays
    path.write_text(MINIMAL.replace("shop-push", "shop-two"))
    import os

    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    assert sources.refresh() == []
    assert sources.for_http("shop-two") is not None
    assert sources.for_http("shop-push") is None


def test_a_mapping_that_reads_upkeeps_own_topics_is_refused_and_stops_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "crm.yaml").write_text(EXAMPLE.read_text())
    (tmp_path / "shop.yaml").write_text(MINIMAL)
    sources = MappedSources(tmp_path, ["crm.public.orders"])
    errors = sources.refresh()
    assert len(errors) == 1
    assert errors[0].startswith("crm.yaml:")
    assert "own topics" in errors[0]
    assert [m.name for m in sources.mappings] == ["shop"]


def test_a_mapping_may_not_read_upkeeps_own_topics_nor_anothers() -> None:
    mapping = load(EXAMPLE)
    assert check_topics([mapping], ["upkeep.events.v1"]) == []
    assert check_topics([mapping, mapping], [])[0].endswith("already")
    assert "own topics" in check_topics([mapping], ["crm.public.orders"])[0]


async def test_a_mapped_topic_through_the_handler() -> None:
    sources = MappedSources(EXAMPLE.parent)
    sources.refresh()
    handler = IngestHandler(
        IngestConfig("upkeep.events.v1", 256 * 1024, NormaliseContext()),
        InMemoryDedupStore(),
        sources,
    )
    topic = "crm.public.contracts"
    created = change("c", after=CONTRACT)
    records = [
        StoredRecord(topic, 0, 0, created, b'{"id": 7}'),
        StoredRecord(topic, 0, 1, created, b'{"id": 7}'),  # Connect re-sent it after a restart
        StoredRecord(topic, 0, 2, None, b'{"id": 7}'),  # a tombstone
        StoredRecord(topic, 0, 3, change("c", after={**CONTRACT, "status": "frozen"})),
        StoredRecord(topic, 0, 4, b"garbage"),
        StoredRecord(topic, 0, 5, change("d", lsn=101, before=CONTRACT), b'{"id": 7}'),
    ]
    result = await handler.handle(records)
    events = [CanonicalEvent.from_json(m.value) for m in result.messages]
    assert [e.type for e in events] == [
        "upkeep.contract.upserted.v1",
        "upkeep.contract.cancelled.v1",
    ]
    assert {e.subject for e in events} == {"customer:crm-3"}
    assert [(d.reason, d.record.offset) for d in result.dead_letters] == [
        ("mapping_failed", 3),
        ("not_a_change", 4),
    ]
    assert "mapping example-crm-postgres, field status" in result.dead_letters[0].detail
    # Connect restarted again and re-sent the change, at a later offset: de-duplicated
    again = await handler.handle([StoredRecord(topic, 0, 6, created, b'{"id": 7}')])
    assert again.messages == []
    assert again.dead_letters == []


def test_a_json_record_the_same_twice_has_the_same_ids() -> None:
    mapping = parse(MINIMAL.replace("    id: text(order_no)\n", ""))
    body = orjson.dumps({"buyer": {"id": 1, "name": "A"}})
    one, two = (map_record(mapping, body, None, "shop-push") for _ in range(2))
    assert not isinstance(one, Exception)
    assert not isinstance(two, Exception)
    assert one.events[0].attributes["id"] == two.events[0].attributes["id"]  # type: ignore[union-attr]
