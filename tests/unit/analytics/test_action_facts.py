"""services/analytics/facts.py: what each record on upkeep.actions.v1 counts for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from services.analytics.facts import Fact, read
from tests.unit.analytics.fact_builders import SHANGHAI, T, action, by_identity, delivery, read_json

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
