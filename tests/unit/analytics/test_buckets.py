"""Bucket arithmetic in services/analytics/aggregates.py: where an instant's hour and day start
in the reporting time zone, stored counter names, totals over rows, and the weeks and months
rolled up from the day buckets."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo.asynchronous.collection import AsyncCollection

from services.analytics.aggregates import (
    Aggregates,
    bucket_id,
    bucket_start,
    counter_name,
    field,
    period_start,
    rollup,
    totals,
)
from shared.events.fields import zone

HOUR = timedelta(hours=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "granularity", "tz", "start"),
    [
        (utc(2026, 11, 2, 10, 45, 12, 500), "hour", "UTC", utc(2026, 11, 2, 10)),
        (utc(2026, 11, 2, 10, 45, 12, 500), "day", "UTC", utc(2026, 11, 2)),
        (utc(2026, 11, 2, 0, 0), "day", "UTC", utc(2026, 11, 2)),  # a start is its own bucket
        (utc(2026, 11, 2, 23, 59, 59, 999_999), "day", "UTC", utc(2026, 11, 2)),
        # 17:30 UTC is 01:30 the next morning in Shanghai (UTC+8): that local day began at
        # 16:00 UTC
        (utc(2026, 11, 2, 17, 30), "day", "Asia/Shanghai", utc(2026, 11, 2, 16)),
        (utc(2026, 11, 2, 17, 30), "hour", "Asia/Shanghai", utc(2026, 11, 2, 17)),
        (utc(2026, 11, 2, 15, 59), "day", "Asia/Shanghai", utc(2026, 11, 1, 16)),
        # a half-hour zone: the local hour starts at half past in UTC
        (utc(2026, 11, 2, 10, 15), "hour", "Asia/Kolkata", utc(2026, 11, 2, 9, 30)),
        (utc(2026, 11, 2, 10, 15), "day", "Asia/Kolkata", utc(2026, 11, 1, 18, 30)),
        # New York on 2026-11-01: 01:30 happens twice, first in EDT (UTC-4), then in EST (UTC-5)
        (utc(2026, 11, 1, 5, 30), "hour", "America/New_York", utc(2026, 11, 1, 5)),
        (utc(2026, 11, 1, 6, 30), "hour", "America/New_York", utc(2026, 11, 1, 6)),
        (utc(2026, 11, 1, 6, 30), "day", "America/New_York", utc(2026, 11, 1, 4)),
        (utc(2026, 11, 2, 4, 30), "day", "America/New_York", utc(2026, 11, 1, 4)),  # 23:30 EST
        (utc(2026, 11, 2, 5, 0), "day", "America/New_York", utc(2026, 11, 2, 5)),
        # Sao Paulo on 2018-11-04: the clocks jumped from 00:00 to 01:00, so that day began at
        # 01:00 local (UTC-2), the instant midnight would have been in UTC-3
        (utc(2018, 11, 4, 12), "day", "America/Sao_Paulo", utc(2018, 11, 4, 3)),
        (utc(2018, 11, 4, 3, 10), "hour", "America/Sao_Paulo", utc(2018, 11, 4, 3)),
    ],
)
def test_bucket_start(at: datetime, granularity: str, tz: str, start: datetime) -> None:
    found = bucket_start(at, granularity, tz)
    assert found == start
    assert found.tzinfo is UTC


def test_the_instant_not_its_written_offset_decides_the_bucket() -> None:
    written_in_shanghai = datetime(2026, 11, 3, 1, 30, tzinfo=timezone(timedelta(hours=8)))
    same_instant = utc(2026, 11, 2, 17, 30)
    for tz in ("UTC", "Asia/Shanghai", "America/New_York"):
        for granularity in ("hour", "day"):
            assert bucket_start(written_in_shanghai, granularity, tz) == bucket_start(
                same_instant, granularity, tz
            )
    assert bucket_start(written_in_shanghai, "day", "UTC") == utc(2026, 11, 2)


def day_starts(first: datetime, tz: str, count: int) -> list[datetime]:
    """``count`` consecutive day starts from ``first``'s day, each found from the last."""
    starts = [bucket_start(first, "day", tz)]
    while len(starts) < count:
        starts.append(bucket_start(starts[-1] + 26 * HOUR, "day", tz))
    return starts


