"""services/analytics/facts.py: what each record on upkeep.deliveries.v1 counts for."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.analytics.facts import Fact
from tests.unit.analytics.fact_builders import T, delivery, read_json

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
