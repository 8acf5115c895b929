"""What the dashboard's journeys page shows (``templates/journeys.html``), shaped into plain
values: the journeys' table, and per journey a funnel chart of its steps (inline SVG, drawn by
the ``funnel`` macro) and the table of its steps. Labels come from
:mod:`services.analytics.labels`; no value is escaped here (the templates do)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.analytics.funnels import JourneyDetail, JourneySummary

COMPLETED, WAITING = "#2680c2", "#f0b429"
WIDTH, LABEL, ROW = 900, 220, 34  # the chart's width, its label column, one step's height
BAR_AREA = WIDTH - LABEL - 60  # room for the figure after the longest bar
SHOWN_OUTCOMES = ("event", "timeout", "then", "else")  # the outcomes of waits and branches


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def summary_table(t: Mapping[str, str], found: Sequence[JourneySummary]) -> dict[str, Any]:
    head = [t[k] for k in ("journey", "entered", "converted", "exited", "journey_completed")]
    head += [t["in_journey"], t["conversion_rate"]]
    rows = [
        [
            j.journey,
            f"{j.entered:,}",
            f"{j.converted:,}",
            f"{j.exited:,}",
            f"{j.completed:,}",
            f"{j.active:,}",
            rate(j.conversion_rate),
        ]
        for j in found
    ]
    return {"head": head, "rows": rows}


def funnel(t: Mapping[str, str], detail: JourneyDetail) -> dict[str, Any]:
    """The ``funnel`` macro's chart: the runs that entered (and under it those waiting at the
    start now), then each step's completions (and those waiting there now), one row each;
    scaled to the highest figure."""
    lines = [(f"{t['entered']} {t['start_step']}", detail.entered, detail.waiting_at_start)]
    lines += [(s.step, s.completed, s.waiting) for s in detail.steps]
    peak = max([1, *(n for _, done, waiting in lines for n in (done, waiting))])
    rows = []
    for i, (label, done, waiting) in enumerate(lines):
        y = i * ROW
        rows.append(
            {
                "label": label,
                "y": y,
                "text_y": y + 13,
                "waiting_y": y + 18,
                "width": f"{BAR_AREA * done / peak:.1f}",
                "value": done,
                "value_x": f"{LABEL + BAR_AREA * done / peak + 6:.1f}",
                "waiting_width": f"{BAR_AREA * waiting / peak:.1f}",
                "waiting": waiting,
            }
        )
    height = len(lines) * ROW
    return {
        "width": WIDTH,
        "height": height,
        "left": LABEL,
        "rows": rows,
        "legend_y": height + 16,
        "legend": [(COMPLETED, t["step_completed"]), (WAITING, t["waiting"])],
    }


def steps_table(t: Mapping[str, str], detail: JourneyDetail) -> dict[str, Any]:
    head = [t["step"], t["step_kind"], t["step_completed"], t["sends"], t["unrouted"]]
    head += [t.get(f"outcome_{o}", o) for o in SHOWN_OUTCOMES]
    head.append(t["waiting"])
    blank = ["" for _ in SHOWN_OUTCOMES]
    rows = [[t["start_step"], "", "", "", "", *blank, f"{detail.waiting_at_start:,}"]]
    for s in detail.steps:
        rows.append(
            [
                s.step,
                t.get(f"kind_{s.kind}", s.kind or ""),
                f"{s.completed:,}",
                f"{s.sent:,}",
                f"{s.unrouted:,}",
                *(f"{s.outcomes.get(o, 0):,}" for o in SHOWN_OUTCOMES),
                f"{s.waiting:,}",
            ]
        )
    return {"head": head, "rows": rows}


def versions_table(t: Mapping[str, str], detail: JourneyDetail) -> dict[str, Any]:
    head = [t["version"], t["entered"], t["converted"], t["exited"], t["journey_completed"]]
    head += [t["disabled"], t["ended_by_update"], t["conversion_rate"]]
    rows = [
        [
            f"v{v.version}",
            f"{v.entered:,}",
            f"{v.converted:,}",
            f"{v.exited:,}",
            f"{v.completed:,}",
            f"{v.disabled:,}",
            f"{v.ended_by_update:,}",
            rate(v.conversion_rate),
        ]
        for v in detail.versions
    ]
    return {"head": head, "rows": rows}


def page(
    t: Mapping[str, str], summaries: Sequence[JourneySummary], details: Sequence[JourneyDetail]
) -> dict[str, Any]:
    """The values ``journeys.html`` shows besides the chrome and the window."""
    return {
        "journeys": summary_table(t, summaries),
        "sections": [
            {
                "name": d.journey,
                "cards": [
                    (t["entered"], f"{d.entered:,}"),
                    (t["converted"], f"{d.converted:,}"),
                    (t["exited"], f"{d.exited:,}"),
                    (t["in_journey"], f"{d.active:,}"),
                    (t["conversion_rate"], rate(d.conversion_rate)),
                ],
                "chart": funnel(t, d),
                "steps": steps_table(t, d),
                "versions": versions_table(t, d),
            }
            for d in details
        ],
    }
