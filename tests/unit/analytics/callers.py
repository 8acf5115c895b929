"""Callers for the unit tests of analytics' routers: an admin who sees everything, or anyone
with a given scope (the routers take the caller dependency; the sign-in itself is tested in
test_signin.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.analytics.callers import Caller
from services.analytics.scope import EVERYTHING, Scope
from services.analytics.signin import Principal

ADMIN = Principal(name="test-admin", role="admin", staff_id=None, via="key", can_admin=True)


async def as_admin() -> Caller:
    return Caller(ADMIN, EVERYTHING)


def as_staff(staff_id: str, scope: Scope, role: str = "owner") -> Callable[[], Awaitable[Caller]]:
    who = Principal(name=staff_id, role=role, staff_id=staff_id, via="session", can_admin=False)  # type: ignore[arg-type]

    async def caller() -> Caller:
        return Caller(who, scope, csrf="test-csrf-token")

    return caller
