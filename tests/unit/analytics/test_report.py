"""The analytics HTTP API (services/analytics/api.py) over a fake aggregates store: the
maintenance report, the manual work saved, the series as JSON and as CSV, and query
validation."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

import httpx
import pytest
from fastapi import FastAPI

from services.analytics.aggregates import Aggregates
from services.analytics.api import analytics_router
from services.analytics.report import Reporting
from tests.unit.analytics.callers import as_admin

MINUTES = {"email": 6.0, "chat": 4.0, "webhook": 3.0}
HOURLY_COST = 40.0
SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = datetime(2026, 11, 3, tzinfo=UTC)
WINDOW = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-03T00:00:00Z"}


class Query(NamedTuple):
    granularity: str
    dim: str
    since: datetime
    until: datetime
    value: str | None


class FakeAggregates:
    """Stands in for :class:`Aggregates`: answers every query with the rows it was given and
    records the query."""

    def __init__(self, rows: Sequence[dict[str, Any]] = ()) -> None:
        self.rows = list(rows)
        self.queries: list[Query] = []

    async def series(
        self,
        granularity: str,
        dim: str,
        since: datetime,
        until: datetime,
        value: str | None = None,
        values: Any = None,
    ) -> list[dict[str, Any]]:
        self.queries.append(Query(granularity, dim, since, until, value))
        return self.rows


def row(day: int, counters: dict[str, int], dim: str = "all", value: str = "*") -> dict[str, Any]:
    return {
        "start": datetime(2026, 11, day, tzinfo=UTC),
        "dim": dim,
        "value": value,
        "counters": counters,
    }


@asynccontextmanager
async def api(
    fake: FakeAggregates,
    minutes_saved: dict[str, float] | None = None,
    hourly_cost: float = HOURLY_COST,
) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    router = analytics_router(
        Reporting(
            cast(Aggregates, fake),
            MINUTES if minutes_saved is None else minutes_saved,
            hourly_cost,
            "EUR",
        ),
        as_admin,
    )
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as http:
        yield http


# two days of counters; over both: 10 renewals due and 7 renewed; 18 sent, 2 failed and 3
# suppressed; 16 automated touches (12 e-mails, 4 chats) and 2 manual ones (tasks)
TWO_DAYS = [
    row(
        1,
        {
            "renewals.due": 6,
            "renewals.renewed": 4,
            "deliveries.sent": 10,
            "deliveries.failed": 1,
            "deliveries.suppressed": 3,
            "touches.automated": 9,
            "touches.manual": 1,
            "touches.email": 7,
            "touches.chat": 2,
            "touches.task": 1,
        },
    ),
    row(
        2,
        {
            "renewals.due": 4,
            "renewals.renewed": 3,
            "deliveries.sent": 8,
            "deliveries.failed": 1,
            "touches.automated": 7,
            "touches.manual": 1,
            "touches.email": 5,
            "touches.chat": 2,
            "touches.task": 1,
        },
    ),
]


async def test_the_report_computes_rates_and_savings_from_the_day_totals() -> None:
    fake = FakeAggregates(TWO_DAYS)
    async with api(fake) as http:
        answer = await http.get("/v1/report", params=WINDOW)
    assert answer.status_code == 200
    report = answer.json()
    assert fake.queries == [Query("day", "all", SINCE, UNTIL, None)]
    assert report["counters"] == {
        "renewals.due": 10,
        "renewals.renewed": 7,
        "deliveries.sent": 18,
        "deliveries.failed": 2,
        "deliveries.suppressed": 3,
        "touches.automated": 16,
        "touches.manual": 2,
        "touches.email": 12,
        "touches.chat": 4,
        "touches.task": 2,
    }
    assert report["renewal_rate"] == 0.7  # 7 of 10
    assert report["delivery_success_rate"] == 0.9  # 18 of 18 + 2; suppressed are not failures
    assert report["automation_coverage"] == 0.8889  # 16 of 18, to four places
    # 12 e-mails x 6 min + 4 chats x 4 min = 88 min; tasks save nothing (no minutes for them)
    assert report["hours_saved"] == 1.47
    assert report["money_saved"] == 58.67  # 88 / 60 h x 40, not the rounded 1.47 h x 40
    assert report["currency"] == "EUR"
    assert (report["since"], report["until"]) == ("2026-11-01T00:00:00Z", "2026-11-03T00:00:00Z")


async def test_the_ratios_are_none_when_their_denominator_is_zero() -> None:
    fake = FakeAggregates([row(1, {"deliveries.suppressed": 4, "renewals.renewed": 2})])
    async with api(fake) as http:
        report = (await http.get("/v1/report", params=WINDOW)).json()
    assert report["renewal_rate"] is None  # renewed, but nothing was due
    assert report["delivery_success_rate"] is None  # only suppressions
    assert report["automation_coverage"] is None
    assert (report["hours_saved"], report["money_saved"]) == (0.0, 0.0)


async def test_a_report_of_an_empty_window_is_empty() -> None:
    async with api(FakeAggregates()) as http:
        report = (await http.get("/v1/report", params=WINDOW)).json()
    assert report["counters"] == {}
    assert report["renewal_rate"] is None
    assert report["delivery_success_rate"] is None
    assert report["automation_coverage"] is None
    assert (report["hours_saved"], report["money_saved"]) == (0.0, 0.0)


async def test_only_configured_kinds_save_time_at_the_configured_cost() -> None:
    fake = FakeAggregates([row(1, {"touches.chat": 30, "touches.webhook": 20, "touches.task": 9})])
    async with api(fake, minutes_saved={"webhook": 1.5}, hourly_cost=100.0) as http:
        report = (await http.get("/v1/report", params=WINDOW)).json()
    assert report["hours_saved"] == 0.5  # 20 webhooks x 1.5 min; chats and tasks not configured
    assert report["money_saved"] == 50.0
    async with api(fake, hourly_cost=0.0) as http:
        free = (await http.get("/v1/report", params=WINDOW)).json()
    assert free["hours_saved"] == 3.0  # 30 x 4 min + 20 x 3 min = 180 min
    assert free["money_saved"] == 0.0


async def test_the_report_for_one_owner_asks_for_that_owner() -> None:
    fake = FakeAggregates([row(1, {"renewals.due": 4, "renewals.renewed": 1}, "owner", "S-1")])
    async with api(fake) as http:
        report = (
            await http.get("/v1/report", params={**WINDOW, "dim": "owner", "value": "S-1"})
        ).json()
    assert fake.queries == [Query("day", "owner", SINCE, UNTIL, "S-1")]
    assert report["renewal_rate"] == 0.25


async def test_the_default_window_is_the_last_31_days_up_to_tomorrow() -> None:
    fake = FakeAggregates()
    before = datetime.now(UTC)
    async with api(fake) as http:
        assert (await http.get("/v1/report")).status_code == 200
        assert (
            await http.get("/v1/series", params={"to": "2026-11-03T00:00:00Z"})
        ).status_code == 200
    after = datetime.now(UTC)
    defaulted, only_until = fake.queries
    assert before + timedelta(days=1) <= defaulted.until <= after + timedelta(days=1)
    assert defaulted.until - defaulted.since == timedelta(days=31)
    assert only_until == Query("day", "all", UNTIL - timedelta(days=31), UNTIL, None)


async def test_series_returns_the_rows_oldest_first_as_json() -> None:
    fake = FakeAggregates(
        [
            row(1, {"actions": 3}, "rule", "renewal"),
            row(2, {"actions": 2, "orders": 1}, "rule", "renewal"),
        ]
    )
    params = {**WINDOW, "granularity": "hour", "dim": "rule", "value": "renewal"}
    async with api(fake) as http:
        answer = await http.get("/v1/series", params=params)
    assert answer.status_code == 200
    assert fake.queries == [Query("hour", "rule", SINCE, UNTIL, "renewal")]
    assert answer.json() == [
        {
            "start": "2026-11-01T00:00:00Z",
            "dim": "rule",
            "value": "renewal",
            "counters": {"actions": 3},
        },
        {
            "start": "2026-11-02T00:00:00Z",
            "dim": "rule",
            "value": "renewal",
            "counters": {"actions": 2, "orders": 1},
        },
    ]


async def test_the_csv_has_a_column_per_counter_and_zero_for_a_missing_one() -> None:
    fake = FakeAggregates(
        [
            row(1, {"orders": 3, "order_value.EUR": 3750}),
            row(2, {"renewals.due": 2}),
        ]
    )
    async with api(fake) as http:
        answer = await http.get("/v1/series.csv", params={**WINDOW, "granularity": "day"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert fake.queries == [Query("day", "all", SINCE, UNTIL, None)]
    assert list(csv.reader(io.StringIO(answer.text))) == [
        ["start", "dimension", "value", "order_value.EUR", "orders", "renewals.due"],
        ["2026-11-01T00:00:00+00:00", "all", "*", "3750", "3", "0"],
        ["2026-11-02T00:00:00+00:00", "all", "*", "0", "0", "2"],
    ]


async def test_the_csv_of_an_empty_window_is_its_header() -> None:
    async with api(FakeAggregates()) as http:
        answer = await http.get("/v1/series.csv", params=WINDOW)
    assert list(csv.reader(io.StringIO(answer.text))) == [["start", "dimension", "value"]]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/series", {"granularity": "year"}),
        ("/v1/series.csv", {"granularity": "minute"}),
        ("/v1/savings", {"dim": "bogus"}),
        ("/v1/savings", {"dim": "customer"}),
        ("/v1/savings", {"granularity": "quarter"}),
        ("/v1/savings", {"from": "last tuesday"}),
        ("/v1/series", {"dim": "bogus"}),
        ("/v1/series.csv", {"dim": "bogus"}),
        ("/v1/report", {"dim": "bogus"}),
        ("/v1/series", {"from": "last tuesday"}),
        ("/v1/report", {"to": "soon"}),
    ],
)
async def test_an_invalid_query_is_refused_before_any_lookup(
    path: str, params: dict[str, str]
) -> None:
    fake = FakeAggregates([row(1, {"orders": 1})])
    async with api(fake) as http:
        answer = await http.get(path, params=params)
    assert answer.status_code == 422
    assert fake.queries == []


@pytest.mark.parametrize("dim", ["all", "rule", "kind", "owner", "channel", "tier"])
async def test_every_dimension_can_be_asked_for(dim: str) -> None:
    fake = FakeAggregates()
    async with api(fake) as http:
        answer = await http.get("/v1/series", params={**WINDOW, "dim": dim})
    assert answer.status_code == 200
    assert [q.dim for q in fake.queries] == [dim]


# --- the new report fields ------------------------------------------------------------------


async def test_the_report_gives_reminder_conversion_and_churn_recoveries() -> None:
    fake = FakeAggregates(
        [
            row(1, {"renewals.reminded": 5, "renewals.converted": 2, "customers.at_risk": 4}),
            row(2, {"renewals.reminded": 4, "renewals.converted": 1, "customers.recovered": 3}),
            row(2, {"customers.at_risk": 2, "customers.recovered": 1}),
        ]
    )
    async with api(fake) as http:
        report = (await http.get("/v1/report", params=WINDOW)).json()
    assert report["reminder_conversion"] == 0.3333  # 3 of 9 reminded terms, to four places
    assert report["churn_recoveries"] == 4
    assert report["recovery_rate"] == 0.6667  # 4 recovered of 6 that entered churn risk
    assert report["renewal_rate"] is None  # nothing due: unrelated to the conversion


async def test_conversion_and_recovery_rates_are_none_without_a_denominator() -> None:
    # conversions and recoveries counted in the window, but no reminder and nobody at risk in it
    fake = FakeAggregates([row(1, {"renewals.converted": 2, "customers.recovered": 3})])
    async with api(fake) as http:
        report = (await http.get("/v1/report", params=WINDOW)).json()
    assert report["reminder_conversion"] is None
    assert report["recovery_rate"] is None
    assert report["churn_recoveries"] == 3


async def test_an_empty_window_has_no_conversion_and_no_recoveries() -> None:
    async with api(FakeAggregates()) as http:
        report = (await http.get("/v1/report", params=WINDOW)).json()
    assert report["reminder_conversion"] is None
    assert report["recovery_rate"] is None
    assert report["churn_recoveries"] == 0


async def test_reminded_terms_that_all_converted_and_risks_that_all_recovered_are_one() -> None:
    counters = {
        "renewals.reminded": 3,
        "renewals.converted": 3,
        "customers.at_risk": 2,
        "customers.recovered": 2,
    }
    async with api(FakeAggregates([row(1, counters)])) as http:
        report = (await http.get("/v1/report", params=WINDOW)).json()
    assert (report["reminder_conversion"], report["recovery_rate"]) == (1.0, 1.0)


# --- /v1/savings ----------------------------------------------------------------------------


async def test_savings_give_hours_and_money_per_row() -> None:
    fake = FakeAggregates(
        [
            # 7 e-mails x 6 min + 2 chats x 4 min = 50 min; the task saves nothing
            row(1, {"touches.email": 7, "touches.chat": 2, "touches.task": 1, "orders": 4}),
            # 10 webhooks x 3 min = 30 min
            row(8, {"touches.webhook": 10}),
            row(15, {"orders": 2}),  # no touches: nothing saved
        ]
    )
    async with api(fake) as http:
        answer = await http.get("/v1/savings", params={**WINDOW, "granularity": "week"})
    assert answer.status_code == 200
    assert answer.json() == [
        {
            "start": "2026-11-01T00:00:00Z",
            "dim": "all",
            "value": "*",
            "touches": {"email": 7, "chat": 2, "webhook": 0},
            "hours_saved": 0.83,
            "money_saved": 33.33,  # 50 / 60 h x 40, not the rounded 0.83 h x 40
            "currency": "EUR",
        },
        {
            "start": "2026-11-08T00:00:00Z",
            "dim": "all",
            "value": "*",
            "touches": {"email": 0, "chat": 0, "webhook": 10},
            "hours_saved": 0.5,
            "money_saved": 20.0,
            "currency": "EUR",
        },
        {
            "start": "2026-11-15T00:00:00Z",
            "dim": "all",
            "value": "*",
            "touches": {"email": 0, "chat": 0, "webhook": 0},
            "hours_saved": 0.0,
            "money_saved": 0.0,
            "currency": "EUR",
        },
    ]


async def test_savings_count_touches_only_of_the_configured_kinds() -> None:
    fake = FakeAggregates([row(1, {"touches.chat": 30, "touches.webhook": 20, "touches.task": 9})])
    async with api(fake, minutes_saved={"webhook": 1.5, "task": 0.0}, hourly_cost=100.0) as http:
        (saving,) = (await http.get("/v1/savings", params=WINDOW)).json()
    assert saving["touches"] == {"webhook": 20, "task": 9}  # no chat: it saves nothing here
    assert saving["hours_saved"] == 0.5  # 20 x 1.5 min
    assert saving["money_saved"] == 50.0


async def test_savings_by_month_are_the_default() -> None:
    fake = FakeAggregates()
    async with api(fake) as http:
        answer = await http.get("/v1/savings", params=WINDOW)
    assert answer.status_code == 200
    assert answer.json() == []
    assert fake.queries == [Query("month", "all", SINCE, UNTIL, None)]


@pytest.mark.parametrize("granularity", ["month", "week", "day", "hour"])
async def test_savings_ask_the_aggregates_for_the_granularity_asked_for(granularity: str) -> None:
    fake = FakeAggregates()
    async with api(fake) as http:
        answer = await http.get("/v1/savings", params={**WINDOW, "granularity": granularity})
    assert answer.status_code == 200
    assert fake.queries == [Query(granularity, "all", SINCE, UNTIL, None)]


async def test_savings_per_channel_ask_for_that_channel_and_name_it() -> None:
    fake = FakeAggregates([row(1, {"touches.email": 10}, "channel", "CH-1")])
    params = {**WINDOW, "granularity": "week", "dim": "channel", "value": "CH-1"}
    async with api(fake) as http:
        (saving,) = (await http.get("/v1/savings", params=params)).json()
    assert fake.queries == [Query("week", "channel", SINCE, UNTIL, "CH-1")]
    assert (saving["dim"], saving["value"]) == ("channel", "CH-1")
    assert (saving["hours_saved"], saving["money_saved"]) == (1.0, 40.0)


async def test_savings_per_owner_give_one_row_per_owner_and_period() -> None:
    fake = FakeAggregates(
        [
            row(1, {"touches.email": 10}, "owner", "S-1"),
            row(1, {"touches.chat": 15}, "owner", "S-2"),
        ]
    )
    async with api(fake) as http:
        answer = await http.get("/v1/savings", params={**WINDOW, "dim": "owner"})
    assert fake.queries == [Query("month", "owner", SINCE, UNTIL, None)]
    assert [(s["value"], s["hours_saved"]) for s in answer.json()] == [("S-1", 1.0), ("S-2", 1.0)]


@pytest.mark.parametrize("granularity", ["week", "month"])
async def test_the_series_can_be_asked_for_by_week_and_month(granularity: str) -> None:
    fake = FakeAggregates([row(2, {"orders": 3})])
    async with api(fake) as http:
        answer = await http.get("/v1/series", params={**WINDOW, "granularity": granularity})
    assert answer.status_code == 200
    assert fake.queries == [Query(granularity, "all", SINCE, UNTIL, None)]
    assert answer.json()[0]["counters"] == {"orders": 3}
