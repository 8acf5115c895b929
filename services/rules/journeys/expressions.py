"""The one expression language of journeys: a small, sandboxed subset of CEL.

Conditions (``when``, ``segment``, ``goal``, ``branch``) are `CEL <https://cel.dev>`_
expressions, parsed and evaluated by ``cel-python``: no statements, no assignments, no access to
anything but the values handed in. On top of CEL's own guarantees a definition is refused when an
expression

* names anything but ``subject``, ``event`` and ``now`` (:data:`NAMES`),
* reads a field of ``subject`` that is not documented (:data:`SUBJECT_FIELDS`), or any field
  whose name begins with ``_``,
* calls a function or method that is not in :data:`FUNCTIONS` / :data:`METHODS`,
* uses a comprehension macro (``all``, ``exists``, ``exists_one``, ``map``, ``filter``): there
  are no loops of any kind, so every condition runs in time linear in its length,
* is longer than :data:`MAX_LENGTH` characters.

The values are plain data: ``subject`` is :func:`subject_view` of the subject's state,
``event`` the triggering event's payload (its fields, as in ``docs/schemas``), ``now`` the
moment of evaluation. Times are CEL timestamps (``subject.last_order_at < now -
duration("720h")``), dates are ``"YYYY-MM-DD"`` strings, money is a double.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from services.rules.state import SubjectState

NAMES = frozenset({"subject", "event", "now"})
FUNCTIONS = frozenset(
    {"size", "int", "uint", "double", "string", "bool", "timestamp", "duration", "has", "matches"}
)
METHODS = frozenset(
    {
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "size",
        "getFullYear",
        "getMonth",
        "getDayOfMonth",
        "getDayOfWeek",
        "getHours",
    }
)
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
SUBJECT_FIELDS = frozenset(
    {
        "id",
        "kind",
        "name",
        "timezone",
        "locale",
        "owner",
        "region",
        "tier",
        "tags",
        "attributes",
        "orders",
        "last_order_at",
        "assigned_at",
        "open_tasks",
        "at_risk",
        "churn_risk",
        "order_value",
        "first_order_at",
        "last_interaction_at",
        "birthday",
        "customer_since",
        "channel",
        "marketing_opt_in",
        "contracts",
        "active",
    }
)  # the keys of :func:`subject_view`
MAX_LENGTH = 1000

_ENV = celpy.Environment()


class ExpressionError(ValueError):
    """An expression that does not parse or uses something outside the sandbox."""


@dataclass(frozen=True)
class Condition:
    """A compiled condition; :meth:`test` answers ``True`` only for a CEL ``true`` (an error —
    a missing field, ``null > 1`` — is ``False`` and is reported through ``errors``)."""

    source: str
    program: Any
    names: frozenset[str] = NAMES  # the names it reads: only those need building

    def test(self, values: Mapping[str, Any]) -> bool:
        try:
            result = self.program.evaluate(values)
        except Exception as exc:  # CEL's own errors, and any the evaluator itself raises
            raise EvaluationError(f"{self.source}: {exc}") from None
        if isinstance(result, CELEvalError):
            raise EvaluationError(f"{self.source}: {result.args[0] if result.args else result}")
        return result is True or (isinstance(result, celtypes.BoolType) and bool(result))


class EvaluationError(RuntimeError):
    """A condition that failed at run time (counted per journey, taken as false)."""


def check(source: str) -> None:
    """Raise :class:`ExpressionError` naming every problem with ``source`` (at once)."""
    compile_condition(source)


@lru_cache(maxsize=4096)
def compile_condition(source: str) -> Condition:
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"longer than {MAX_LENGTH} characters")
    try:
        tree = _ENV.compile(source)
    except CELParseError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "does not parse"
        raise ExpressionError(f"does not parse: {first}") from None
    except Exception as exc:  # the parser's other errors (deep nesting …): refused all the same
        raise ExpressionError(f"does not parse: {type(exc).__name__}") from None
    problems = sorted(_problems(tree))
    if problems:
        raise ExpressionError("; ".join(problems))
    return Condition(source, _ENV.program(tree), frozenset(_names(tree)))


def _names(tree: lark.Tree[Any]) -> set[str]:
    return {
        str(node.children[0].children[0])
        for node in tree.iter_subtrees()
        if node.data == "primary"
        and node.children
        and isinstance(node.children[0], lark.Tree)
        and node.children[0].data == "ident"
    }


def _problems(tree: lark.Tree[Any]) -> set[str]:
    found: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "primary" and node.children:
            child = node.children[0]
            if isinstance(child, lark.Tree) and child.data == "ident":
                name = str(child.children[0])
                if name not in NAMES:
                    found.add(f"unknown name {name!r} (use {', '.join(sorted(NAMES))})")
            elif isinstance(child, lark.Tree) and child.data == "ident_arg":
                name = str(child.children[0])
                if name not in FUNCTIONS:
                    found.add(f"function {name!r} is not allowed")
            elif isinstance(child, lark.Tree) and child.data == "dot_ident_arg":
                found.add("qualified function calls are not allowed")
        elif node.data == "member_dot" and len(node.children) > 1:
            name = str(node.children[1])
            if name.startswith("_"):
                found.add(f"field {name!r} is not allowed")
            elif _is_name(node.children[0], "subject") and name not in SUBJECT_FIELDS:
                found.add(f"subject has no field {name!r} (see docs/journeys.md)")
        elif node.data == "member_dot_arg" and len(node.children) > 1:
            name = str(node.children[1])
            if name in MACROS:
                found.add(f"{name}() is a loop: not allowed")
            elif name not in METHODS:
                found.add(f"method {name!r} is not allowed")
    return found


def _is_name(node: Any, name: str) -> bool:
    """Whether ``node`` (a ``member``) is the bare name ``name``."""
    if not (isinstance(node, lark.Tree) and node.data == "member" and node.children):
        return False
    primary = node.children[0]
    if not (isinstance(primary, lark.Tree) and primary.data == "primary" and primary.children):
        return False
    ident = primary.children[0]
    return (
        isinstance(ident, lark.Tree)
        and ident.data == "ident"
        and bool(ident.children)
        and str(ident.children[0]) == name
    )


def to_cel(value: Any) -> Any:
    """Plain data as CEL values: datetimes as timestamps, dates as ISO strings, decimals as
    doubles, mappings and sequences recursively."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, datetime):
        return celtypes.TimestampType(value)
    if isinstance(value, date):
        return celtypes.StringType(value.isoformat())
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float | Decimal):
        return celtypes.DoubleType(float(value))
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, Mapping):
        return celtypes.MapType({celtypes.StringType(k): to_cel(v) for k, v in value.items()})
    if isinstance(value, list | tuple | set | frozenset):
        return celtypes.ListType([to_cel(v) for v in value])
    return celtypes.StringType(str(value))


