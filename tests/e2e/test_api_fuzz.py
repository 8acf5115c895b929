"""Schemathesis against the OpenAPI of every HTTP service, running as `make up` runs it: examples,
boundary (coverage) cases and generated inputs for every operation, with the API keys the
operations need. No input may get a 5xx answer, every service stays up (same process) and ready.
The seed is fixed, so a failure can be replayed with the printed command.

Without credentials, the APIs that need them (analytics, rules) give no input a 5xx answer
either, and every operation of theirs answers 401 — but the operational endpoints (/healthz,
/readyz, /metrics), which stay open."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.local.stack import DEV_API_KEY, LocalStack
from shared.settings import TopicSettings
from tests.e2e.replicas import Replicas

pytestmark = pytest.mark.e2e

SERVICES = ("ingest", "rules", "notifier", "analytics")
SECURED = ("rules", "analytics")  # every operation but the operational ones needs a key
OPEN = {"/healthz", "/readyz", "/metrics"}  # in every schema, open to all
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SEED = "20261122"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def services(stack: LocalStack, topics: TopicSettings) -> Iterator[dict[str, Replicas]]:
    """Each service's replicas, none started yet."""
    procs = {s: Replicas(stack, s, topics) for s in SERVICES}
    try:
        yield procs
    finally:
        for replicas in procs.values():
            replicas.stop_all()


async def schemathesis(url: str, report_dir: Path, *extra: str) -> int:
    """Run schemathesis against the service at ``url`` with ``extra`` options, checking that
    no input gets a 5xx answer; fails the test with its output and the command to replay it.
    Returns how many test cases it ran (0 when its output does not say)."""
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--seed",
        SEED,
        "--request-timeout",
        "20",
        "--report",
        "ndjson",
        "--report-dir",
        str(report_dir),
        *extra,
    ]
    done = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=400, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)}\n{output[-4000:]}"
    cases = re.search(r"(\d+) generated", output) or re.search(r"Test cases:\s+(\d+)", output)
    return int(cases[1]) if cases else 0


@pytest.mark.timeout(900)
async def test_no_input_to_any_service_gets_a_server_error(
    services: dict[str, Replicas], tmp_path: Path
) -> None:
    if not SCHEMATHESIS.exists():
        pytest.fail("schemathesis is missing: `make test` installs the dev dependencies")
    for replicas in services.values():
        await asyncio.to_thread(replicas.start, "a")
    pids = {s: r.started[-1].pid() for s, r in services.items()}
    tried: dict[str, int] = {}
    for service, replicas in services.items():
        key = f"Authorization: Bearer {DEV_API_KEY}"
        extra = ("--max-examples", "25", "--header", key)
        tried[service] = await schemathesis(replicas.urls["a"], tmp_path / service, *extra)
    async with httpx.AsyncClient(timeout=10) as http:
        for service, replicas in services.items():
            assert replicas.started[-1].pid() == pids[service], f"{service} restarted"
            ready = await http.get(f"{replicas.urls['a']}/readyz")
            assert ready.status_code == 200, f"{service}: {ready.text}"
    print(f"schemathesis test cases per service: {tried}")
    assert all(n > 0 for n in tried.values()), tried


def filled(path: str, item: dict[str, Any], openapi: dict[str, Any]) -> str:
    """``path`` with each path parameter given a value its schema allows (an enum's first)."""
    for operation in item.values():
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "path":
                continue
            schema = parameter.get("schema", {})
            ref = schema.get("$ref")
            if ref:
                schema = openapi["components"]["schemas"][ref.rsplit("/", 1)[-1]]
            value = (schema.get("enum") or ["x-1"])[0]
            path = path.replace("{" + parameter["name"] + "}", str(value))
    assert "{" not in path, f"a path parameter left unfilled: {path}"
    return path


@pytest.mark.timeout(600)
async def test_without_credentials_no_input_gets_a_server_error_and_every_operation_a_401(
    services: dict[str, Replicas], tmp_path: Path
) -> None:
    if not SCHEMATHESIS.exists():
        pytest.fail("schemathesis is missing: `make test` installs the dev dependencies")
    for service in SECURED:
        await asyncio.to_thread(services[service].start, "a")
    pids = {s: services[s].started[-1].pid() for s in SECURED}
    tried: dict[str, int] = {}
    refused: dict[str, int] = {}
    for service in SECURED:
        url = services[service].urls["a"]
        # no --header: what anyone who reaches the port could send
        tried[service] = await schemathesis(url, tmp_path / service, "--max-examples", "10")
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            openapi = (await http.get("/openapi.json")).json()
            assert set(openapi["paths"]) >= OPEN, f"{service}: {sorted(openapi['paths'])}"
            answers: dict[str, int] = {}
            for path, item in openapi["paths"].items():
                target = filled(path, item, openapi)
                for method in set(item) & METHODS:
                    body: dict[str, Any] | None = {} if method in ("post", "put", "patch") else None
                    answer = await http.request(method, target, json=body)
                    answers[f"{method.upper()} {path}"] = answer.status_code
        # the operational endpoints answer (the service is ready), every other one wants a key
        expected = {op: 200 if op.split(" ", 1)[1] in OPEN else 401 for op in answers}
        assert answers == expected, f"{service}"
        refused[service] = sum(code == 401 for code in answers.values())
        assert services[service].started[-1].pid() == pids[service], f"{service} restarted"
    print(f"without credentials: schemathesis cases {tried}, operations refused {refused}")
    assert all(n > 0 for n in refused.values()), refused
    assert all(n > 0 for n in tried.values()), tried
