"""services/analytics/facts.py: which records on the three topics are refused as unreadable."""

from __future__ import annotations

import orjson
import pytest

from services.analytics.facts import Unreadable, read
from tests.unit.analytics.fact_builders import CUSTOMER, action, delivery, event_record

# --- unreadable records --------------------------------------------------------------------

VALID = {
    "events": event_record("customer.upserted", **CUSTOMER),
    "actions": orjson.dumps(action("birthday:C-1:2026", "birthday")),
    "deliveries": orjson.dumps(delivery("sent")),
}
KINDS = sorted(VALID)


@pytest.mark.parametrize("kind", KINDS)
def test_every_valid_sample_is_readable(kind: str) -> None:
    assert read(kind, VALID[kind]).facts


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("value", [b"\xff\xfe\x00garbage", b"not json at all", b"[]", b"", None])
def test_garbage_is_unreadable(kind: str, value: bytes | None) -> None:
    with pytest.raises(Unreadable):
        read(kind, value)


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_json_is_unreadable(kind: str) -> None:
    with pytest.raises(Unreadable):
        read(kind, VALID[kind][: len(VALID[kind]) // 2])


def test_an_unknown_event_type_is_unreadable() -> None:
    body = orjson.loads(VALID["events"])
    body["type"] = "upkeep.customer.teleported.v1"
    with pytest.raises(Unreadable, match="teleported"):
        read("events", orjson.dumps(body))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time", "2026-11-02T10:15:00"),  # no offset
        ("specversion", "0.3"),
        ("data", {"customer_id": "C-1", "name": "Acme", "timezone": "Mars/Olympus"}),
        ("data", {**CUSTOMER, "nickname": "typo"}),
    ],
)
def test_an_event_with_an_invalid_envelope_or_payload_is_unreadable(
    field: str, value: object
) -> None:
    body = {**orjson.loads(VALID["events"]), field: value}
    with pytest.raises(Unreadable):
        read("events", orjson.dumps(body))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempts", "many"),
        ("at", "yesterday"),
        ("outcome", "exploded"),
        ("kind", "pigeon"),
        ("recipient", "S-1"),
        ("surprise", True),  # an unknown field
    ],
)
def test_a_delivery_with_a_wrong_field_is_unreadable(field: str, value: object) -> None:
    with pytest.raises(Unreadable):
        read("deliveries", orjson.dumps({**delivery("sent"), field: value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [("due_at", "2026-11-02T10:15:00"), ("kind", "fax"), ("key", ""), ("surprise", 1)],
)
def test_an_action_with_a_wrong_field_is_unreadable(field: str, value: object) -> None:
    with pytest.raises(Unreadable):
        read("actions", orjson.dumps({**action("birthday:C-1:2026", "birthday"), field: value}))


def test_unreadable_is_a_value_error_that_keeps_its_cause() -> None:
    with pytest.raises(Unreadable) as caught:
        read("deliveries", b"{")
    assert isinstance(caught.value, ValueError)
    assert caught.value.__cause__ is not None
