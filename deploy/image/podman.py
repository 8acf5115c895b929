"""Whether podman can run a container on this machine, and what it needs to.

Nothing here is assumed about the machine: a trivial container (the host's ``/bin/true`` and the
libraries it loads, run with ``--rootfs``, so no image is pulled) is started with podman's
defaults, and what fails decides the options every later podman call gets:

* the OCI runtime: podman's default (crun on a fresh Debian install) first, then ``runc``; crun
  refuses a hybrid cgroup v1/v2 layout, runc does not;
* ``--ulimit nofile=…,nproc=…``: podman asks the runtime for limits of its own (up to 1048576
  open files), which fails where this process may not raise its limits that far. The limit the
  runtime names is then set explicitly, first to this process's hard limit
  (``resource.getrlimit``), then lower by powers of two while the runtime still refuses it
  (podman lowers its own ``nproc`` before starting the runtime, so the hard limit read here may
  still be too high).
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# the limits podman sets by default and the runtime may refuse, by podman's --ulimit name
RLIMITS: dict[str, int] = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}
PODMAN_DEFAULT_LIMIT = 1_048_576  # what podman asks for when nothing says otherwise
LOWEST_LIMIT = 1024  # below this a service could not run anyway: give up
FALLBACK_RUNTIMES = ("runc",)


class Unavailable(Exception):
    """Podman cannot run containers here; the message is one line saying why."""


def first_line(text: str) -> str:
    """The most telling line of an error output (podman's ``Error: …`` when there is one)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Error:"):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


@dataclass
class Podman:
    """How to call podman here: the runtime and ulimits the probe found necessary."""

    binary: str
    version: str
    default_runtime: str
    runtime: str | None = None  # None: podman's default works
    ulimits: dict[str, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)  # what the probe found, for the summary

    def argv(self, *args: str) -> list[str]:
        runtime = ["--runtime", self.runtime] if self.runtime else []
        return [self.binary, *runtime, *args]

    def ulimit_args(self) -> list[str]:
        return ulimit_args(self.ulimits)

    @property
    def runtime_name(self) -> str:
        return self.runtime or self.default_runtime

    def run(
        self, *args: str, timeout: float = 120, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input_text,
        )


def ulimit_args(ulimits: dict[str, int]) -> list[str]:
    args: list[str] = []
    for name, value in ulimits.items():
        args += ["--ulimit", f"{name}={value}:{value}"]
    return args


def refused_limit(error: str) -> str | None:
    """The podman ulimit name of the resource limit a runtime could not set, if that is what
    ``error`` says (runc: ``error setting rlimit type 7``; crun: ``setrlimit `RLIMIT_NOFILE```)."""
    numbered = re.search(r"rlimit type (\d+)", error)
    if numbered:
        number = int(numbered.group(1))
        return next((name for name, value in RLIMITS.items() if value == number), None)
    named = re.search(r"RLIMIT_([A-Z]+)", error)
    if named and named.group(1).lower() in RLIMITS:
        return named.group(1).lower()
    return None


def allowed_limit(name: str) -> int:
    """This process's hard limit (what a child may be given without privileges)."""
    _soft, hard = resource.getrlimit(RLIMITS[name])
    if hard == resource.RLIM_INFINITY or hard > PODMAN_DEFAULT_LIMIT:
        return PODMAN_DEFAULT_LIMIT
    return int(hard)


def lower_limit(value: int) -> int:
    """The next power of two below ``value``."""
    power = 1 << (value.bit_length() - 1)
    return power // 2 if power == value else power


def probe_rootfs(directory: Path) -> Path:
    """A root file system with the host's ``true`` and what it loads (from ``ldd``)."""
    shutil.rmtree(directory, ignore_errors=True)
    true = Path(shutil.which("true") or "/bin/true").resolve()
    files = [true]
    if shutil.which("ldd"):
        listed = subprocess.run(
            ["ldd", str(true)], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        files += [Path(path) for path in re.findall(r"(/\S+)", listed)]
    for path in files:
        target = directory / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path.resolve(), target)
    (directory / "bin").mkdir(exist_ok=True)
    if not (directory / "bin" / "true").exists():
        shutil.copy2(true, directory / "bin" / "true")
    return directory.resolve()


def _trivial_run(
    binary: str, runtime: str | None, ulimits: dict[str, int], rootfs: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    argv = [binary, *(["--runtime", runtime] if runtime else [])]
    argv += ["run", "--rm", *ulimit_args(ulimits), "--rootfs", str(rootfs), "/bin/true"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _try_runtime(
    binary: str, runtime: str | None, rootfs: Path, timeout: float
) -> dict[str, int] | str:
    """The ulimits a trivial run needs with this runtime, or why it cannot run at all."""
    ulimits: dict[str, int] = {}
    for _attempt in range(64):
        try:
            done = _trivial_run(binary, runtime, ulimits, rootfs, timeout)
        except subprocess.TimeoutExpired:
            return f"a trivial run did not finish in {timeout:.0f}s"
        if done.returncode == 0:
            return ulimits
        error = done.stderr + done.stdout
        name = refused_limit(error)
        if name is None:
            return first_line(error)
        ulimits[name] = lower_limit(ulimits[name]) if name in ulimits else allowed_limit(name)
        if ulimits[name] < LOWEST_LIMIT:
            return first_line(error)
    return "a trivial run kept failing"


def probe(workdir: Path, timeout: float = 90) -> Podman:
    """Find how podman runs a container here, or raise :class:`Unavailable`."""
    binary = shutil.which("podman")
    if binary is None:
        raise Unavailable("podman is not installed (Debian: apt-get install podman runc)")
    try:
        info = subprocess.run(
            [binary, "info", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"`podman info` did not answer in {timeout:.0f}s") from exc
    if info.returncode != 0:
        raise Unavailable(f"`podman info` fails: {first_line(info.stderr + info.stdout)}")
    details = json.loads(info.stdout)
    version = str(details.get("version", {}).get("Version", "?"))
    default_runtime = str(details.get("host", {}).get("ociRuntime", {}).get("name", "?"))
    rootfs = probe_rootfs(workdir / "probe-rootfs")
    failures: list[str] = []
    runtimes: list[str | None] = [None]
    runtimes += [name for name in FALLBACK_RUNTIMES if name != default_runtime]
    for runtime in runtimes:
        outcome = _try_runtime(binary, runtime, rootfs, timeout)
        name = runtime or default_runtime
        if isinstance(outcome, str):
            failures.append(f"{name}: {outcome}")
            continue
        found = Podman(binary, version, default_runtime, runtime, outcome)
        found.findings += [f"{failure} -> --runtime {runtime}" for failure in failures]
        if outcome:
            limits = ", ".join(f"{key}={value}" for key, value in outcome.items())
            found.findings.append(
                f"podman's default ulimits are refused here -> --ulimit {limits} "
                f"(hard limits of this process: {describe_limits()})"
            )
        return found
    raise Unavailable("a trivial `podman run` fails: " + "; ".join(failures))


def describe_limits(names: Sequence[str] = tuple(RLIMITS)) -> str:
    parts = []
    for name in names:
        _soft, hard = resource.getrlimit(RLIMITS[name])
        parts.append(f"{name}={'unlimited' if hard == resource.RLIM_INFINITY else hard}")
    return ", ".join(parts)
