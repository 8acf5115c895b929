"""The BG/NBD model: likelihood, fit (through the CLI), P(alive) and the risk crossing time."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.rules.churn.__main__ import main
from services.rules.churn.bgnbd import (
    BgNbdParams,
    churn_risk,
    log_likelihood,
    p_alive,
    simulate,
    time_to_risk,
)

CDNOW = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)  # Fader, Hardie & Lee (2005)


def paper_likelihood(p: BgNbdParams, x: int, t_x: float, t: float) -> float:
    """Equation (6) of the paper, written out independently with math.lgamma."""

    def beta(u: float, v: float) -> float:
        return math.exp(math.lgamma(u) + math.lgamma(v) - math.lgamma(u + v))

    common = math.exp(math.lgamma(p.r + x) - math.lgamma(p.r)) * p.alpha**p.r
    first = beta(p.a, p.b + x) / beta(p.a, p.b) * common / (p.alpha + t) ** (p.r + x)
    second = 0.0
    if x > 0:
        second = beta(p.a + 1, p.b + x - 1) / beta(p.a, p.b) * common / (p.alpha + t_x) ** (p.r + x)
    return math.log(first + second)


@pytest.mark.parametrize(("x", "t_x", "t"), [(0, 0.0, 38.9), (1, 2.3, 30.0), (7, 29.4, 35.6)])
def test_log_likelihood_matches_the_paper(x: int, t_x: float, t: float) -> None:
    ours = log_likelihood(CDNOW, np.array([x], float), np.array([t_x]), np.array([t]))[0]
    assert ours == pytest.approx(paper_likelihood(CDNOW, x, t_x, t), rel=1e-10)


def test_the_cli_recovers_known_parameters_from_simulated_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, t_x, t = simulate(CDNOW, 6000, 39.0, np.random.default_rng(2005))
    summary = tmp_path / "summary.csv"
    rows = "\n".join(f"{int(a)},{b:.6f},{c}" for a, b, c in zip(x, t_x, t, strict=True))
    summary.write_text("frequency,recency,T\n" + rows + "\n")
    assert main(["fit", "--summary", str(summary)]) == 0
    fitted = json.loads(capsys.readouterr().out)
    for name, true in CDNOW.as_dict().items():
        assert fitted[name] == pytest.approx(true, rel=0.25), name
    assert fitted["customers"] == 6000
    assert fitted["log_likelihood"] < 0
    truth = float(np.sum(log_likelihood(CDNOW, x, t_x, t)))
    assert fitted["log_likelihood"] >= truth  # the maximum is at least the truth's likelihood


def test_the_cli_refuses_a_file_without_the_columns(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    assert main(["fit", "--summary", str(bad)]) == 2


def test_p_alive_is_one_without_repeat_purchases_and_falls_with_silence() -> None:
    assert p_alive(CDNOW, 0, 0, 50) == 1.0
    values = [p_alive(CDNOW, 4, 10.0, t) for t in (10, 20, 40, 80)]
    assert values == sorted(values, reverse=True)
    # right after a purchase a frequent buyer is very likely alive; 70 silent weeks later, not
    assert values[0] > 0.8
    assert values[-1] < 0.01


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=30),
    st.floats(min_value=0.1, max_value=100),
    st.floats(min_value=0.05, max_value=0.95),
)
def test_the_crossing_time_is_when_the_risk_reaches_the_threshold(
    x: int, t_x: float, risk: float
) -> None:
    t_x = t_x if x > 0 else 0.0
    crossing = time_to_risk(CDNOW, x, t_x, risk)
    if crossing > t_x:  # otherwise the risk is above the threshold from the last purchase on
        assert churn_risk(CDNOW, x, t_x, crossing) == pytest.approx(risk, abs=1e-6)
        assert churn_risk(CDNOW, x, t_x, crossing * 1.01 + 0.01) > risk
