"""The Grafana dashboards, as code: ``python -m deploy.grafana.dashboards`` writes
``deploy/grafana/dashboards/*.json``, which Grafana loads through provisioning. A test checks
that the files are up to date, and the e2e test evaluates every expression here against a
real Prometheus scraping the services.

One overview (RED per service, lag, dead letters, deliveries by outcome, dependencies) and one
dashboard per service.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # provisioning/datasources
SERVICES = ("ingest", "rules", "notifier", "analytics")


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    description: str = ""
    core: bool = False  # returns data on any running system (the e2e test insists)


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: list[Panel] = field(default_factory=list)
    description: str = ""


def ts(title: str, *exprs: tuple[str, str], unit: str = "short", **kw: Any) -> Panel:
    return Panel(title, exprs, unit, "timeseries", **kw)


def stat(title: str, *exprs: tuple[str, str], unit: str = "short", **kw: Any) -> Panel:
    return Panel(title, exprs, unit, "stat", **kw)


def red(job: str) -> list[Panel]:
    """Rate, errors and duration of a service's HTTP API and consumer loop."""
    sel = f'job="{job}"'
    return [
        ts(
            "HTTP requests / s by route",
            (f"sum by (route) (rate(upkeep_http_requests_total{{{sel}}}[5m]))", "{{route}}"),
            unit="reqps",
        ),
        ts(
            "HTTP 5xx / s",
            (
                f'sum by (route) (rate(upkeep_http_requests_total{{{sel}, status=~"5.."}}[5m]))',
                "{{route}}",
            ),
            unit="reqps",
        ),
        ts(
            "HTTP latency p95",
            (
                "histogram_quantile(0.95, sum by (le, route) "
                f"(rate(upkeep_http_request_duration_seconds_bucket{{{sel}}}[5m])))",
                "{{route}}",
            ),
            unit="s",
        ),
        ts(
            "Messages consumed / s",
            (
                f"sum by (topic, outcome) (rate(upkeep_consumer_messages_total{{{sel}}}[5m]))",
                "{{topic}} {{outcome}}",
            ),
            unit="ops",
        ),
        ts(
            "Batch duration p95",
            (
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(upkeep_consumer_batch_duration_seconds_bucket{{{sel}}}[5m])))",
                "p95",
            ),
            unit="s",
        ),
        ts(
            "Consumer lag",
            (f"sum by (topic) (upkeep_consumer_lag_messages{{{sel}}})", "{{topic}}"),
            core=True,
        ),
        ts(
            "Batch retries and tick failures / min",
            (f"sum(rate(upkeep_consumer_batch_retries_total{{{sel}}}[5m])) * 60", "retries"),
            (f"sum(rate(upkeep_consumer_tick_failures_total{{{sel}}}[5m])) * 60", "tick failures"),
        ),
        ts(
            "Dead letters / min by reason",
            (f"sum by (reason) (rate(upkeep_dead_letters_total{{{sel}}}[5m])) * 60", "{{reason}}"),
        ),
        stat(
            "Dependencies up",
            (f"min by (dependency) (upkeep_dependency_up{{{sel}}})", "{{dependency}}"),
            core=True,
        ),
        ts(
            "Resident memory",
            (f"process_resident_memory_bytes{{{sel}}}", "{{instance}}"),
            unit="bytes",
            core=True,
        ),
    ]


