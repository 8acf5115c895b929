"""services/analytics/facts.py: what each record on upkeep.events.v1 counts for, and under
which identity, whichever record carries the occurrence."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.analytics.facts import Fact, read
from services.analytics.money import cents
from tests.unit.analytics.fact_builders import (
    CUSTOMER,
    SHANGHAI,
    T,
    by_identity,
    event_identity,
    event_record,
)

# a customer's interaction makes them active in its month and ISO week (of the reporting zone)
ACTIVE = [
    Fact(f"active:month:C-1:{T:%Y-%m}", T, {"customers.active.month": 1}, "customer:C-1"),
    Fact(
        f"active:week:C-1:{T.isocalendar()[0]}-W{T.isocalendar()[1]:02d}",
        T,
        {"customers.active.week": 1},
        "customer:C-1",
    ),
]

# --- upkeep.events.v1 ---------------------------------------------------------------------


def test_customer_upserted_counts_the_event_and_a_new_customer_and_attributes_itself() -> None:
    found = read(
        "events", event_record("customer.upserted", owner_id="S-1", channel_id="CH-1", **CUSTOMER)
    )
    subject = "customer:C-1"
    assert found.facts == [
        Fact(event_identity(), T, {"events.customer.upserted": 1}, subject),
        Fact("new-customer:C-1", T, {"customers.new": 1}, subject),
    ]
    assert found.attribution == (subject, {"owner": "S-1", "channel": "CH-1"})


def test_an_order_counts_once_with_its_value_in_cents_of_its_currency() -> None:
    record = event_record(
        "customer.interaction",
        interaction_id="O-1",
        customer_id="C-1",
        kind="order",
        amount="12.50",
        currency="eur",
        occurred_at=T.isoformat(),
    )
    found = read("events", record)
    assert found.facts == [
        Fact(event_identity(), T, {"events.customer.interaction": 1}, "customer:C-1"),
        *ACTIVE,
        Fact(
            "order:customer:O-1",
            T,
            {"orders": 1, "order_value.EUR": 1250, "revenue.EUR": 1250},
            "customer:C-1",
        ),
    ]
    assert found.attribution is None


def test_an_order_without_an_amount_counts_as_an_order_without_value() -> None:
    record = event_record(
        "customer.interaction",
        interaction_id="O-2",
        customer_id="C-1",
        kind="order",
        occurred_at=T.isoformat(),
    )
    facts = by_identity(read("events", record).facts)
    assert facts["order:customer:O-2"].counters == {"orders": 1}


@pytest.mark.parametrize(
    ("amount", "minor_units"),
    [
        ("12.50", 1250),
        ("0.01", 1),
        ("1000000", 100_000_000),
        ("12.3451", 1235),  # the fourth decimal place still rounds to the nearest cent
        ("0.0049", 0),
        # exact halves of a cent go to the even cent (Decimal's default ROUND_HALF_EVEN)
        ("0.005", 0),
        ("0.015", 2),
        ("0.025", 2),
        ("12.345", 1234),
        ("12.355", 1236),
    ],
)
def test_money_is_counted_in_minor_units(amount: str, minor_units: int) -> None:
    assert cents(Decimal(amount)) == minor_units
    record = event_record(
        "customer.interaction",
        interaction_id="O-1",
        customer_id="C-1",
        kind="order",
        amount=amount,
        currency="USD",
        occurred_at=T.isoformat(),
    )
    facts = by_identity(read("events", record).facts)
    assert facts["order:customer:O-1"].counters["order_value.USD"] == minor_units


@pytest.mark.parametrize(
    ("kind", "extra"),
    [("visit", {}), ("call", {}), ("ticket", {"ticket_status": "opened"})],
)
def test_an_interaction_that_is_not_an_order_counts_as_an_event_and_an_active_customer(
    kind: str, extra: dict[str, Any]
) -> None:
    record = event_record(
        "customer.interaction",
        interaction_id="V-1",
        customer_id="C-1",
        kind=kind,
        occurred_at=T.isoformat(),
        **extra,
    )
    assert read("events", record).facts == [
        Fact(event_identity(), T, {"events.customer.interaction": 1}, "customer:C-1"),
        *ACTIVE,
    ]


def test_a_channel_order_counts_with_its_value_and_its_channel() -> None:
    record = event_record(
        "channel.order",
        order_id="CO-1",
        channel_id="CH-1",
        occurred_at=T.isoformat(),
        amount="99.90",
        currency="CNY",
    )
    assert read("events", record).facts == [
        Fact(event_identity(), T, {"events.channel.order": 1}, "channel:CH-1"),
        Fact(
            "order:channel:CO-1",
            T,
            {"channel_orders": 1, "channel_order_value.CNY": 9990, "revenue.CNY": 9990},
            "channel:CH-1",
            {"channel": "CH-1"},
        ),
    ]


def test_a_sell_through_report_counts_its_value_beside_revenue_not_in_it() -> None:
    record = event_record(
        "channel.order",
        order_id="CO-2",
        channel_id="CH-1",
        kind="sell_through",
        occurred_at=T.isoformat(),
        amount="10",
        currency="CNY",
    )
    assert [f.counters for f in read("events", record).facts] == [
        {"events.channel.order": 1},
        {"sell_through": 1, "sell_through_value.CNY": 1000},
    ]


def test_a_renewal_counts_once_per_new_term() -> None:
    record = event_record(
        "contract.renewed",
        contract_id="K-1",
        customer_id="C-1",
        renewed_at=T.isoformat(),
        new_end_date="2027-11-30",
    )
    assert read("events", record).facts == [
        Fact(event_identity(), T, {"events.contract.renewed": 1}, "customer:C-1"),
        Fact("renewed:K-1:2027-11-30", T, {"renewals.renewed": 1}, "customer:C-1"),
    ]


def test_a_cancellation_counts_as_a_lost_renewal_once_per_contract() -> None:
    record = event_record(
        "contract.cancelled", contract_id="K-1", customer_id="C-1", cancelled_at=T.isoformat()
    )
    assert read("events", record).facts == [
        Fact(event_identity(), T, {"events.contract.cancelled": 1}, "customer:C-1"),
        Fact("lost:K-1", T, {"renewals.lost": 1}, "customer:C-1"),
    ]


@pytest.mark.parametrize(
    ("at_risk", "risk", "counter", "flags"),
    [
        (True, 0.8, "customers.at_risk", {"at_risk": "yes", "risk": "0.80"}),
        (False, 0.1, "customers.recovered", {"at_risk": "no", "risk": "0.10"}),
    ],
)
def test_a_churn_risk_change_counts_at_risk_or_recovered_and_flags_the_customer(
    at_risk: bool, risk: float, counter: str, flags: dict[str, str]
) -> None:
    record = event_record(
        "customer.churn_risk_changed",
        customer_id="C-1",
        at_risk=at_risk,
        risk=risk,
        changed_at=T.isoformat(),
    )
    found = read("events", record)
    assert found.facts == [
        Fact(event_identity(), T, {"events.customer.churn_risk_changed": 1}, "customer:C-1"),
        Fact("risk:crm\x1fe-1", T, {counter: 1}, "customer:C-1"),
    ]
    assert found.attribution == ("customer:C-1", flags)


def test_a_tier_change_counts_under_the_new_tier_and_attributes_the_customer() -> None:
    record = event_record(
        "customer.tier_changed",
        customer_id="C-1",
        tier="A",
        previous="B",
        recency_score=3,
        frequency_score=3,
        monetary_score=2,
        changed_at=T.isoformat(),
    )
    found = read("events", record)
    assert found.facts == [
        Fact(event_identity(), T, {"events.customer.tier_changed": 1}, "customer:C-1"),
        Fact("tier:crm\x1fe-1", T, {"tiers.A": 1}, "customer:C-1", {"tier": "A"}),
    ]
    assert found.attribution == ("customer:C-1", {"tier": "A"})


@pytest.mark.parametrize(
    ("type_name", "data", "counter", "subject"),
    [
        (
            "contract.upserted",
            {
                "contract_id": "K-1",
                "customer_id": "C-1",
                "start_date": "2025-12-01",
                "end_date": "2026-11-30",
            },
            "events.contract.upserted",
            "customer:C-1",
        ),
        (
            "staff.upserted",
            {"staff_id": "S-1", "name": "Li", "timezone": "UTC"},
            "events.staff.upserted",
            "staff:S-1",
        ),
        (
            "channel.upserted",
            {"channel_id": "CH-1", "name": "Acme", "timezone": "UTC"},
            "events.channel.upserted",
            "channel:CH-1",
        ),
    ],
)
def test_other_events_count_only_as_events(
    type_name: str, data: dict[str, Any], counter: str, subject: str
) -> None:
    assert read("events", event_record(type_name, **data)).facts == [
        Fact(event_identity(), T, {counter: 1}, subject)
    ]


def test_an_event_counts_at_its_time_in_utc_whatever_offset_the_record_wrote() -> None:
    body = orjson.loads(event_record("customer.upserted", **CUSTOMER))
    body["time"] = T.astimezone(SHANGHAI).isoformat()  # 2026-11-02T18:15:00+08:00
    (first, _) = read("events", orjson.dumps(body)).facts
    assert first.at == T
    assert first.at.utcoffset() == timedelta(0)


# --- identities: the same occurrence, whichever record carries it -------------------------


def test_the_same_event_written_differently_has_the_same_facts() -> None:
    original = event_record(
        "customer.interaction",
        interaction_id="O-1",
        customer_id="C-1",
        kind="order",
        amount="12.50",
        currency="EUR",
        occurred_at=T.isoformat(),
    )
    body = orjson.loads(original)
    body["time"] = T.astimezone(SHANGHAI).isoformat()
    rewritten = orjson.dumps(dict(reversed(body.items())), option=orjson.OPT_INDENT_2)
    assert rewritten != original
    assert read("events", rewritten).facts == read("events", original).facts


def test_a_customer_upserted_twice_is_two_events_but_one_new_customer() -> None:
    first = by_identity(read("events", event_record("customer.upserted", "e-1", **CUSTOMER)).facts)
    later = {**CUSTOMER, "name": "Acme Ltd"}
    second = by_identity(read("events", event_record("customer.upserted", "e-2", **later)).facts)
    assert set(first) & set(second) == {"new-customer:C-1"}
    assert event_identity("e-1") in first
    assert event_identity("e-2") in second


def test_an_order_sent_again_under_another_event_id_is_the_same_order() -> None:
    order = {
        "interaction_id": "O-1",
        "customer_id": "C-1",
        "kind": "order",
        "amount": "5",
        "currency": "EUR",
        "occurred_at": T.isoformat(),
    }
    first = by_identity(
        read("events", event_record("customer.interaction", "e-1", "crm", **order)).facts
    )
    second = by_identity(
        read("events", event_record("customer.interaction", "e-9", "shop", **order)).facts
    )
    # the same order, and the same customer active in the same month and week
    assert set(first) & set(second) == {"order:customer:O-1", *(f.identity for f in ACTIVE)}


def test_a_renewal_to_another_end_date_is_another_occurrence() -> None:
    def renewal(event_id: str, end: str) -> set[str]:
        record = event_record(
            "contract.renewed",
            event_id,
            contract_id="K-1",
            customer_id="C-1",
            renewed_at=T.isoformat(),
            new_end_date=end,
        )
        return set(by_identity(read("events", record).facts))

    assert "renewed:K-1:2027-11-30" in renewal("e-1", "2027-11-30") & renewal("e-2", "2027-11-30")
    assert not renewal("e-1", "2027-11-30") & renewal("e-3", "2028-11-30")
