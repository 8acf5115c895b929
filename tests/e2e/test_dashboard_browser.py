"""The analytics dashboard in headless Chromium (Debian's package, installed by `make test`)
against a running analytics process with data: every page loads with its figures, in English
and Chinese, and the browser reports nothing on its console."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest

from deploy.local.stack import LocalStack
from shared.settings import KafkaSettings, TopicSettings
from tests.e2e.replicas import Replicas
from tests.integration.test_analytics_journeys import SUMMARY, journey_scenario
from tests.integration.test_analytics_kafka import ORDERS, publish_all
from tests.integration.test_analytics_tasks import people_scenario
from tests.kafka_helpers import publish_events
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


async def browse(url: str, profile: Path, *extra: str) -> tuple[str, list[str]]:
    """The page's DOM after load, and every console message the page caused."""
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        *extra,
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    console = [line for line in err.decode(errors="replace").splitlines() if ":CONSOLE" in line]
    return out.decode(), console


async def test_every_dashboard_page_loads_with_data_and_no_console_errors(
    stack: LocalStack, kafka_settings: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> None:
    procs = Replicas(stack, "analytics", topics)
    try:
        await asyncio.to_thread(procs.start, "a")
        await publish_all(kafka_settings, topics, twice=False)
        await publish_events(kafka_settings, topics.events, people_scenario())
        for events in journey_scenario():
            await publish_events(kafka_settings, topics.events, events)
        base = procs.urls["a"]
        window = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-03T00:00:00Z"}
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:

            async def orders_counted() -> bool:
                report = (await http.get("/v1/report", params=window)).json()
                return bool(report["counters"].get("orders") == ORDERS)

            await eventually(orders_counted, 120, interval=0.5, what="the orders are not counted")

            async def tasks_read() -> bool:
                open_tasks = (await http.get("/v1/tasks")).json()
                return [t["task_id"] for t in open_tasks] == ["T-3", "T-4", "T-5"]

            await eventually(tasks_read, 120, interval=0.5, what="the tasks are not read")

            async def journeys_read() -> bool:
                return bool((await http.get("/v1/journeys")).json() == [SUMMARY])

            await eventually(journeys_read, 120, interval=0.5, what="the journeys are not read")

        span = "from=2026-11-01T00:00:00Z&to=2026-11-03T00:00:00Z"
        pages = {
            f"/?{span}": [
                "Renewal rate",
                "70.0%",
                "66.7%",
                "<svg",
                f"<td>{ORDERS}</td>",
                "Revisit compliance",
            ],
            f"/?lang=zh&{span}": ["续约率", "总览", "<svg"],
            f"/owners?{span}": ["<td>S-0</td>", "<td>S-1</td>"],
            f"/rules?{span}": ["<td>renewal</td>"],
            f"/tasks?{span}": ["Open tasks, the oldest first", "<td>T-3</td>", "<td>S-9</td>"],
            "/tasks?lang=zh": ["各负责人待办任务", "<td>T-5</td>"],
            "/journeys?from=2026-10-26T00:00:00Z&to=2026-11-26T00:00:00Z": [
                "Journey: onboarding",
                "<td>onboarding</td><td>12</td><td>1</td><td>2</td><td>2</td><td>5</td>",
                "<svg",
                "<td>wait-3d</td><td>wait</td><td>7</td>",
            ],
            "/journeys?lang=zh": ["旅程", "当前在途", "（起点）"],
            "/at-risk?lang=zh": ["<td>C-1</td>", "<td>C-2</td>", "流失风险"],
            f"/channels?{span}": ["Channel health, week by week", "<td>CH-2</td>", "⚠", "<svg"],
        }
        for path, expected in pages.items():
            dom, console = await browse(f"{base}{path}", tmp_path / "profile")
            missing = [text for text in expected if text not in dom]
            assert not missing, f"{path}: {missing} not on the page"
            assert console == [], f"{path}: console says {console}"
        shot = stack.config.state_dir.parent / "dashboard.png"
        await browse(
            f"{base}/?{span}",
            tmp_path / "profile",
            f"--screenshot={shot}",
            "--window-size=1200,900",
        )
    finally:
        procs.stop_all()
