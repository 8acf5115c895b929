"""An in-memory stand-in for the few ``AsyncCollection`` operations analytics' stores use, so
unit tests run the real claims, offset guards and read models (services/analytics/aggregates.py,
readmodels.py, conversions.py) without a server: unordered bulk writes of ``InsertOne``,
``UpdateOne`` (``$inc``, ``$set``, ``$min``, ``$max``, ``$setOnInsert``, upserts; also as
``update_one``) and
``ReplaceOne`` with duplicate keys reported as code 11000; ``find`` (equality, ``$in``,
``$exists``, ranges; ``sort``, ``limit``), ``find_one``, ``insert_one``, ``update_many`` and
``count_documents``. Integration tests check the same code against the real server."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

MISSING = object()


def _get(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = copy.deepcopy(value)


def _matches(doc: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    for path, wanted in query.items():
        value = _get(doc, path)
        if isinstance(wanted, Mapping) and any(k.startswith("$") for k in wanted):
            for op, arg in wanted.items():
                if op == "$exists":
                    ok = (value is not MISSING) == bool(arg)
                elif op == "$in":
                    ok = value is not MISSING and value in arg
                elif value is MISSING:
                    ok = False
                elif op == "$gte":
                    ok = value >= arg
                elif op == "$gt":
                    ok = value > arg
                elif op == "$lt":
                    ok = value < arg
                elif op == "$lte":
                    ok = value <= arg
                else:
                    raise NotImplementedError(op)
                if not ok:
                    return False
        elif (None if value is MISSING else value) != wanted:
            return False
    return True


def _update(doc: dict[str, Any], update: Mapping[str, Any], inserting: bool) -> None:
    for op, fields in update.items():
        for path, arg in fields.items():
            old = _get(doc, path)
            if op == "$set" or (op == "$setOnInsert" and inserting):
                _set(doc, path, arg)
            elif op == "$inc":
                _set(doc, path, (0 if old is MISSING else old) + arg)
            elif op == "$min":
                if old is MISSING or arg < old:
                    _set(doc, path, arg)
            elif op == "$max":
                if old is MISSING or arg > old:
                    _set(doc, path, arg)
            elif op != "$setOnInsert":
                raise NotImplementedError(op)


@dataclass
class Result:
    inserted_count: int = 0
    matched_count: int = 0
    modified_count: int = 0
    upserted_count: int = 0


class Cursor:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self._docs = docs

    def sort(self, key: str, direction: int = 1) -> Cursor:
        self._docs.sort(key=lambda d: _get(d, key), reverse=direction < 0)
        return self

    def limit(self, n: int) -> Cursor:
        self._docs = self._docs[:n] if n else self._docs
        return self

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        for doc in self._docs:
            yield copy.deepcopy(doc)


class MemoryCollection:
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.docs: dict[Any, dict[str, Any]] = {}
        self.writes = 0  # bulk writes that wrote something

    def snapshot(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.docs[k]) for k in sorted(self.docs, key=str)]

    async def create_index(self, *args: Any, **kwargs: Any) -> str:
        return str(kwargs.get("name", "index"))

    def find(self, query: Mapping[str, Any], projection: Any = None) -> Cursor:
        return Cursor([d for d in self.docs.values() if _matches(d, query)])

    async def find_one(
        self, query: Mapping[str, Any], projection: Any = None
    ) -> dict[str, Any] | None:
        async for doc in self.find(query):
            return doc
        return None

    async def insert_one(self, doc: Mapping[str, Any]) -> Result:
        try:
            self._insert(doc)
        except KeyError:
            raise DuplicateKeyError("duplicate key", 11000) from None
        return Result(inserted_count=1)

    async def update_one(
        self, query: Mapping[str, Any], update: Mapping[str, Any], upsert: bool = False
    ) -> Result:
        return await self.bulk_write([UpdateOne(dict(query), dict(update), upsert=upsert)])

    async def count_documents(self, query: Mapping[str, Any]) -> int:
        return sum(1 for d in self.docs.values() if _matches(d, query))

    async def update_many(self, query: Mapping[str, Any], update: Mapping[str, Any]) -> Result:
        found = [d for d in self.docs.values() if _matches(d, query)]
        for doc in found:
            _update(doc, update, inserting=False)
        return Result(matched_count=len(found), modified_count=len(found))

    async def bulk_write(self, requests: Iterable[Any], ordered: bool = True) -> Result:
        result, errors = Result(), []
        for index, request in enumerate(requests):
            try:
                self._one(request, result)
            except KeyError:
                errors.append({"index": index, "code": 11000, "errmsg": "duplicate key"})
                if ordered:
                    break
        self.writes += 1
        if errors:
            raise BulkWriteError({"writeErrors": errors, "nInserted": result.inserted_count})
        return result

    def _insert(self, doc: Mapping[str, Any]) -> None:
        if doc["_id"] in self.docs:
            raise KeyError(doc["_id"])
        self.docs[doc["_id"]] = copy.deepcopy(dict(doc))

    def _one(self, request: Any, result: Result) -> None:
        if isinstance(request, InsertOne):
            self._insert(request._doc)
            result.inserted_count += 1
            return
        query, body, upsert = request._filter, request._doc, bool(request._upsert)
        found = next((d for d in self.docs.values() if _matches(d, query)), None)
        if found is not None:
            result.matched_count += 1
            if isinstance(request, ReplaceOne):
                self.docs[found["_id"]] = {"_id": found["_id"], **copy.deepcopy(body)}
            else:
                _update(found, body, inserting=False)
            return
        if not upsert:
            return
        new: dict[str, Any] = {
            k: copy.deepcopy(v)
            for k, v in query.items()
            if "." not in k and not (isinstance(v, Mapping) and any(o[0] == "$" for o in v))
        }
        if isinstance(request, UpdateOne):
            _update(new, body, inserting=True)
        else:
            new |= copy.deepcopy(body)
        self._insert(new)
        result.upserted_count += 1
