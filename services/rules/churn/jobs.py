"""The scheduled side of churn: refitting the model over the customer base.

A refit reads one summary per customer who has ordered (an indexed query over stored state, on a
schedule — never per tick), fits BG/NBD, stores the parameters in ``churn_model`` and hands them
to the rule. A replica starts from the stored parameters, so it scores customers at once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import numpy as np
from prometheus_client import Gauge
from pymongo.asynchronous.collection import AsyncCollection

from services.rules.churn.bgnbd import Array, BgNbdParams, fit
from services.rules.churn.rule import DAY, ChurnConfig, ChurnModel
from shared.errors import is_transient
from shared.mongo import Document

log = logging.getLogger(__name__)
MODEL_ID = "bgnbd"
MODEL_PARAMS = Gauge("upkeep_churn_model_parameter", "Fitted BG/NBD parameters.", ["name"])
MODEL_CUSTOMERS = Gauge("upkeep_churn_model_customers", "Customers in the last churn fit.")


async def load_model(models: AsyncCollection[Document], into: ChurnModel) -> None:
    doc = await models.find_one({"_id": MODEL_ID})
    if doc is not None:
        into.params = BgNbdParams(doc["r"], doc["alpha"], doc["a"], doc["b"])
        into.fitted_at, into.customers = doc["fitted_at"], doc["customers"]
        into.log_likelihood = doc["log_likelihood"]


async def summaries(
    subjects: AsyncCollection[Document], now: datetime
) -> tuple[Array, Array, Array]:
    """(x, t_x, T) in days for every customer with at least one order."""
    rows = []
    cursor = subjects.find(
        {"kind": "customer", "state.customer.orders": {"$gte": 1}},
        {
            "state.customer.orders": 1,
            "state.customer.first_order_at": 1,
            "state.customer.last_order_at": 1,
        },
    )
    async for doc in cursor:
        c = doc["state"]["customer"]
        if not c.get("first_order_at") or not c.get("last_order_at"):
            continue
        first = datetime.fromisoformat(c["first_order_at"])
        last = datetime.fromisoformat(c["last_order_at"])
        x = float(c["orders"] - 1)
        t_x = (last - first).total_seconds() / DAY if x > 0 else 0.0
        rows.append((x, t_x, max((now - first).total_seconds() / DAY, t_x)))
    data = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return data[:, 0], data[:, 1], data[:, 2]


async def refit(
    subjects: AsyncCollection[Document],
    models: AsyncCollection[Document],
    model: ChurnModel,
    config: ChurnConfig,
    now: datetime,
) -> bool:
    """Fit and store; False (model unchanged) when there are too few customers."""
    x, t_x, t = await summaries(subjects, now)
    if len(x) < config.min_customers:
        log.info("too few customers to fit the churn model", extra={"customers": len(x)})
        return False
    result = await asyncio.to_thread(fit, x, t_x, t)
    params = result.params
    await models.replace_one(
        {"_id": MODEL_ID},
        {
            "_id": MODEL_ID,
            **params.as_dict(),
            "fitted_at": now,
            "customers": result.customers,
            "log_likelihood": result.log_likelihood,
            "converged": result.converged,
        },
        upsert=True,
    )
    model.params, model.fitted_at = params, now
    model.customers, model.log_likelihood = result.customers, result.log_likelihood
    for name, value in params.as_dict().items():
        MODEL_PARAMS.labels(name).set(value)
    MODEL_CUSTOMERS.set(result.customers)
    log.info("churn model refitted", extra={**params.as_dict(), "customers": result.customers})
    return True


async def refit_forever(
    subjects: AsyncCollection[Document],
    models: AsyncCollection[Document],
    model: ChurnModel,
    config: ChurnConfig,
) -> None:
    """Load the stored model, then refit every ``refit_every_hours`` (runs as a task)."""
    while True:
        try:
            if model.params is None:
                await load_model(models, model)
            await refit(subjects, models, model, config, datetime.now(UTC))
            delay = config.refit_every_hours * 3600
        except Exception as exc:
            level = logging.WARNING if is_transient(exc) else logging.ERROR
            log.log(level, "churn refit failed; retrying in a minute", exc_info=True)
            delay = 60
        await asyncio.sleep(delay)
