"""Prometheus and Grafana as deployed: promtool checks the configuration and the alert rules
and runs their unit tests (deploy/prometheus/alerts.test.yml); every alert has a runbook; the
Grafana dashboards on disk are the ones deploy/grafana/dashboards.py generates, on the
provisioned data source. (tests/e2e/test_prometheus_live.py evaluates every expression against
a real Prometheus scraping the services.)"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana.dashboards import DATASOURCE, SERVICES, dashboards, rendered

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
PROMTOOL = Path(os.environ.get("UPKEEP_PROMTOOL", "/usr/bin/promtool"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} is missing: `make test` installs Debian's prometheus package")
    return subprocess.run(
        [str(PROMTOOL), *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_configuration_and_the_rules() -> None:
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in rules.stdout


def test_the_alert_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rule that never fires fails its unit test: the tests do look at the alerts."""
    broken = (
        (PROMETHEUS / "alerts.yml")
        .read_text()
        .replace('expr: up{job=~"upkeep-.*"} == 0', 'expr: up{job=~"upkeep-.*"} == 2')
    )
    (tmp_path / "alerts.yml").write_text(broken)
    (tmp_path / "alerts.test.yml").write_text((PROMETHEUS / "alerts.test.yml").read_text())
    done = promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert done.returncode != 0
    assert "UpkeepServiceDown" in done.stdout + done.stderr


def test_every_alert_is_tested_and_has_a_summary_a_severity_and_a_runbook() -> None:
    tested = (PROMETHEUS / "alerts.test.yml").read_text()
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    for rule in alerts():
        name = rule["alert"]
        assert f'alertname="{name}"' in tested, f"{name} has no unit test"
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
        runbook = ROOT / rule["annotations"]["runbook_url"]
        assert runbook.is_file(), f"{name}: {runbook} does not exist"
        assert name in runbook.read_text(), f"{runbook} does not explain {name}"
    # the list: lag, dead letters, failure ratio, timers, down, MongoDB, Kafka
    for wanted in (
        "UpkeepConsumerLagGrowing",
        "UpkeepDeadLettersArriving",
        "UpkeepDeliveryFailureRatioHigh",
        "UpkeepTimersOverdue",
        "UpkeepServiceDown",
        "UpkeepMongoUnreachable",
        "UpkeepKafkaUnreachable",
    ):
        assert wanted in names


def test_the_dashboards_on_disk_are_the_generated_ones() -> None:
    on_disk = {
        p.name: p.read_text(encoding="utf-8") for p in (GRAFANA / "dashboards").glob("*.json")
    }
    assert on_disk == rendered(), "run: .venv/bin/python -m deploy.grafana.dashboards"


def test_one_overview_and_one_dashboard_per_service_on_the_provisioned_source() -> None:
    uids = [d.uid for d in dashboards()]
    assert uids == ["upkeep-overview", *(f"upkeep-{s}" for s in SERVICES)]
    source = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (prometheus,) = source["datasources"]
    assert prometheus["uid"] == DATASOURCE["uid"]
    assert prometheus["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "upkeep.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    for path in (GRAFANA / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        assert board["panels"], path.name
        for panel in board["panels"]:
            assert panel["datasource"] == DATASOURCE
            assert all(t["expr"] for t in panel["targets"])
    overview = json.loads((GRAFANA / "dashboards" / "upkeep-overview.json").read_text())
    exprs = " ".join(t["expr"] for p in overview["panels"] for t in p["targets"])
    for metric in (
        "upkeep_http_requests_total",  # rate and errors
        "upkeep_http_request_duration_seconds_bucket",  # duration
        "upkeep_consumer_lag_messages",
        "upkeep_dead_letters_total",
        "upkeep_notifier_deliveries_total",
    ):
        assert metric in exprs