def test_the_day_the_clocks_go_back_in_new_york_lasts_25_hours() -> None:
    starts = day_starts(utc(2026, 10, 31, 12), "America/New_York", 4)
    assert starts == [
        utc(2026, 10, 31, 4),  # 00:00 EDT
        utc(2026, 11, 1, 4),  # 00:00 EDT, the day the clocks go back at 02:00
        utc(2026, 11, 2, 5),  # 00:00 EST
        utc(2026, 11, 3, 5),
    ]
    assert [b - a for a, b in itertools.pairwise(starts)] == [
        24 * HOUR,
        25 * HOUR,
        24 * HOUR,
    ]
    # the 25th hour of 1 November still belongs to 1 November
    assert (
        bucket_start(starts[1] + 24 * HOUR + 59 * timedelta(minutes=1), "day", "America/New_York")
        == starts[1]
    )


def test_the_day_the_clocks_go_forward_in_new_york_lasts_23_hours() -> None:
    starts = day_starts(utc(2026, 3, 7, 12), "America/New_York", 3)
    assert starts == [utc(2026, 3, 7, 5), utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)]


def test_the_hours_of_the_day_the_clocks_go_back_are_25_distinct_buckets() -> None:
    tz = "America/New_York"
    day = bucket_start(utc(2026, 11, 1, 12), "day", tz)
    hours = {bucket_start(day + n * 30 * timedelta(minutes=1), "hour", tz) for n in range(50)}
    assert sorted(hours) == [day + n * HOUR for n in range(25)]


def test_bucket_ids_name_the_granularity_start_and_dimension() -> None:
    start = bucket_start(utc(2026, 11, 2, 17, 30), "day", "Asia/Shanghai")
    assert bucket_id("day", start, "owner", "S-1") == "day|2026-11-02T16:00:00+00:00|owner|S-1"


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("events.customer.upserted", "events~customer~upserted"),
        ("order_value.EUR", "order_value~EUR"),
        ("renewals.due", "renewals~due"),
        ("orders", "orders"),
    ],
)
def test_counter_names_are_stored_without_dots_and_read_back(name: str, stored: str) -> None:
    assert field(name) == stored
    assert counter_name(field(name)) == name


@given(st.text(alphabet=st.characters(exclude_characters="~"), max_size=40))
def test_any_counter_name_without_a_tilde_round_trips(name: str) -> None:
    stored = field(name)
    assert "." not in stored
    assert counter_name(stored) == name


def row(**counters: int) -> dict[str, Any]:
    return {"start": utc(2026, 11, 2), "dim": "all", "value": "*", "counters": counters}


def test_totals_add_every_counter_over_the_rows() -> None:
    rows = [row(orders=2, **{"order_value.EUR": 2500}), row(orders=1, **{"renewals.due": 3})]
    assert totals(rows) == {"orders": 3, "order_value.EUR": 2500, "renewals.due": 3}


def test_totals_of_nothing_are_empty() -> None:
    assert totals([]) == {}
    assert totals([row()]) == {}


ZONES = st.sampled_from(
    [
        "UTC",
        "Asia/Shanghai",
        "America/New_York",
        "Europe/London",
        "Asia/Kolkata",
        "Australia/Sydney",
        "America/Sao_Paulo",
    ]
)
# realistic instants, written in any of a few offsets (the instant is what counts)
INSTANTS = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, zone("Asia/Shanghai"), zone("America/Los_Angeles")]),
)


@settings(max_examples=500, deadline=None)
@given(INSTANTS, ZONES)
def test_an_instant_lies_in_its_hour_which_lies_in_its_day(at: datetime, tz: str) -> None:
    hour = bucket_start(at, "hour", tz)
    day = bucket_start(at, "day", tz)
    assert hour <= at < hour + HOUR
    assert day <= hour
    assert bucket_start(hour, "day", tz) == day  # the hour's own day is the instant's day
    assert bucket_start(hour, "hour", tz) == hour  # a start is in its own bucket
    assert bucket_start(day, "day", tz) == day
    assert at - day < 25 * HOUR  # no local day is longer
    local = hour.astimezone(zone(tz))
    assert (local.minute, local.second, local.microsecond) == (0, 0, 0)


