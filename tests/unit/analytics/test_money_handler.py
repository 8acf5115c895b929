"""Costs, budgets and the staff directory through the analytics handler, its real claims and
offset guards over in-memory collections: an owner's costs also count under their team, a cost
sent twice counts once, an older budget or profile never replaces a newer one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.analytics.aggregates import Aggregates, totals
from services.analytics.budgets import MongoBudgets
from services.analytics.conversions import Conversions
from services.analytics.handler import AnalyticsHandler
from services.analytics.staff import MongoDirectory
from shared.events.envelope import CanonicalEvent
from tests.unit.analytics.fact_builders import T, event
from tests.unit.analytics.journey_builders import TOPICS, collection, records
from tests.unit.analytics.memory_mongo import MemoryCollection
from tests.unit.analytics.people_fakes import FakeRevisits, FakeSubjects, FakeTasks


def world() -> tuple[AnalyticsHandler, Aggregates, MongoDirectory, MongoBudgets]:
    def memory(name: str) -> Any:
        return collection(MemoryCollection(name))

    aggregates = Aggregates(memory("analytics_facts"), memory("analytics_buckets"))
    staff, budgets = MongoDirectory(memory("analytics_staff")), MongoBudgets(memory("b"))
    handler = AnalyticsHandler(
        aggregates,
        FakeSubjects(),
        Conversions(memory("analytics_contracts")),
        FakeTasks(),
        FakeRevisits(),
        TOPICS,
        None,
        staff,
        budgets,
    )
    return handler, aggregates, staff, budgets


def profile(n: str, at_days: int = 0, **fields: Any) -> CanonicalEvent:
    data = {"staff_id": "S-1", "name": "Wang Fang", "timezone": "Asia/Shanghai", **fields}
    return event("staff.upserted", n, at=T + timedelta(days=at_days), **data)


def cost(n: str, cost_id: str) -> CanonicalEvent:
    return event(
        "cost.recorded",
        n,
        about="channel:CH-1",
        cost_id=cost_id,
        category="gift",
        amount="99.50",
        currency="CNY",
        incurred_on=f"{T:%Y-%m-%d}",
        recorded_at=T.isoformat(),
    )


def budget(n: str, amount: str, at_days: int) -> CanonicalEvent:
    set_at = T + timedelta(days=at_days)
    return event(
        "budget.set",
        n,
        at=set_at,
        budget_id="B-1",
        scope="owner",
        scope_id="S-1",
        period="month",
        period_id=f"{T:%Y-%m}",
        amount=amount,
        currency="CNY",
        set_at=set_at.isoformat(),
    )


async def sums(aggregates: Aggregates, dim: str, value: str) -> dict[str, int]:
    since, until = T - timedelta(days=2), T + timedelta(days=2)
    return totals(await aggregates.series("day", dim, since, until, value))


async def test_costs_count_once_under_channel_owner_and_the_owners_team() -> None:
    handler, aggregates, staff, _ = world()
    channel = event(
        "channel.upserted",
        "ch",
        channel_id="CH-1",
        name="Dealer",
        timezone="UTC",
        manager_id="S-1",
    )
    await handler.handle(records([profile("p1", team="east"), channel]))
    # the same cost under two event ids (upstream sent it again), and the batch redelivered
    batch = records([cost("k1", "K-1"), cost("k2", "K-1"), cost("k3", "K-2")], first=2)
    await handler.handle(batch)
    await handler.handle(batch)
    for dim, value in (("channel", "CH-1"), ("owner", "S-1"), ("team", "east"), ("all", "*")):
        found = await sums(aggregates, dim, value)
        assert found["cost.CNY"] == 2 * 9950, (dim, found)
        assert found["cost.gift.CNY"] == 2 * 9950
        assert found["costs"] == 2
    assert (await staff.get(["S-1"]))["S-1"].team == "east"


async def test_an_older_profile_or_budget_never_replaces_a_newer_one() -> None:
    handler, _, staff, budgets = world()
    newer, older = profile("p2", 5, team="west", manager_id="S-9"), profile("p1", 0, team="east")
    await handler.handle(records([newer, budget("b2", "500", 5)]))
    await handler.handle(records([older, budget("b1", "900", 0)], first=2))
    member = (await staff.get(["S-1"]))["S-1"]
    assert (member.team, member.manager, member.timezone) == ("west", "S-9", "Asia/Shanghai")
    (kept,) = await budgets.all()
    assert kept.amount == 500
    await handler.handle(records([budget("b3", "700", 9)], first=4))
    assert [b.amount for b in await budgets.all()] == [700]
