"""What ``make bench`` reads off the running system: processes (CPU, memory), services'
``/metrics`` (lag, MongoDB requests), consumer groups' committed offsets, and storage."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from bench.summary import metric_sum


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def quantiles_ms(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 of latencies given in seconds, in milliseconds."""
    if len(values) < 2:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    q = statistics.quantiles(values, n=100)
    return {
        "p50_ms": round(q[49] * 1000),
        "p95_ms": round(q[94] * 1000),
        "p99_ms": round(q[98] * 1000),
    }


def show(latency: dict[str, float | None]) -> str:
    p50, p95, p99 = latency["p50_ms"], latency["p95_ms"], latency["p99_ms"]
    if p50 is None or p95 is None or p99 is None:  # quantiles_ms gives all three or none
        return "n/a"
    return f"p50 {p50:6.0f} ms  p95 {p95:6.0f} ms  p99 {p99:6.0f} ms"


async def metrics_of(http: httpx.AsyncClient, url: str) -> str | None:
    try:
        return (await http.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return None


async def mongo_requests(urls: dict[str, str]) -> dict[str, float]:
    """MongoDB commands each service has sent so far."""
    async with httpx.AsyncClient(timeout=5) as http:
        found = {}
        for service, url in urls.items():
            text = await metrics_of(http, url)
            found[service] = (
                metric_sum(text, "upkeep_mongo_requests_total")
                if text is not None
                else float("nan")
            )
        return found


async def max_lag(urls: dict[str, str], stop: asyncio.Event, into: dict[str, float]) -> None:
    """Until ``stop``: the highest consumer lag each service reports."""
    async with httpx.AsyncClient(timeout=2) as http:
        while not stop.is_set():
            for service, url in urls.items():
                text = await metrics_of(http, url)
                if text is not None:
                    into[service] = max(
                        into.get(service, 0.0), metric_sum(text, "upkeep_consumer_lag_messages")
                    )
            await asyncio.sleep(0.5)


async def consumed(urls: dict[str, str], topic: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=5) as http:
        found = {}
        for service, url in urls.items():
            text = await metrics_of(http, url)
            found[service] = (
                metric_sum(text, "upkeep_consumer_messages_total", f'topic="{topic}"')
                if text is not None
                else 0.0
            )
        return found


async def wait_consumed(
    urls: dict[str, str], topic: str, wanted: dict[str, float], within: float
) -> float | None:
    """The moment each service has consumed its wanted count of ``topic``, or ``None``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        now = time.time()
        have = await consumed(urls, topic)
        if all(have.get(s, 0.0) >= n for s, n in wanted.items()):
            return now
        await asyncio.sleep(0.25)
    sys.stderr.write(f"not consumed within {within:.0f} s: wanted {wanted}, consumed {have}\n")
    return None


def mongo_bytes(uri: str, database: str) -> dict[str, int]:
    """What the database holds: data (uncompressed BSON), storage on disk and indexes."""
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    with client:
        stats = client[database].command("dbStats")
    return {
        "data_bytes": int(stats.get("dataSize", 0)),
        "storage_bytes": int(stats.get("storageSize", 0)),
        "index_bytes": int(stats.get("indexSize", 0)),
    }


def kafka_bytes(data_dir: Path, prefix: str = "upkeep.") -> int:
    """Bytes in the broker's log directories of Upkeep's topics (segments and indexes)."""
    return sum(
        f.stat().st_blocks * 512  # allocated, not apparent: index files are sparse
        for d in data_dir.iterdir()
        if d.is_dir() and d.name.startswith(prefix)
        for f in d.iterdir()
        if f.is_file()
    )
