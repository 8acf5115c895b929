"""The notifier's template store: every template the built-in rules ask for, in both locales."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from services.notifier.errors import PermanentDeliveryError
from services.notifier.templates import Rendered, TemplateError, Templates
from services.rules.builtin.birthday import BirthdaysAndAnniversaries
from services.rules.builtin.channel_health import ChannelHealth
from services.rules.builtin.followup import AfterSalesFollowUp
from services.rules.builtin.renewal import ContractRenewal, RenewalConfig
from services.rules.journeys.definition import INLINE_TEMPLATE
from services.rules.registry import BUILTIN
from services.rules.sdk import Action
from services.rules.testing import RuleHarness


def _declared() -> dict[str, frozenset[str]]:
    """Every template the built-in rules declare, with the keys of its ``data``."""
    found: dict[str, frozenset[str]] = {}
    for rule in (factory({}) for factory in BUILTIN.values()):
        for name, keys in rule.templates.items():
            assert found.setdefault(name, keys) == keys, f"{name}: declared twice, differently"
    return found


RULE_TEMPLATES = _declared()
WEEKLY_LIST_CUSTOMER = frozenset({"customer_id", "customer_name", "risk", "last_order_at"})
LOCALES = ("en", "zh-CN")
CJK = re.compile(r"[\u4e00-\u9fff]")
EVERY_RENDERING = [(name, locale) for name in sorted(RULE_TEMPLATES) for locale in LOCALES]


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates()


def write_template(root: Path, name: str, locale: str, subject: str, body: str) -> None:
    folder = root / name / locale
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text(subject, encoding="utf-8")
    (folder / "body.txt").write_text(body, encoding="utf-8")
    (folder / "body.html").write_text(f"<p>{body}</p>", encoding="utf-8")


# -- the catalogue ---------------------------------------------------------------------------


# the notifier's own: the daily digest (dispatcher.DIGEST_TEMPLATE), data from the dispatcher
NOTIFIER_TEMPLATES = {"owner_digest"}
# the analytics service's actions (no rule's): test_email_attachments.py renders their samples
ANALYTICS_TEMPLATES = {"budget_overrun", "manager_report"}


def test_the_store_holds_exactly_the_templates_the_rules_produce(templates: Templates) -> None:
    assert set(templates.names()) == set(RULE_TEMPLATES) | NOTIFIER_TEMPLATES | ANALYTICS_TEMPLATES
    assert templates.names() == sorted(templates.names())
    for name in [*RULE_TEMPLATES, *NOTIFIER_TEMPLATES, *ANALYTICS_TEMPLATES]:
        assert templates.locales(name) == sorted(LOCALES)


@pytest.mark.parametrize(
    "name",
    sorted(RULE_TEMPLATES),
)
def test_each_sample_holds_exactly_the_data_its_rule_sends(templates: Templates, name: str) -> None:
    sample = templates.sample(name)
    assert set(sample) == RULE_TEMPLATES[name]
    if name == "churn_weekly_list":
        assert sample["customers"]
        assert all(set(c) == WEEKLY_LIST_CUSTOMER for c in sample["customers"])


# -- rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "locale"), EVERY_RENDERING)
def test_every_template_renders_its_sample_in_both_locales(
    templates: Templates, name: str, locale: str
) -> None:
    rendered = templates.render(name, locale, templates.sample(name))
    assert isinstance(rendered, Rendered)
    assert rendered.subject.strip()
    assert rendered.text.strip()
    assert rendered.html.strip()
    assert "\n" not in rendered.subject
    assert rendered.subject == rendered.subject.strip()
    for part in (rendered.subject, rendered.text, rendered.html):
        assert "None" not in part
        # a journey's inline message is the operator's text, in either language (its en text
        # is every locale's fallback): its locale shows in the layout only (lang, below)
        if name != INLINE_TEMPLATE:
            assert bool(CJK.search(part)) == (locale == "zh-CN")
    if not name.endswith("_task"):  # e-mails are whole documents; tasks are one paragraph
        assert rendered.html.lstrip().startswith("<!DOCTYPE html>")
        assert f'<html lang="{locale}">' in rendered.html
        assert rendered.html.rstrip().endswith("</html>")


@pytest.mark.parametrize("locale", LOCALES)
def test_data_the_rules_leave_empty_renders_without_none(templates: Templates, locale: str) -> None:
    """A contract without a customer or value, a customer without a name, a weekly entry
    without a risk or last order: all are possible in the rules' data."""
    cases: dict[str, dict[str, Any]] = {
        "renewal_reminder": {"customer_id": None, "customer_name": None, "value": None},
        "renewal_overdue": {"customer_id": None, "customer_name": None, "currency": None},
        "birthday_greeting": {"customer_name": ""},
        "channel_inactive": {"channel_name": ""},
        "churn_weekly_list": {
            "count": 250,
            "customers": [
                {"customer_id": "C-9", "customer_name": None, "risk": None, "last_order_at": None}
            ],
        },
    }
    for name, changes in cases.items():
        rendered = templates.render(name, locale, {**templates.sample(name), **changes})
        assert "None" not in rendered.text + rendered.html + rendered.subject, name
    weekly = templates.render(
        locale=locale,
        name="churn_weekly_list",
        data={**templates.sample("churn_weekly_list"), **cases["churn_weekly_list"]},
    )
    assert "249" in weekly.text  # the customers beyond the list's limit are counted


