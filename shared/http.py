"""FastAPI app factory: every service gets ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers while the process runs. ``/readyz`` answers 200 only when every readiness
check passes (Kafka and MongoDB reachable, consumer loop committing), else 503 with the failing
checks named. Checks run concurrently with a short timeout, so a hung dependency cannot hang it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from shared import metrics

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT_S = 2.0

HTTP_REQUESTS = Counter(
    "upkeep_http_requests_total",
    "HTTP requests served, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "upkeep_http_request_duration_seconds",
    "HTTP request handling time, by route template.",
    ["route"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
_UNTRACKED = frozenset({"/metrics", "/healthz", "/readyz"})


async def _run_check(name: str, check: ReadinessCheck) -> tuple[str, bool, str]:
    try:
        ok = await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S)
        return name, bool(ok), "ok" if ok else "not ready"
    except Exception as exc:  # any failure means "not ready", never a 500
        return name, False, failure_reason(exc)


def failure_reason(exc: BaseException) -> str:
    """The exception's class, and the server's error name where it gave one (MongoDB's
    ``AuthenticationFailed``, ``Unauthorized``): enough to act on, never a message that could
    carry a URI or a value."""
    details = getattr(exc, "details", None)
    code_name = details.get("codeName") if isinstance(details, dict) else None
    return f"{type(exc).__name__}: {code_name}" if code_name else type(exc).__name__


def create_app(
    *,
    service: str,
    readiness: Mapping[str, ReadinessCheck],
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    description: str = "",
    version: str = "0.1.0",
) -> FastAPI:
    """An app with the operational endpoints; the service adds its own routes."""
    disable_created_metrics()  # type: ignore[no-untyped-call] # *_created series only add noise to dashboards
    app = FastAPI(
        title=f"Upkeep {service}", description=description, version=version, lifespan=lifespan
    )

    @app.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            if template not in _UNTRACKED:
                HTTP_REQUESTS.labels(request.method, template, str(status)).inc()
                HTTP_SECONDS.labels(template).observe(time.perf_counter() - started)

    async def probe() -> list[tuple[str, bool, str]]:
        """Run every readiness check (each bounded by CHECK_TIMEOUT_S) and export the result
        as ``upkeep_dependency_up``."""
        results = await asyncio.gather(*(_run_check(n, c) for n, c in readiness.items()))
        for name, ok, _ in results:
            metrics.DEPENDENCY_UP.labels(name).set(1 if ok else 0)
        return list(results)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process is running")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: every dependency is reachable",
        responses={503: {"description": "a dependency is not reachable"}},
    )
    async def readyz() -> JSONResponse:
        results = await probe()
        ready = all(ok for _, ok, _ in results)
        checks: dict[str, Any] = {name: detail for name, _, detail in results}
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus_metrics() -> Response:
        await probe()  # every scrape sees the dependencies as they are now
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