OVERVIEW = Dashboard(
    "upkeep-overview",
    "Upkeep — overview",
    [
        stat("Services up", ('up{job=~"upkeep-.*"}', "{{job}} {{instance}}"), core=True),
        ts(
            "Requests / s by service",
            ("sum by (job) (rate(upkeep_http_requests_total[5m]))", "{{job}}"),
            unit="reqps",
        ),
        ts(
            "Errors / s by service (HTTP 5xx)",
            ('sum by (job) (rate(upkeep_http_requests_total{status=~"5.."}[5m]))', "{{job}}"),
            unit="reqps",
        ),
        ts(
            "HTTP latency p95 by service",
            (
                "histogram_quantile(0.95, sum by (le, job) "
                "(rate(upkeep_http_request_duration_seconds_bucket[5m])))",
                "{{job}}",
            ),
            unit="s",
        ),
        ts(
            "Messages consumed / s by service",
            ("sum by (job) (rate(upkeep_consumer_messages_total[5m]))", "{{job}}"),
            unit="ops",
        ),
        ts(
            "Consumer lag by service",
            ("sum by (job) (upkeep_consumer_lag_messages)", "{{job}}"),
            core=True,
        ),
        ts(
            "Dead letters / min by service and reason",
            (
                "sum by (job, reason) (rate(upkeep_dead_letters_total[5m])) * 60",
                "{{job}} {{reason}}",
            ),
        ),
        ts(
            "Deliveries / min by outcome",
            ("sum by (outcome) (rate(upkeep_notifier_deliveries_total[5m])) * 60", "{{outcome}}"),
        ),
        stat(
            "Delivery failure ratio (1h)",
            (
                'sum(increase(upkeep_notifier_deliveries_total{outcome="failed"}[1h])) / '
                'sum(increase(upkeep_notifier_deliveries_total{outcome=~"sent|failed"}[1h]))',
                "failed",
            ),
            unit="percentunit",
        ),
        stat(
            "Dependencies up",
            ("min by (job, dependency) (upkeep_dependency_up)", "{{job}} {{dependency}}"),
            core=True,
        ),
        stat(
            "Oldest due timer not yet fired",
            ("max(upkeep_rules_overdue_timer_seconds)", "overdue"),
            unit="s",
            core=True,
        ),
        stat(
            "Customers at risk", ("max(upkeep_analytics_customers_at_risk)", "at risk"), core=True
        ),
    ],
    "RED per service, lag, dead letters and deliveries: start here when an alert fires.",
)

SERVICE_PANELS: dict[str, list[Panel]] = {
    "ingest": [
        ts(
            "Inputs / s by path and outcome",
            (
                "sum by (path, outcome) (rate(upkeep_ingest_events_total[5m]))",
                "{{path}} {{outcome}}",
            ),
            unit="ops",
        ),
        ts(
            "Rejected / min by reason",
            (
                "sum by (path, reason) (rate(upkeep_ingest_rejected_total[5m])) * 60",
                "{{path}} {{reason}}",
            ),
        ),
        ts(
            "Published / s by topic",
            (
                'sum by (topic) (rate(upkeep_producer_messages_total{job="upkeep-ingest"}[5m]))',
                "{{topic}}",
            ),
            unit="ops",
        ),
    ],
    "rules": [
        ts(
            "Events / s (applied, repeat)",
            ("sum by (outcome) (rate(upkeep_rules_events_total[5m]))", "{{outcome}}"),
            unit="ops",
        ),
        ts(
            "Actions / min by rule",
            ("sum by (rule) (rate(upkeep_rules_actions_total[5m])) * 60", "{{rule}}"),
        ),
        ts(
            "Timers fired / min by rule",
            ("sum by (rule) (rate(upkeep_rules_timers_fired_total[5m])) * 60", "{{rule}}"),
        ),
        ts(
            "Oldest due timer not yet fired, by replica",
            ("upkeep_rules_overdue_timer_seconds", "{{instance}}"),
            unit="s",
            core=True,
        ),
        ts(
            "Seconds since the last tick, by replica",
            ("time() - upkeep_rules_last_tick_timestamp_seconds", "{{instance}}"),
            unit="s",
            core=True,
        ),
        ts(
            "Rule errors / min",
            ("sum by (rule) (rate(upkeep_rules_errors_total[5m])) * 60", "{{rule}}"),
        ),
        ts(
            "Unrouted work / h by rule and reason",
            (
                "sum by (rule, reason) (increase(upkeep_rules_unrouted_total[1h]))",
                "{{rule}} {{reason}}",
            ),
        ),
        ts(
            "Partitions held back (undecided transaction)",
            ("sum(increase(upkeep_rules_unsettled_partitions_total[5m]))", "skipped"),
        ),
        stat("Churn model: customers fitted", ("max(upkeep_churn_model_customers)", "customers")),
        ts(
            "Journeys: entered / h by journey",
            ("sum by (journey) (increase(upkeep_journey_entered_total[1h]))", "{{journey}}"),
        ),
        ts(
            "Journey steps / h by outcome",
            (
                "sum by (journey, outcome) (increase(upkeep_journey_steps_total[1h]))",
                "{{journey}} {{outcome}}",
            ),
        ),
        ts(
            "Journey runs ended / h by reason",
            (
                "sum by (journey, reason) (increase(upkeep_journey_left_total[1h]))",
                "{{journey}} {{reason}}",
            ),
        ),
        ts(
            "Journey conditions failing / h",
            (
                "sum by (journey) (increase(upkeep_journey_condition_errors_total[1h]))",
                "{{journey}}",
            ),
        ),
        stat("Journeys switched on", ('max(upkeep_journeys{state="enabled"})', "enabled")),
    ],
    "notifier": [
        ts(
            "Deliveries / min by kind and outcome",
            (
                "sum by (kind, outcome) (rate(upkeep_notifier_deliveries_total[5m])) * 60",
                "{{kind}} {{outcome}}",
            ),
        ),
        ts(
            "Deferred and failed by reason / min",
            (
                "sum by (reason) (rate(upkeep_notifier_deliveries_total"
                '{outcome=~"deferred|failed"}[5m])) * 60',
                "{{reason}}",
            ),
        ),
        ts(
            "Provider attempts / s by result",
            (
                "sum by (kind, result) (rate(upkeep_notifier_attempts_total[5m]))",
                "{{kind}} {{result}}",
            ),
            unit="ops",
        ),
        ts(
            "Send latency p95 by kind",
            (
                "histogram_quantile(0.95, sum by (le, kind) "
                "(rate(upkeep_notifier_send_seconds_bucket[5m])))",
                "{{kind}}",
            ),
            unit="s",
        ),
        stat("Circuits open", ("max by (provider) (upkeep_notifier_circuit_open)", "{{provider}}")),
        ts(
            "Actions / s (new, repeat)",
            ("sum by (result) (rate(upkeep_notifier_actions_total[5m]))", "{{result}}"),
            unit="ops",
        ),
    ],
    "analytics": [
        ts(
            "Facts / s (counted, repeat)",
            ("sum by (result) (rate(upkeep_analytics_facts_total[5m]))", "{{result}}"),
            unit="ops",
        ),
        stat(
            "Customers at risk", ("max(upkeep_analytics_customers_at_risk)", "at risk"), core=True
        ),
        stat(
            "Renewals due this week",
            ("max(upkeep_analytics_renewals_due_this_week)", "due"),
            core=True,
        ),
    ],
}


