"""services/analytics/conversions.py: which reminded contract terms a contract's document shows
converted, at what time, under which identity."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import BulkWriteError

from services.analytics.aggregates import Placed
from services.analytics.conversions import Conversions, converted
from services.analytics.facts import Fact, Touch

REMINDED = datetime(2026, 11, 1, 9, tzinfo=UTC)  # the first reminder of the 2026-11-30 term
SUBJECT = "customer:C-1"


def contract(
    reminded: dict[str, datetime],
    renewed: dict[str, datetime],
    contract_id: str = "K-1",
    subject: str | None = SUBJECT,
) -> dict[str, Any]:
    """One contract's document as :class:`Conversions` writes it."""
    doc: dict[str, Any] = {"_id": contract_id, "reminded": reminded, "renewed": renewed}
    if subject is not None:
        doc["subject"] = subject
    return doc


def conversion(at: datetime, contract_id: str = "K-1", end: str = "2026-11-30") -> Fact:
    return Fact(f"converted:{contract_id}:{end}", at, {"renewals.converted": 1}, SUBJECT)


def test_a_renewal_to_a_later_end_after_the_reminder_converts_the_term() -> None:
    renewed_at = REMINDED + timedelta(days=3)
    doc = contract({"2026-11-30": REMINDED}, {"2027-11-30": renewed_at})
    assert converted(doc) == [conversion(renewed_at)]


def test_a_renewal_at_the_very_moment_of_the_reminder_converts() -> None:
    doc = contract({"2026-11-30": REMINDED}, {"2027-11-30": REMINDED})
    assert converted(doc) == [conversion(REMINDED)]


def test_a_renewal_before_the_reminder_does_not_convert() -> None:
    doc = contract({"2026-11-30": REMINDED}, {"2027-11-30": REMINDED - timedelta(microseconds=1)})
    assert converted(doc) == []


@pytest.mark.parametrize(
    "new_end",
    ["2026-11-30", "2026-11-29", "2025-11-30"],
    ids=["same end", "a day earlier", "a year earlier"],
)
def test_a_renewal_to_the_same_or_an_earlier_end_does_not_convert(new_end: str) -> None:
    doc = contract({"2026-11-30": REMINDED}, {new_end: REMINDED + timedelta(days=1)})
    assert converted(doc) == []


def test_the_day_after_the_end_is_later_whatever_the_calendar() -> None:
    # dates compare as dates, not as text: 2027-01-01 is later than 2026-12-31
    doc = contract({"2026-12-31": REMINDED}, {"2027-01-01": REMINDED + timedelta(hours=1)})
    assert converted(doc) == [conversion(REMINDED + timedelta(hours=1), end="2026-12-31")]


def test_of_several_renewals_the_earliest_qualifying_one_is_when_it_converted() -> None:
    before = REMINDED - timedelta(days=1)  # to a later end, but before the reminder
    first = REMINDED + timedelta(days=2)
    second = REMINDED + timedelta(days=5)
    doc = contract(
        {"2026-11-30": REMINDED},
        {
            "2027-11-30": second,
            "2028-11-30": before,
            "2026-11-30": REMINDED + timedelta(hours=1),  # same end: does not count
            "2027-05-31": first,
        },
    )
    assert converted(doc) == [conversion(first)]


def test_a_reminded_term_without_any_renewal_does_not_convert() -> None:
    assert converted(contract({"2026-11-30": REMINDED}, {})) == []
    assert converted({"_id": "K-1", "subject": SUBJECT, "reminded": {"2026-11-30": REMINDED}}) == []


def test_a_renewal_nobody_was_reminded_of_converts_nothing() -> None:
    assert converted(contract({}, {"2027-11-30": REMINDED})) == []
    assert converted({"_id": "K-1", "renewed": {"2027-11-30": REMINDED}}) == []


def test_each_reminded_term_of_a_contract_converts_on_its_own() -> None:
    second_reminded = datetime(2027, 11, 1, 9, tzinfo=UTC)
    renewed_once = datetime(2026, 11, 20, tzinfo=UTC)  # 2026-11-30 -> 2027-11-30
    renewed_twice = datetime(2027, 11, 25, tzinfo=UTC)  # 2027-11-30 -> 2028-11-30
    doc = contract(
        {
            "2027-11-30": second_reminded,
            "2026-11-30": REMINDED,
            "2028-11-30": datetime(2028, 11, 1, tzinfo=UTC),  # not renewed (yet)
        },
        {"2028-11-30": renewed_twice, "2027-11-30": renewed_once},
    )
    assert converted(doc) == [
        # the first term converted with the first renewal, the earliest after its reminder
        conversion(renewed_once, end="2026-11-30"),
        # the second term's reminder came after the first renewal: only the second counts
        conversion(renewed_twice, end="2027-11-30"),
    ]


