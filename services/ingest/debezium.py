"""Debezium's change-event envelope, as its PostgreSQL and MySQL connectors write it to Kafka:
``before``, ``after``, ``op`` (``c`` create, ``u`` update, ``d`` delete, ``r`` snapshot read,
``t`` truncate), ``source`` (connector, database, schema, table, position) and ``ts_ms`` — with
the JSON converter's ``schema``/``payload`` wrapping (``schemas.enable=true``) or without it.

A **tombstone** (a record without a value, which Debezium writes after a delete for log
compaction) is nothing to map: :func:`read_change` answers None. A truncate names no row and is
ignored too. What a mapping sees of a change is :meth:`Change.document`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

OPERATIONS = {"c": "create", "u": "update", "d": "delete", "r": "read"}


class NotAChange(ValueError):
    """The record is not a Debezium change event (it is dead-lettered with this reason)."""


@dataclass(frozen=True, slots=True)
class Change:
    op: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: dict[str, Any]
    ts_ms: int | None
    key: Any

    @property
    def row(self) -> dict[str, Any]:
        """The row as it is after the change; for a delete, as it was."""
        found = self.before if self.op == "d" else self.after
        return found or {}

    def document(self) -> dict[str, Any]:
        """What a mapping's expressions read: ``op``, ``row``, ``before``, ``after``,
        ``source``, ``ts_ms`` and ``key`` (the record key's payload, the row's primary key)."""
        return {
            "op": self.op,
            "row": self.row,
            "before": self.before,
            "after": self.after,
            "source": self.source,
            "ts_ms": self.ts_ms,
            "key": self.key,
        }

    def identity(self) -> str:
        """The same change always has the same identity, whichever record carries it (a
        connector restarted re-sends what it had not committed): the table, the position in
        the database's log (PostgreSQL's ``lsn``; MySQL's ``file``, ``pos`` and ``row``), the
        operation and the primary key — a snapshot reads many rows at one position."""
        s = self.source
        table = ".".join(str(s.get(k, "")) for k in ("db", "schema", "table"))
        position = s.get("lsn") or f"{s.get('file', '')}:{s.get('pos', '')}:{s.get('row', '')}"
        if self.op == "r":
            position = f"snapshot:{s.get('snapshot', '')}:{self.ts_ms}"
        key = orjson.dumps(self.key, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(f"{table}|{position}|{self.op}|".encode() + key).hexdigest()
        return digest[:32]


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict) and "payload" in value and "schema" in value:
        return value["payload"]
    return value


def read_change(value: bytes | None, key: bytes | None = None) -> Change | None:
    """The change a record carries; None for a tombstone or a truncate; raises
    :class:`NotAChange` for anything else."""
    if value is None or value == b"":
        return None
    try:
        body = _unwrap(orjson.loads(value))
        parsed_key = _unwrap(orjson.loads(key)) if key else None
    except orjson.JSONDecodeError as exc:
        raise NotAChange(f"not valid JSON: {exc.msg}") from None
    if body is None:
        return None  # the JSON converter's tombstone with schemas: {"schema": …, "payload": null}
    if not isinstance(body, dict) or "op" not in body:
        raise NotAChange("not a Debezium change event: no 'op'")
    op = body["op"]
    if op == "t":
        return None
    if op not in OPERATIONS:
        raise NotAChange(f"unknown Debezium operation {str(op)[:10]!r}")
    before, after, source = body.get("before"), body.get("after"), body.get("source") or {}
    for name, part in (("before", before), ("after", after), ("source", source)):
        if part is not None and not isinstance(part, dict):
            raise NotAChange(f"'{name}' is not an object")
    if (op == "d" and before is None) or (op != "d" and after is None):
        raise NotAChange(f"a {OPERATIONS[op]} without its row")
    ts = body.get("ts_ms")
    return Change(op, before, after, source, ts if isinstance(ts, int) else None, parsed_key)
