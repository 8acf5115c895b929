"""services/analytics/scope.py and staff.py: whom a manager's scope reaches, what an owner sees,
and that anything outside a scope is refused or left out."""

from __future__ import annotations

from datetime import date

import pytest
from fastapi import HTTPException

from services.analytics.reports import Period
from services.analytics.scope import EVERYTHING, Scope, scope_of
from services.analytics.staff import Member, managers, teams_within, under
from tests.unit.analytics.people_fakes import FakeSubjects

MEMBERS = {
    m.staff_id: m
    for m in [
        Member("S-BOSS", "Boss", team="lead"),
        Member("S-M1", "Manager one", manager="S-BOSS", team="north"),
        Member("S-O1", "Owner one", manager="S-M1", team="north"),
        Member("S-O2", "Owner two", manager="S-M1", team="north"),
        Member("S-M2", "Manager two", manager="S-BOSS", team="south"),
        Member("S-O3", "Owner three", manager="S-M2", team="south"),
        Member("S-X", "Elsewhere", team="north"),  # in team north, not under S-M1
        Member("S-LOOP1", "Loop", manager="S-LOOP2"),
        Member("S-LOOP2", "Loop", manager="S-LOOP1"),
    ]
}


class FakeDirectory:
    async def everyone(self) -> dict[str, Member]:
        return dict(MEMBERS)

    async def get(self, ids: object) -> dict[str, Member]:
        return {k: v for k, v in MEMBERS.items() if k in ids}  # type: ignore[operator]

    async def apply(self, profiles: object) -> None:
        return None


SUBJECTS = FakeSubjects(
    {
        "customer:C-1": {"owner": "S-O1"},
        "customer:C-2": {"owner": "S-O2"},
        "customer:C-3": {"owner": "S-O3"},
        "channel:CH-1": {"owner": "S-O1"},
        "channel:CH-3": {"owner": "S-O3"},
    }
)


def test_a_manager_reaches_everyone_under_them_and_a_cycle_ends() -> None:
    assert under("S-M1", MEMBERS) == {"S-M1", "S-O1", "S-O2"}
    assert under("S-BOSS", MEMBERS) == {"S-BOSS", "S-M1", "S-O1", "S-O2", "S-M2", "S-O3"}
    assert under("S-LOOP1", MEMBERS) == {"S-LOOP1", "S-LOOP2"}


def test_a_team_shared_with_someone_outside_is_not_within() -> None:
    assert teams_within(under("S-M1", MEMBERS), MEMBERS) == frozenset()  # S-X is north too
    assert teams_within(under("S-M2", MEMBERS), MEMBERS) == {"south"}


def test_managers_are_those_someone_reports_to() -> None:
    assert [m.staff_id for m in managers(MEMBERS)] == [
        "S-BOSS",
        "S-LOOP1",
        "S-LOOP2",
        "S-M1",
        "S-M2",
    ]


async def test_an_owner_sees_their_own_customers_and_channels_only() -> None:
    scope = await scope_of("owner", "S-O1", FakeDirectory(), SUBJECTS)  # type: ignore[arg-type]
    assert scope.staff == {"S-O1"}
    assert scope.teams == frozenset()
    assert scope.customers == {"C-1"}
    assert scope.channels == {"CH-1"}
    assert scope.sees("customer:C-1")
    assert not scope.sees("customer:C-2")
    assert scope.view("all", None) == ("owner", frozenset({"S-O1"}))
    for dim, value in [("owner", "S-O2"), ("channel", "CH-3"), ("team", "north"), ("rule", None)]:
        with pytest.raises(HTTPException) as refused:
            scope.view(dim, value)
        assert refused.value.status_code == 403


async def test_a_manager_sees_their_team_through_the_chain() -> None:
    scope = await scope_of("manager", "S-M2", FakeDirectory(), SUBJECTS)  # type: ignore[arg-type]
    assert scope.staff == {"S-M2", "S-O3"}
    assert scope.teams == {"south"}
    assert scope.view("team", "south") == ("team", frozenset({"south"}))
    assert scope.view("channel", None) == ("channel", frozenset({"CH-3"}))
    assert not scope.owns("S-O1")
    assert scope.owns("S-O3")


async def test_an_admin_sees_everything() -> None:
    scope = await scope_of("admin", None, FakeDirectory(), SUBJECTS)  # type: ignore[arg-type]
    assert scope is EVERYTHING
    assert scope.view("rule", "renewal") == ("rule", frozenset({"renewal"}))
    assert Scope(everything=True).values("owner") is None


@pytest.mark.parametrize(
    ("kind", "today", "label", "first", "last"),
    [
        ("weekly", date(2026, 12, 3), "2026-W48", date(2026, 11, 23), date(2026, 11, 29)),
        ("weekly", date(2026, 11, 30), "2026-W48", date(2026, 11, 23), date(2026, 11, 29)),
        ("weekly", date(2027, 1, 4), "2026-W53", date(2026, 12, 28), date(2027, 1, 3)),
        ("monthly", date(2026, 12, 3), "2026-11", date(2026, 11, 1), date(2026, 11, 30)),
        ("monthly", date(2027, 1, 1), "2026-12", date(2026, 12, 1), date(2026, 12, 31)),
    ],
)
def test_the_last_complete_period(
    kind: str, today: date, label: str, first: date, last: date
) -> None:
    found = Period.last_complete(kind, today)  # type: ignore[arg-type]
    assert (found.label, found.first, found.last) == (label, first, last)
    assert Period.parse(kind, label) == found  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "label"), [("weekly", "2026-11"), ("monthly", "2026-W48"), ("monthly", "x")]
)
def test_a_period_that_is_not_one_is_refused(kind: str, label: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any parse error
        Period.parse(kind, label)  # type: ignore[arg-type]
