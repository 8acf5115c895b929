"""Each service run from the image with the options Compose gives it, against a real Kafka
broker and MongoDB-wire server (the test harness's :func:`deploy.local.stack.ephemeral_stack`).

From each service's Compose definition: the command, ``read_only``, ``tmpfs``, ``cap_drop``,
``cap_add``, ``security_opt``, the memory and CPU limits, the memory reservation and
``stop_grace_period``; the container port of ``UPKEEP_<SERVICE>_HTTP_PORT`` (8001-8004). Not
from it: the network (``--network host``, so the containers reach the broker and the server on
127.0.0.1; the services listen on 127.0.0.1, not 0.0.0.0), the environment (the harness's
:meth:`LocalStack.service_env`, which tests/deploy/test_compose.py keeps in step with Compose's,
plus topics, consumer groups and a database of the check's own), restart policies and logging.
The Compose ``topics`` job runs first, from the image too.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from deploy.image.podman import Podman, first_line
from deploy.local.kafka import free_port
from deploy.local.stack import LocalStack
from shared.settings import TopicSettings

LABEL = "org.upkeep.image-check"
PREFIX = "upkeep-check-"

# run in each service's container by `podman exec`: are Compose's restrictions in force?
CONFINEMENT = """
import json, os
status = dict(l.split(":", 1) for l in open("/proc/1/status").read().splitlines() if ":" in l)
def writable(directory):
    path = os.path.join(directory, ".upkeep-image-check")
    try:
        open(path, "w").close()
        os.remove(path)
        return True
    except OSError:
        return False
def read(*paths):
    for path in paths:
        try:
            return open(path).read().strip()
        except OSError:
            pass
    return ""