def test_every_instant_of_a_day_whose_midnight_repeats_is_in_that_one_day() -> None:
    # Havana on 2026-11-01: 01:00 CDT (UTC-4) goes back to 00:00 CST (UTC-5), so 00:00-01:00
    # happens twice; the day began at the first midnight, 04:00 UTC
    tz = "America/Havana"
    day = utc(2026, 11, 1, 4)
    starts = {bucket_start(day + n * 15 * timedelta(minutes=1), "day", tz) for n in range(25 * 4)}
    assert starts == {day}


# --- weeks and months, rolled up from the day buckets --------------------------------------


@pytest.mark.parametrize(
    ("day", "granularity", "tz", "start"),
    [
        # UTC: 2026-11-01 is a Sunday, the last day of the week from Monday 26 October
        (utc(2026, 11, 1), "week", "UTC", utc(2026, 10, 26)),
        (utc(2026, 11, 2), "week", "UTC", utc(2026, 11, 2)),  # a Monday starts its own week
        (utc(2026, 11, 8), "week", "UTC", utc(2026, 11, 2)),
        (utc(2026, 11, 30), "month", "UTC", utc(2026, 11, 1)),
        (utc(2026, 11, 1), "month", "UTC", utc(2026, 11, 1)),
        (utc(2026, 12, 31), "month", "UTC", utc(2026, 12, 1)),
        (utc(2027, 1, 1), "month", "UTC", utc(2027, 1, 1)),
        # Shanghai (UTC+8): Monday 2 November starts at 16:00 UTC on Sunday 1 November
        (utc(2026, 11, 1, 16), "week", "Asia/Shanghai", utc(2026, 11, 1, 16)),
        (utc(2026, 11, 7, 16), "week", "Asia/Shanghai", utc(2026, 11, 1, 16)),  # Sunday 8th
        (utc(2026, 10, 31, 16), "week", "Asia/Shanghai", utc(2026, 10, 25, 16)),  # Sunday 1st
        # ... and 1 December starts at 16:00 UTC on 30 November
        (utc(2026, 11, 30, 16), "month", "Asia/Shanghai", utc(2026, 11, 30, 16)),
        (utc(2026, 11, 29, 16), "month", "Asia/Shanghai", utc(2026, 10, 31, 16)),  # 30 Nov
        (utc(2026, 12, 31, 16), "month", "Asia/Shanghai", utc(2026, 12, 31, 16)),  # 1 Jan 2027
        # New York: the week the clocks go back (Sunday 1 November) started in EDT (UTC-4),
        # the next one starts in EST (UTC-5)
        (utc(2026, 10, 26, 4), "week", "America/New_York", utc(2026, 10, 26, 4)),
        (utc(2026, 11, 1, 4), "week", "America/New_York", utc(2026, 10, 26, 4)),
        (utc(2026, 11, 2, 5), "week", "America/New_York", utc(2026, 11, 2, 5)),
        (utc(2026, 11, 8, 5), "week", "America/New_York", utc(2026, 11, 2, 5)),
        # the week the clocks go forward (Sunday 8 March) started in EST, the next in EDT
        (utc(2026, 3, 8, 5), "week", "America/New_York", utc(2026, 3, 2, 5)),
        (utc(2026, 3, 9, 4), "week", "America/New_York", utc(2026, 3, 9, 4)),
        # November began in EDT: its last day (in EST) still rolls up to 04:00 UTC on the 1st
        (utc(2026, 11, 30, 5), "month", "America/New_York", utc(2026, 11, 1, 4)),
        (utc(2026, 12, 1, 5), "month", "America/New_York", utc(2026, 12, 1, 5)),
        (utc(2026, 3, 31, 4), "month", "America/New_York", utc(2026, 3, 1, 5)),
        # Cairo on Friday 2023-04-28: midnight jumped to 01:00 mid-week; the week began on
        # Monday 24 April at 00:00 EET (UTC+2), the month on 1 April
        (utc(2023, 4, 27, 22), "week", "Africa/Cairo", utc(2023, 4, 23, 22)),
        (utc(2023, 4, 28, 21), "week", "Africa/Cairo", utc(2023, 4, 23, 22)),  # Saturday
        (utc(2023, 4, 28, 21), "month", "Africa/Cairo", utc(2023, 3, 31, 22)),
        (utc(2023, 4, 30, 21), "week", "Africa/Cairo", utc(2023, 4, 30, 21)),  # Monday 1 May
        (utc(2023, 4, 30, 21), "month", "Africa/Cairo", utc(2023, 4, 30, 21)),
    ],
)
def test_period_start(day: datetime, granularity: str, tz: str, start: datetime) -> None:
    found = period_start(day, granularity, tz)
    assert found == start
    assert found.tzinfo is UTC


