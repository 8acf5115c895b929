"""services/analytics/facts.py: what each record on the three topics counts for, under which
identity, and which records are refused."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.analytics import legacy
from services.analytics.facts import (
    Fact,
    Touch,
    Unreadable,
    attribution_of,
    cents,
    delivery_facts,
    read,
    reminded_term,
)
from shared.events.deliveries import DeliveryMessage
from shared.events.envelope import CanonicalEvent
from shared.events.types import (
    ChannelUpserted,
    ContractRenewed,
    CustomerInteraction,
    CustomerTierChanged,
    CustomerUpserted,
    EventPayload,
    resolve_type,
)

T = datetime(2026, 11, 2, 10, 15, tzinfo=UTC)
SHANGHAI = timezone(timedelta(hours=8))


def payload_of(type_name: str, **data: Any) -> EventPayload:
    model = resolve_type(type_name)
    assert model is not None, type_name
    return model.model_validate(data)


def event(
    type_name: str, event_id: str = "e-1", source: str = "crm", at: datetime = T, **data: Any
) -> CanonicalEvent:
    return CanonicalEvent.build(
        event_id=event_id,
        source=source,
        payload=payload_of(type_name, **data),
        time=at,
        source_offset="Z",
    )


def event_record(type_name: str, event_id: str = "e-1", source: str = "crm", **data: Any) -> bytes:
    return event(type_name, event_id, source, **data).to_json()


def event_identity(event_id: str = "e-1", source: str = "crm") -> str:
    return f"event:{source}\x1f{event_id}"


def action(key: str, rule: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "rule": rule,
        "subject": "customer:C-1",
        "kind": "email",
        "recipient": {"kind": "staff", "id": "S-1"},
        "template": f"{rule}_reminder",
        "locale": "en",
        "due_at": T.isoformat(),
        "priority": "transactional",
        "data": {},
        "created_at": T.isoformat(),
    }
    return {**body, **changes}


def delivery(
    outcome: str, key: str = "birthday:C-1:2026", rule: str = "birthday", **changes: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"{key}:{outcome}",
        "key": key,
        "outcome": outcome,
        "reason": None,
        "rule": rule,
        "subject": "customer:C-1",
        "kind": "email",
        "recipient": {"kind": "staff", "id": "S-1"},
        "priority": "transactional",
        "template": f"{rule}_reminder",
        "attempts": 1,
        "due_at": T.isoformat(),
        "at": T.isoformat(),
    }
    return {**body, **changes}


def read_json(kind: str, body: dict[str, Any]) -> list[Fact]:
    return read(kind, orjson.dumps(body)).facts


def by_identity(facts: list[Fact]) -> dict[str, Fact]:
    found = {f.identity: f for f in facts}
    assert len(found) == len(facts), "identities within one record must differ"
    return found


CUSTOMER = {"customer_id": "C-1", "name": "Acme", "timezone": "Asia/Shanghai"}


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
        Fact("order:customer:O-1", T, {"orders": 1, "order_value.EUR": 1250}, "customer:C-1"),
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
def test_an_interaction_that_is_not_an_order_counts_only_as_an_event(
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
        Fact(event_identity(), T, {"events.customer.interaction": 1}, "customer:C-1")
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
            {"channel_orders": 1, "channel_order_value.CNY": 9990},
            "channel:CH-1",
            {"channel": "CH-1"},
        ),
    ]


def test_a_sell_through_report_counts_only_as_an_event() -> None:
    record = event_record(
        "channel.order",
        order_id="CO-2",
        channel_id="CH-1",
        kind="sell_through",
        occurred_at=T.isoformat(),
        amount="10",
        currency="CNY",
    )
    assert [f.counters for f in read("events", record).facts] == [{"events.channel.order": 1}]


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
    assert set(first) & set(second) == {"order:customer:O-1"}


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


# --- upkeep.actions.v1 --------------------------------------------------------------------


def test_an_action_counts_by_kind_under_its_rule_and_kind() -> None:
    facts = read_json("actions", action("birthday:C-1:2026", "birthday", kind="chat"))
    assert facts == [
        Fact(
            "action:birthday:C-1:2026",
            T,
            {"actions": 1, "actions.chat": 1},
            "customer:C-1",
            {"rule": "birthday", "kind": "chat"},
        )
    ]


def test_an_action_counts_at_its_due_time() -> None:
    due = datetime(2026, 11, 30, 9, tzinfo=SHANGHAI)
    (fact,) = read_json("actions", action("birthday:C-1:2026", "birthday", due_at=due.isoformat()))
    assert fact.at == due
    assert fact.at == datetime(2026, 11, 30, 1, tzinfo=UTC)


def test_renewals_are_due_once_per_contract_term_however_many_reminders() -> None:
    thirty = by_identity(read_json("actions", action("renewal:K-1:2026-11-30:30d", "renewal")))
    seven = by_identity(read_json("actions", action("renewal:K-1:2026-11-30:7d", "renewal")))
    overdue = by_identity(read_json("actions", action("renewal:K-1:2026-11-30:overdue", "renewal")))
    term = "due:renewal:K-1:2026-11-30"
    assert set(thirty) == {"action:renewal:K-1:2026-11-30:30d", term}
    assert set(seven) == {"action:renewal:K-1:2026-11-30:7d", term}
    assert term in overdue
    assert thirty[term] == Fact(term, T, {"renewals.due": 1}, "customer:C-1")
    assert thirty["action:renewal:K-1:2026-11-30:30d"].counters == {
        "actions": 1,
        "actions.email": 1,
    }


def test_the_next_term_of_a_contract_is_due_again() -> None:
    this = by_identity(read_json("actions", action("renewal:K-1:2026-11-30:30d", "renewal")))
    next_term = by_identity(read_json("actions", action("renewal:K-1:2027-11-30:30d", "renewal")))
    assert "due:renewal:K-1:2027-11-30" in next_term
    assert "due:renewal:K-1:2027-11-30" not in this


def test_customer_notices_of_one_term_share_the_term_with_the_owner_reminders() -> None:
    notices = [
        by_identity(
            read_json("actions", action(f"renewal:K-1:2026-11-30:{d}d:customer", "renewal"))
        )
        for d in (60, 30, 7, 1)
    ]
    due = [{i for i, f in found.items() if "renewals.due" in f.counters} for found in notices]
    assert due == [{"due:renewal:K-1:2026-11-30"}] * 4


def test_other_rules_do_not_count_renewals_due() -> None:
    facts = read_json("actions", action("followup:C-1:order:O-1", "followup", kind="task"))
    assert [f.counters for f in facts] == [{"actions": 1, "actions.task": 1}]


def test_a_channel_health_alert_flags_its_channel() -> None:
    key = "channel-health:CH-7:2026-11-02"
    facts = read_json("actions", action(key, "channel-health", subject="channel:CH-7"))
    dims = {"rule": "channel-health", "kind": "email"}
    assert facts == [
        Fact(f"action:{key}", T, {"actions": 1, "actions.email": 1}, "channel:CH-7", dims),
        Fact(f"flagged:{key}", T, {"channels.flagged": 1}, "channel:CH-7", dims),
    ]


def test_an_action_published_again_has_the_same_facts() -> None:
    body = action("renewal:K-1:2026-11-30:30d", "renewal")
    again = {**body, "created_at": (T + timedelta(hours=3)).isoformat(), "data": {"days": 30}}
    assert orjson.dumps(again) != orjson.dumps(body)
    assert read_json("actions", again) == read_json("actions", body)


def test_actions_and_deliveries_attribute_nobody() -> None:
    assert (
        read("actions", orjson.dumps(action("birthday:C-1:2026", "birthday"))).attribution is None
    )
    assert read("deliveries", orjson.dumps(delivery("sent"))).attribution is None


# --- upkeep.deliveries.v1 -----------------------------------------------------------------


def test_a_deferral_is_not_an_outcome() -> None:
    body = delivery("deferred", reason="quiet_hours", next_at=(T + timedelta(hours=9)).isoformat())
    assert read_json("deliveries", body) == []


def test_a_sent_message_is_an_automated_touch_of_its_kind() -> None:
    assert read_json("deliveries", delivery("sent", kind="webhook")) == [
        Fact(
            "delivery:birthday:C-1:2026",
            T,
            {
                "deliveries": 1,
                "deliveries.sent": 1,
                "touches.automated": 1,
                "touches.webhook": 1,
            },
            "customer:C-1",
            {"rule": "birthday", "kind": "webhook"},
        )
    ]


def test_a_sent_task_is_a_manual_touch() -> None:
    (fact,) = read_json("deliveries", delivery("sent", kind="task"))
    assert fact.counters == {
        "deliveries": 1,
        "deliveries.sent": 1,
        "touches.manual": 1,
        "touches.task": 1,
    }


@pytest.mark.parametrize("outcome", ["suppressed", "failed"])
def test_an_outcome_that_reached_nobody_is_no_touch(outcome: str) -> None:
    (fact,) = read_json("deliveries", delivery(outcome, reason="why"))
    assert fact.identity == "delivery:birthday:C-1:2026"
    assert fact.counters == {"deliveries": 1, f"deliveries.{outcome}": 1}
    assert fact.dims == {"rule": "birthday", "kind": "email"}


@pytest.mark.parametrize(
    ("outcome", "rule", "done"),
    [
        ("sent", "followup", True),
        ("failed", "followup", False),
        ("suppressed", "followup", False),
        ("sent", "birthday", False),
    ],
)
def test_a_followup_is_done_only_when_the_followup_rule_sent_it(
    outcome: str, rule: str, done: bool
) -> None:
    (fact,) = read_json("deliveries", delivery(outcome, "followup:C-1:order:O-1", rule))
    assert fact.counters.get("followups.done") == (1 if done else None)


def test_an_outcome_published_again_after_a_crash_has_the_same_identity() -> None:
    first = delivery("sent")
    again = {**first, "attempts": 2, "at": (T + timedelta(seconds=40)).isoformat()}
    (a,) = read_json("deliveries", first)
    (b,) = read_json("deliveries", again)
    assert a.identity == b.identity == "delivery:birthday:C-1:2026"
    assert a.counters == b.counters


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


# --- attribution ---------------------------------------------------------------------------


def test_a_customer_belongs_to_its_owner_and_channel() -> None:
    payload = CustomerUpserted.model_validate({**CUSTOMER, "owner_id": "S-1", "channel_id": "CH-1"})
    assert attribution_of(payload) == ("customer:C-1", {"owner": "S-1", "channel": "CH-1"})


def test_a_customer_without_owner_or_channel_sets_neither() -> None:
    payload = CustomerUpserted.model_validate({**CUSTOMER, "owner_id": "S-1"})
    assert attribution_of(payload) == ("customer:C-1", {"owner": "S-1"})
    assert attribution_of(CustomerUpserted.model_validate(CUSTOMER)) == ("customer:C-1", {})


def test_a_channel_belongs_to_itself_and_its_manager() -> None:
    channel = {"channel_id": "CH-1", "name": "Acme", "timezone": "UTC"}
    managed = ChannelUpserted.model_validate({**channel, "manager_id": "S-7"})
    assert attribution_of(managed) == ("channel:CH-1", {"channel": "CH-1", "owner": "S-7"})
    unmanaged = ChannelUpserted.model_validate(channel)
    assert attribution_of(unmanaged) == ("channel:CH-1", {"channel": "CH-1"})


def test_a_tier_change_sets_the_tier() -> None:
    payload = CustomerTierChanged.model_validate(
        {
            "customer_id": "C-1",
            "tier": "C",
            "recency_score": 1,
            "frequency_score": 1,
            "monetary_score": 1,
            "changed_at": T.isoformat(),
        }
    )
    assert attribution_of(payload) == ("customer:C-1", {"tier": "C"})


@pytest.mark.parametrize(
    "payload",
    [
        ContractRenewed.model_validate(
            {
                "contract_id": "K-1",
                "customer_id": "C-1",
                "renewed_at": T.isoformat(),
                "new_end_date": "2027-11-30",
            }
        ),
        CustomerInteraction.model_validate(
            {
                "interaction_id": "O-1",
                "customer_id": "C-1",
                "kind": "visit",
                "occurred_at": T.isoformat(),
            }
        ),
    ],
)
def test_other_events_attribute_nobody(payload: EventPayload) -> None:
    assert attribution_of(payload) is None


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


# --- context: whom an action or its outcome is attributed to ------------------------------

CONTEXT = {"owner": "S-9", "channel": "CH-2", "tier": "A"}


def test_an_actions_context_is_the_dimension_of_its_facts() -> None:
    body = action("renewal:K-1:2026-11-30:30d", "renewal", context=CONTEXT)
    facts = by_identity(read_json("actions", body))
    assert facts["action:renewal:K-1:2026-11-30:30d"].dims == {
        **CONTEXT,
        "rule": "renewal",
        "kind": "email",
    }
    assert facts["due:renewal:K-1:2026-11-30"].dims == CONTEXT


def test_a_channel_alert_is_flagged_under_its_context() -> None:
    key = "channel-health:CH-2:2026-11-02"
    body = action(key, "channel-health", subject="channel:CH-2", context={"owner": "S-9"})
    facts = by_identity(read_json("actions", body))
    dims = {"owner": "S-9", "rule": "channel-health", "kind": "email"}
    assert facts[f"action:{key}"].dims == dims
    assert facts[f"flagged:{key}"].dims == dims


def test_a_deliverys_context_is_the_dimension_of_its_facts() -> None:
    body = delivery("sent", "renewal:K-1:2026-11-30:30d", "renewal", kind="chat", context=CONTEXT)
    facts = by_identity(read_json("deliveries", body))
    assert facts["delivery:renewal:K-1:2026-11-30:30d"].dims == {
        **CONTEXT,
        "rule": "renewal",
        "kind": "chat",
    }
    assert facts["reminded:K-1:2026-11-30"].dims == CONTEXT


@pytest.mark.parametrize("outcome", ["suppressed", "failed"])
def test_an_outcome_that_reached_nobody_is_attributed_by_its_context_too(outcome: str) -> None:
    (fact,) = read_json("deliveries", delivery(outcome, reason="why", context={"tier": "B"}))
    assert fact.dims == {"tier": "B", "rule": "birthday", "kind": "email"}


NOISY = {
    "owner": "S-9",
    "channel": "",  # empty: dropped
    "tier": "",
    "region": "EU",  # not a dimension: dropped
    "customer": "C-1",
    "rule": "spoofed",  # never overrides the record's own rule and kind
    "kind": "fax",
}


def test_unknown_and_empty_context_is_dropped_and_never_overrides_rule_or_kind() -> None:
    action_facts = by_identity(
        read_json("actions", action("renewal:K-1:2026-11-30:30d", "renewal", context=NOISY))
    )
    assert action_facts["action:renewal:K-1:2026-11-30:30d"].dims == {
        "owner": "S-9",
        "rule": "renewal",
        "kind": "email",
    }
    assert action_facts["due:renewal:K-1:2026-11-30"].dims == {"owner": "S-9"}
    body = delivery("sent", "renewal:K-1:2026-11-30:30d", "renewal", kind="task", context=NOISY)
    delivery_found = by_identity(read_json("deliveries", body))
    assert delivery_found["delivery:renewal:K-1:2026-11-30:30d"].dims == {
        "owner": "S-9",
        "rule": "renewal",
        "kind": "task",
    }
    assert delivery_found["reminded:K-1:2026-11-30"].dims == {"owner": "S-9"}


def test_without_context_the_facts_carry_only_rule_and_kind() -> None:
    facts = by_identity(read_json("actions", action("renewal:K-1:2026-11-30:30d", "renewal")))
    assert facts["action:renewal:K-1:2026-11-30:30d"].dims == {"rule": "renewal", "kind": "email"}
    assert facts["due:renewal:K-1:2026-11-30"].dims == {}


def test_a_context_that_is_not_text_is_unreadable() -> None:
    body = action("birthday:C-1:2026", "birthday", context={"owner": ["S-1", "S-2"]})
    with pytest.raises(Unreadable):
        read("actions", orjson.dumps(body))


# -- what actions and outcomes say of themselves (purpose, term) --------------------------------

TERM = {"contract_id": "K-9", "end_date": "2027-03-31"}


def test_an_action_of_any_rule_with_a_term_counts_that_term_due_once() -> None:
    facts = by_identity(
        read_json(
            "actions",
            action("acme:K-9:soon", "acme-renewals", term=TERM, purpose="renewal_reminder"),
        )
    )
    assert facts["due:renewal:K-9:2027-03-31"].counters == {"renewals.due": 1}


def test_a_sent_outcome_with_a_term_reminds_of_it_whatever_its_key() -> None:
    sent = DeliveryMessage.model_validate(
        delivery("sent", "acme:K-9:soon", "acme-renewals", term=TERM, purpose="renewal_reminder")
    )
    assert reminded_term(sent) == Touch("reminded", "K-9", date(2027, 3, 31), T, "customer:C-1")


def test_a_follow_up_of_a_plug_in_rule_counts_as_a_follow_up_by_its_purpose() -> None:
    facts = delivery_facts(
        DeliveryMessage.model_validate(
            delivery("sent", "calls:C-1:1", "calls", purpose="follow_up")
        )
    )
    assert facts[0].counters["followups.done"] == 1


def test_an_action_that_says_its_purpose_is_not_read_by_its_rule_name_or_key() -> None:
    # named like the built-in rule, keyed like its reminders, but it says what it is
    body = action("renewal:K-1:2026-11-30:30d", "renewal", purpose="greeting")
    assert "due:renewal:K-1:2026-11-30" not in by_identity(read_json("actions", body))
    flagged = action("channel-health:P-1:inactive:2026-11-01", "channel-health", purpose="other")
    assert not any(i.startswith("flagged:") for i in by_identity(read_json("actions", flagged)))