print(json.dumps({
    "no_new_privs": status.get("NoNewPrivs", "").strip(),
    "cap_eff": status.get("CapEff", "").strip(),
    "root_writable": writable("/opt/upkeep"),
    "tmp_writable": writable("/tmp"),
    "memory_limit": read("/sys/fs/cgroup/memory.max",
                         "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "cpu_max": read("/sys/fs/cgroup/cpu.max") or " ".join((
        read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"),
        read("/sys/fs/cgroup/cpu/cpu.cfs_period_us",
             "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us"))),
}))
"""
UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def compose_options(spec: Mapping[str, Any]) -> list[str]:
    """The podman run options for what a Compose service definition says about the container."""
    args: list[str] = []
    if spec.get("read_only"):
        args.append("--read-only")
    tmpfs = spec.get("tmpfs") or []
    for mount in [tmpfs] if isinstance(tmpfs, str) else tmpfs:
        args += ["--tmpfs", str(mount)]
    for cap in spec.get("cap_drop") or []:
        args += ["--cap-drop", str(cap)]
    for cap in spec.get("cap_add") or []:
        args += ["--cap-add", str(cap)]
    for option in spec.get("security_opt") or []:
        args += ["--security-opt", str(option)]
    resources = (spec.get("deploy") or {}).get("resources") or {}
    limits = resources.get("limits") or {}
    if limits.get("memory"):
        args += ["--memory", str(limits["memory"]).lower()]
    if limits.get("cpus"):
        args += ["--cpus", str(limits["cpus"])]
    reserved = (resources.get("reservations") or {}).get("memory")
    if reserved:
        args += ["--memory-reservation", str(reserved).lower()]
    grace = spec.get("stop_grace_period")
    if grace:
        args += ["--stop-timeout", str(duration_s(str(grace)))]
    return args


def duration_s(text: str) -> int:
    """A Compose duration (``30s``, ``1m30s``, ``2m``) in whole seconds."""
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for char in text.strip():
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total += float(number) * units[char]
            number = ""
    if number:
        total += float(number)
    return int(total)


def memory_bytes(text: str) -> int:
    """``512M`` (Compose, binary units as Docker reads them) in bytes."""
    text = text.strip().lower().rstrip("b")
    if text and text[-1] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def confinement_problems(seen: Mapping[str, Any], spec: Mapping[str, Any]) -> list[str]:
    """What of Compose's restrictions the container does not have."""
    problems = []
    drops_all = "ALL" in (spec.get("cap_drop") or []) and not spec.get("cap_add")
    if drops_all and seen["cap_eff"].strip("0"):
        problems.append(f"effective capabilities {seen['cap_eff']}, not none")
    no_new = any("no-new-privileges" in str(o) for o in spec.get("security_opt") or [])
    if no_new and seen["no_new_privs"] != "1":
        problems.append(f"NoNewPrivs {seen['no_new_privs'] or '?'}, not 1")
    if spec.get("read_only") and seen["root_writable"]:
        problems.append("the root file system is writable")
    if spec.get("tmpfs") and not seen["tmp_writable"]:
        problems.append("the tmpfs is not writable")
    limits = ((spec.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    if limits.get("memory"):
        wanted = memory_bytes(str(limits["memory"]))
        if seen["memory_limit"] != str(wanted):
            problems.append(f"memory limit {seen['memory_limit'] or '?'}, not {wanted}")
    if limits.get("cpus"):
        quota, _, period = seen["cpu_max"].partition(" ")
        try:
            cpus = int(quota) / int(period)
        except ValueError:
            cpus = 0.0
        if abs(cpus - float(limits["cpus"])) > 0.01:
            problems.append(f"CPU quota {seen['cpu_max'] or '?'}, not {limits['cpus']} CPUs")
    return problems


def container_port(service: str, spec: Mapping[str, Any]) -> int | None:
    environment = spec.get("environment") or {}
    value = environment.get(f"UPKEEP_{service.upper()}_HTTP_PORT")
    return int(value) if value else None


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_topics(tag: str) -> TopicSettings:
    defaults = TopicSettings()
    return TopicSettings.model_validate(
        {name: f"{value}.check-{tag}" for name, value in defaults.model_dump().items()}
    )


def isolation_env(tag: str, topics: TopicSettings) -> dict[str, str]:
    env = {f"UPKEEP_TOPIC_{name.upper()}": value for name, value in topics.model_dump().items()}
    env["UPKEEP_MONGO_DATABASE"] = f"upkeep_check_{tag}"
    return env


@dataclass
class Outcome:
    service: str
    port: int
    ready_s: float | None = None  # seconds until /readyz answered 200
    healthcheck: int | None = None  # exit status of `python -m shared.healthcheck`
    exit_code: int | None = None  # after `podman stop`
    stop_s: float | None = None
    memory: str = ""
    confined: str = ""  # what the confinement probe saw
    note: str = ""
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem and self.ready_s is not None and self.healthcheck == 0


def env_args(env: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for name, value in sorted(env.items()):
        args += ["-e", f"{name}={value}"]
    return args


def remove_stale(podman: Podman) -> list[str]:
    """Containers an earlier check left (it was killed): under the check's lock, every
    container with the check's label is one."""
    listed = podman.run(
        "ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}", timeout=60
    )
    names = [name for name in listed.stdout.split() if name.startswith(PREFIX)]
    for name in names:
        podman.run("rm", "--force", "--time", "5", name, timeout=120)
    return names


class ServiceRun:
    """Starts the topics job and the services; :meth:`cleanup` removes every container."""

    def __init__(self, podman: Podman, image: str, stack: LocalStack, tag: str) -> None:
        self.podman = podman
        self.image = image
        self.stack = stack
        self.tag = tag
        self.topics = check_topics(tag)
        self.started: list[str] = []

    def base_args(self, name: str, spec: Mapping[str, Any]) -> list[str]:
        return [
            "--name", name, "--label", f"{LABEL}={self.tag}", "--network", "host",
            *self.podman.ulimit_args(), *compose_options(spec),
        ]  # fmt: skip

    def run_topics_job(self, spec: Mapping[str, Any]) -> tuple[bool, str]:
        name = f"{PREFIX}topics"
        env = {
            "UPKEEP_KAFKA_BOOTSTRAP_SERVERS": self.stack.kafka_node.bootstrap,
            "UPKEEP_LOG_LEVEL": "INFO",
            **isolation_env(self.tag, self.topics),
        }
        command = [str(part) for part in spec.get("command") or ["shared.kafka.topics"]]
        self.started.append(name)
        done = self.podman.run(
            "run", "--rm", *self.base_args(name, spec), *env_args(env), self.image, *command,
            timeout=240,
        )  # fmt: skip
        self.started.remove(name)
        if done.returncode != 0:
            return False, f"exit {done.returncode}: {first_line(done.stderr + done.stdout)}"
        return True, f"{len(self.topics.model_dump())} topics of the check's own"

    def start(self, service: str, spec: Mapping[str, Any]) -> Outcome:
        wanted = container_port(service, spec) or self.stack.config.service_ports[service]
        port = wanted if port_is_free(wanted) else free_port()
        outcome = Outcome(service, port)
        if port != wanted:
            outcome.note = f"port {wanted} is taken here: {port} instead"
        env = {
            **self.stack.service_env(service),
            **isolation_env(self.tag, self.topics),
            f"UPKEEP_{service.upper()}_HTTP_PORT": str(port),
            f"UPKEEP_{service.upper()}_CONSUMER_GROUP": f"upkeep-{service}-check-{self.tag}",
        }
        if service == "notifier":
            env["UPKEEP_NOTIFIER_PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
        command = [str(part) for part in spec.get("command") or [f"services.{service}"]]
        name = PREFIX + service
        self.started.append(name)
        done = self.podman.run(
            "run", "--detach", *self.base_args(name, spec), *env_args(env), self.image, *command,
            timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            outcome.problem = f"podman run failed: {first_line(done.stderr)}"
        return outcome

    def state(self, service: str) -> str:
        done = self.podman.run(
            "container", "inspect", "--format", "{{.State.Status}}", PREFIX + service, timeout=30
        )
        return done.stdout.strip() or "gone"

    def logs_tail(self, service: str, lines: int = 15) -> str:
        done = self.podman.run("logs", "--tail", str(lines), PREFIX + service, timeout=60)
        return (done.stdout + done.stderr).strip()

    def save_logs(self, service: str, into: Path) -> None:
        done = self.podman.run("logs", PREFIX + service, timeout=60)
        into.write_text(done.stdout + done.stderr)

    def wait_ready(self, outcome: Outcome, started: float, deadline: float) -> None:
        url = f"http://127.0.0.1:{outcome.port}/readyz"
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(url, timeout=3)
                if answer.status_code == 200:
                    outcome.ready_s = time.monotonic() - started
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            state = self.state(outcome.service)
            if state not in ("running", "created", "configured", "initialized"):
                outcome.problem = f"container {state} before ready; last lines:\n" + (
                    self.logs_tail(outcome.service)
                )
                return
            time.sleep(0.5)
        outcome.problem = f"{url} not ready by the deadline: {last}"

    def healthcheck(self, outcome: Outcome) -> None:
        done = self.podman.run(
            "exec", PREFIX + outcome.service, "python", "-m", "shared.healthcheck", timeout=60
        )
        outcome.healthcheck = done.returncode
        if done.returncode != 0:
            outcome.problem = f"healthcheck exit {done.returncode}: {first_line(done.stderr)}"

    def confinement(self, outcome: Outcome, spec: Mapping[str, Any]) -> None:
        done = self.podman.run(
            "exec", PREFIX + outcome.service, "python", "-c", CONFINEMENT, timeout=60
        )
        if done.returncode != 0:
            outcome.problem = f"confinement probe failed: {first_line(done.stderr)}"
            return
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        problems = confinement_problems(seen, spec)
        if problems:
            outcome.problem = "Compose's restrictions not in force: " + "; ".join(problems)
            return
        quota, _, period = seen["cpu_max"].partition(" ")
        outcome.confined = (
            f"caps {seen['cap_eff']}, NoNewPrivs {seen['no_new_privs']}, read-only root, "
            f"tmpfs writable, memory.limit {seen['memory_limit']}, cpu {quota}/{period}"
        )

    def memory(self, outcome: Outcome) -> None:
        done = self.podman.run(
            "stats", "--no-stream", "--format", "{{.MemUsage}}", PREFIX + outcome.service,
            timeout=60,
        )  # fmt: skip
        if done.returncode == 0 and done.stdout.strip():
            outcome.memory = done.stdout.strip().splitlines()[-1].strip()

    def stop(self, outcome: Outcome) -> None:
        name = PREFIX + outcome.service
        started = time.monotonic()
        self.podman.run("stop", name, timeout=120)  # the Compose grace (--stop-timeout)
        outcome.stop_s = time.monotonic() - started
        done = self.podman.run(
            "container", "inspect", "--format", "{{.State.ExitCode}}", name, timeout=30
        )
        if done.returncode == 0 and done.stdout.strip().lstrip("-").isdigit():
            outcome.exit_code = int(done.stdout.strip())

    def cleanup(self) -> list[str]:
        removed = []
        for name in list(self.started):
            done = self.podman.run("rm", "--force", "--time", "10", name, timeout=120)
            if done.returncode == 0:
                removed.append(name)
            self.started.remove(name)
        return removed
