"""The analytics dashboard in headless Chromium (Debian's package, installed by `make test`)
against a running analytics process with data, driven over the DevTools protocol
(tests/e2e/browser.py): a page opened without a session leads to the sign-in form; signed in
as `make up`'s admin, every page loads with its figures, in English and Chinese, and the
browser reports nothing on its console."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from deploy.local.stack import DEV_ADMIN_PASSWORD, DEV_API_KEY, LocalStack
from shared.settings import KafkaSettings, TopicSettings
from tests.e2e.browser import Browser
from tests.e2e.replicas import Replicas
from tests.integration.test_analytics_journeys import SUMMARY, journey_scenario
from tests.integration.test_analytics_kafka import ORDERS, publish_all
from tests.integration.test_analytics_tasks import people_scenario
from tests.kafka_helpers import publish_events
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

API_KEY = {"X-API-Key": DEV_API_KEY}  # analytics:read, as `make up` configures it


def signin_next(url: str) -> str | None:
    """Where the sign-in page at ``url`` leads once signed in; None when ``url`` is not it."""
    parts = urlsplit(url)
    if parts.path != "/signin":
        return None
    return parse_qs(parts.query).get("next", [""])[0]


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
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=API_KEY) as http:

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
            f"/costs?{span}": ["Costs &amp; ROI", "Budgets of the current periods"],
            "/reports?lang=zh": ["报告"],
        }
        async with Browser.launch(tmp_path / "profile") as browser:
            # without a session every page leads to the sign-in form, and back after it
            landed = await browser.goto(f"{base}/")
            assert signin_next(landed) == "/", landed
            assert browser.statuses[f"{base}/"] == 303
            assert browser.last_status == 200
            assert browser.console == [], browser.console
            after = await browser.submit_form(
                "form.signin", {"username": "admin", "password": DEV_ADMIN_PASSWORD}
            )
            assert after == f"{base}/", after
            assert "Signed in as admin" in await browser.dom()
            for path, expected in pages.items():
                browser.clear_console()
                assert await browser.goto(f"{base}{path}") == f"{base}{path}"
                assert browser.last_status == 200, f"{path}: {browser.last_status}"
                dom = await browser.dom()
                missing = [text for text in expected if text not in dom]
                assert not missing, f"{path}: {missing} not on the page"
                assert browser.console == [], f"{path}: console says {browser.console}"
            await browser.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            )
            await browser.goto(f"{base}/?{span}")
            shot = await browser.send("Page.captureScreenshot", {"format": "png"})
            (stack.config.state_dir.parent / "dashboard.png").write_bytes(
                base64.b64decode(shot["data"])
            )
    finally:
        procs.stop_all()
