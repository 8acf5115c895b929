"""Each kind of step, run through the harness: send (to every kind of recipient, inline or with
a template, a task), wait, wait_for, branch, set, emit and exit; and the journey events a run
reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.rules.sdk import TaskSpec
from services.rules.testing import RuleHarness
from tests.unit.rules.journeys.builders import (
    ENTERED,
    LABELLED,
    LEFT,
    STEP,
    T0,
    add_staff,
    customer,
    document,
    emitted,
    harness,
    message,
    order,
    outcomes,
    reasons,
    send,
    steps_of,
)

BILINGUAL = {
    "en": {
        "subject": "Hello {{ subject.name }}",
        "body": "Dear {{ subject.name }} ({{ subject.id }})",
    },
    "zh-CN": {"subject": "{{ subject.name }}，您好", "body": "尊敬的 {{ subject.name }}"},
}


def run_id(h: RuleHarness) -> str:
    (entered,) = emitted(h, ENTERED)
    return str(entered["run"])


def started(*steps: dict[str, Any], at: datetime = T0, **parts: Any) -> RuleHarness:
    """A harness whose customer C-1 (owner S-1) has entered a journey of ``steps``, and the
    steps due at once taken."""
    h = harness(document(*steps, **parts))
    customer(h, at=at)
    h.advance(to=at)
    return h


# -- send ------------------------------------------------------------------------------------


def test_an_inline_message_is_rendered_in_the_recipients_language() -> None:
    h = harness(
        document(
            {"id": "to-customer", "send": {"to": "customer", "message": BILINGUAL}},
            {"id": "to-owner", "send": {"to": "owner", "message": BILINGUAL}},
            {"id": "to-manager", "send": {"to": "manager", "message": BILINGUAL}},
        )
    )
    customer(h, locale="zh-CN", name="华东贸易")
    h.advance(to=T0)
    to_customer, to_owner, to_manager = h.actions
    assert (to_customer.recipient.kind, to_customer.recipient.id) == ("customer", "C-1")
    assert to_customer.locale == "zh-CN"
    assert to_customer.data["message_subject"] == "华东贸易，您好"
    assert to_customer.data["message_body"] == "尊敬的 华东贸易"
    assert (to_owner.recipient.id, to_owner.locale) == ("S-1", "en")
    assert to_owner.data["message_subject"] == "Hello 华东贸易"
    assert to_owner.data["message_body"] == "Dear 华东贸易 (customer:C-1)"
    assert (to_manager.recipient.id, to_manager.locale) == ("M-1", "zh-CN")
    assert to_manager.data["message_subject"] == "华东贸易，您好"


def test_a_text_that_cannot_be_rendered_for_one_subject_does_not_stall_its_run() -> None:
    h = started(
        send(message=message("Contract {{ subject.contracts[0].id }}")), {"id": "after", **send()}
    )
    assert reasons(h) == ["completed"]


def test_a_field_not_known_yet_renders_empty_not_none() -> None:
    h = started(send("customer", message=message("Tier {{ subject.tier }}, {{ subject.region }}")))
    assert h.actions[0].data["message_subject"] == "Tier , "


def test_a_locale_without_its_text_falls_back_to_english() -> None:
    h = harness(document({"send": {"to": "customer", "message": message("Hi {{ subject.name }}")}}))
    customer(h, locale="zh-CN")
    h.advance(to=T0)
    (action,) = h.actions
    assert (action.locale, action.data["message_subject"]) == ("zh-CN", "Hi Acme")


def test_every_send_carries_its_journey_and_step_and_a_key_naming_them() -> None:
    h = started({"id": "hello", **send("customer", data={"campaign": "spring", "n": 2})})
    (action,) = h.actions
    run = run_id(h)
    assert action.key == f"journey:test-journey:v1:customer:C-1:{run}:hello"
    assert action.rule == "journeys"
    assert (action.template, action.kind, action.purpose) == ("journey_message", "email", "journey")
    assert action.due_at == T0
    assert dict(action.data) == {
        "subject_id": "customer:C-1",
        "subject_name": "Acme",
        "journey": "test-journey",
        "journey_step": "hello",
        "message_subject": "Hello Acme",
        "message_body": "Body",
        "campaign": "spring",
        "n": 2,
    }


def test_a_template_send_names_the_template_and_passes_its_data() -> None:
    h = started(send("owner", template="renewal_reminder", data={"x": "y"}, purpose="renewal"))
    (action,) = h.actions
    assert (action.template, action.purpose) == ("renewal_reminder", "renewal")
    assert "message_subject" not in action.data
    assert action.data["x"] == "y"
    assert action.data["journey_step"] == "s0"


def test_a_task_is_due_after_its_due_in_with_its_priority_and_comes_back_as_the_subjects_task() -> (
    None
):
    h = started(
        {
            "id": "call",
            "send": {
                "kind": "task",
                "to": "owner",
                "message": message("Call {{ subject.name }}"),
                "due_in": "3d",
                "priority": "urgent",
            },
        },
        {"id": "default", "send": {"kind": "task", "to": "manager", "message": message()}},
    )
    call, default = h.actions
    assert (call.kind, call.recipient.id) == ("task", "S-1")
    assert call.task_spec == TaskSpec(T0 + timedelta(days=3), "urgent")
    assert default.task_spec == TaskSpec(T0 + timedelta(days=2), "normal")
    tasks = h.states["customer:C-1"].tasks
    assert {(t.task_id, t.owner_id) for t in tasks} == {(call.key, "S-1"), (default.key, "M-1")}


def test_messages_to_the_customer_are_marketing_unless_said_otherwise_and_to_staff_not() -> None:
    h = started(
        send("customer"),
        send("customer", marketing=False),
        send("owner"),
        send("owner", marketing=True),
        {"send": {"kind": "webhook", "to": "customer", "message": message()}},
    )
    assert [(a.priority, a.kind) for a in h.actions] == [
        ("marketing", "email"),
        ("transactional", "email"),
        ("transactional", "email"),
        ("marketing", "email"),
        ("marketing", "webhook"),
    ]


def test_a_channel_journey_sends_to_the_channel_and_its_manager() -> None:
    h = harness(
        {
            **document(
                {"send": {"to": "channel", "message": BILINGUAL}},
                {"send": {"kind": "chat", "to": "owner", "message": BILINGUAL}},
            ),
            "subject": "channel",
            "trigger": {"event": "channel.upserted", "when": "subject.active == true"},
        }
    )
    h.send(
        "channel.upserted",
        at=T0,
        channel_id="CH-1",
        name="Huadong",
        timezone="Asia/Shanghai",
        manager_id="M-1",
        email="buy@huadong.example",
        locale="zh-CN",
    )
    h.advance(to=T0)
    to_channel, to_manager = h.actions
    assert (to_channel.recipient.kind, to_channel.recipient.id, to_channel.locale) == (
        "channel",
        "CH-1",
        "zh-CN",
    )
    assert to_channel.data["message_subject"] == "Huadong，您好"
    assert (to_manager.kind, to_manager.recipient.id) == ("chat", "M-1")


def test_a_team_send_goes_to_its_least_loaded_active_member() -> None:
    h = harness(document(send("team:east"), send("team:east")))
    add_staff(h, "E-1", team="east")
    add_staff(h, "E-2", team="east")
    add_staff(h, "E-0", team="east", active=False)
    add_staff(h, "W-1", team="west")
    # E-1 manages a channel already: E-2 carries less
    h.send(
        "channel.upserted", at=T0, channel_id="CH-9", name="Other", timezone="UTC", manager_id="E-1"
    )
    customer(h)
    h.advance(to=T0)
    assert [a.recipient.id for a in h.actions] == ["E-2", "E-2"]


def test_a_team_of_equal_loads_is_given_to_its_first_member_by_id() -> None:
    h = harness(document(send("team:east")))
    add_staff(h, "E-2", team="east")
    add_staff(h, "E-1", team="east")
    customer(h)
    h.advance(to=T0)
    assert [a.recipient.id for a in h.actions] == ["E-1"]


def unrouted(h: RuleHarness) -> list[str]:
    return [reason for rule, _, reason in h.unrouted if rule == "journeys"]


@pytest.mark.parametrize(
    ("to", "profile", "reason"),
    [
        ("owner", {"owner_id": None}, "no_owner"),
        ("manager", {"owner_id": None}, "no_owner"),
        ("manager", {"owner_id": "S-2"}, "no_manager"),  # S-2 has no manager
        ("team:nobody", {}, "no_staff"),
        ("channel", {}, "no_recipient"),  # a customer journey's subject has no channel part
    ],
)
def test_with_nobody_to_send_to_the_step_is_unrouted_and_the_run_goes_on(
    to: str, profile: dict[str, Any], reason: str
) -> None:
    h = harness(document({"id": "lost", **send(to)}, {"id": "after", **send("customer")}))
    add_staff(h, "S-2")
    customer(h, **profile)
    h.advance(to=T0)
    assert steps_of(h.actions) == ["after"]
    assert unrouted(h) == [reason]
    lost = next(e for e in emitted(h, STEP) if e["step"] == "lost")
    assert (lost["outcome"], lost["action_key"], lost["next_step"]) == ("unrouted", None, "after")
    assert reasons(h) == ["completed"]


# -- wait ------------------------------------------------------------------------------------


def test_a_wait_for_a_duration_continues_after_it() -> None:
    h = started(send(), {"id": "pause", "wait": {"for": "1d12h"}}, {"id": "later", **send()})
    assert steps_of(h.actions) == ["s0"]
    (timer,) = h.pending()
    assert timer.due_at == T0 + timedelta(hours=36)
    h.advance(to=T0 + timedelta(hours=36))
    assert [(s, a.due_at) for s, a in zip(steps_of(h.actions), h.actions, strict=True)] == [
        ("s0", T0),
        ("later", T0 + timedelta(hours=36)),
    ]
    assert ("pause", "waited") in outcomes(h)


@pytest.mark.parametrize(
    ("wait", "due"),
    [
        # T0 is 09:00 in Shanghai (UTC+8)
        ({"until": "10:30"}, datetime(2026, 3, 2, 2, 30, tzinfo=UTC)),  # later the same day
        ({"until": "08:00"}, datetime(2026, 3, 3, 0, 0, tzinfo=UTC)),  # passed: the next day
        ({"until": "09:00"}, T0),  # that very moment: no wait
        ({"for": "2d", "until": "08:30"}, datetime(2026, 3, 5, 0, 30, tzinfo=UTC)),
        ({"for": "1d", "until": "18:00"}, datetime(2026, 3, 3, 10, 0, tzinfo=UTC)),
    ],
)
def test_a_wait_until_is_the_next_such_local_time_in_the_subjects_zone(
    wait: dict[str, str], due: datetime
) -> None:
    h = started({"id": "pause", "wait": wait}, {"id": "later", **send()})
    h.advance(to=due - timedelta(seconds=1))
    assert h.actions == [] or due == T0
    h.advance(to=due)
    (action,) = h.actions
    assert action.due_at == due


def test_a_wait_until_follows_the_subjects_own_zone() -> None:
    h = harness(document({"wait": {"until": "09:00"}}, send()))
    customer(h, timezone="America/New_York")  # T0 is 20:00 the day before there
    h.advance(to=T0 + timedelta(days=2))
    (action,) = h.actions
    assert action.due_at == datetime(2026, 3, 2, 14, tzinfo=UTC)  # 09:00 EST


# -- wait_for --------------------------------------------------------------------------------


def waiting() -> RuleHarness:
    return started(
        {"id": "ask", **send("customer")},
        {
            "id": "listen",
            "wait_for": {
                "event": "customer.interaction",
                "when": "event.kind == 'order'",
                "timeout": "7d",
                "on_event": "thanks",
                "on_timeout": "nudge",
            },
        },
        {"id": "nudge", **send("owner")},
        {"id": "done", "exit": {}},
        {"id": "thanks", **send("customer")},
    )


def test_the_awaited_event_continues_at_on_event() -> None:
    h = waiting()
    order(h, T0 + timedelta(days=2))
    h.advance(to=T0 + timedelta(days=30))
    assert steps_of(h.actions) == ["ask", "thanks"]
    assert h.actions[1].due_at == T0 + timedelta(days=2)
    listen = next(e for e in emitted(h, STEP) if e["step"] == "listen")
    assert (listen["outcome"], listen["next_step"]) == ("event", "thanks")
    assert reasons(h) == ["completed"]


def test_no_event_by_the_timeout_continues_at_on_timeout() -> None:
    h = waiting()
    h.advance(to=T0 + timedelta(days=30))
    assert steps_of(h.actions) == ["ask", "nudge"]
    assert h.actions[1].due_at == T0 + timedelta(days=7)
    assert ("listen", "timeout") in outcomes(h)
    assert reasons(h) == ["exited"]


def test_an_event_its_when_does_not_match_keeps_it_waiting() -> None:
    h = waiting()
    order(h, T0 + timedelta(days=1), kind="call")  # an interaction, not an order
    order(h, T0 + timedelta(days=2), n=2, kind="visit")
    assert [t.due_at for t in h.pending()] == [T0 + timedelta(days=7)]
    order(h, T0 + timedelta(days=3), n=3)
    h.advance(to=T0 + timedelta(days=30))
    assert steps_of(h.actions) == ["ask", "thanks"]


def test_an_event_of_another_type_does_not_answer_a_wait_for() -> None:
    h = waiting()
    customer(h, at=T0 + timedelta(days=1), name="Acme Ltd")
    h.advance(to=T0 + timedelta(days=30))
    assert steps_of(h.actions) == ["ask", "nudge"]


# -- branch ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "taken"), [("A", "gold"), ("B", "plain")])
def test_a_branch_continues_at_then_or_else(tier: str, taken: str) -> None:
    h = harness(
        document(
            {
                "id": "pick",
                "branch": {"when": "subject.tier == 'A'", "then": "gold", "else": "plain"},
            },
            {"id": "plain", **send("owner")},
            {"id": "stop", "exit": {}},
            {"id": "gold", **send("manager")},
        )
    )
    h.send(
        "customer.tier_changed",
        at=T0,
        customer_id="C-1",
        tier=tier,
        recency_score=3,
        frequency_score=3,
        monetary_score=3,
        changed_at=T0.isoformat(),
    )
    customer(h)
    h.advance(to=T0 + timedelta(minutes=1))
    assert steps_of(h.actions) == [taken]
    pick = next(e for e in emitted(h, STEP) if e["step"] == "pick")
    assert (pick["outcome"], pick["next_step"]) == ("then" if tier == "A" else "else", taken)


def test_a_condition_that_fails_is_false_and_counted() -> None:
    before = REGISTRY.get_sample_value(
        "upkeep_journey_condition_errors_total", {"journey": "test-journey"}
    )
    h = started(
        {"id": "risky", "branch": {"when": "subject.churn_risk > 0.5", "then": "alarm"}},
        {"id": "calm", **send("owner")},
        {"id": "stop", "exit": {}},
        {"id": "alarm", **send("manager")},
    )
    assert steps_of(h.actions) == ["calm"]  # null > 0.5 is an error: taken as false
    after = REGISTRY.get_sample_value(
        "upkeep_journey_condition_errors_total", {"journey": "test-journey"}
    )
    assert (after or 0.0) == (before or 0.0) + 1


def test_next_is_the_step_after() -> None:
    h = started(
        {"branch": {"when": "true", "then": "next", "else": "last"}},
        {"id": "second", **send()},
        {"id": "last", **send()},
    )
    assert steps_of(h.actions) == ["second", "last"]


# -- set and emit ----------------------------------------------------------------------------


def test_set_labels_the_subject_and_a_later_condition_sees_it() -> None:
    h = harness(
        document(
            {
                "id": "tag",
                "set": {"add_tags": ["welcomed", "trial"], "attributes": {"stage": "new"}},
            },
            {"id": "pause", "wait": {"for": "1d"}},
            {
                "id": "check",
                "branch": {
                    "when": "'welcomed' in subject.tags && subject.attributes.stage == 'new'",
                    "then": "seen",
                },
            },
            {"id": "unseen", **send()},
            {"id": "stop", "exit": {}},
            {"id": "seen", "set": {"remove_tags": ["trial"], "attributes": {"stage": "done"}}},
        )
    )
    customer(h, tags=["vip"])
    h.advance(to=T0)
    (labelled,) = emitted(h, LABELLED)
    assert dict(labelled) == {
        "about": "customer:C-1",
        "add_tags": ["welcomed", "trial"],
        "remove_tags": [],
        "attributes": {"stage": "new"},
        "labelled_by": "journey:test-journey",
        "labelled_at": "2026-03-02T01:00:00Z",
    }
    state = h.states["customer:C-1"].customer
    assert state is not None
    assert (state.labels, state.label_attributes) == (["welcomed", "trial"], {"stage": "new"})
    h.advance(to=T0 + timedelta(days=1))
    assert steps_of(h.actions) == []
    assert ("check", "then") in outcomes(h)
    assert (state := h.states["customer:C-1"].customer) is not None
    assert (state.tags, state.labels, state.label_attributes) == (
        ["vip"],
        ["welcomed"],
        {"stage": "done"},
    )
    customer(h, at=T0 + timedelta(days=2), tags=["gold"])  # a new profile keeps the labels
    assert (state := h.states["customer:C-1"].customer) is not None
    assert (state.tags, state.labels) == (["gold"], ["welcomed"])


def test_a_condition_right_after_a_set_sees_what_it_set() -> None:
    h = started(
        {"id": "tag", "set": {"add_tags": ["welcomed"]}},
        {"id": "check", "branch": {"when": "'welcomed' in subject.tags", "then": "seen"}},
        {"id": "unseen", **send()},
        {"id": "stop", "exit": {}},
        {"id": "seen", **send("manager")},
    )
    assert steps_of(h.actions) == ["seen"]


def test_emit_publishes_the_event_about_the_subject_and_it_comes_back() -> None:
    h = started(
        {
            "id": "promote",
            "emit": {
                "type": "customer.tier_changed",
                "data": {
                    "tier": "A",
                    "recency_score": 3,
                    "frequency_score": 2,
                    "monetary_score": 1,
                },
            },
        },
        {"id": "pause", "wait": {"for": "1h"}},
        {"id": "check", "branch": {"when": "subject.tier == 'A'", "then": "next", "else": "stop"}},
        {"id": "gold", **send()},
        {"id": "stop", "exit": {}},
    )
    (tier,) = emitted(h, "upkeep.customer.tier_changed.v1")
    assert dict(tier) == {
        "customer_id": "C-1",
        "tier": "A",
        "previous": None,
        "recency_score": 3,
        "frequency_score": 2,
        "monetary_score": 1,
        "changed_at": "2026-03-02T01:00:00Z",
    }
    assert h.states["customer:C-1"].customer.tier == "A"  # type: ignore[union-attr]
    h.advance(to=T0 + timedelta(hours=1))
    assert steps_of(h.actions) == ["gold"]
    assert ("promote", "emitted") in outcomes(h)


def test_an_emitted_event_about_the_subject_names_it_in_about() -> None:
    h = started(
        {
            "emit": {
                "type": "revisit.status_changed",
                "data": {"in_cadence": False, "tier": "B", "every_days": 30},
            }
        }
    )
    (status,) = emitted(h, "upkeep.revisit.status_changed.v1")
    assert (status["about"], status["changed_at"]) == ("customer:C-1", "2026-03-02T01:00:00Z")


# -- exit ------------------------------------------------------------------------------------


def test_exit_ends_the_run_and_nothing_after_it_runs() -> None:
    h = started(send(), {"id": "bye", "exit": {}}, {"id": "never", **send()})
    h.advance(to=T0 + timedelta(days=30))
    assert steps_of(h.actions) == ["s0"]
    assert outcomes(h) == [("s0", "sent"), ("bye", "exited")]
    (left,) = emitted(h, LEFT)
    assert (left["reason"], left["last_step"]) == ("exited", "bye")
    assert h.pending() == []


# -- what a run reports ----------------------------------------------------------------------


def test_a_run_reports_its_entry_each_step_and_its_leaving() -> None:
    h = started(
        {"id": "hello", **send()},
        {"id": "pause", "wait": {"for": "1d"}},
        {"id": "bye", **send("customer")},
    )
    h.advance(to=T0 + timedelta(days=1))
    run = run_id(h)
    ids = {"about": "customer:C-1", "journey": "test-journey", "version": 1, "run": run}
    assert [e.type for e in h.emitted] == [ENTERED, STEP, STEP, STEP, LEFT]
    entered, hello, pause, bye, left = (dict(e.data) for e in h.emitted)
    assert entered == {
        **ids,
        "trigger": "upkeep.customer.upserted.v1",
        "entered_at": "2026-03-02T01:00:00Z",
    }
    key = f"journey:test-journey:v1:customer:C-1:{run}:"
    assert hello == {
        **ids,
        "step": "hello",
        "kind": "send",
        "outcome": "sent",
        "next_step": "pause",
        "action_key": key + "hello",
        "completed_at": "2026-03-02T01:00:00Z",
    }
    assert pause == {
        **ids,
        "step": "pause",
        "kind": "wait",
        "outcome": "waited",
        "next_step": "bye",
        "action_key": None,
        "completed_at": "2026-03-03T01:00:00Z",
    }
    assert (bye["outcome"], bye["next_step"], bye["action_key"]) == ("sent", None, key + "bye")
    assert left == {
        **ids,
        "reason": "completed",
        "last_step": "bye",
        "left_at": "2026-03-03T01:00:00Z",
    }
    assert h.pending() == []
