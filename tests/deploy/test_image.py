"""The image, built for real with podman and run as Compose runs it: `python -m
deploy.image.check` (`make image-check`), here as a subprocess. Skipped, with the check's own
one-line reason, where podman cannot run a container. The stand-in base image is cached under
.cache/image-base/, so only the first run on a machine makes it (about a minute)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.image.check import SKIPPED

ROOT = Path(__file__).resolve().parents[2]
CHECK_TIMEOUT_S = 1500  # a cold run here takes about 3 minutes; the first base image and build
# download Debian packages and wheels


@pytest.mark.timeout(CHECK_TIMEOUT_S + 180)
def test_the_image_builds_and_every_service_runs_from_it() -> None:
    check = subprocess.Popen(
        [sys.executable, "-m", "deploy.image.check"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        output, _ = check.communicate(timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        check.send_signal(signal.SIGTERM)  # the check removes its containers on SIGTERM
        try:
            output, _ = check.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            check.kill()
            output, _ = check.communicate()
        pytest.fail(f"the image check did not finish in {CHECK_TIMEOUT_S}s:\n{output}")
    skipped = [line for line in output.splitlines() if line.startswith(SKIPPED)]
    if skipped and check.returncode == 0:
        pytest.skip(skipped[0])
    assert check.returncode == 0, output
    assert "image check passed" in output, output