def dashboards() -> list[Dashboard]:
    found = [OVERVIEW]
    for service in SERVICES:
        job = f"upkeep-{service}"
        found.append(
            Dashboard(
                f"upkeep-{service}",
                f"Upkeep — {service}",
                SERVICE_PANELS[service] + red(job),
                f"The {service} service: what it does, then RED, lag and dependencies.",
            )
        )
    return found


def to_grafana(board: Dashboard) -> dict[str, Any]:
    panels = []
    for i, p in enumerate(board.panels):
        width = 8 if p.kind == "stat" else 12
        per_row = 24 // width
        panels.append(
            {
                "id": i + 1,
                "type": p.kind,
                "title": p.title,
                "description": p.description,
                "datasource": DATASOURCE,
                "gridPos": {
                    "h": 8,
                    "w": width,
                    "x": (i % per_row) * width,
                    "y": (i // per_row) * 8,
                },
                "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
                if p.kind == "timeseries"
                else {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
                "targets": [
                    {
                        "refId": chr(ord("A") + j),
                        "datasource": DATASOURCE,
                        "expr": expr,
                        "legendFormat": legend,
                    }
                    for j, (expr, legend) in enumerate(p.exprs)
                ],
            }
        )
    return {
        "uid": board.uid,
        "title": board.title,
        "description": board.description,
        "tags": ["upkeep"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "links": [
            {"title": "Upkeep", "type": "dashboards", "tags": ["upkeep"], "asDropdown": True}
        ],
        "panels": panels,
    }


def rendered() -> dict[str, str]:
    """File name → JSON text, as written."""
    return {
        f"{b.uid}.json": json.dumps(to_grafana(b), indent=2, ensure_ascii=False) + "\n"
        for b in dashboards()
    }


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (OUT / name).write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {OUT / name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