def test_every_day_of_the_week_the_clocks_go_back_rolls_up_to_its_monday() -> None:
    tz = "America/New_York"
    days = day_starts(utc(2026, 10, 26, 12), tz, 14)  # Monday 26 October to Sunday 8 November
    weeks = [period_start(d, "week", tz) for d in days]
    assert weeks == [utc(2026, 10, 26, 4)] * 7 + [utc(2026, 11, 2, 5)] * 7
    assert weeks[7] - weeks[0] == 7 * 24 * HOUR + HOUR  # that week lasted an hour longer


@settings(max_examples=300, deadline=None)
@given(INSTANTS, ZONES, st.sampled_from(["week", "month"]))
def test_a_day_lies_in_its_period_which_starts_at_a_local_midnight(
    at: datetime, tz: str, granularity: str
) -> None:
    day = bucket_start(at, "day", tz)
    start = period_start(day, granularity, tz)
    assert start <= day
    assert day - start < 32 * 24 * HOUR
    assert period_start(start, granularity, tz) == start  # a period starts in itself
    assert bucket_start(start, "day", tz) == start  # ... at the start of a local day
    local_start, local_day = start.astimezone(zone(tz)), day.astimezone(zone(tz))
    if granularity == "week":
        assert local_start.weekday() == 0
        assert (local_day.date() - local_start.date()).days == local_day.weekday()
    else:
        assert local_start.day == 1
        assert (local_start.year, local_start.month) == (local_day.year, local_day.month)


def day_row(
    start: datetime, counters: dict[str, int], dim: str = "all", value: str = "*"
) -> dict[str, Any]:
    return {"start": start, "dim": dim, "value": value, "counters": counters}


def test_rollup_sums_the_days_of_each_week_per_dimension_value_oldest_first() -> None:
    days = [
        day_row(utc(2026, 11, 2), {"orders": 1, "renewals.due": 2}),  # Monday
        day_row(utc(2026, 11, 8), {"orders": 2}),  # Sunday, same week
        day_row(utc(2026, 11, 9), {"orders": 5}),  # Monday, next week
        day_row(utc(2026, 11, 1), {"orders": 7}),  # Sunday, the week before
        day_row(utc(2026, 11, 3), {"orders": 4}, "owner", "S-1"),
        day_row(utc(2026, 11, 4), {"touches.email": 3}, "owner", "S-1"),
        day_row(utc(2026, 11, 4), {"orders": 1}, "owner", "S-2"),
    ]
    random.Random(7).shuffle(days)  # the order rows come in does not matter
    assert rollup(days, "week", "UTC") == [
        {"start": utc(2026, 10, 26), "dim": "all", "value": "*", "counters": {"orders": 7}},
        {
            "start": utc(2026, 11, 2),
            "dim": "all",
            "value": "*",
            "counters": {"orders": 3, "renewals.due": 2},
        },
        {
            "start": utc(2026, 11, 2),
            "dim": "owner",
            "value": "S-1",
            "counters": {"orders": 4, "touches.email": 3},
        },
        {"start": utc(2026, 11, 2), "dim": "owner", "value": "S-2", "counters": {"orders": 1}},
        {"start": utc(2026, 11, 9), "dim": "all", "value": "*", "counters": {"orders": 5}},
    ]


