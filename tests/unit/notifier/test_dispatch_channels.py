"""The dispatcher's channels: mail and its unsubscribe link, chat, webhooks and tasks (the
world under test is in dispatch_world.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

from services.notifier.policy import Rules
from tests.unit.notifier.dispatch_world import (
    BOT_URL,
    T0,
    TEMPLATES,
    WEBHOOK_URL,
    action,
    make_world,
    record,
    summary,
)

# channels -------------------------------------------------------------------------------------


async def test_marketing_mail_carries_a_signed_unsubscribe_link_and_transactional_does_not() -> (
    None
):
    w = make_world()
    await w.customer()
    renewal = TEMPLATES.sample("renewal_customer_notice") | {"customer_name": "李雷"}
    await w.consume(
        record(action("birthday:C-1:2026")),
        record(
            action(
                "renewal:K-1:mail",
                template="renewal_customer_notice",
                priority="transactional",
                data=renewal,
            )
        ),
    )
    await w.tick()
    mails = {m["X-Upkeep-Key"]: m for m, _ in w.mail.delivered}
    assert mails["renewal:K-1:mail"]["List-Unsubscribe"] is None
    link = str(mails["birthday:C-1:2026"]["List-Unsubscribe"]).strip("<>")
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert link.startswith("https://upkeep.example.com/v1/unsubscribe?")
    assert (query["r"], query["c"]) == ("customer:C-1", "marketing")
    assert w.unsubscribes.valid("customer:C-1", "marketing", query["t"])
    assert not w.unsubscribes.valid("customer:C-2", "marketing", query["t"])


async def test_chat_and_webhook_actions_reach_their_senders() -> None:
    w = make_world()
    await w.staff(chat_webhook_url=BOT_URL, chat_platform="dingtalk")
    alert = TEMPLATES.sample("churn_risk_alert") | {"customer_name": "Acme"}
    chat = action(
        "churn:C-1:alert",
        "S-1",
        kind="chat",
        template="churn_risk_alert",
        priority="transactional",
        recipient_kind="staff",
        data=alert,
        locale="en",
    )
    hook = action(
        "renewal:K-1:hook",
        kind="webhook",
        template="renewal_customer_notice",
        priority="transactional",
        data=TEMPLATES.sample("renewal_customer_notice"),
        locale="en",
    )
    await w.consume(record(chat), record(hook))
    assert summary(await w.tick()) == [
        ("churn:C-1:alert", "sent", None),
        ("renewal:K-1:hook", "sent", None),
    ]
    ((url, platform, title, text),) = w.chat.posted
    expected = TEMPLATES.render("churn_risk_alert", "zh-CN", alert, {"recipient_name": "王芳"})
    assert (url, platform) == (BOT_URL, "dingtalk")
    assert (title, text) == (expected.subject, expected.text)  # in the staff member's locale
    ((hook_url, msg_id, payload),) = w.webhook.posted
    assert (hook_url, msg_id) == (WEBHOOK_URL, "renewal:K-1:hook")
    assert payload["action"]["key"] == "renewal:K-1:hook"
    assert "K-2025-017" in payload["message"]["text"]


async def test_a_webhook_action_without_a_webhook_endpoint_fails() -> None:
    w = make_world(webhook_url=None)
    await w.consume(record(action("renewal:K-1:hook", kind="webhook", priority="transactional")))
    result = await w.tick()
    assert summary(result) == [("renewal:K-1:hook", "failed", "no_webhook_endpoint")]
    assert len(result.dead_letters) == 1
    assert w.webhook.calls == 0


async def test_a_task_action_creates_one_task_with_the_rendered_title() -> None:
    w = make_world(rules=Rules())  # quiet hours apply to messages, not to tasks
    await w.staff()  # reads zh-CN, in Shanghai
    data = TEMPLATES.sample("birthday_greeting_task")
    task = action(
        "birthday:C-1024:2026:task",
        "S-1",
        kind="task",
        template="birthday_greeting_task",
        priority="transactional",
        recipient_kind="staff",
        data=data,
        locale="en",
    )
    no_contact = action(
        "birthday:C-1024:2026:task2",
        "S-2",
        kind="task",
        template="birthday_greeting_task",
        priority="transactional",
        recipient_kind="staff",
        data=data,
        locale="en",
    )
    await w.consume(record(task), record(task), record(no_contact))
    w.clock.now = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)  # midnight in Shanghai
    assert summary(await w.tick()) == [
        ("birthday:C-1024:2026:task", "sent", None),
        ("birthday:C-1024:2026:task2", "sent", None),
    ]
    by_id = {t.id: t for t in w.tasks.created}
    assert len(w.tasks.created) == 2
    zh = TEMPLATES.render("birthday_greeting_task", "zh-CN", data, {"recipient_name": "王芳"})
    en = TEMPLATES.render("birthday_greeting_task", "en", data)
    created = by_id["birthday:C-1024:2026:task"]
    assert (created.owner, created.title, created.description) == ("S-1", zh.subject, zh.text)
    assert (created.rule, created.subject, created.due_at) == ("birthday", "staff:S-1", T0)
    assert created.created_at == w.clock.now
    assert by_id["birthday:C-1024:2026:task2"].title == en.subject  # the action's own locale
    assert zh.subject != en.subject
    assert w.mail.calls == 0
