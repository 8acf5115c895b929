"""The dispatcher's outcomes and their publication, dead letters, and ticks whose commit
failed (the world under test is in dispatch_world.py)."""

from __future__ import annotations

from shared.events.actions import ActionMessage
from tests.unit.notifier.dispatch_world import (
    ACTIONS,
    BIRTHDAY,
    T0,
    action,
    commit,
    make_world,
    outcome_id,
    outcomes,
    record,
    summary,
)

# outcomes and their publication ---------------------------------------------------------------


async def test_each_final_outcome_is_published_and_failures_are_dead_lettered() -> None:
    w = make_world()
    await w.customer("C-1")
    await w.customer("C-2", marketing_opt_in=False)
    sent = action("birthday:C-1:2026", "C-1")
    suppressed = action("birthday:C-2:2026", "C-2")
    failed = action("birthday:C-3:2026", "C-1", data={"customer_id": "C-1"})  # no name
    failed_record = record(failed, partition=0, offset=77)
    await w.consume(record(sent), record(suppressed), failed_record)

    result = await w.tick(committed=False)
    by_key = {o.key: o for o in outcomes(result)}
    assert {k: (o.outcome, o.reason) for k, o in by_key.items()} == {
        "birthday:C-1:2026": ("sent", None),
        "birthday:C-2:2026": ("suppressed", "unsubscribed"),
        "birthday:C-3:2026": ("failed", "template_error"),
    }
    for key, o in by_key.items():
        assert o.id == outcome_id(key, o.outcome)
        assert o.at == T0
        assert o.next_at is None
        assert o.due_at == T0
        assert (o.kind, o.priority, o.template, o.rule) == (
            "email",
            "marketing",
            "birthday_greeting",
            "birthday",
        )
    assert by_key["birthday:C-1:2026"].attempts == 1
    assert by_key["birthday:C-2:2026"].attempts == 0
    assert by_key["birthday:C-2:2026"].recipient.id == "C-2"
    assert by_key["birthday:C-2:2026"].data == dict(BIRTHDAY, customer_id="C-2")

    (dead,) = result.dead_letters
    assert dead.reason == "delivery_failed"
    assert "template_error" in dead.detail
    assert "customer_name" in dead.detail
    assert (dead.record.topic, dead.record.partition, dead.record.offset) == (ACTIONS, 0, 77)
    assert dead.record.value is not None
    kept = ActionMessage.model_validate_json(dead.record.value)
    assert kept == ActionMessage.model_validate(failed)
    assert all(w.entry(k).unpublished for k in by_key)

    await commit(result)
    assert not any(w.entry(k).unpublished for k in by_key)
    w.clock.advance(minutes=1)
    assert (await w.tick()).messages == []
    assert len(w.mail.delivered) == 1


async def test_outcomes_of_a_tick_whose_commit_failed_are_published_again_not_resent() -> None:
    w = make_world()
    await w.customer()
    await w.consume(
        record(action("birthday:C-1:2026")),
        record(action("birthday:C-1:2027", data={"customer_id": "C-1"})),  # template error
    )
    first = await w.tick(committed=False)  # the transaction did not commit: hooks never run
    assert summary(first) == [
        ("birthday:C-1:2026", "sent", None),
        ("birthday:C-1:2027", "failed", "template_error"),
    ]

    w.clock.advance(seconds=1)
    again = await w.tick(committed=False)
    assert [(o.id, o.at, o.attempts) for o in outcomes(again)] == [
        (o.id, o.at, o.attempts) for o in outcomes(first)
    ]
    assert [(d.reason, d.detail) for d in again.dead_letters] == [
        (d.reason, d.detail) for d in first.dead_letters
    ]
    assert w.mail.calls == 1

    w.clock.advance(seconds=1)
    third = await w.tick()  # this one commits
    assert [o.id for o in outcomes(third)] == [o.id for o in outcomes(first)]
    assert not w.entry("birthday:C-1:2026").unpublished
    w.clock.advance(seconds=1)
    assert (await w.tick()).messages == []
    assert w.mail.calls == 1
