"""The BG/NBD model: "buy till you die" for non-contractual customers.

While alive, a customer buys at rate λ ~ Gamma(r, α); after every purchase they drop out with
probability p ~ Beta(a, b). From a customer's summary — ``x`` repeat purchases, the time ``t_x``
of the last one and the time ``T`` since the first (any consistent unit; Upkeep uses days) — the
model gives the likelihood (eq. 6 of Fader, Hardie & Lee, 2005) and P(alive).

The parameters are fitted by maximum likelihood over the whole customer base (the log-likelihood
below, maximised in log-parameter space with scipy). Identical summaries are folded into
weights, so the cost of a fit grows with distinct summaries, not customers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import gammaln

Array = NDArray[np.float64]


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class FitResult:
    params: BgNbdParams
    log_likelihood: float
    customers: int
    converged: bool


def log_likelihood(params: BgNbdParams, x: Array, t_x: Array, t: Array) -> Array:
    """Per-customer log-likelihood of (x, t_x, T)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + t)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    result: Array = a1 + a2 + np.logaddexp(a3, a4)
    return result


def fit(x: Array, t_x: Array, t: Array, *, start: BgNbdParams | None = None) -> FitResult:
    """Maximum-likelihood estimate of (r, α, a, b)."""
    x, t_x, t = (np.asarray(v, dtype=np.float64) for v in (x, t_x, t))
    if not (len(x) == len(t_x) == len(t)) or len(x) == 0:
        raise ValueError("x, t_x and T must be non-empty and of equal length")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > t) or np.any((x == 0) & (t_x != 0)):
        raise ValueError("need 0 <= t_x <= T, and t_x = 0 when x = 0")
    rows = np.stack([x, t_x, t], axis=1)
    unique, weights = np.unique(rows, axis=0, return_counts=True)
    ux, utx, ut = unique[:, 0], unique[:, 1], unique[:, 2]
    scale = float(np.mean(t)) or 1.0  # α is a time scale: start it at the data's scale
    guess = start or BgNbdParams(1.0, scale, 1.0, 1.0)

    def negative(log_params: Array) -> float:
        p = BgNbdParams(*np.exp(log_params))
        value = -float(np.sum(weights * log_likelihood(p, ux, utx, ut)))
        return value if math.isfinite(value) else 1e300

    first = np.log([guess.r, guess.alpha, guess.a, guess.b])
    best = minimize(
        negative,
        first,
        method="Nelder-Mead",
        options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-8},
    )
    polished = minimize(negative, best.x, method="L-BFGS-B")
    chosen = polished if polished.fun <= best.fun else best
    params = BgNbdParams(*(float(v) for v in np.exp(chosen.x)))
    return FitResult(params, -float(chosen.fun), len(x), bool(chosen.success or best.success))


def p_alive(params: BgNbdParams, x: float, t_x: float, t: float) -> float:
    """P(the customer is still alive at T). 1 for customers without repeat purchases."""
    if x <= 0:
        return 1.0
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_odds = (
        math.log(a) - math.log(b + x - 1) + (r + x) * (math.log(alpha + t) - math.log(alpha + t_x))
    )
    return 1.0 / (1.0 + math.exp(min(log_odds, 700.0)))


def no_repeat_probability(params: BgNbdParams, t: float) -> float:
    """P(a typical living customer makes no purchase over a span ``t``) = (α/(α+t))^r: how
    ordinary it is to have no repeat purchase after ``t`` — used for customers with x = 0."""
    return float((params.alpha / (params.alpha + t)) ** params.r)


def churn_risk(params: BgNbdParams, x: float, t_x: float, t: float) -> float:
    """1 - P(alive) for repeat buyers; for one-time buyers (P(alive) = 1 by construction) the
    recency-based risk 1 - (α/(α+T))^r, which grows the longer no second purchase comes."""
    if x > 0:
        return 1.0 - p_alive(params, x, t_x, t)
    return 1.0 - no_repeat_probability(params, t)


def time_to_risk(params: BgNbdParams, x: float, t_x: float, risk: float) -> float:
    """The age T at which :func:`churn_risk` reaches ``risk`` (closed form, so the churn rule
    sets one timer at the crossing instead of re-scoring customers on a schedule)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if x > 0:
        odds = (1.0 / (1.0 - risk) - 1.0) * (b + x - 1) / a
        return float((alpha + t_x) * odds ** (1.0 / (r + x)) - alpha)
    return float(alpha * ((1.0 - risk) ** (-1.0 / r) - 1.0))


def simulate(
    params: BgNbdParams, customers: int, t: float, rng: np.random.Generator
) -> tuple[Array, Array, Array]:
    """Draw (x, t_x, T) for customers observed for ``t`` after their first purchase."""
    lam = rng.gamma(params.r, 1.0 / params.alpha, customers)
    p = rng.beta(params.a, params.b, customers)
    xs, txs = np.zeros(customers), np.zeros(customers)
    for i in range(customers):
        now, count, last = 0.0, 0, 0.0
        while True:
            now += rng.exponential(1.0 / lam[i])
            if now > t:
                break
            count, last = count + 1, now
            if rng.random() < p[i]:
                break
        xs[i], txs[i] = count, last
    return xs, txs, np.full(customers, t)
