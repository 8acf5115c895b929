"""Who may see what: the part of analytics a signed-in person (or a key bound to a member of
staff) may read.

* an **admin** (and a machine's key without a member of staff) sees everything;
* a **manager** sees themselves and everyone under them through the manager chain: those
  owners' figures, customers and channels, and their teams' figures;
* an **owner** sees their own figures, customers and channels — not their team's (that is
  their colleagues' data too).

Figures are kept per owner, channel and team (and per rule, kind, tier and journey, which are
not split by owner): a scoped caller reads the first three, for the values in their scope only;
"all" is, for them, the sum of their owners. Every API answer and dashboard page is filtered
through :class:`Scope`: an out-of-scope ``value`` is refused (403), a listing is cut to the
scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import HTTPException, status

from services.analytics.aggregates import Attribution
from services.analytics.staff import Directory, teams_within, under

SCOPED_DIMENSIONS = ("owner", "channel", "team")  # what a scoped caller may read by


@dataclass(frozen=True)
class Scope:
    everything: bool
    staff: frozenset[str] = field(default_factory=frozenset)
    teams: frozenset[str] = field(default_factory=frozenset)
    channels: frozenset[str] = field(default_factory=frozenset)
    customers: frozenset[str] = field(default_factory=frozenset)

    def values(self, dim: str) -> frozenset[str] | None:
        """The values of ``dim`` in scope (None: every value)."""
        if self.everything:
            return None
        return {"owner": self.staff, "team": self.teams, "channel": self.channels}.get(
            dim, frozenset()
        )

    def allows(self, dim: str, value: str | None) -> bool:
        found = self.values(dim)
        return found is None or (value is not None and value in found)

    def owns(self, owner: str | None) -> bool:
        return self.everything or (owner is not None and owner in self.staff)

    def sees(self, subject: str) -> bool:
        """A ``customer:`` or ``channel:`` subject."""
        if self.everything:
            return True
        kind, _, ident = subject.partition(":")
        return ident in (self.customers if kind == "customer" else self.channels)

    def view(self, dim: str, value: str | None) -> tuple[str, frozenset[str] | None]:
        """The buckets to read for ``dim`` and ``value``: the dimension and the values of it
        (None: all of them). Raises 403 for a dimension or value outside the scope."""
        if self.everything:
            return dim, None if value is None else frozenset({value})
        if dim == "all":
            return "owner", self.staff
        if dim not in SCOPED_DIMENSIONS:
            raise out_of_scope(f"figures by {dim} are for admins")
        allowed = self.values(dim) or frozenset()
        if value is None:
            return dim, allowed
        if value not in allowed:
            raise out_of_scope(f"{dim} {value!r} is not in your scope")
        return dim, frozenset({value})


EVERYTHING = Scope(everything=True)


def out_of_scope(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail)


async def scope_of(
    role: str, staff_id: str | None, directory: Directory, subjects: Attribution
) -> Scope:
    """The scope of a caller of ``role`` who is ``staff_id``, now (read per request: a change
    of manager or owner counts at once)."""
    if role == "admin" or staff_id is None:
        return EVERYTHING
    me = staff_id
    if role == "manager":
        members = await directory.everyone()
        staff = under(me, members)
        teams = teams_within(staff, members)
    else:
        staff, teams = frozenset({me}), frozenset()
    return Scope(
        everything=False,
        staff=staff,
        teams=teams,
        channels=frozenset(await subjects.owned("channel", staff)),
        customers=frozenset(await subjects.owned("customer", staff)),
    )