def test_subject_is_one_line_whatever_the_template(tmp_path: Path) -> None:
    write_template(tmp_path, "t", "en", "Hello\n  {{ name }}\n\nthere\n", "Body {{ name }}\n")
    rendered = Templates(tmp_path).render("t", "en", {"name": "Ann"})
    assert rendered.subject == "Hello Ann there"
    assert rendered.text == "Body Ann\n"  # keep_trailing_newline


def test_the_notifiers_variables_cannot_come_from_the_data(templates: Templates) -> None:
    data = {**templates.sample("followup_order"), "unsubscribe_url": "https://evil.example"}
    assert "evil" not in templates.render("followup_order", "en", data).html
    with_url = templates.render("followup_order", "en", data, {"unsubscribe_url": "https://u"})
    assert "https://u" in with_url.html
    assert "evil" not in with_url.html


def test_recipient_name_greets_staff_and_is_optional(templates: Templates) -> None:
    data = templates.sample("renewal_reminder")
    assert (
        "Hi Zhang Wei,"
        in templates.render("renewal_reminder", "en", data, {"recipient_name": "Zhang Wei"}).text
    )
    assert templates.render("renewal_reminder", "en", data).text.startswith("Hello,")


# -- failures --------------------------------------------------------------------------------


def test_a_missing_variable_is_an_error_naming_it(templates: Templates) -> None:
    data = templates.sample("birthday_greeting")
    del data["customer_name"]
    with pytest.raises(TemplateError) as caught:
        templates.render("birthday_greeting", "zh-CN", data)
    assert caught.value.reason == "template_error"
    assert isinstance(caught.value, PermanentDeliveryError)
    assert not caught.value.transient
    assert "'customer_name' is undefined" in str(caught.value)
    assert "'birthday_greeting'" in str(caught.value)
    assert "'zh-CN'" in str(caught.value)


@pytest.mark.parametrize(("name", "locale"), EVERY_RENDERING)
def test_no_template_renders_with_a_variable_it_uses_missing(
    templates: Templates, name: str, locale: str
) -> None:
    """Leave out each key in turn: a template either does not use it or refuses to render
    (never a half-empty message), naming the key, the template and the locale."""
    sample = templates.sample(name)
    refusals = {key: _refusal(templates, name, locale, sample, key) for key in sample}
    refused = {key: error for key, error in refusals.items() if error is not None}
    assert refused, "the template uses none of its data"
    for key, error in refused.items():
        assert error.reason == "template_error"
        assert f"'{key}'" in str(error)
        assert f"'{name}'" in str(error)
        assert f"'{locale}'" in str(error)


