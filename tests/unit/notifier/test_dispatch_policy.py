"""The dispatcher's policy across a tick: unknown recipients, the frequency cap, quiet hours,
preferences and contacts a message cannot carry (the world under test is in
dispatch_world.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notifier.policy import Preferences, Rules
from tests.unit.notifier.dispatch_world import (
    BOT_URL,
    LIMITS,
    T0,
    action,
    customer_event,
    make_world,
    outcomes,
    record,
    summary,
)

# unknown recipients ---------------------------------------------------------------------------


async def test_an_unknown_recipient_is_waited_for_and_sent_to_once_the_contact_arrives() -> None:
    w = make_world()
    await w.consume(record(action("birthday:C-9:2026", "C-9")))
    (waiting,) = outcomes(await w.tick())
    assert (waiting.outcome, waiting.reason) == ("deferred", "unknown_recipient")
    assert waiting.next_at == T0 + LIMITS.unknown_recipient_retry
    assert w.mail.calls == 0

    await w.consume(customer_event("C-9", "韩梅梅", "han.meimei@example.com"))
    w.clock.now = T0 + LIMITS.unknown_recipient_retry
    assert summary(await w.tick()) == [("birthday:C-9:2026", "sent", None)]
    ((_, address),) = w.mail.delivered
    assert address == "han.meimei@example.com"


async def test_an_unknown_recipient_fails_after_the_wait() -> None:
    w = make_world()
    await w.consume(record(action("birthday:C-9:2026", "C-9")))
    (first,) = outcomes(await w.tick())
    assert (first.outcome, first.reason) == ("deferred", "unknown_recipient")
    w.clock.now = T0 + LIMITS.unknown_recipient_retry
    again = await w.tick()  # looked again: still unknown, not announced a second time
    assert outcomes(again) == []
    entry = await w.ledger.get("birthday:C-9:2026")
    assert entry is not None
    assert entry.deferrals == 2

    w.clock.now = T0 + LIMITS.unknown_recipient_wait
    result = await w.tick()
    assert summary(result) == [("birthday:C-9:2026", "failed", "unknown_recipient")]
    (dead,) = result.dead_letters
    assert dead.detail.startswith("unknown_recipient")
    assert w.mail.calls == 0


# policy across a tick -------------------------------------------------------------------------


async def test_the_frequency_cap_holds_across_one_tick_and_the_window() -> None:
    w = make_world(rules=Rules(quiet_start=None, quiet_end=None, marketing_cap=3))
    await w.customer()
    # consumed in the reverse order of their due times, which the tick goes by
    w.clock.now = T0 - timedelta(hours=1)
    due = [T0 - timedelta(minutes=10 - n) for n in range(5)]
    await w.consume(*(record(action(f"promo:C-1:{n}", due_at=due[n])) for n in reversed(range(5))))
    w.clock.now = T0
    assert summary(await w.tick()) == [
        ("promo:C-1:0", "sent", None),
        ("promo:C-1:1", "sent", None),
        ("promo:C-1:2", "sent", None),
        ("promo:C-1:3", "suppressed", "frequency_cap"),
        ("promo:C-1:4", "suppressed", "frequency_cap"),
    ]
    assert w.mail.calls == 3

    # the three sent count for the whole window (7 days), and transactional mail never counts
    await w.consume(
        record(action("promo:C-1:5", due_at=T0 + timedelta(days=6))),
        record(action("birthday:C-1:6", priority="transactional", due_at=T0 + timedelta(days=6))),
        record(action("promo:C-1:7", due_at=T0 + timedelta(days=8))),
    )
    w.clock.now = T0 + timedelta(days=6)
    assert summary(await w.tick()) == [
        ("birthday:C-1:6", "sent", None),
        ("promo:C-1:5", "suppressed", "frequency_cap"),
    ]
    w.clock.now = T0 + timedelta(days=8)
    assert summary(await w.tick()) == [("promo:C-1:7", "sent", None)]


async def test_quiet_hours_hold_back_mail_until_morning_but_not_webhooks() -> None:
    w = make_world(rules=Rules())  # 21:00-08:00 in the recipient's zone
    await w.customer(timezone="Asia/Shanghai")
    w.clock.now = datetime(2026, 6, 1, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai
    await w.consume(
        record(action("birthday:C-1:2026")),
        record(action("birthday:C-1:hook", kind="webhook", due_at=w.clock.now)),
    )
    result = await w.tick()
    assert summary(result) == [
        ("birthday:C-1:2026", "deferred", "quiet_hours"),
        ("birthday:C-1:hook", "sent", None),
    ]
    morning = datetime(2026, 6, 2, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai
    assert [o.next_at for o in outcomes(result) if o.outcome == "deferred"] == [morning]
    w.clock.now = morning - timedelta(seconds=1)
    assert (await w.tick()).messages == []
    w.clock.now = morning
    assert summary(await w.tick()) == [("birthday:C-1:2026", "sent", None)]
    assert w.mail.calls == 1


async def test_preferences_are_applied_per_recipient() -> None:
    w = make_world()
    await w.customer("C-1")
    await w.customer("C-2")
    await w.policy.set_preferences(Preferences(recipient="customer:C-1", channels={"email": False}))
    await w.consume(
        record(action("birthday:C-1:2026", "C-1")), record(action("birthday:C-2:2026", "C-2"))
    )
    assert summary(await w.tick()) == [
        ("birthday:C-1:2026", "suppressed", "channel_opt_out"),
        ("birthday:C-2:2026", "sent", None),
    ]
    assert [a for _, a in w.mail.delivered] == ["c-2@example.com"]


async def test_a_template_with_a_missing_variable_fails_without_calling_the_sender() -> None:
    w = make_world()
    await w.customer()
    await w.staff(chat_webhook_url=BOT_URL, chat_platform="dingtalk")
    await w.consume(
        record(action("birthday:C-1:2026", data={"customer_id": "C-1"})),
        record(
            action(
                "churn:C-1:alert",
                "S-1",
                kind="chat",
                template="churn_risk_alert",
                priority="transactional",
                recipient_kind="staff",
                data={"customer_id": "C-1"},
            )
        ),
    )
    result = await w.tick()
    assert summary(result) == [
        ("birthday:C-1:2026", "failed", "template_error"),
        ("churn:C-1:alert", "failed", "template_error"),
    ]
    assert len(result.dead_letters) == 2
    assert (w.mail.calls, w.chat.calls) == (0, 0)


@pytest.mark.parametrize(
    ("name", "address"),
    [("李\n雷", "li.lei@example.com"), ("José", "josé@example.com")],
    ids=["line-break-in-name", "non-ascii-local-part"],
)
async def test_a_contact_the_message_cannot_carry_fails_alone(name: str, address: str) -> None:
    w = make_world()
    await w.customer("C-2")
    await w.consume(
        customer_event("C-1", name, address),
        record(action("birthday:C-1:2026", "C-1")),
        record(action("birthday:C-2:2026", "C-2")),
    )
    assert (await w.directory.get(["customer:C-1"]))["customer:C-1"].email == address
    result = await w.tick()
    by_key = {o.key: o.outcome for o in outcomes(result)}
    assert by_key["birthday:C-2:2026"] == "sent"
    assert by_key["birthday:C-1:2026"] in ("sent", "failed")
