"""The reports managers receive without asking: weekly (Monday to Sunday) and monthly, in each
manager's time zone and language, about their scope (themselves and everyone under them) — an
HTML e-mail (the notifier's ``manager_report`` template) with the figures as a CSV attachment.

**When.** A period's report is due at ``send_hour`` (local) on the first day after it; only the
last complete period is sent (a new deployment does not send a year of reports at once). The
figures are the reporting time zone's day buckets of the period's local dates.

**Once per period and recipient.** The action key is ``report:<kind>:<period>:<manager>``: the
notifier's ledger delivers it once. Every report is archived (``analytics_reports``) with its
data and CSV, marked published once Kafka acknowledged the action, so the scheduler does not
publish it again; a crash between the two publishes it once more and the ledger absorbs that.
``send-now`` sends a period's report at once; when it was sent already, as a resend (its own key).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from prometheus_client import Counter
from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from services.analytics.aggregates import Attribution, totals
from services.analytics.alerts import Sink, money, share
from services.analytics.budgets import period_of
from services.analytics.costs import Costing
from services.analytics.people import loads
from services.analytics.report import Reporting, ratio
from services.analytics.scope import Scope, scope_of
from services.analytics.staff import Directory, Member, managers
from shared.errors import is_transient
from shared.events.actions import ActionMessage, ActionRecipient, Attachment
from shared.events.fields import zone
from shared.kafka.messages import Outgoing
from shared.mongo import Document

log = logging.getLogger(__name__)

Kind = Literal["weekly", "monthly"]
KINDS: tuple[Kind, ...] = ("weekly", "monthly")
RULE = "manager-report"
FAILED = Counter(
    "upkeep_analytics_reports_failed_total",
    "Managers' reports that could not be made (not a transient error: see the log).",
)


@dataclass(frozen=True, slots=True)
class Period:
    kind: Kind
    label: str  # 2026-W48, 2026-11
    first: date
    last: date

    @classmethod
    def parse(cls, kind: Kind, label: str) -> Period:
        """``2026-W48`` (weekly) or ``2026-11`` (monthly); ValueError otherwise."""
        try:
            return cls._parse(kind, label)
        except OverflowError:
            raise ValueError(f"{label!r} is outside the calendar") from None

    @classmethod
    def _parse(cls, kind: Kind, label: str) -> Period:
        if kind == "weekly":
            year_text, week_text = label.split("-W")
            year, week = int(year_text), int(week_text)
            first = date.fromisocalendar(year, week, 1)
            return cls(kind, f"{year}-W{week:02d}", first, first + timedelta(days=6))
        year, month = (int(x) for x in label.split("-"))
        first = date(year, month, 1)
        after = date(year + month // 12, month % 12 + 1, 1)
        return cls(kind, f"{first:%Y-%m}", first, after - timedelta(days=1))

    @classmethod
    def last_complete(cls, kind: Kind, today: date) -> Period:
        if kind == "weekly":
            monday = today - timedelta(days=today.weekday() + 7)
            year, week, _ = monday.isocalendar()
            return cls.parse(kind, f"{year}-W{week:02d}")
        last = today.replace(day=1) - timedelta(days=1)
        return cls.parse(kind, f"{last:%Y-%m}")


def report_key(kind: str, period: str, manager: str) -> str:
    return f"report:{kind}:{period}:{manager}"


@dataclass(frozen=True)
class Built:
    key: str
    manager: Member
    period: Period
    data: dict[str, Any]
    csv: str


def plain(value: Any) -> Any:
    """A figure as a spreadsheet reads it (``5,500.00`` -> ``5500.00``); a text that a
    spreadsheet would run as a formula (``=…``, ``+…``, ``-…``, ``@…``) is quoted."""
    if isinstance(value, str) and value.replace(",", "").replace(".", "").lstrip("-").isdigit():
        return value.replace(",", "")
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class _Writer:
    def __init__(self, out: io.StringIO) -> None:
        self._w = csv.writer(out, lineterminator="\r\n")

    def writerow(self, row: list[Any]) -> None:
        self._w.writerow([plain(v) for v in row])


def csv_of(data: dict[str, Any]) -> str:
    """The figures, one per row: section, item, currency, value."""
    out = io.StringIO()
    w = _Writer(out)
    w.writerow(["section", "item", "currency", "value"])
    w.writerow(["period", data["kind"], "", data["period_label"]])
    for item in ("due", "renewed", "rate"):
        w.writerow(["renewals", item, "", data["renewals"][item]])
    for item in ("at_risk", "recovered"):
        w.writerow(["customers", item, "", data["risk"][item]])
    w.writerow(["channels", "flagged", "", data["channels_flagged"]])
    for row in data["tasks_by_owner"]:
        w.writerow(["tasks_open", row["owner"], "", row["open"]])
        w.writerow(["tasks_overdue", row["owner"], "", row["overdue"]])
    if data["revisits"] is not None:
        w.writerow(["revisits", "compliance", "", data["revisits"]["rate"]])
    for row in data["money"]:
        for item in ("revenue", "cost", "roi"):
            w.writerow(["money", item, row["currency"], row[item]])
    for row in data["costs_by_category"]:
        w.writerow(["cost", row["category"], row["currency"], row["amount"]])
    for b in data["budgets"]:
        w.writerow(["budget_used", b["name"], b["currency"], b["used"]])
        w.writerow(["budget_forecast", b["name"], b["currency"], b["forecast"]])
    saved = data["saved"]
    w.writerow(["saved", "touches", "", saved["touches"]])
    w.writerow(["saved", "hours", "", saved["hours"]])
    w.writerow(["saved", "money", saved["currency"], saved["money"]])
    return out.getvalue()


class Reports:
    """Builds, archives and sends the managers' reports."""

    def __init__(
        self,
        reporting: Reporting,
        costing: Costing,
        staff: Directory,
        subjects: Attribution,
        archive: AsyncCollection[Document],
        sink: Sink,
        actions_topic: str,
        send_hour: int = 7,
        dashboard_url: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        caught_up: Callable[[], bool] = lambda: True,
    ) -> None:
        """``caught_up``: whether the figures are complete enough to report (the consumer has
        read what was published): a report is not sent on half the data, and once sent it
        is not sent again."""
        self._reporting, self._costing, self._staff = reporting, costing, staff
        self._subjects, self._archive, self._sink = subjects, archive, sink
        self._topic, self._send_hour, self._url, self._clock = (
            actions_topic,
            send_hour,
            dashboard_url,
            clock,
        )
        self._caught_up = caught_up

    async def ensure_indexes(self) -> None:
        await self._archive.create_index(
            [("manager", 1), ("created_at", DESCENDING)], name="by_manager"
        )

    def _window(self, period: Period) -> tuple[datetime, datetime]:
        tz = zone(self._reporting.aggregates.timezone)
        return (
            datetime.combine(period.first, time(), tz).astimezone(UTC),
            datetime.combine(period.last + timedelta(days=1), time(), tz).astimezone(UTC),
        )

    async def build(self, manager: Member, period: Period) -> Built:
        scope = await scope_of("manager", manager.staff_id, self._staff, self._subjects)
        since, until = self._window(period)
        c = totals(await self._reporting.counters("day", "all", since, until, scope=scope))
        data: dict[str, Any] = {
            "manager_name": manager.name,
            "kind": period.kind,
            "period_label": period.label,
            "period_from": period.first.isoformat(),
            "period_to": period.last.isoformat(),
            "timezone": manager.timezone,
            "renewals": {
                "due": c.get("renewals.due", 0),
                "renewed": c.get("renewals.renewed", 0),
                "rate": share(ratio(c.get("renewals.renewed", 0), c.get("renewals.due", 0))),
            },
            "risk": {
                "at_risk": c.get("customers.at_risk", 0),
                "recovered": c.get("customers.recovered", 0),
            },
            "channels_flagged": c.get("channels.flagged", 0),
            "dashboard_url": self._url,
        }
        data["tasks_by_owner"] = await self._tasks(scope)
        data["revisits"] = await self._revisits(scope)
        data.update(await self._money(since, until, scope, period))
        hours = self._reporting.hours_saved(c)
        data["saved"] = {
            "touches": c.get("touches.automated", 0),
            "hours": f"{hours:,.1f}",
            "money": f"{hours * self._reporting.hourly_cost:,.2f}",
            "currency": self._reporting.currency,
        }
        key = report_key(period.kind, period.label, manager.staff_id)
        return Built(key, manager, period, data, csv_of(data))

    async def _tasks(self, scope: Scope) -> list[dict[str, Any]]:
        people = self._reporting.people
        if people is None:
            return []
        found = await people.tasks.open(limit=100_000, owners=scope.values("owner"))
        names = await self._staff.get({t.owner for t in found if t.owner})
        return [
            {
                "owner": load.value or "—",
                "owner_name": names[load.value].name if load.value in names else load.value or "—",
                "open": load.open,
                "overdue": load.overdue,
            }
            for load in loads(found, "owner")
        ]

    async def _revisits(self, scope: Scope) -> dict[str, Any] | None:
        people = self._reporting.people
        if people is None:
            return None
        found = await people.compliance(scope=scope)
        if not found.subjects:
            return None  # no cadence (yet): the section is left out
        return {
            "subjects": found.subjects,
            "in_cadence": found.in_cadence,
            "rate": share(found.rate),
        }

    async def _money(
        self, since: datetime, until: datetime, scope: Scope, period: Period
    ) -> dict[str, Any]:
        rows = await self._costing.total(since, until, "all", scope=scope)
        figures = rows[0].money if rows else None
        table, categories = [], []
        for cur in figures.by_currency if figures else []:
            table.append(
                {
                    "currency": cur.currency,
                    "revenue": money(cur.revenue),
                    "cost": money(cur.cost),
                    "roi": "—" if cur.roi is None else f"{cur.roi:.2f}",
                }
            )
            categories += [
                {"category": k, "currency": cur.currency, "amount": money(v)}
                for k, v in cur.cost_by_category.items()
            ]
        if figures is not None and figures.converted is not None:
            conv = figures.converted
            table.append(
                {
                    "currency": f"{conv.currency} (converted)",
                    "revenue": money(conv.revenue),
                    "cost": money(conv.cost),
                    "roi": "—" if conv.roi is None else f"{conv.roi:.2f}",
                }
            )
        # the budgets of the period holding the report's last day, as they stood at its end
        at = min(self._clock(), until - timedelta(microseconds=1))
        budgets = []
        for s in await self._costing.statuses(scope, now=at, current_only=False):
            if s.period_id != period_of(s.period, period.last):
                continue
            budgets.append(
                {
                    "name": s.name,
                    "scope": f"{s.scope} {s.scope_id}",
                    "currency": s.currency,
                    "amount": money(s.amount),
                    "used": money(s.used),
                    "used_pct": share(s.used_share),
                    "forecast": money(s.forecast),
                    "overrun": s.overrun_forecast,
                }
            )
        return {
            "money": table,
            "rates_note": figures.rates_used if figures is not None else None,
            "costs_by_category": categories,
            "budgets": budgets,
        }

    def _action(self, built: Built, key: str, now: datetime) -> Outgoing:
        action = ActionMessage(
            key=key,
            rule=RULE,
            subject=f"staff:{built.manager.staff_id}",
            kind="email",
            recipient=ActionRecipient(kind="staff", id=built.manager.staff_id),
            template="manager_report",
            locale=built.manager.locale,
            due_at=now,
            data=built.data,
            context={"owner": built.manager.staff_id},
            purpose="report",
            created_at=now,
            attachments=[
                Attachment(
                    filename=f"upkeep-{built.period.kind}-{built.period.label}.csv",
                    media_type="text/csv",
                    content=built.csv,
                )
            ],
        )
        return Outgoing.json(self._topic, action.subject, action.model_dump(mode="json"))

    async def publish(self, built: Built, key: str, via: str) -> None:
        """Archive the report, publish its action, and mark it published."""
        now = self._clock()
        doc = {
            "kind": built.period.kind,
            "period": built.period.label,
            "manager": built.manager.staff_id,
            "created_at": now,
            "data": built.data,
            "csv": built.csv,
            "via": via,
        }
        await self._archive.update_one(
            {"_id": key}, {"$set": doc, "$setOnInsert": {"status": "prepared"}}, upsert=True
        )
        await self._sink.publish([self._action(built, key, now)])
        await self._archive.update_one({"_id": key}, {"$set": {"status": "published"}})

    async def published(self, key: str) -> bool:
        doc = await self._archive.find_one({"_id": key}, {"status": 1})
        return doc is not None and doc.get("status") == "published"

    async def due(self) -> int:
        """Send the reports due now; returns how many were sent (none while the consumer is
        still catching up)."""
        if not self._caught_up():
            return 0
        now = self._clock()
        sent = 0
        for manager in managers(await self._staff.everyone()):
            local = now.astimezone(zone(manager.timezone))
            for kind in KINDS:
                period = Period.last_complete(kind, local.date())
                at = datetime.combine(
                    period.last + timedelta(days=1), time(self._send_hour), zone(manager.timezone)
                )
                key = report_key(kind, period.label, manager.staff_id)
                if local < at or await self.published(key):
                    continue
                try:
                    await self.publish(await self.build(manager, period), key, "schedule")
                except Exception as exc:
                    if is_transient(exc):
                        raise  # MongoDB or Kafka away: the whole check is tried again
                    # one manager's report that cannot be made must not hold up the others
                    FAILED.inc()
                    log.exception("a report could not be made", extra={"report": key})
                    continue
                sent += 1
        return sent

    def complete(self, manager: Member, period: Period) -> bool:
        """Whether the period is over where the manager is."""
        return period.last < self._clock().astimezone(zone(manager.timezone)).date()

    async def send_now(self, manager: Member, period: Period) -> tuple[str, bool]:
        """Send a complete period's report at once; returns its key and whether it is a
        resend. (A period still running is refused by the API: its report would take the
        scheduled one's place with half the figures.)"""
        if not self.complete(manager, period):
            raise ValueError(f"{period.label} is not over yet for {manager.staff_id}")
        built = await self.build(manager, period)
        resend = await self.published(built.key)
        key = f"{built.key}:resend:{self._clock():%Y%m%dT%H%M%S}" if resend else built.key
        await self.publish(built, key, "send-now")
        return key, resend

    async def archived(self, staff: frozenset[str] | None, limit: int = 100) -> list[Document]:
        """The archive, the newest first: of the managers among ``staff`` (None: everyone's)."""
        query: dict[str, Any] = {} if staff is None else {"manager": {"$in": sorted(staff)}}
        cursor = self._archive.find(query, {"csv": 0}).sort("created_at", DESCENDING).limit(limit)
        return [doc async for doc in cursor]

    async def get(self, key: str) -> Document | None:
        return await self._archive.find_one({"_id": key})
