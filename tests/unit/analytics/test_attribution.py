"""services/analytics/facts.py: whom an event, an action or its outcome is attributed to."""

from __future__ import annotations

import orjson
import pytest

from services.analytics.facts import Unreadable, attribution_of, read
from shared.events.types import (
    ChannelUpserted,
    ContractRenewed,
    CustomerInteraction,
    CustomerTierChanged,
    CustomerUpserted,
    EventPayload,
)
from tests.unit.analytics.fact_builders import CUSTOMER, T, action, by_identity, delivery, read_json

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