def subject_view(state: SubjectState) -> dict[str, Any]:
    """What ``subject`` holds in a condition (and in an inline message): the documented fields
    of a customer or a channel, always present (``null`` when unknown)."""
    customer, channel = state.customer, state.channel
    part = state.maintained
    view: dict[str, Any] = {
        "id": state.id,
        "kind": state.kind,
        "name": part.name if part else None,
        "timezone": state.timezone,
        "locale": part.locale if part else "en",
        "owner": state.owner_id,
        "region": part.region if part else None,
        "tier": part.tier if part else None,
        "tags": sorted({*(customer.tags if customer else []), *(part.labels if part else [])}),
        "attributes": {
            **(part.attributes if part else {}),
            **(part.label_attributes if part else {}),
        },
        "orders": part.orders if part else 0,
        "last_order_at": part.last_order_at if part else None,
        "assigned_at": part.assigned_at if part else None,
        "open_tasks": len(state.tasks),
        # customers only
        "at_risk": customer.at_risk if customer else False,
        "churn_risk": customer.churn_risk if customer else None,
        "order_value": customer.order_value if customer else None,
        "first_order_at": customer.first_order_at if customer else None,
        "last_interaction_at": customer.last_interaction_at if customer else None,
        "birthday": customer.birthday if customer else None,
        "customer_since": customer.customer_since if customer else None,
        "channel": customer.channel_id if customer else None,
        "marketing_opt_in": customer.marketing_opt_in if customer else None,
        "contracts": [
            {
                "id": c.contract_id,
                "start_date": c.start_date,
                "end_date": c.end_date,
                "status": c.status,
                "value": c.value,
                "currency": c.currency,
                "auto_renew": c.auto_renew,
            }
            for c in state.contracts.values()
        ],
        # channels only
        "active": channel.active if channel else None,
    }
    return view


def values(
    state: SubjectState,
    now: datetime,
    event: Mapping[str, Any] | None = None,
    subject: Any = None,
) -> dict[str, Any]:
    """The activation of a condition: ``subject`` (``subject``: its CEL value, when the caller
    has it already), ``event`` (an empty map when there is none) and ``now``."""
    return {
        "subject": subject if subject is not None else to_cel(subject_view(state)),
        "event": to_cel(dict(event or {})),
        "now": celtypes.TimestampType(now),
    }