def test_rollup_splits_months_at_local_midnight_not_utc() -> None:
    tz = "Asia/Shanghai"
    days = [
        day_row(utc(2026, 11, 28, 16), {"orders": 1}),  # 29 November local
        day_row(utc(2026, 11, 29, 16), {"orders": 2}),  # 30 November local
        day_row(utc(2026, 11, 30, 16), {"orders": 4}),  # 1 December local, still November in UTC
        day_row(utc(2026, 12, 1, 16), {"orders": 8}),
    ]
    assert rollup(days, "month", tz) == [
        {"start": utc(2026, 10, 31, 16), "dim": "all", "value": "*", "counters": {"orders": 3}},
        {"start": utc(2026, 11, 30, 16), "dim": "all", "value": "*", "counters": {"orders": 12}},
    ]
    # reported in UTC, the first three days are all November
    in_utc = rollup(days, "month", "UTC")
    assert [(r["start"], r["counters"]) for r in in_utc] == [
        (utc(2026, 11, 1), {"orders": 7}),
        (utc(2026, 12, 1), {"orders": 8}),
    ]


def test_rollup_of_the_weeks_around_a_dst_change_keeps_every_day() -> None:
    tz = "America/New_York"
    days = [
        day_row(start, {"orders": n})
        for n, start in enumerate(day_starts(utc(2026, 10, 26, 12), tz, 14), 1)
    ]
    weeks = rollup(days, "week", tz)
    assert [(w["start"], w["counters"]) for w in weeks] == [
        (utc(2026, 10, 26, 4), {"orders": sum(range(1, 8))}),
        (utc(2026, 11, 2, 5), {"orders": sum(range(8, 15))}),
    ]


def test_rollup_of_no_days_is_empty() -> None:
    assert rollup([], "week", "UTC") == []
    assert rollup([], "month", "Asia/Shanghai") == []


class FakeBuckets:
    """Stands in for the buckets collection: answers ``find(query).sort("start")`` over the
    documents it holds, and records the queries."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs
        self.queries: list[dict[str, Any]] = []

    def find(self, query: Mapping[str, Any]) -> FakeBuckets:
        self.queries.append(dict(query))
        return self

    def sort(self, key: str, direction: int) -> FakeBuckets:
        assert (key, direction) == ("start", 1)
        return self

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        query = self.queries[-1]
        window = query["start"]
        for doc in sorted(self.docs, key=lambda d: d["start"]):
            if (
                doc["g"] == query["g"]
                and doc["dim"] == query["dim"]
                and query.get("value", doc["value"]) == doc["value"]
                and window["$gte"] <= doc["start"] < window["$lt"]
            ):
                yield doc


def bucket(start: datetime, counters: dict[str, int], granularity: str = "day") -> dict[str, Any]:
    return {
        "g": granularity,
        "start": start,
        "dim": "all",
        "value": "*",
        "c": {field(k): v for k, v in counters.items()},
    }


async def test_series_by_week_rolls_up_the_day_buckets_in_the_reporting_zone() -> None:
    tz = "Asia/Shanghai"
    buckets = FakeBuckets(
        [
            bucket(utc(2026, 11, 1, 16), {"touches.email": 2}),  # Monday 2 November local
            bucket(utc(2026, 11, 7, 16), {"touches.email": 3}),  # Sunday 8 November local
            bucket(utc(2026, 11, 8, 16), {"orders": 1}),  # Monday 9 November local
            bucket(utc(2026, 11, 1, 16), {"orders": 100}, "hour"),  # an hour bucket: not summed
        ]
    )
    aggregates = Aggregates(
        cast(AsyncCollection[dict[str, Any]], None),
        cast(AsyncCollection[dict[str, Any]], buckets),
        tz,
    )
    weeks = await aggregates.series("week", "all", utc(2026, 11, 1), utc(2026, 11, 30))
    assert buckets.queries[0]["g"] == "day"
    assert weeks == [
        {
            "start": utc(2026, 11, 1, 16),
            "dim": "all",
            "value": "*",
            "counters": {"touches.email": 5},
        },
        {"start": utc(2026, 11, 8, 16), "dim": "all", "value": "*", "counters": {"orders": 1}},
    ]
    months = await aggregates.series("month", "all", utc(2026, 11, 1), utc(2026, 11, 30))
    assert [m["start"] for m in months] == [utc(2026, 10, 31, 16)]
    assert months[0]["counters"] == {"touches.email": 5, "orders": 1}
