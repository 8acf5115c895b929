"""Who is calling, and what they may see: the FastAPI dependency every analytics route and
dashboard page takes. Authentication is :mod:`services.analytics.signin`'s (API keys, sessions,
a trusted proxy); the scope is :mod:`services.analytics.scope`'s, read per request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, status

from services.analytics.aggregates import Attribution
from services.analytics.scope import Scope, scope_of
from services.analytics.signin import Principal
from services.analytics.staff import Directory


@dataclass(frozen=True)
class Caller:
    principal: Principal
    scope: Scope
    csrf: str | None = None  # the session's CSRF token, for the forms of a page

    @property
    def admin(self) -> bool:
        return self.principal.can_admin

    def require_admin(self) -> None:
        if not self.admin:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "for admins only")

    def require_everything(self, what: str) -> None:
        """Figures that are not split by owner (rules, journeys, the unowned) are for callers
        who see everything."""
        if not self.scope.everything:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"{what} are for admins")


def caller_dependency(
    principal: Any,
    staff: Directory,
    subjects: Attribution,
    csrf: Callable[[Request], str | None] = lambda request: None,
) -> Callable[..., Awaitable[Caller]]:
    """A dependency giving the :class:`Caller`, from ``principal`` (the ``Depends`` of the
    authenticator: the API's, 401 without credentials, or the dashboard's, a redirect)."""

    async def caller(request: Request, who: Principal = principal) -> Caller:
        scope = await scope_of(who.role, who.staff_id, staff, subjects)
        return Caller(who, scope, csrf(request))

    return caller
