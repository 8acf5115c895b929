"""Schemathesis against the OpenAPI of every HTTP service, running as `make up` runs it: examples,
boundary (coverage) cases and generated inputs for every operation, with the API keys the
operations need. No input may get a 5xx answer, every service stays up (same process) and ready.
The seed is fixed, so a failure can be replayed with the printed command."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.local.stack import DEV_API_KEY, LocalStack
from shared.settings import TopicSettings
from tests.e2e.replicas import Replicas

pytestmark = pytest.mark.e2e

SERVICES = ("ingest", "rules", "notifier", "analytics")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture
def services(stack: LocalStack, topics: TopicSettings) -> Iterator[dict[str, Replicas]]:
    procs = {s: Replicas(stack, s, topics) for s in SERVICES}
    try:
        yield procs
    finally:
        for replicas in procs.values():
            replicas.stop_all()


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
        url = replicas.urls["a"]
        command = [
            str(SCHEMATHESIS),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "20261122",
            "--header",
            f"Authorization: Bearer {DEV_API_KEY}",
            "--request-timeout",
            "20",
            "--report",
            "ndjson",
            "--report-dir",
            str(tmp_path / service),
        ]
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=400, check=False
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{service}: {' '.join(command)}\n{output[-4000:]}"
        cases = re.search(r"(\d+) generated", output) or re.search(r"Test cases:\s+(\d+)", output)
        tried[service] = int(cases[1]) if cases else 0
    async with httpx.AsyncClient(timeout=10) as http:
        for service, replicas in services.items():
            assert replicas.started[-1].pid() == pids[service], f"{service} restarted"
            ready = await http.get(f"{replicas.urls['a']}/readyz")
            assert ready.status_code == 200, f"{service}: {ready.text}"
    print(f"schemathesis test cases per service: {tried}")
    assert all(n > 0 for n in tried.values()), tried
