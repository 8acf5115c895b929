"""services/analytics/facts.py and legacy.py: contract terms from renewal keys, reminders and
renewals."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import orjson
import pytest

from services.analytics import legacy
from services.analytics.facts import Fact, Touch, delivery_facts, read, reminded_term
from shared.events.deliveries import DeliveryMessage
from tests.unit.analytics.fact_builders import (
    CUSTOMER,
    T,
    action,
    by_identity,
    delivery,
    event_record,
)

# --- contract terms: renewal keys, reminders and renewals ---------------------------------


@pytest.mark.parametrize(
    ("key", "term"),
    [
        ("renewal:K-1:2026-11-30:30d", ("K-1", date(2026, 11, 30))),
        ("renewal:K-1:2026-11-30:1d:customer", ("K-1", date(2026, 11, 30))),
        ("renewal:K-1:2026-11-30:overdue", ("K-1", date(2026, 11, 30))),
        # a contract id may itself contain ":" (and even something that looks like a date)
        ("renewal:acme:K-1:2026-11-30:7d", ("acme:K-1", date(2026, 11, 30))),
        ("renewal:acme:K-1:2026-11-30:7d:customer", ("acme:K-1", date(2026, 11, 30))),
        ("renewal:K:2025-01-01:x:2026-11-30:30d", ("K:2025-01-01:x", date(2026, 11, 30))),
        ("renewal:K-1:2026-11-30:2027-11-30:60d", ("K-1:2026-11-30", date(2027, 11, 30))),
    ],
)
def test_a_renewal_key_names_its_contract_and_term(key: str, term: tuple[str, date]) -> None:
    assert renewal_term(key) == term


def renewal_term(key: str) -> tuple[str, date] | None:
    """What a record written before actions carried their term is read as."""
    found = legacy.term_of("renewal", key)
    return (found.contract_id, found.end_date) if found is not None else None


@pytest.mark.parametrize(
    "key",
    [
        "birthday:C-1:2026",
        "followup:C-1:order:O-1",
        "renewals:K-1:2026-11-30:30d",  # another prefix
        "xrenewal:K-1:2026-11-30:30d",
        "renewal:K-1:2026-11-30",  # no reminder part
        "renewal:K-1:2026-11-30:",
        "renewal::2026-11-30:30d",  # no contract
        "renewal:K-1:20261130:30d",  # not an ISO date
        "renewal:K-1:30-11-2026:30d",
        "renewal:K-1:2026-13-01:30d",  # no 13th month
        "renewal:K-1:2026-02-30:30d",  # no 30 February
        "renewal:K-1:2026-11-30:30d:customer:again",
        "renewal:K-1:2026-11-30:30d:staff",  # only a customer notice has a fifth part
    ],
)
def test_a_key_that_is_not_a_renewal_key_has_no_term(key: str) -> None:
    assert renewal_term(key) is None


def renewal_delivery(
    outcome: str = "sent", key: str = "renewal:K-1:2026-11-30:30d", **changes: Any
) -> DeliveryMessage:
    return DeliveryMessage.model_validate(delivery(outcome, key, "renewal", **changes))


def test_a_sent_renewal_reminder_touches_the_term_it_reminded_of() -> None:
    assert reminded_term(renewal_delivery()) == Touch(
        "reminded", "K-1", date(2026, 11, 30), T, "customer:C-1"
    )


def test_a_sent_customer_notice_touches_the_same_term() -> None:
    notice = renewal_delivery(key="renewal:acme:K-1:2026-11-30:7d:customer")
    assert reminded_term(notice) == Touch(
        "reminded", "acme:K-1", date(2026, 11, 30), T, "customer:C-1"
    )


@pytest.mark.parametrize("outcome", ["suppressed", "failed", "deferred"])
def test_a_renewal_reminder_that_reached_nobody_touches_nothing(outcome: str) -> None:
    assert reminded_term(renewal_delivery(outcome, reason="why")) is None


def test_only_the_renewal_rule_reminds_of_a_term() -> None:
    other_rule = DeliveryMessage.model_validate(
        delivery("sent", "renewal:K-1:2026-11-30:30d", "followup")
    )
    assert reminded_term(other_rule) is None


def test_a_renewal_delivery_with_a_key_without_a_term_touches_nothing() -> None:
    assert reminded_term(renewal_delivery(key="renewal:K-1:2026-02-30:30d")) is None
    assert reminded_term(renewal_delivery(key="renewal:K-1")) is None


def test_a_sent_renewal_reminder_counts_the_term_reminded() -> None:
    facts = delivery_facts(renewal_delivery())
    assert facts == [
        Fact(
            "delivery:renewal:K-1:2026-11-30:30d",
            T,
            {
                "deliveries": 1,
                "deliveries.sent": 1,
                "touches.automated": 1,
                "touches.email": 1,
            },
            "customer:C-1",
            {"rule": "renewal", "kind": "email"},
        ),
        Fact("reminded:K-1:2026-11-30", T, {"renewals.reminded": 1}, "customer:C-1"),
    ]


def test_every_reminder_of_one_term_is_the_same_reminded_occurrence() -> None:
    keys = [
        "renewal:K-1:2026-11-30:60d",
        "renewal:K-1:2026-11-30:7d",
        "renewal:K-1:2026-11-30:7d:customer",
        "renewal:K-1:2026-11-30:overdue",
    ]
    reminded = [
        {
            f.identity
            for f in delivery_facts(renewal_delivery(key=k))
            if "renewals.reminded" in f.counters
        }
        for k in keys
    ]
    assert reminded == [{"reminded:K-1:2026-11-30"}] * len(keys)
    next_term = delivery_facts(renewal_delivery(key="renewal:K-1:2027-11-30:60d"))
    assert next_term[-1].identity == "reminded:K-1:2027-11-30"


def test_a_contract_id_with_colons_is_kept_whole_in_the_reminded_identity() -> None:
    facts = by_identity(delivery_facts(renewal_delivery(key="renewal:a:b:2026-11-30:30d")))
    assert facts["reminded:a:b:2026-11-30"].counters == {"renewals.reminded": 1}


@pytest.mark.parametrize("outcome", ["suppressed", "failed"])
def test_a_renewal_reminder_that_reached_nobody_is_not_a_term_reminded(outcome: str) -> None:
    (fact,) = delivery_facts(renewal_delivery(outcome, reason="why"))
    assert fact.identity == "delivery:renewal:K-1:2026-11-30:30d"
    assert "renewals.reminded" not in fact.counters


def test_a_sent_delivery_of_another_rule_is_not_a_term_reminded() -> None:
    body = delivery("sent", "renewal:K-1:2026-11-30:30d", "birthday")
    facts = delivery_facts(DeliveryMessage.model_validate(body))
    assert [f.identity for f in facts] == ["delivery:renewal:K-1:2026-11-30:30d"]


def renewed_record(**changes: Any) -> bytes:
    data: dict[str, Any] = {
        "contract_id": "K-1",
        "customer_id": "C-1",
        "renewed_at": T.isoformat(),
        "new_end_date": "2027-11-30",
    }
    return event_record("contract.renewed", **{**data, **changes})


def test_read_gives_a_renewal_as_a_touch_of_its_new_term() -> None:
    found = read("events", renewed_record())
    assert found.touch == Touch("renewed", "K-1", date(2027, 11, 30), T, "customer:C-1")


def test_a_renewal_touches_its_term_at_the_moment_it_was_renewed() -> None:
    renewed_at = T - timedelta(days=2)  # recorded late: the envelope's time is later
    found = read("events", renewed_record(renewed_at=renewed_at.isoformat()))
    assert found.touch is not None
    assert found.touch.at == renewed_at


def test_read_gives_a_renewal_of_a_contract_with_colons_its_whole_id() -> None:
    found = read("events", renewed_record(contract_id="acme:K-1"))
    assert found.touch is not None
    assert (found.touch.contract, found.touch.end) == ("acme:K-1", date(2027, 11, 30))


def test_read_gives_a_sent_renewal_reminder_as_a_touch_of_its_term() -> None:
    body = delivery("sent", "renewal:K-1:2026-11-30:30d", "renewal")
    found = read("deliveries", orjson.dumps(body))
    assert found.touch == Touch("reminded", "K-1", date(2026, 11, 30), T, "customer:C-1")
    assert "reminded:K-1:2026-11-30" in by_identity(found.facts)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("events", event_record("customer.upserted", **CUSTOMER)),
        (
            "events",
            event_record(
                "contract.cancelled",
                contract_id="K-1",
                customer_id="C-1",
                cancelled_at=T.isoformat(),
            ),
        ),
        ("actions", orjson.dumps(action("renewal:K-1:2026-11-30:30d", "renewal"))),
        ("actions", orjson.dumps(action("birthday:C-1:2026", "birthday"))),
        ("deliveries", orjson.dumps(delivery("sent"))),
        (
            "deliveries",
            orjson.dumps(delivery("failed", "renewal:K-1:2026-11-30:30d", "renewal", reason="x")),
        ),
        (
            "deliveries",
            orjson.dumps(
                delivery("suppressed", "renewal:K-1:2026-11-30:30d", "renewal", reason="x")
            ),
        ),
        (
            "deliveries",
            orjson.dumps(
                delivery(
                    "deferred",
                    "renewal:K-1:2026-11-30:30d",
                    "renewal",
                    reason="quiet_hours",
                    next_at=(T + timedelta(hours=9)).isoformat(),
                )
            ),
        ),
    ],
    ids=[
        "customer upserted",
        "contract cancelled",
        "renewal action",
        "birthday action",
        "sent birthday",
        "failed renewal",
        "suppressed renewal",
        "deferred renewal",
    ],
)
def test_read_gives_no_touch_for_anything_else(kind: str, value: bytes) -> None:
    assert read(kind, value).touch is None
