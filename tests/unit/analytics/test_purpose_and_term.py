"""services/analytics/facts.py: what actions and outcomes say of themselves (purpose, term),
whatever their rule's name or key."""

from __future__ import annotations

from datetime import date

from services.analytics.facts import Touch, delivery_facts, reminded_term
from shared.events.deliveries import DeliveryMessage
from tests.unit.analytics.fact_builders import T, action, by_identity, delivery, read_json

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
