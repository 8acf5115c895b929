"""Attachments: an action's files reach the e-mail the channel builds (multipart/mixed around
the text and HTML), the contract refuses what it cannot carry, and the two templates analytics
sends with them (``budget_overrun``, ``manager_report``) render in both locales."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from pydantic import ValidationError

from services.notifier.channels.base import Delivery
from services.notifier.channels.email import (
    EmailChannel,
    Mail,
    SmtpPool,
    SmtpServer,
    build_message,
    message_id,
)
from services.notifier.directory import Contact
from services.notifier.templates import Rendered, TemplateError, Templates
from shared.events.actions import ActionMessage, Attachment

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
DOMAIN = "upkeep.example.com"
SENDER = "Upkeep 客户关怀 <care@example.com>"
CSV = "渠道,金额\nCH-1,1500.00\n"
RENDERED = Rendered(
    subject="每周维护报告 2026-W48",
    text="李伟，您好：\n\n数据见附件 CSV。\n",
    html="<html><body><p>李伟，您好：</p><p>数据见附件 CSV。</p></body></html>\n",
)
CONTACT = Contact(id="staff:S-9", name="李伟", email="li.wei@example.com", updated_at=NOW)
UNSUBSCRIBE = "https://upkeep.example.com/v1/unsubscribe?r=staff%3AS-9&c=marketing&t=abc"
LOCALES = ("en", "zh-CN")
CJK = re.compile(r"[\u4e00-\u9fff]")


def action(attachments: list[dict[str, Any]] | None = None, **changes: Any) -> ActionMessage:
    fields: dict[str, Any] = {
        "key": "manager_report:S-9:2026-W48",
        "rule": "analytics",
        "subject": "staff:S-9",
        "kind": "email",
        "recipient": {"kind": "staff", "id": "S-9"},
        "template": "manager_report",
        "locale": "zh-CN",
        "due_at": NOW,
        "created_at": NOW,
        "attachments": attachments or [],
        **changes,
    }
    return ActionMessage.model_validate(fields)


def csv_file(content: str = CSV, filename: str = "report-2026-W48.csv") -> dict[str, Any]:
    return {"filename": filename, "media_type": "text/csv", "content": content}


class CapturingPool(SmtpPool):
    """The pool as the channel uses it, keeping each message instead of sending it."""

    def __init__(self) -> None:
        super().__init__(SmtpServer(host="127.0.0.1", port=25), size=1)
        self.sent: list[Mail] = []

    async def send(self, mail: Mail) -> None:
        self.sent.append(mail)


async def sent_by_the_channel(message: ActionMessage, unsubscribe_url: str | None = None) -> Mail:
    pool = CapturingPool()
    channel = EmailChannel(pool, SENDER, DOMAIN)
    await channel.send(Delivery(message.key, message, CONTACT, RENDERED, NOW, unsubscribe_url))
    (mail,) = pool.sent
    return mail


def strict(data: bytes) -> EmailMessage:
    """Parsed with every defect an error (a missing boundary, a bad header, ...)."""
    parsed = email.message_from_bytes(data, policy=email.policy.strict)
    assert isinstance(parsed, EmailMessage)
    return parsed


def longest_line(data: bytes) -> int:
    return max(len(line) for line in data.split(b"\r\n"))


# -- the message -----------------------------------------------------------------------------


async def test_a_csv_attachment_makes_the_message_multipart_mixed() -> None:
    mail = await sent_by_the_channel(action([csv_file()]))
    parsed = strict(mail.data)
    assert parsed.get_content_type() == "multipart/mixed"
    alternative, attached = parsed.iter_parts()
    assert isinstance(alternative, EmailMessage)
    assert alternative.get_content_type() == "multipart/alternative"
    text, html = alternative.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content().replace("\r\n", "\n") == RENDERED.text
    assert html.get_content().replace("\r\n", "\n") == RENDERED.html
    assert isinstance(attached, EmailMessage)
    assert attached.get_content_disposition() == "attachment"
    assert attached.get_filename() == "report-2026-W48.csv"
    assert attached.get_content_type() == "text/csv"
    assert attached.get_content_charset() == "utf-8"
    assert attached["Content-Transfer-Encoding"] == "base64"
    assert attached.get_content() == CSV  # exactly: no line ends changed
    assert longest_line(mail.data) < 998
    # the headers the message always has, on the whole message only
    assert parsed["Message-ID"] == message_id("manager_report:S-9:2026-W48", DOMAIN)
    assert str(parsed["Subject"]) == RENDERED.subject
    assert parsed["X-Upkeep-Key"] == "manager_report:S-9:2026-W48"
    assert mail.data.count(b"MIME-Version:") == 1
    assert (mail.sender, mail.recipient) == ("care@example.com", "li.wei@example.com")


async def test_without_attachments_the_message_is_the_one_it_always_was() -> None:
    mail = await sent_by_the_channel(action())
    assert (
        mail.data
        == build_message(
            key="manager_report:S-9:2026-W48",
            sender=SENDER,
            to_address="li.wei@example.com",
            to_name=CONTACT.name,
            rendered=RENDERED,
            domain=DOMAIN,
            now=NOW,
        ).data
    )
    parsed = strict(mail.data)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]


async def test_several_files_keep_their_order_types_and_unsubscribe_headers() -> None:
    long_line = "客户" * 3000  # one line of 18,000 bytes in UTF-8
    files = [
        csv_file(),
        {"filename": "notes.txt", "media_type": "text/plain", "content": long_line},
        {"filename": "figures.json", "media_type": "application/json", "content": '{"é": 1}'},
        csv_file(CSV, "a" * 96 + ".csv"),  # the longest name the contract allows
    ]
    mail = await sent_by_the_channel(action(files), UNSUBSCRIBE)
    assert longest_line(mail.data) < 998
    parsed = strict(mail.data)
    assert parsed["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    _, *attached = parsed.iter_parts()
    assert [p.get_filename() for p in attached] == [f["filename"] for f in files]
    assert [p.get_content_type() for p in attached] == [f["media_type"] for f in files]
    assert attached[1].get_content() == long_line
    assert attached[2].get_content_charset() is None  # JSON is UTF-8 by definition
    assert attached[2].get_content().decode("utf-8") == '{"é": 1}'


# -- the contract ----------------------------------------------------------------------------


def test_an_action_without_attachments_is_still_valid() -> None:
    parsed = ActionMessage.model_validate_json(action().model_dump_json(exclude={"attachments"}))
    assert parsed.attachments == []


@pytest.mark.parametrize(
    "attachments",
    [
        [csv_file(filename=f"f{n}.csv") for n in range(6)],  # more than 5
        [csv_file(filename="../x.csv")],
        [csv_file(filename=".hidden.csv")],
        [csv_file(filename="a\r\nBcc: x@example.com")],
        [csv_file(filename="a" * 101)],
        [csv_file(content="x" * 500_001)],
        [{"filename": "x.html", "media_type": "text/html", "content": "<script>"}],
        [{**csv_file(), "charset": "latin-1"}],
    ],
)
def test_what_an_attachment_cannot_be_is_refused(attachments: list[dict[str, Any]]) -> None:
    with pytest.raises(ValidationError):
        action(attachments)


def test_five_attachments_are_accepted() -> None:
    assert len(action([csv_file(filename=f"f{n}.csv") for n in range(5)]).attachments) == 5
    assert Attachment(filename="r.csv", media_type="text/csv", content="").content == ""


# -- the templates analytics sends -----------------------------------------------------------


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates()


def variants() -> list[tuple[str, dict[str, Any]]]:
    """Each template's sample, and the data it must also render: the nulls and empty lists
    analytics can send, a monthly report, the manager's copy of a budget alert."""
    return [
        ("budget_overrun", {}),
        ("budget_overrun", {"recipient_role": "manager", "scope_kind": "team"}),
        ("manager_report", {}),
        ("manager_report", {"revisits": None, "rates_note": None, "dashboard_url": None}),
        (
            "manager_report",
            {
                "kind": "monthly",
                "period_label": "2026-11",
                "tasks_by_owner": [],
                "money": [],
                "costs_by_category": [],
                "budgets": [],
            },
        ),
    ]


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(("name", "changes"), variants())
def test_the_templates_render_their_samples_in_both_locales(
    templates: Templates, name: str, changes: dict[str, Any], locale: str
) -> None:
    rendered = templates.render(name, locale, {**templates.sample(name), **changes})
    for part in (rendered.subject, rendered.text, rendered.html):
        assert part.strip()
        assert "None" not in part
        assert bool(CJK.search(part)) == (locale == "zh-CN")
    assert "\n" not in rendered.subject
    html = rendered.html.lower()
    assert html.lstrip().startswith("<!doctype html>")
    assert f'<html lang="{locale.lower()}">' in html
    assert "<script" not in html
    assert "<img" not in html
    assert "{{" not in rendered.text + rendered.html  # no template syntax left over


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", ["budget_overrun", "manager_report"])
def test_every_key_of_the_sample_is_needed(templates: Templates, name: str, locale: str) -> None:
    """Leave out each key in turn: the template refuses to render, naming it (every key the
    sample holds is one analytics sends and the template uses)."""
    sample = templates.sample(name)
    for key in sample:
        with pytest.raises(TemplateError) as caught:
            templates.render(name, locale, {k: v for k, v in sample.items() if k != key})
        assert f"'{key}'" in str(caught.value)


