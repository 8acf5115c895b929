"""Test harness: a real Kafka broker and MongoDB-wire server, started once per session.

They run on free ports with state under ``.run/tests-<pid>/``, so ``make test`` works beside
``make up``. Nothing is started for a run that only collects unit tests. Each test gets topics
of its own (``topics`` fixture), so tests never see each other's messages.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.kafka import ROOT, free_port
from deploy.local.stack import LocalStack, StackConfig
from shared.kafka.topics import ensure_topics
from shared.settings import KafkaSettings, MongoSettings, TopicSettings


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    state = ROOT / ".run" / f"tests-{os.getpid()}"
    config = StackConfig(
        state_dir=state,
        kafka_port=free_port(),
        controller_port=free_port(),
        mongo_port=free_port(),
        service_ports={name: free_port() for name in ("ingest", "rules", "notifier", "analytics")},
        kafka_heap="512m",
    )
    local = LocalStack(config)
    try:
        local.start_mongo()
        local.start_kafka()
        local.wait_infra(timeout=120)
        yield local
    finally:
        local.stop_all()
        if os.environ.get("UPKEEP_KEEP_TEST_STATE") != "1":
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_settings(stack: LocalStack) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=stack.kafka_node.bootstrap)


@pytest.fixture(scope="session")
def mongo_settings(stack: LocalStack) -> MongoSettings:
    return MongoSettings(uri=stack.mongo_uri, database=f"upkeep_test_{os.getpid()}")


def unique_topics() -> TopicSettings:
    tag = uuid.uuid4().hex[:8]
    defaults = TopicSettings()
    return TopicSettings(
        **{name: f"{value}.{tag}" for name, value in defaults.model_dump().items()}
    )


@pytest.fixture
async def topics(kafka_settings: KafkaSettings) -> TopicSettings:
    """A fresh set of the six Upkeep topics for this test."""
    chosen = unique_topics()
    await ensure_topics(kafka_settings, chosen)
    return chosen


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