def _refusal(
    templates: Templates, name: str, locale: str, sample: dict[str, Any], key: str
) -> TemplateError | None:
    """The error rendering ``name`` without ``key`` raises, if it does."""
    try:
        templates.render(name, locale, {k: v for k, v in sample.items() if k != key})
    except TemplateError as exc:
        return exc
    return None


def test_unknown_template_is_its_own_reason(templates: Templates) -> None:
    for name in ("no_such_template", "../templates", "_layout", ""):
        with pytest.raises(TemplateError) as caught:
            templates.render(name, "en", {})
        assert caught.value.reason == "unknown_template"
        assert repr(name) in str(caught.value)
    with pytest.raises(TemplateError, match="unknown_template"):
        templates.sample("no_such_template")
    with pytest.raises(TemplateError, match="unknown_template"):
        templates.locales("no_such_template")


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ items.append(1) }}",  # the sandbox is immutable: no changing the data
    ],
)
def test_a_sandbox_escape_is_an_error(tmp_path: Path, attack: str) -> None:
    write_template(tmp_path, "evil", "en", "Subject", f"Body {attack}")
    with pytest.raises(TemplateError) as caught:
        Templates(tmp_path).render("evil", "en", {"items": [1, 2]})
    assert caught.value.reason == "template_error"
    assert "sandbox" in str(caught.value)


def test_a_template_that_does_not_compile_fails_the_store_at_start(tmp_path: Path) -> None:
    write_template(tmp_path, "broken", "en", "Subject", "Body {% if %}")
    with pytest.raises(TemplateError, match="broken/en"):
        Templates(tmp_path)


def test_a_locale_missing_a_file_fails_the_store_at_start(tmp_path: Path) -> None:
    write_template(tmp_path, "partial", "en", "Subject", "Body")
    (tmp_path / "partial" / "en" / "body.html").unlink()
    with pytest.raises(TemplateError, match=r"body\.html"):
        Templates(tmp_path)


# -- escaping and the unsubscribe footer -----------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
def test_data_is_escaped_in_html_and_left_alone_in_text(templates: Templates, locale: str) -> None:
    name = "<script>alert('x')</script> & Co"
    data = {**templates.sample("followup_order"), "customer_name": name}
    rendered = templates.render("followup_order", locale, data)
    assert name in rendered.text
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co" in rendered.html


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", ["birthday_greeting", "renewal_reminder", "churn_weekly_list"])
def test_the_unsubscribe_footer_appears_only_with_an_unsubscribe_url(
    templates: Templates, name: str, locale: str
) -> None:
    url = "https://mail.example.com/unsubscribe?token=a1&list=marketing"
    data = templates.sample(name)
    without = templates.render(name, locale, data, {"unsubscribe_url": None})
    default = templates.render(name, locale, data)
    with_url = templates.render(name, locale, data, {"unsubscribe_url": url})
    assert without == default
    for part in ("unsubscribe", "href"):
        assert part not in without.html.lower()
    assert "unsubscribe" not in without.text.lower()
    assert url in with_url.text
    assert f'href="{url.replace("&", "&amp;")}"' in with_url.html
    assert len(with_url.text) > len(without.text)


# -- locales ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "resolved"),
    [
        ("zh-CN", "zh-CN"),
        ("zh_cn", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("en", "en"),
        ("en-GB", "en"),
        ("fr", "en"),
        ("fr-FR", "en"),
        ("", "en"),
    ],
)
def test_locale_fallback(templates: Templates, asked: str, resolved: str) -> None:
    assert templates.resolve_locale("birthday_greeting", asked) == resolved


def test_rendering_uses_the_resolved_locale(templates: Templates) -> None:
    sample = templates.sample("birthday_greeting")
    assert CJK.search(templates.render("birthday_greeting", "zh", sample).text)
    assert not CJK.search(templates.render("birthday_greeting", "fr", sample).text)


def test_a_language_part_is_preferred_to_a_regional_variant(tmp_path: Path) -> None:
    for locale in ("zh", "zh-TW", "de"):
        write_template(tmp_path, "t", locale, locale, locale)
    store = Templates(tmp_path, default_locale="de")
    assert store.resolve_locale("t", "zh-CN") == "zh"
    assert store.resolve_locale("t", "ZH-tw") == "zh-TW"
    assert store.resolve_locale("t", "en") == "de"
    assert store.render("t", "zh-HK", {}).subject == "zh"


