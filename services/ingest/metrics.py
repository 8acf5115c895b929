"""Ingest's own Prometheus metrics (shared loop metrics live in :mod:`shared.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter

from services.ingest.reasons import Reason
from shared.metrics import preinit

EVENTS = Counter(
    "upkeep_ingest_events_total",
    "Inputs seen by ingest, by path (kafka, http), form and outcome "
    "(published, duplicate, rejected, accepted = handed to Kafka by the HTTP API).",
    ["path", "form", "outcome"],
)
REJECTED = Counter(
    "upkeep_ingest_rejected_total",
    "Inputs refused, by path and reason (Kafka ones are also dead-lettered).",
    ["path", "reason"],
)

preinit(REJECTED, [(path, r.value) for path in ("kafka", "http") for r in Reason])
preinit(
    EVENTS,
    [
        ("kafka", form, outcome)
        for form in ("binary", "structured", "plain", "mapped")
        for outcome in ("published", "duplicate")
    ],
)
