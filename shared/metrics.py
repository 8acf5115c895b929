"""Prometheus metrics shared by every service (base units, low-cardinality labels).

Service-specific metrics live next to the service; these are the ones the shared Kafka loop and
HTTP layer maintain. Label values that are known up front are pre-initialised to 0 by
:func:`preinit`, so a dashboard shows a flat zero rather than "no data".
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from shared.kafka.messages import DeadLetter, Outgoing, Record

MESSAGES_CONSUMED = Counter(
    "upkeep_consumer_messages_total",
    "Messages read from Kafka and handled, by topic and outcome (ok, dead_lettered).",
    ["topic", "outcome"],
)
BATCH_SECONDS = Histogram(
    "upkeep_consumer_batch_duration_seconds",
    "Time to handle one consumed batch, from fetch to committed offsets.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_RECORDS = Histogram(
    "upkeep_consumer_batch_records",
    "Records per consumed batch.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500),
)
TICK_FAILURES = Counter(
    "upkeep_consumer_tick_failures_total",
    "Periodic ticks (due timers, due deliveries) that failed with a non-transient error.",
)
CONSUMER_LAG = Gauge(
    "upkeep_consumer_lag_messages",
    "Messages behind the partition's high watermark, per assigned partition.",
    ["topic", "partition"],
)
BATCH_RETRIES = Counter(
    "upkeep_consumer_batch_retries_total",
    "Batches rolled back and retried because a dependency (Kafka, MongoDB) failed.",
)
REBALANCES = Counter(
    "upkeep_consumer_rebalances_total",
    "Partition assignment changes seen by this consumer, by kind (assigned, revoked).",
    ["kind"],
)
DEAD_LETTERS = Counter(
    "upkeep_dead_letters_total",
    "Messages written to the dead-letter topic, by reason.",
    ["reason"],
)
PRODUCED = Counter(
    "upkeep_producer_messages_total",
    "Messages published, by topic.",
    ["topic"],
)
DEPENDENCY_UP = Gauge(
    "upkeep_dependency_up",
    "1 when the last readiness probe of a dependency succeeded, else 0.",
    ["dependency"],
)


def preinit(counter: Counter, label_sets: Iterable[Iterable[str]]) -> None:
    """Create the given label combinations so they are exported as 0 before first use."""
    for labels in label_sets:
        counter.labels(*labels)


def count_batch(
    records: Sequence[Record], dead_letters: Sequence[DeadLetter], published: Sequence[Outgoing]
) -> None:
    """Account for one committed batch: records consumed per topic and outcome, dead letters per
    reason, messages published per topic."""
    dead = Tally(d.record.topic for d in dead_letters)
    for d in dead_letters:
        DEAD_LETTERS.labels(d.reason).inc()
    for topic, count in Tally(r.topic for r in records).items():
        MESSAGES_CONSUMED.labels(topic, "ok").inc(count - dead[topic])
        MESSAGES_CONSUMED.labels(topic, "dead_lettered").inc(dead[topic])
    for topic, count in Tally(m.topic for m in published).items():
        PRODUCED.labels(topic).inc(count)
