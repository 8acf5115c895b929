"""The dispatcher consuming actions and profile events: contacts, duplicates, replays and
invalid actions (the world under test is in dispatch_world.py)."""

from __future__ import annotations

from services.notifier.channels.email import message_id
from shared.kafka.messages import StoredRecord
from tests.unit.notifier.dispatch_world import (
    ACTIONS,
    EVENTS,
    OFFSETS,
    action,
    customer_event,
    make_world,
    outcomes,
    record,
    summary,
)

# consuming ------------------------------------------------------------------------------------


async def test_contacts_come_from_profile_events_and_the_action_is_mailed_to_them() -> None:
    w = make_world()
    profile = customer_event("C-1", "李雷", "li.lei@example.com")
    birthday = record({**action("birthday:C-1:2026"), "context": {"owner": "S-7"}})
    not_a_profile = StoredRecord(EVENTS, 0, next(OFFSETS), b'{"not": "a canonical event"}')
    result = await w.consume(profile, not_a_profile, birthday)
    assert result.dead_letters == []  # the events topic is rules' to dead-letter, not ours
    assert result.messages == []  # consuming publishes nothing: outcomes come from ticks
    assert (await w.directory.get(["customer:C-1"]))["customer:C-1"].name == "李雷"
    assert w.mail.calls == 0

    sent = await w.tick()
    assert summary(sent) == [("birthday:C-1:2026", "sent", None)]
    assert outcomes(sent)[0].context == {"owner": "S-7"}  # passed on for analytics
    ((message, address),) = w.mail.delivered
    assert address == "li.lei@example.com"
    assert message["Message-ID"] == message_id("birthday:C-1:2026", "upkeep.example.com")
    assert "生日" in str(message["Subject"])  # the zh-CN template the action asked for


async def test_the_same_action_consumed_twice_is_recorded_once_and_sent_once() -> None:
    w = make_world()
    await w.customer()
    birthday = action("birthday:C-1:2026")
    await w.consume(record(birthday), record(birthday))  # twice in one batch
    assert list(w.ledger.entries) == ["birthday:C-1:2026"]
    await w.consume(record(birthday))  # and redelivered in a later batch before it was sent
    first = await w.tick()
    assert summary(first) == [("birthday:C-1:2026", "sent", None)]
    await w.consume(record(birthday))  # and again after it was sent
    w.clock.advance(days=1)
    assert (await w.tick()).messages == []
    assert w.mail.calls == 1
    assert w.entry("birthday:C-1:2026").state == "sent"


async def test_a_replayed_batch_is_recorded_once_and_sent_once() -> None:
    w = make_world()
    for n in range(3):
        await w.customer(f"C-{n}")
    batch = [record(action(f"birthday:C-{n}:2026", f"C-{n}"), offset=10 + n) for n in range(3)]
    await w.consume(*batch)
    assert len(outcomes(await w.tick())) == 3
    stored = {key: e.model_copy() for key, e in w.ledger.entries.items()}

    await w.consume(*batch)  # the whole batch again: a replay from an earlier offset
    w.clock.advance(minutes=5)
    assert (await w.tick()).messages == []
    assert w.mail.calls == 3
    assert sorted(a for _, a in w.mail.delivered) == [f"c-{n}@example.com" for n in range(3)]
    assert w.ledger.entries == stored  # the replay changed nothing


async def test_an_invalid_action_is_dead_lettered_and_the_rest_of_the_batch_recorded() -> None:
    w = make_world()
    not_json = StoredRecord(ACTIONS, 0, 1, b"{not json")
    no_key = record({k: v for k, v in action("birthday:C-1:2026").items() if k != "key"})
    unknown_kind = record(action("birthday:C-1:2027", kind="fax"))
    empty = StoredRecord(ACTIONS, 0, 4, None)
    good = record(action("birthday:C-1:2028"))
    result = await w.consume(not_json, no_key, unknown_kind, empty, good)
    assert [(d.record, d.reason) for d in result.dead_letters] == [
        (not_json, "invalid_action"),
        (no_key, "invalid_action"),
        (unknown_kind, "invalid_action"),
        (empty, "invalid_action"),
    ]
    assert "key" in result.dead_letters[1].detail
    assert list(w.ledger.entries) == ["birthday:C-1:2028"]


async def test_an_action_without_a_time_zone_on_its_due_time_is_dead_lettered() -> None:
    w = make_world()
    naive = record(action("birthday:C-1:2026") | {"due_at": "2026-06-01T12:00:00"})
    good = record(action("birthday:C-1:2027"))
    result = await w.consume(naive, good)
    assert [(d.record, d.reason) for d in result.dead_letters] == [(naive, "invalid_action")]
    assert list(w.ledger.entries) == ["birthday:C-1:2027"]
