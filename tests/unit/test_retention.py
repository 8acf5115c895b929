"""Retention tied to the replay horizon: the setting every service reads, the topics' layout,
the TTL index specs of the stores, when a ledger entry starts to expire, and which analytics
claims never expire (shared/retention.py and its users)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest
from pydantic import ValidationError
from pymongo.asynchronous.collection import AsyncCollection

from services.analytics.aggregates import Aggregates
from services.analytics.conversions import converted
from services.analytics.facts import Fact, claim_expires, read
from services.analytics.settings import AnalyticsSettings
from services.ingest.dedup import MongoDedupStore
from services.ingest.settings import IngestSettings
from services.notifier.entry import FINAL, Entry
from services.notifier.ledger import MongoLedger, _doc, _saved
from services.notifier.settings import NotifierSettings
from services.notifier.tasks import TaskStore
from services.rules.settings import RulesSettings
from shared.events.actions import ActionMessage
from shared.events.envelope import CanonicalEvent
from shared.events.types import resolve_type
from shared.kafka.topics import align_configs, config_changes, planned_topics, topic_layout
from shared.mongo import Document
from shared.retention import (
    DAY_S,
    GRACE_DAYS,
    TtlIndex,
    guard_days,
    guard_period,
    topic_retention_ms,
)
from shared.settings import RetentionSettings, TopicSettings

NOW = datetime(2026, 11, 2, 10, 15, tzinfo=UTC)
DAY_MS = DAY_S * 1000
NOT_A_COLLECTION = cast(AsyncCollection[Document], object())  # the specs need no server


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("UPKEEP_"):
            monkeypatch.delenv(name)


# --- the setting ---------------------------------------------------------------------------


def test_the_horizon_defaults_to_400_days_for_every_service() -> None:
    for settings in (IngestSettings(), RulesSettings(), NotifierSettings(), AnalyticsSettings()):
        assert settings.retention.replay_horizon_days == 400


def test_one_variable_sets_the_horizon_of_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPKEEP_REPLAY_HORIZON_DAYS", "500")
    monkeypatch.setenv("UPKEEP_INGEST_REPLAY_HORIZON_DAYS", "1")  # not a setting: ignored
    for settings in (IngestSettings(), RulesSettings(), NotifierSettings(), AnalyticsSettings()):
        assert settings.retention.replay_horizon_days == 500
    assert RetentionSettings().replay_horizon_days == 500


@pytest.mark.parametrize("days", ["29", "0", "-1", "3651", "a year"])
def test_a_horizon_shorter_than_the_dead_letters_or_absurd_is_refused(
    monkeypatch: pytest.MonkeyPatch, days: str
) -> None:
    monkeypatch.setenv("UPKEEP_REPLAY_HORIZON_DAYS", days)
    with pytest.raises(ValidationError):
        RetentionSettings()


def test_the_former_dedup_retention_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPKEEP_INGEST_DEDUP_RETENTION_DAYS", "30")
    with pytest.raises(ValidationError, match="UPKEEP_REPLAY_HORIZON_DAYS"):
        IngestSettings()


def test_a_marketing_cap_window_longer_than_the_ledger_keeps_entries_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UPKEEP_REPLAY_HORIZON_DAYS", "60")
    monkeypatch.setenv("UPKEEP_NOTIFIER_MARKETING_CAP_DAYS", "60")
    assert NotifierSettings().marketing_cap_days == 60
    monkeypatch.setenv("UPKEEP_NOTIFIER_MARKETING_CAP_DAYS", "61")
    with pytest.raises(ValidationError, match="MARKETING_CAP_DAYS"):
        NotifierSettings()


def test_hour_buckets_have_their_own_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert AnalyticsSettings().hour_bucket_days == 400
    monkeypatch.setenv("UPKEEP_ANALYTICS_HOUR_BUCKET_DAYS", "45")
    assert AnalyticsSettings().hour_bucket_days == 45
    monkeypatch.setenv("UPKEEP_ANALYTICS_HOUR_BUCKET_DAYS", "0")
    with pytest.raises(ValidationError):
        AnalyticsSettings()


# --- the topics ----------------------------------------------------------------------------


def configs(horizon: int) -> dict[str, dict[str, str]]:
    return {attr: config for attr, (_, config) in topic_layout(horizon).items()}


def test_the_topics_a_replay_reads_keep_the_horizon() -> None:
    layout = configs(123)
    for attr in ("events", "actions", "deliveries"):
        assert layout[attr]["retention.ms"] == str(123 * DAY_MS)
        assert layout[attr]["segment.ms"] == str(7 * DAY_MS)
    assert configs(400)["events"]["retention.ms"] == "34560000000"


def test_no_topic_is_left_to_the_brokers_default_retention() -> None:
    layout = configs(400)
    assert layout["raw_customer"]["retention.ms"] == str(7 * DAY_MS)
    assert layout["raw_channel"]["retention.ms"] == str(7 * DAY_MS)
    assert layout["dlq"]["retention.ms"] == str(30 * DAY_MS)
    assert layout["rules_ticks"]["cleanup.policy"] == "compact"
    assert "retention.ms" not in layout["rules_ticks"]  # compacted: the last entry stays
    for attr, config in layout.items():
        assert "retention.ms" in config or config.get("cleanup.policy") == "compact", attr
    # every topic the services use is planned, with its configuration
    names = {t.name: t for t in planned_topics(TopicSettings(), horizon_days=123)}
    assert set(names) == set(TopicSettings().model_dump().values())
    assert names["upkeep.events.v1"].topic_configs["retention.ms"] == str(123 * DAY_MS)


@pytest.mark.parametrize("horizon", [30, 400, 3650])
def test_every_guard_outlives_the_records_it_guards(horizon: int) -> None:
    """A record lives at most retention.ms + segment.ms (Kafka deletes whole segments); its
    guard is written no earlier than the record and kept guard_days from then."""
    guard_s = guard_period(horizon).total_seconds()
    for attr, config in configs(horizon).items():
        if "retention.ms" not in config:
            continue
        lifetime_ms = int(config["retention.ms"]) + int(config.get("segment.ms", 7 * DAY_MS))
        assert lifetime_ms / 1000 < guard_s, attr
    assert guard_days(horizon) == horizon + GRACE_DAYS
    assert topic_retention_ms(horizon) == horizon * DAY_MS


def described(**entries: tuple[str | None, int]) -> list[dict[str, Any]]:
    """DescribeConfigs v1+ entries: name -> (value, config_source)."""
    return [
        {"config_names": name.replace("_", "."), "config_value": value, "config_source": source}
        for name, (value, source) in entries.items()
    ]


def test_a_topic_with_the_brokers_default_retention_is_aligned_keeping_its_other_overrides() -> (
    None
):
    wanted = configs(400)["events"]
    entries = described(
        retention_ms=(str(7 * DAY_MS), 5),  # DEFAULT_CONFIG
        segment_ms=(str(7 * DAY_MS), 5),
        max_message_bytes=("2000000", 1),  # someone's own override: DYNAMIC_TOPIC_CONFIG
        cleanup_policy=("delete", 5),
        ssl_secret=(None, 1),  # a sensitive value is not returned: never written back
    )
    differ, overrides = config_changes(entries, wanted)
    # segment.ms is the broker's default, equal to ours today: written all the same
    assert differ == {"retention.ms": str(7 * DAY_MS), "segment.ms": str(7 * DAY_MS)}
    assert overrides == {
        "max.message.bytes": "2000000",
        "retention.ms": str(400 * DAY_MS),
        "segment.ms": str(7 * DAY_MS),
    }


def test_a_topic_already_in_line_is_left_alone() -> None:
    wanted = configs(400)["rules_ticks"]
    entries = described(
        cleanup_policy=("compact", 1), segment_ms=(str(3600 * 1000), 1), retention_ms=("1", 5)
    )
    entries += [{"config_names": "min.cleanable.dirty.ratio", "config_value": "0.1"}]
    differ, _ = config_changes(entries, wanted)
    assert differ == {}


class FakeAdmin:
    """Answers DescribeConfigs with ``entries`` for every topic; records AlterConfigs."""

    def __init__(self, entries: list[dict[str, Any]], alter_error: int = 0) -> None:
        self.entries, self.alter_error = entries, alter_error
        self.altered: list[tuple[str, dict[str, str]]] = []

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        answer = [
            {"resource_name": r.name, "error_code": 0, "config_entries": self.entries}
            for r in resources
        ]
        return [Answer({"resources": answer})]

    async def alter_configs(self, resources: list[Any]) -> list[Any]:
        self.altered += [(r.name, dict(r.configs)) for r in resources]
        answer = [{"resource_name": r.name, "error_code": self.alter_error} for r in resources]
        return [Answer({"resources": [{**a, "error_message": "denied"} for a in answer]})]


class Answer:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def to_object(self) -> dict[str, Any]:
        return self.body


async def test_an_existing_topic_is_altered_with_its_own_overrides_kept() -> None:
    admin = FakeAdmin(described(retention_ms=(str(7 * DAY_MS), 5), compression_type=("zstd", 1)))
    planned = planned_topics(TopicSettings(), horizon_days=400)
    events = [t for t in planned if t.name == "upkeep.events.v1"]
    changed = await align_configs(cast(Any, admin), events)
    assert changed == {
        "upkeep.events.v1": f"retention.ms: {7 * DAY_MS} -> {400 * DAY_MS}, "
        f"segment.ms: - -> {7 * DAY_MS}"
    }
    assert admin.altered == [
        (
            "upkeep.events.v1",
            {
                "compression.type": "zstd",
                "retention.ms": str(400 * DAY_MS),
                "segment.ms": str(7 * DAY_MS),
            },
        )
    ]


async def test_a_broker_that_cannot_tell_a_topics_own_settings_is_left_alone() -> None:
    old_style = [{"config_names": "retention.ms", "config_value": "1", "is_default": False}]
    admin = FakeAdmin(old_style)  # DescribeConfigs v0: no config_source
    assert await align_configs(cast(Any, admin), planned_topics(TopicSettings())) == {}
    assert admin.altered == []


async def test_a_refused_change_is_a_warning_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = FakeAdmin(described(retention_ms=("1", 1)), alter_error=29)  # not authorised
    assert await align_configs(cast(Any, admin), planned_topics(TopicSettings())) == {}
    assert len(admin.altered) == 7
    assert "could not be changed" in caplog.text


# --- the TTL index specs -------------------------------------------------------------------


def test_dedup_claims_expire_a_guard_period_after_they_were_made() -> None:
    store = MongoDedupStore(NOT_A_COLLECTION, guard_days(400))
    assert store.ttl == TtlIndex("ttl_at", "at", 408 * DAY_S)
    assert store.ttl.options() == {"name": "ttl_at", "expireAfterSeconds": 408 * DAY_S}


def test_final_ledger_entries_and_done_tasks_expire_a_guard_period_after_they_ended() -> None:
    assert MongoLedger(NOT_A_COLLECTION).ttl == TtlIndex("ttl_final_at", "final_at", 408 * DAY_S)
    keep = guard_period(123)
    assert MongoLedger(NOT_A_COLLECTION, keep=keep).ttl.seconds == 131 * DAY_S
    assert TaskStore(NOT_A_COLLECTION, keep=keep).ttl == TtlIndex(
        "ttl_completed_at", "completed_at", 131 * DAY_S
    )


def test_fact_claims_expire_and_only_hour_buckets_do() -> None:
    facts, hours = Aggregates(
        NOT_A_COLLECTION, NOT_A_COLLECTION, keep_hours=timedelta(days=45)
    ).ttls
    assert facts == TtlIndex("ttl_claimed_at", "claimed_at", 408 * DAY_S)
    assert hours.field == "start"
    assert hours.seconds == 45 * DAY_S
    assert hours.options()["partialFilterExpression"] == {"g": "hour"}  # day buckets stay


# --- the ledger: an entry expires only once final ------------------------------------------


def entry(state: str = "pending") -> Entry:
    action = ActionMessage.model_validate(
        {
            "key": "birthday:C-1:2026",
            "rule": "birthday",
            "subject": "customer:C-1",
            "kind": "email",
            "recipient": {"kind": "customer", "id": "C-1"},
            "template": "birthday_greeting",
            "locale": "en",
            "due_at": NOW,
            "priority": "transactional",
            "data": {},
            "created_at": NOW,
        }
    )
    return Entry.model_validate(
        {
            "key": action.key,
            "action": action,
            "partition": 0,
            "offset": 0,
            "state": state,
            "next_at": NOW,
            "created_at": NOW,
        }
    )


@pytest.mark.parametrize("state", FINAL)
def test_the_save_that_makes_an_entry_final_starts_its_retention(state: str) -> None:
    update = _saved(entry(state), NOW)
    assert update["$set"]["final_at"] == NOW
    assert update["$set"]["state"] == state
    assert "$unset" not in update


def test_a_pending_save_never_gives_an_entry_a_retention() -> None:
    deferred = entry().model_copy(update={"deferrals": 1, "next_at": NOW + timedelta(hours=9)})
    update = _saved(deferred, NOW)
    assert "final_at" not in update["$set"]
    assert update["$unset"] == {"final_at": ""}  # and takes away any it had
    assert "final_at" not in _doc(entry())
    assert isinstance(_doc(entry("suppressed"))["final_at"], datetime)


# --- analytics: which claims never expire --------------------------------------------------


def record(type_name: str, event_id: str, **data: Any) -> bytes:
    model = resolve_type(type_name)
    assert model is not None
    event = CanonicalEvent.build(
        event_id=event_id,
        source="crm",
        payload=model.model_validate(data),
        time=NOW,
        source_offset="Z",
    )
    return event.to_json()


def facts_of(kind: str, body: bytes | dict[str, Any]) -> dict[str, Fact]:
    value = body if isinstance(body, bytes) else orjson.dumps(body)
    return {f.identity: f for f in read(kind, value).facts}


def action(key: str, days: int) -> dict[str, Any]:
    return {
        "key": key,
        "rule": "renewal",
        "subject": "customer:C-1",
        "kind": "email",
        "recipient": {"kind": "staff", "id": "S-1"},
        "template": "renewal_reminder",
        "locale": "en",
        "due_at": (NOW + timedelta(days=days)).isoformat(),
        "priority": "transactional",
        "data": {},
        "created_at": NOW.isoformat(),
    }


def delivery(key: str) -> dict[str, Any]:
    return {
        "id": f"{key}:sent",
        "key": key,
        "outcome": "sent",
        "reason": None,
        "rule": "renewal",
        "subject": "customer:C-1",
        "kind": "email",
        "recipient": {"kind": "staff", "id": "S-1"},
        "priority": "transactional",
        "template": "renewal_reminder",
        "attempts": 1,
        "due_at": NOW.isoformat(),
        "at": NOW.isoformat(),
    }


CUSTOMER = {"customer_id": "C-1", "name": "Acme", "timezone": "Asia/Shanghai"}
RENEWED = {
    "contract_id": "K-1",
    "customer_id": "C-1",
    "renewed_at": NOW.isoformat(),
    "new_end_date": "2027-11-30",
}
CANCELLED = {"contract_id": "K-1", "customer_id": "C-1", "cancelled_at": NOW.isoformat()}
TERM = "renewal:K-1:2026-11-30"

# pairs of distinct records that come in the normal course of things, about the same customer,
# contract or term: the identities they share must be claimed for good, or the second one
# would count again once the first one's claim had expired
RECURRING = {
    "a profile updated": (
        ("events", record("customer.upserted", "e-1", **CUSTOMER)),
        ("events", record("customer.upserted", "e-2", **{**CUSTOMER, "name": "Acme Ltd"})),
    ),
    "a renewal sent again by the CRM": (
        ("events", record("contract.renewed", "e-3", **RENEWED)),
        ("events", record("contract.renewed", "e-4", **RENEWED)),
    ),
    "a cancellation sent again": (
        ("events", record("contract.cancelled", "e-5", **CANCELLED)),
        ("events", record("contract.cancelled", "e-6", **CANCELLED)),
    ),
    "a term's reminders decided": (
        ("actions", action(f"{TERM}:30d", -30)),
        ("actions", action(f"{TERM}:7d", -7)),
    ),
    "a term's reminders sent": (
        ("deliveries", delivery(f"{TERM}:30d")),
        ("deliveries", delivery(f"{TERM}:7d:customer")),
    ),
}


@pytest.mark.parametrize("pair", RECURRING.values(), ids=RECURRING.keys())
def test_identities_that_distinct_records_share_are_claimed_for_good(
    pair: tuple[tuple[str, Any], tuple[str, Any]],
) -> None:
    (kind_a, a), (kind_b, b) = pair
    first, second = facts_of(kind_a, a), facts_of(kind_b, b)
    shared = set(first) & set(second)
    assert shared, "the pair shares no identity: not a recurrence"
    assert not [i for i in shared if claim_expires(i)]
    # what only one record carries is an occurrence: its claim expires with the horizon
    own = (set(first) | set(second)) - shared
    assert own
    assert all(claim_expires(i) for i in own), own


def test_a_conversion_derived_again_by_every_touch_is_claimed_for_good() -> None:
    doc = {
        "_id": "K-1",
        "subject": "customer:C-1",
        "reminded": {"2026-11-30": NOW},
        "renewed": {"2027-11-30": NOW + timedelta(days=2)},
    }
    (fact,) = converted(doc)
    assert not claim_expires(fact.identity)


def test_occurrences_expire_even_when_an_upstream_resend_shares_them() -> None:
    """A re-sent order is a replay by upstream: within the horizon it counts once, beyond it
    twice (README, "Retention and the replay horizon")."""
    order = {
        "interaction_id": "O-1",
        "customer_id": "C-1",
        "kind": "order",
        "occurred_at": NOW.isoformat(),
    }
    first = facts_of("events", record("customer.interaction", "e-7", **order))
    again = facts_of("events", record("customer.interaction", "e-8", **order))
    # the same order, and the same customer active in that month and week: each distinct
    # record of them comes within the period, well inside the horizon, so their claims expire
    assert set(first) & set(again) == {
        "order:customer:O-1",
        f"active:month:C-1:{NOW:%Y-%m}",
        f"active:week:C-1:{NOW.isocalendar()[0]}-W{NOW.isocalendar()[1]:02d}",
    }
    assert all(claim_expires(i) for i in first | again)
