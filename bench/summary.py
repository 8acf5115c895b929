"""The JSON summary every benchmark writes to ``.run/bench/<name>.json`` and prints, and the
MongoDB request counts they report (``upkeep_mongo_requests_total``, by process)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from deploy.local.kafka import ROOT
from shared.mongo import REQUESTS

BENCH_DIR = ROOT / ".run" / "bench"


def write_summary(name: str, summary: dict[str, Any]) -> Path:
    """Write ``summary`` as ``.run/bench/<name>.json`` and print it; returns the path."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{name}.json"
    text = orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    path.write_bytes(text + b"\n")
    sys.stdout.write(f"\n{path.relative_to(ROOT)}:\n{text.decode()}\n")
    sys.stdout.flush()
    return path


def requests_here() -> float:
    """MongoDB commands this process has sent so far (every client made by ``make_client``)."""
    return sum(
        sample.value
        for metric in REQUESTS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def metric_sum(metrics_text: str, name: str, label: str = "") -> float:
    """The sum of a metric's series on a ``/metrics`` page (those with ``label``, if given,
    e.g. ``topic="upkeep.events.v1"``)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith(name + "{") and label in line
    )


def per_1000(requests: float, events: int) -> float:
    return round(requests * 1000 / events, 1) if events else 0.0
