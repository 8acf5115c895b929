"""Work a rule cannot route is never silent: it is counted (``Unrouted``), by rule and reason;
and a member of staff carries what assignment needs (team, region, away, capacity)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from prometheus_client import REGISTRY

from services.rules.builtin.channel_health import ChannelHealth
from services.rules.builtin.followup import AfterSalesFollowUp
from services.rules.builtin.renewal import ContractRenewal
from services.rules.engine import RulesEngine
from services.rules.store import InMemorySubjectStore, InMemoryTimerStore
from services.rules.testing import RuleHarness
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.kafka.messages import StoredRecord

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def unowned_contract(h: RuleHarness) -> None:
    h.send("customer.upserted", at=T0, customer_id="C-1", name="Acme", timezone="UTC")
    h.send(
        "contract.upserted",
        at=T0,
        contract_id="K-1",
        customer_id="C-1",
        start_date="2025-06-01",
        end_date="2026-05-31",
    )


def test_reminders_of_an_unowned_contract_are_counted_not_dropped() -> None:
    h = RuleHarness(ContractRenewal())
    unowned_contract(h)
    assert h.advance(to=datetime(2026, 7, 1, tzinfo=UTC)) == []
    # 60, 30, 7 and 1 days before, and the escalation: five pieces of work, nobody to tell
    assert h.unrouted == [("renewal", "customer:C-1", "no_owner")] * 5


def test_a_follow_up_with_neither_address_nor_owner_is_counted() -> None:
    h = RuleHarness(AfterSalesFollowUp())
    h.send("customer.upserted", at=T0, customer_id="C-1", name="Li", timezone="UTC")
    h.send(
        "customer.interaction",
        at=T0,
        customer_id="C-1",
        interaction_id="O-1",
        kind="order",
        occurred_at=T0.isoformat(),
    )
    assert h.advance(to=datetime(2026, 2, 1, tzinfo=UTC)) == []
    assert h.unrouted == [("followup", "customer:C-1", "no_recipient")]


def test_a_declining_channel_without_a_manager_is_counted_and_still_reviewed() -> None:
    h = RuleHarness(ChannelHealth())
    h.send("channel.upserted", at=T0, channel_id="P-1", name="Dealer", timezone="UTC")
    for n, day in enumerate(range(1, 29)):  # steady orders through January...
        at = datetime(2026, 1, day, 10, tzinfo=UTC)
        h.send(
            "channel.order",
            at=at,
            order_id=f"O-{n}",
            channel_id="P-1",
            occurred_at=at.isoformat(),
            amount="1000",
            currency="CNY",
        )
    assert h.advance(to=datetime(2026, 4, 1, tzinfo=UTC)) == []  # ...then none at all
    reasons = {reason for _, _, reason in h.unrouted}
    assert reasons == {"no_manager"}
    assert any(t.name == "review" for t in h.pending("channel-health"))  # reviews go on


def record(offset: int, type_name: str, **data: object) -> StoredRecord:
    model = resolve_type(type_name)
    assert model is not None
    event = CanonicalEvent.build(
        event_id=f"e-{offset}",
        source="t",
        payload=model.model_validate(data),
        time=T0,
        source_offset="Z",
    )
    return StoredRecord("events", 0, offset, event.to_json(), event.subject.encode())


async def test_the_engine_counts_unrouted_work_once_it_commits() -> None:
    now = [T0]
    engine = RulesEngine(
        [ContractRenewal()],
        InMemorySubjectStore(),
        InMemoryTimerStore(),
        events_topic="events",
        actions_topic="actions",
        clock=lambda: now[0],
    )
    labels = {"rule": "renewal", "reason": "no_owner"}

    def counted() -> float:
        return REGISTRY.get_sample_value("upkeep_rules_unrouted_total", labels) or 0.0

    before = counted()
    await engine.handle(
        [
            record(0, "customer.upserted", customer_id="C-1", name="Acme", timezone="UTC"),
            record(
                1,
                "contract.upserted",
                contract_id="K-1",
                customer_id="C-1",
                start_date="2025-06-01",
                end_date="2026-05-31",
            ),
        ]
    )
    now[0] = datetime(2026, 4, 2, tzinfo=UTC)  # the 60-day reminder is due
    result = await engine.tick({0})
    assert counted() == before  # not before the commit
    for hook in result.after_commit:
        outcome = hook()
        if outcome is not None:
            await outcome
    assert counted() == before + 1


def test_staff_carry_team_region_away_and_capacity() -> None:
    h = RuleHarness()
    h.send(
        "staff.upserted",
        at=T0,
        staff_id="S-1",
        name="Wang",
        timezone="Asia/Shanghai",
        team="east",
        region="华东",
        away_until="2026-01-15",
        capacity=120,
    )
    staff = h.states["staff:S-1"].staff
    assert staff is not None
    assert (staff.team, staff.region, staff.away_until, staff.capacity) == (
        "east",
        "华东",
        date(2026, 1, 15),
        120,
    )
