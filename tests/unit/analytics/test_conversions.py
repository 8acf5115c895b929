"""services/analytics/conversions.py: which reminded contract terms a contract's document shows
converted, at what time, under which identity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.analytics.conversions import converted
from services.analytics.facts import Fact

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