def test_without_the_default_locale_the_first_one_is_used(tmp_path: Path) -> None:
    write_template(tmp_path, "t", "ja", "ja", "ja")
    assert Templates(tmp_path).resolve_locale("t", "fr") == "ja"


# -- concurrency -----------------------------------------------------------------------------


def test_rendering_is_safe_from_many_threads(templates: Templates) -> None:
    jobs = [(name, locale, templates.sample(name)) for name, locale in EVERY_RENDERING] * 8
    expected = {(n, loc): templates.render(n, loc, d) for n, loc, d in jobs}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: (job[:2], templates.render(*job)), jobs))
    assert all(rendered == expected[key] for key, rendered in results)


# -- what the rules really send --------------------------------------------------------------

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _as_published(action: Action) -> dict[str, Any]:
    """The action's data as the notifier receives it: JSON from the actions topic."""
    loaded: dict[str, Any] = json.loads(TypeAdapter(dict[str, Any]).dump_json(dict(action.data)))
    return loaded


def _rule_actions() -> Iterator[Action]:
    renewal = RuleHarness(ContractRenewal(RenewalConfig(notify_customer=True)))
    for staff_id, locale in (("S-1", "en"), ("S-9", "zh-CN")):
        renewal.send(
            "staff.upserted",
            at=T0,
            staff_id=staff_id,
            name=staff_id,
            timezone="Asia/Shanghai",
            locale=locale,
            manager_id="S-9" if staff_id == "S-1" else None,
        )
    renewal.send(
        "customer.upserted",
        at=T0,
        customer_id="C-1",
        name="Acme",
        timezone="Asia/Shanghai",
        owner_id="S-1",
        locale="zh-CN",
    )
    renewal.send(
        "contract.upserted",
        at=T0,
        contract_id="K-1",
        customer_id="C-1",
        start_date="2025-06-01",
        end_date="2026-05-31",
        value="12000",
        currency="CNY",
    )
    yield from renewal.advance(to=T0 + timedelta(days=200))

    people = RuleHarness(BirthdaysAndAnniversaries(), AfterSalesFollowUp())
    people.send(
        "customer.upserted",
        at=T0,
        customer_id="C-2",
        name="Li",
        timezone="UTC",
        owner_id="S-1",
        birthday="1990-02-01",
        customer_since="2025-01-20",
    )
    people.send(
        "customer.interaction",
        at=T0,
        customer_id="C-2",
        interaction_id="I-1",
        kind="order",
        amount="10",
        currency="EUR",
        occurred_at=T0.isoformat(),
    )
    yield from people.advance(to=T0 + timedelta(days=60))

    channel = RuleHarness(ChannelHealth())
    channel.send(
        "channel.upserted",
        at=T0,
        channel_id="CH-1",
        name="East",
        timezone="Asia/Shanghai",
        manager_id="S-7",
        locale="zh-CN",
    )
    for day in [*range(0, 120, 3), 120, 135]:
        at = T0 + timedelta(days=day)
        amount = "1000" if day < 120 else "200"
        channel.send(
            "channel.order",
            at=at,
            channel_id="CH-1",
            order_id=f"O-{day}",
            amount=amount,
            currency="CNY",
            occurred_at=at.isoformat(),
        )
    yield from channel.advance(to=T0 + timedelta(days=200))


def test_what_the_rules_publish_renders(templates: Templates) -> None:
    actions = list(_rule_actions())
    seen = {a.template for a in actions}
    assert {
        "renewal_reminder",
        "renewal_customer_notice",
        "renewal_overdue",
        "birthday_greeting_task",
        "customer_anniversary_task",
        "followup_order_task",
        "channel_declining",
        "channel_inactive",
    } <= seen
    for action in actions:
        data = _as_published(action)
        assert set(data) == RULE_TEMPLATES[action.template], action.template
        rendered = templates.render(action.template, action.locale, data)
        assert "None" not in rendered.subject + rendered.text + rendered.html