@pytest.mark.parametrize(
    ("locale", "weekly", "monthly"),
    [
        ("en", "Weekly maintenance report 2026-W48", "Monthly maintenance report 2026-11"),
        ("zh-CN", "每周维护报告 2026-W48", "每月维护报告 2026-11"),
    ],
)
def test_the_report_subject_names_its_kind_and_period(
    templates: Templates, locale: str, weekly: str, monthly: str
) -> None:
    sample = templates.sample("manager_report")
    assert templates.render("manager_report", locale, sample).subject == weekly
    month = {**sample, "kind": "monthly", "period_label": "2026-11"}
    assert templates.render("manager_report", locale, month).subject == monthly


@pytest.mark.parametrize(
    ("locale", "overrun", "attached", "no_rates", "no_tasks", "sections"),
    [
        (
            "en",
            "⚠ forecast overrun",
            "attached as CSV",
            "no exchange-rate table is configured",
            "No overdue tasks.",
            ["Renewals", "Customers at risk", "Channels flagged", "Overdue tasks by owner",
             "Revisit compliance", "Revenue and maintenance cost", "Cost by category",
             "Budgets", "What automation saved"],
        ),
        (
            "zh-CN",
            "⚠ 预计超支",
            "数据见附件 CSV",
            "未配置汇率表",
            "暂无逾期任务。",
            ["续约", "流失风险客户", "被标记渠道", "各负责人逾期任务", "回访达标率",
             "收入与维护费用", "维护费用分类", "预算", "自动化节省"],
        ),
    ],
)  # fmt: skip
def test_the_report_holds_its_sections_in_order(
    templates: Templates,
    locale: str,
    overrun: str,
    attached: str,
    no_rates: str,
    no_tasks: str,
    sections: list[str],
) -> None:
    sample = templates.sample("manager_report")
    rendered = templates.render("manager_report", locale, sample)
    headings = re.findall(r"<h2 [^>]*>([^<]+)</h2>", rendered.html)
    assert headings == sections
    for part in (rendered.text, rendered.html):
        assert overrun in part
        assert attached in part
        assert sample["rates_note"].replace("→", "") in part.replace("→", "")
        assert no_rates not in part
    bare = {**sample, "revisits": None, "rates_note": None, "tasks_by_owner": []}
    without = templates.render("manager_report", locale, bare)
    assert re.findall(r"<h2 [^>]*>([^<]+)</h2>", without.html) == [
        s for s in sections if s not in ("Revisit compliance", "回访达标率")
    ]
    for part in (without.text, without.html):
        assert no_rates in part
        assert no_tasks in part


@pytest.mark.parametrize(
    ("locale", "manager"),
    [("en", "as the manager of the budget's owner"), ("zh-CN", "作为该预算负责人的上级")],
)
def test_a_budget_alert_tells_a_manager_why_they_get_it(
    templates: Templates, locale: str, manager: str
) -> None:
    sample = templates.sample("budget_overrun")
    owner = templates.render("budget_overrun", locale, sample)
    copy = templates.render("budget_overrun", locale, {**sample, "recipient_role": "manager"})
    assert manager not in owner.text + owner.html.replace("&#39;", "'")
    assert manager in copy.text
    assert manager in copy.html.replace("&#39;", "'")
    for part in (owner.subject, owner.text, owner.html):
        assert "Channel CH-1 maintenance" in part
        assert "2026-12" in part
    for figure in ("1,500.00", "3,100.00", "155.0%"):
        assert figure in owner.text
        assert figure in owner.html
