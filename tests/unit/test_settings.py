"""shared/settings.py and services/ingest/settings.py: environment prefixes and refusals."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from services.ingest.settings import IngestSettings
from shared.apikeys import WRITE_EVENTS, digest
from shared.settings import KafkaSettings, MongoSettings, ServiceSettings, TopicSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No UPKEEP_* variable of the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("UPKEEP_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_design() -> None:
    settings = IngestSettings()
    assert settings.service_name == "ingest"
    assert settings.http_port == 8001
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.mongo.database == "upkeep"
    assert settings.topics.raw_customer == "upkeep.raw.customer"
    assert settings.topics.dlq == "upkeep.dlq.v1"
    assert settings.group_id == "upkeep-ingest"
    assert settings.api_keys == []


def test_ingest_settings_read_the_ingest_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPKEEP_INGEST_HTTP_PORT", "9101")
    monkeypatch.setenv("UPKEEP_INGEST_MAX_BATCH_ITEMS", "42")
    monkeypatch.setenv("UPKEEP_INGEST_DEFAULT_TIMEZONE", "Asia/Shanghai")
    monkeypatch.setenv("UPKEEP_INGEST_PHONE_REGION", "GB")
    monkeypatch.setenv("UPKEEP_INGEST_CONSUMER_GROUP", "my-group")
    monkeypatch.setenv("UPKEEP_HTTP_PORT", "1")  # no prefix of ingest's: ignored
    settings = IngestSettings()
    assert settings.http_port == 9101
    assert settings.max_batch_items == 42
    assert settings.default_timezone == "Asia/Shanghai"
    assert settings.phone_region == "GB"
    assert settings.group_id == "my-group"


def test_shared_parts_read_their_own_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPKEEP_KAFKA_BOOTSTRAP_SERVERS", "kafka:29092")
    monkeypatch.setenv("UPKEEP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("UPKEEP_KAFKA_SASL_PASSWORD", "a-real-secret-value")
    monkeypatch.setenv("UPKEEP_MONGO_URI", "mongodb://db:27017")
    monkeypatch.setenv("UPKEEP_MONGO_DATABASE", "upkeep_test")
    monkeypatch.setenv("UPKEEP_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("UPKEEP_TOPIC_EVENTS", "events.isolated")
    settings = IngestSettings()
    assert settings.kafka.bootstrap_servers == "kafka:29092"
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "a-real-secret-value"
    assert "a-real-secret-value" not in repr(settings)
    assert settings.mongo.uri.get_secret_value() == "mongodb://db:27017"
    assert settings.mongo.database == "upkeep_test"
    assert settings.log.level == "DEBUG"
    assert settings.topics.events == "events.isolated"
    assert TopicSettings().events == "events.isolated"


def test_api_keys_parse_from_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [
        {"name": "crm", "sha256": digest("upk_one"), "scopes": [WRITE_EVENTS]},
        {"name": "erp", "sha256": digest("upk_two")},
    ]
    monkeypatch.setenv("UPKEEP_INGEST_API_KEYS", json.dumps(entries))
    keys = IngestSettings().api_keys
    assert [k.name for k in keys] == ["crm", "erp"]
    assert keys[0].sha256 == digest("upk_one")
    assert keys[1].scopes == [WRITE_EVENTS]  # the default scope


@pytest.mark.parametrize(
    "value",
    ['{"name": "crm"}', '[{"name": "crm", "sha256": "not-a-digest"}]', "not json"],
    ids=["object", "bad-digest", "not-json"],
)
def test_malformed_api_keys_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("UPKEEP_INGEST_API_KEYS", value)
    with pytest.raises((ValidationError, ValueError)):
        IngestSettings()


@pytest.mark.parametrize(
    "placeholder", ["changeme", "CHANGEME", " secret ", "password", "change-me-upkeep"]
)
def test_placeholder_kafka_password_is_refused(
    monkeypatch: pytest.MonkeyPatch, placeholder: str
) -> None:
    monkeypatch.setenv("UPKEEP_KAFKA_SASL_PASSWORD", placeholder)
    with pytest.raises(ValidationError, match="placeholder"):
        KafkaSettings()
    with pytest.raises(ValidationError, match="placeholder"):
        IngestSettings()


@pytest.mark.parametrize(
    "uri", ["mongodb://upkeep:changeme@db:27017", "http://db:27017", "db:27017"]
)
def test_bad_mongo_uri_is_refused(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    monkeypatch.setenv("UPKEEP_MONGO_URI", uri)
    with pytest.raises(ValidationError):
        MongoSettings()


def test_secret_mongo_uri_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPKEEP_MONGO_URI", "mongodb://u:s3cr3t-pw@db:27017")
    assert "s3cr3t-pw" not in repr(MongoSettings())


@pytest.mark.parametrize("zone", ["../etc/passwd", "/etc/localtime"])
def test_path_like_default_timezone_is_refused(monkeypatch: pytest.MonkeyPatch, zone: str) -> None:
    monkeypatch.setenv("UPKEEP_INGEST_DEFAULT_TIMEZONE", zone)
    with pytest.raises(ValidationError):
        IngestSettings()


def test_unknown_default_timezone_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPKEEP_INGEST_DEFAULT_TIMEZONE", "Mars/Olympus_Mons")
    with pytest.raises(Exception, match="Mars/Olympus_Mons"):
        IngestSettings()


def test_unknown_default_timezone_is_a_validation_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UPKEEP_INGEST_DEFAULT_TIMEZONE", "Mars/Olympus_Mons")
    with pytest.raises(ValidationError):
        IngestSettings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UPKEEP_INGEST_PHONE_REGION", "gb"),
        ("UPKEEP_INGEST_MAX_BATCH_ITEMS", "0"),
        ("UPKEEP_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("UPKEEP_LOG_LEVEL", "LOUD"),
    ],
)
def test_out_of_range_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        IngestSettings()


def test_service_settings_refuse_out_of_range_port() -> None:
    with pytest.raises(ValidationError):
        ServiceSettings(http_port=70000)


def test_ingest_settings_refuse_out_of_range_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPKEEP_INGEST_HTTP_PORT", "70000")
    with pytest.raises(ValidationError):
        IngestSettings()


def test_service_settings_group_id_defaults_from_service_name() -> None:
    assert ServiceSettings(service_name="rules").group_id == "upkeep-rules"


def test_the_notifier_refuses_public_unsubscribe_links_without_https_or_a_real_secret() -> None:
    from pydantic import ValidationError

    from services.notifier.settings import NotifierSettings

    assert NotifierSettings().public_base_url.startswith("http://127.0.0.1")  # local: fine
    with pytest.raises(ValidationError, match="https"):
        NotifierSettings(public_base_url="http://upkeep.example.com")
    with pytest.raises(ValidationError, match="UNSUBSCRIBE_SECRET"):
        NotifierSettings(public_base_url="https://upkeep.example.com")
    secret = "a-long-random-secret-of-our-own"
    configured = NotifierSettings(
        public_base_url="https://upkeep.example.com", unsubscribe_secret=secret
    )
    assert configured.unsubscribe_secret.get_secret_value() == secret
    with pytest.raises(ValidationError, match="WEBHOOK_SECRETS"):
        NotifierSettings(webhook_url="https://crm.example.com/hooks")
