"""Test harness: a real Kafka broker and MongoDB-wire server, started once per session.

They run on free ports with state under ``.run/tests-<pid>/``, so ``make test`` works beside
``make up``. Nothing is started for a run that only collects unit tests. Each test gets topics
of its own (``topics`` fixture), so tests never see each other's messages.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.kafka import ROOT
from deploy.local.stack import LocalStack, ephemeral_stack
from shared.kafka.topics import ensure_topics
from shared.settings import KafkaSettings, MongoSettings, TopicSettings
from tests.kafka_helpers import wait_for_topics

# Pytest rewrites the asserts of test modules and conftests only: the unit tests' shared worlds
# and builders assert too, and keep pytest's failure messages this way.
pytest.register_assert_rewrite(
    "tests.unit.notifier.dispatch_world", "tests.unit.analytics.fact_builders"
)


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    with ephemeral_stack("tests") as local:
        yield local


@pytest.fixture(scope="session")
def kafka_settings(stack: LocalStack) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=stack.kafka_node.bootstrap)


@pytest.fixture(scope="session")
def mongo_settings(stack: LocalStack) -> MongoSettings:
    return MongoSettings(uri=stack.mongo_uri, database=f"upkeep_test_{os.getpid()}")


def unique_topics() -> TopicSettings:
    tag = uuid.uuid4().hex[:8]
    defaults = TopicSettings()
    return TopicSettings.model_validate(
        {name: f"{value}.{tag}" for name, value in defaults.model_dump().items()}
    )


@pytest.fixture
async def topics(kafka_settings: KafkaSettings) -> TopicSettings:
    """A fresh set of the Upkeep topics for this test, every partition with a leader."""
    chosen = unique_topics()
    await ensure_topics(kafka_settings, chosen)
    await wait_for_topics(kafka_settings, chosen)
    return chosen


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
