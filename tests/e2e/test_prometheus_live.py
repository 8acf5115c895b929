"""A real Prometheus (Debian's package) scraping the four services running as `make up` runs
them, with deploy/prometheus/alerts.yml loaded: every PromQL expression of the Grafana
dashboards and the alert rules evaluates without error, the core ones return data, and every
service's /metrics passes `promtool check metrics`."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.grafana.dashboards import SERVICES, dashboards
from deploy.local.kafka import free_port
from deploy.local.processes import Managed
from deploy.local.stack import DEV_API_KEY, LocalStack
from shared.settings import TopicSettings
from tests.e2e.replicas import Replicas
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = Path(os.environ.get("UPKEEP_PROMETHEUS", "/usr/bin/prometheus"))
PROMTOOL = Path(os.environ.get("UPKEEP_PROMTOOL", "/usr/bin/promtool"))


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def prometheus_config(targets: dict[str, str], path: Path) -> Path:
    """The jobs of deploy/prometheus/prometheus.yml, on the local ports, scraped every second."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": f"upkeep-{service}", "static_configs": [{"targets": [target]}]}
            for service, target in targets.items()
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def query(http: httpx.AsyncClient, expr: str) -> dict[str, Any]:
    answer = await http.get("/api/v1/query", params={"query": expr})
    body: dict[str, Any] = answer.json()
    return body


async def test_every_dashboard_and_alert_expression_evaluates_against_the_services(
    stack: LocalStack, topics: TopicSettings, tmp_path: Path
) -> None:
    for binary in (PROMETHEUS, PROMTOOL):
        if not binary.exists():
            pytest.fail(f"{binary} is missing: `make test` installs Debian's prometheus package")
    procs = {service: Replicas(stack, service, topics) for service in SERVICES}
    prometheus = Managed(f"prometheus-{procs['rules'].tag}", stack.config.state_dir)
    try:
        for replicas in procs.values():
            await asyncio.to_thread(replicas.start, "a")
        targets = {s: r.urls["a"].removeprefix("http://") for s, r in procs.items()}

        # traffic through the pipeline: HTTP requests, consumed and produced messages
        async with httpx.AsyncClient(base_url=procs["ingest"].urls["a"], timeout=10) as ingest:
            answer = await ingest.post(
                "/v1/events",
                headers={"Authorization": f"Bearer {DEV_API_KEY}"},
                json=[
                    {
                        "type": "customer.upserted",
                        "id": f"c-{n}",
                        "customer_id": f"C-{n}",
                        "name": f"Customer {n}",
                        "timezone": "Europe/Berlin",
                    }
                    for n in range(20)
                ],
            )
            assert answer.status_code == 202, answer.text

        port = free_port()
        config = prometheus_config(targets, tmp_path / "prometheus.yml")
        prometheus.start(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ]
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            up: dict[str, Any] = {}

            async def all_up() -> bool:
                try:
                    up.update(await query(http, 'up{job=~"upkeep-.*"} == 1'))
                except httpx.TransportError:
                    return False
                return len(up.get("data", {}).get("result", [])) == len(SERVICES)

            await eventually(all_up, 90, interval=0.5, what=lambda: f"not all up: {up}")

            panels = [(b.uid, p) for b in dashboards() for p in b.panels]
            exprs = [expr for _, p in panels for expr, _ in p.exprs] + alert_exprs()
            failed: dict[str, Any] = {}
            empty_core: list[str] = []

            async def core_panels_have_data() -> bool:
                """rate() needs samples over the dashboards' windows: they accrue scrape by
                scrape (every second)."""
                empty_core.clear()
                for uid, panel in panels:
                    if panel.core:
                        for expr, _ in panel.exprs:
                            if not (await query(http, expr))["data"]["result"]:
                                empty_core.append(f"{uid}: {panel.title}: {expr}")
                return not empty_core

            await eventually(core_panels_have_data, 90, interval=1, what=lambda: empty_core)
            for expr in exprs:
                body = await query(http, expr)
                if body.get("status") != "success":
                    failed[expr] = body.get("error")
            print(f"evaluated {len(exprs)} expressions, {len(set(exprs))} distinct")
            assert failed == {}, failed
            # the scrape itself shows every service's dependencies up
            deps = await query(http, "min by (job) (upkeep_dependency_up)")
            values = {r["metric"]["job"]: r["value"][1] for r in deps["data"]["result"]}
            assert values == {f"upkeep-{s}": "1" for s in SERVICES}

        async with httpx.AsyncClient(timeout=10) as http:
            for service, replicas in procs.items():
                text = (await http.get(f"{replicas.urls['a']}/metrics")).text
                checked = await asyncio.to_thread(
                    subprocess.run,
                    [str(PROMTOOL), "check", "metrics"],
                    input=text,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert checked.returncode == 0, f"{service}: {checked.stdout}{checked.stderr}"
    finally:
        prometheus.stop(timeout=10)
        for replicas in procs.values():
            replicas.stop_all()
