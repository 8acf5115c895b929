"""Creates Upkeep's topics idempotently: ``python -m shared.kafka.topics``.

Used by ``make up``, the Compose one-shot job and the test harness, so every environment has the
same topics with the same partition counts and configuration. Retention: the topics a replay
reads (events, actions, deliveries) keep ``UPKEEP_REPLAY_HORIZON_DAYS`` (see
:mod:`shared.retention`), the raw topics 7 days (ingest reads them at once; what it accepted is
on ``upkeep.events.v1``), the dead letters 30 days; the tick log is compacted. A topic that
already exists with other values of these settings is brought in line (the change is logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from shared.kafka.clients import make_admin
from shared.logging import configure_logging
from shared.retention import DAY_S, segment_ms, topic_retention_ms
from shared.settings import (
    DEFAULT_REPLAY_HORIZON_DAYS,
    KafkaSettings,
    RetentionSettings,
    TopicSettings,
)

log = logging.getLogger(__name__)

DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config_source of a topic's own override


def topic_layout(horizon_days: int) -> dict[str, tuple[int, dict[str, str]]]:
    """Name attribute of TopicSettings -> (partitions, the topic configuration Upkeep sets)."""
    replayable = {
        "retention.ms": str(topic_retention_ms(horizon_days)),
        "segment.ms": str(segment_ms()),
    }
    raw = {"retention.ms": str(7 * DAY_S * 1000)}
    return {
        "raw_customer": (6, raw),
        "raw_channel": (3, raw),
        "events": (6, replayable),
        "actions": (6, replayable),
        "deliveries": (6, replayable),
        "dlq": (3, {"retention.ms": str(30 * DAY_S * 1000)}),
        # one record per events partition, kept forever by compaction; small segments so that
        # compaction keeps the topic small although every tick that fires timers writes to it
        "rules_ticks": (
            6,
            {
                "cleanup.policy": "compact",
                "segment.ms": str(3600 * 1000),
                "min.cleanable.dirty.ratio": "0.1",
            },
        ),
    }


# the layout with the default horizon (partition counts are the same for any horizon)
TOPIC_LAYOUT = topic_layout(DEFAULT_REPLAY_HORIZON_DAYS)


def planned_topics(
    topics: TopicSettings,
    replication: int = 1,
    horizon_days: int = DEFAULT_REPLAY_HORIZON_DAYS,
) -> list[NewTopic]:
    layout = topic_layout(horizon_days)
    return [
        NewTopic(
            getattr(topics, attr),
            num_partitions=partitions,
            replication_factor=replication,
            topic_configs=dict(config),
        )
        for attr, (partitions, config) in layout.items()
    ]


def config_changes(
    entries: list[dict[str, Any]], wanted: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """From a topic's described configuration (DescribeConfigs v1+ entries): the settings of
    ``wanted`` it lacks (name -> value now), and the full set of overrides to write — the
    legacy AlterConfigs that aiokafka offers replaces all of a topic's overrides, so the
    topic's other overrides are written back with ours."""
    # the topic's own settings only: a broker default that happens to equal ours today is
    # still written to the topic, so a later change of the broker's defaults cannot change it
    effective = {e["config_names"]: e["config_value"] for e in entries}
    own = {
        e["config_names"]: e["config_value"]
        for e in entries
        if e.get("config_source", DYNAMIC_TOPIC_CONFIG) == DYNAMIC_TOPIC_CONFIG
    }
    differ = {k: effective.get(k) or "" for k, v in wanted.items() if own.get(k) != v}
    overrides = {
        e["config_names"]: e["config_value"]
        for e in entries
        if e.get("config_source") == DYNAMIC_TOPIC_CONFIG and e["config_value"] is not None
    }
    return differ, {**overrides, **wanted}


async def align_configs(admin: AIOKafkaAdminClient, planned: list[NewTopic]) -> dict[str, str]:
    """Bring existing topics' configuration in line with the layout; returns topic -> what
    changed. A broker that refuses (no DescribeConfigs/AlterConfigs permission) gets a warning."""
    if not planned:
        return {}
    wanted = {t.name: dict(t.topic_configs) for t in planned}
    described = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in wanted]
    )
    changed: dict[str, str] = {}
    for response in described:
        for resource in response.to_object()["resources"]:
            name = resource["resource_name"]
            if resource["error_code"]:
                log.warning(
                    "cannot read a topic's configuration; its retention is not checked",
                    extra={"topic": name, "error": resource["error_message"]},
                )
                continue
            entries = resource["config_entries"]
            differ, overrides = config_changes(entries, wanted[name])
            if not differ:
                continue
            if any("config_source" not in e for e in entries):  # DescribeConfigs v0
                log.warning(
                    "topic configuration differs from the layout; this broker cannot say which "
                    "settings are the topic's own, so it is left as it is",
                    extra={"topic": name, "differs": sorted(differ)},
                )
                continue
            altered = await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name, configs=overrides)]
            )
            errors = [
                r["error_message"] or str(r["error_code"])
                for a in altered
                for r in a.to_object()["resources"]
                if r["error_code"]
            ]
            summary = ", ".join(
                f"{k}: {old or '-'} -> {wanted[name][k]}" for k, old in differ.items()
            )
            if errors:
                log.warning(
                    "topic configuration differs from the layout and could not be changed",
                    extra={"topic": name, "differs": summary, "error": errors[0]},
                )
            else:
                log.warning(
                    "topic configuration aligned", extra={"topic": name, "changed": summary}
                )
                changed[name] = summary
    return changed


async def ensure_topics(
    kafka: KafkaSettings,
    topics: TopicSettings,
    replication: int = 1,
    wait_s: float = 60,
    retention: RetentionSettings | None = None,
) -> list[str]:
    """Create missing topics and align the configuration of existing ones; returns the names
    created. Waits up to ``wait_s`` for Kafka. ``retention``: from the environment if omitted."""
    horizon = (retention or RetentionSettings()).replay_horizon_days
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(wait_s),
        wait=wait_exponential(multiplier=0.2, max=3),
        retry=retry_if_exception_type((KafkaConnectionError, OSError)),
        before_sleep=before_sleep_log(log, logging.INFO),
        reraise=True,
    ):
        with attempt:
            admin = make_admin(kafka, "topics")
            await admin.start()
    try:
        existing = set(await admin.list_topics())
        planned = planned_topics(topics, replication, horizon)
        missing = [t for t in planned if t.name not in existing]
        if missing:
            # another runner may create them at the same moment
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        await align_configs(admin, [t for t in planned if t.name in existing])
        return [t.name for t in missing]
    finally:
        await admin.close()


def main() -> int:
    configure_logging("topics")
    retention = RetentionSettings()
    created = asyncio.run(ensure_topics(KafkaSettings(), TopicSettings(), retention=retention))
    log.info(
        "topics ready",
        # not "created": a LogRecord attribute of its own, which logging refuses to overwrite
        extra={"topics_created": created, "replay_horizon_days": retention.replay_horizon_days},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