def test_the_fact_is_one_renewal_converted_about_the_documents_subject() -> None:
    renewed_at = REMINDED + timedelta(days=1)
    doc = contract({"2026-11-30": REMINDED}, {"2027-11-30": renewed_at}, subject="customer:C-9")
    (fact,) = converted(doc)
    assert fact.identity == "converted:K-1:2026-11-30"
    assert fact.counters == {"renewals.converted": 1}
    assert fact.subject == "customer:C-9"
    assert fact.dims == {}  # attributed by its subject when counted


def test_a_document_without_a_subject_gives_a_fact_without_one() -> None:
    doc = contract({"2026-11-30": REMINDED}, {"2027-11-30": REMINDED}, subject=None)
    (fact,) = converted(doc)
    assert fact.subject is None


@pytest.mark.parametrize("contract_id", ["K:1", "acme:2025-01-01:K-1", "a:b:c"])
def test_a_contract_id_with_colons_is_kept_whole_in_the_identity(contract_id: str) -> None:
    renewed_at = REMINDED + timedelta(days=1)
    doc = contract({"2026-11-30": REMINDED}, {"2027-11-30": renewed_at}, contract_id)
    assert converted(doc) == [conversion(renewed_at, contract_id)]
    assert converted(doc)[0].identity == f"converted:{contract_id}:2026-11-30"


def test_the_same_document_read_again_shows_the_same_conversions() -> None:
    # a redelivered record reads the document again: the fact must be identical to count once
    doc = contract({"2026-11-30": REMINDED}, {"2027-11-30": REMINDED + timedelta(days=1)})
    assert converted(doc) == converted(dict(doc))
    assert len(converted(doc)) == 1


AT = datetime(2026, 11, 20, 9, tzinfo=UTC)


class RacingCollection:
    """Stands in for the contracts collection: the first bulk write loses an upsert race to
    another replica (duplicate key), or fails with ``code``; documents are kept in memory."""

    def __init__(self, code: int) -> None:
        self.code, self.writes = code, 0
        self.docs: dict[str, dict[str, Any]] = {}

    async def bulk_write(self, ops: Any, ordered: bool = True) -> None:
        self.writes += 1
        if self.writes == 1:
            raise BulkWriteError({"writeErrors": [{"code": self.code, "errmsg": "race"}]})
        for op in ops:
            doc = self.docs.setdefault(op._filter["_id"], {"_id": op._filter["_id"]})
            doc.setdefault("subject", op._doc["$setOnInsert"]["subject"])
            for slot, at in op._doc["$min"].items():
                kind, end = slot.split(".")
                doc.setdefault(kind, {})
                doc[kind][end] = min(doc[kind].get(end, at), at)

    def find(self, query: Any) -> Any:
        wanted = query["_id"]["$in"]

        async def rows() -> Any:
            for key in wanted:
                if key in self.docs:
                    yield self.docs[key]

        return rows()


async def test_an_upsert_race_with_another_replica_is_written_again_and_still_converts() -> None:
    collection = RacingCollection(code=11000)
    carrier = Placed(Fact("event:x", AT, {}), "events", 0, 7)
    touches = [
        (Touch("reminded", "K-1", date(2026, 11, 30), AT, "customer:C-1"), carrier),
        (
            Touch("renewed", "K-1", date(2027, 11, 30), AT + timedelta(days=2), "customer:C-1"),
            carrier,
        ),
    ]
    found = await Conversions(collection).record(touches)  # type: ignore[arg-type]
    assert collection.writes == 2
    assert [(p.fact.identity, p.offset) for p in found] == [("converted:K-1:2026-11-30", 7)]


async def test_any_other_write_error_is_not_swallowed() -> None:
    collection = RacingCollection(code=121)  # document failed validation
    carrier = Placed(Fact("event:x", AT, {}), "events", 0, 7)
    touch = Touch("reminded", "K-1", date(2026, 11, 30), AT, "customer:C-1")
    with pytest.raises(BulkWriteError):
        await Conversions(collection).record([(touch, carrier)])  # type: ignore[arg-type]
    assert collection.writes == 1
