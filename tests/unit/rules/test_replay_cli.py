"""The replay command's arguments: it never publishes, so it insists on --dry-run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka import ConsumerRecord

from services.rules.engine import RulesEngine
from services.rules.replay import in_time_order, main, parse_start, rehearse
from services.rules.store import InMemorySubjectStore, InMemoryTimerStore
from shared.events.envelope import CanonicalEvent
from shared.events.types import CustomerInteraction, CustomerUpserted, EventPayload


def test_replay_refuses_to_run_without_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--from", "0"])
    assert exit_info.value.code == 2
    assert "only --dry-run is supported" in capsys.readouterr().err


def test_start_is_an_offset_or_a_time() -> None:
    assert parse_start("42") == 42
    assert parse_start("2026-10-01T00:00:00Z") == datetime(2026, 10, 1, tzinfo=UTC)
    assert parse_start("2026-10-01T08:00:00") == datetime(2026, 10, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_start("last tuesday")


def record(offset: int, payload: EventPayload, at: datetime) -> ConsumerRecord[bytes, bytes]:
    event = CanonicalEvent.build(
        event_id=f"e-{offset}", source="t", payload=payload, time=at, source_offset="Z"
    )
    return ConsumerRecord(
        "events", 0, offset, 0, 0, b"customer:C-1", event.to_json(), None, 0, 0, []
    )


async def test_a_rehearsal_applies_an_event_that_arrived_after_a_later_one() -> None:
    """The profile updated at 11:00 is at offset 0, the order placed at 10:00 arrived late at
    offset 1. Taken in event time under their own offsets, the state would skip the profile
    (offset 0, at or before the order's 1) as seen; the rehearsal numbers records in the order
    it takes them, so both are applied."""
    order_at, profile_at = (
        datetime(2026, 3, 1, 10, tzinfo=UTC),
        datetime(2026, 3, 1, 11, tzinfo=UTC),
    )
    profile = CustomerUpserted(customer_id="C-1", name="Acme", timezone="UTC")
    order = CustomerInteraction(
        interaction_id="I-1", customer_id="C-1", kind="order", occurred_at=order_at
    )
    timed = in_time_order([record(0, profile, profile_at), record(1, order, order_at)])
    assert [at for at, _ in timed] == [order_at, profile_at]
    subjects = InMemorySubjectStore()
    engine = RulesEngine([], subjects, InMemoryTimerStore(), events_topic="e", actions_topic="a")
    await rehearse(engine, [order_at], timed, profile_at, lambda _: None)
    customer = subjects.states["customer:C-1"].customer
    assert customer is not None
    assert (customer.name, customer.orders) == ("Acme", 1)
