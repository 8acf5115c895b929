"""``python -m deploy.image.check`` (``make image-check``): build deploy/Dockerfile for real with
podman and check the image, or skip (exit 0, one line starting ``image-check: SKIPPED``) where
podman cannot run a container.

1. finds how podman runs here (:mod:`deploy.image.podman`: the runtime, ulimits);
2. makes or reuses the stand-in for ``python:3.11-slim-bookworm`` (:mod:`deploy.image.base`);
3. renders deploy/compose.yaml with ``podman-compose config`` (:mod:`deploy.image.compose`);
4. builds the image with the host's CA bundle and pip settings mounted where packages come
   through an intercepting proxy (:mod:`deploy.image.build`), and looks inside: its user,
   compilers, packaging tools left in the venv, its size;
5. runs Compose's ``topics`` job and the four services from it, as Compose runs them, against
   a Kafka broker and a MongoDB-wire server started for the check, until each answers
   ``/readyz`` and passes its own health check (:mod:`deploy.image.services`).

Exit 0 when everything holds, 1 otherwise. Logs of the last run: ``.run/image-check/``.
Every container it starts is removed at the end, also on failure or SIGTERM; one check runs at a
time on the machine (``~/.cache/upkeep/image-check.lock``: podman's images and containers are the
machine's, whichever clone runs the check). See docs/image.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from deploy.image import base, build, compose, services
from deploy.image.podman import Podman, Unavailable, probe
from deploy.local.kafka import ROOT

RUN_DIR = ROOT / ".run" / "image-check"
CACHE_DIR = ROOT / ".cache" / "image-base"
TAG = "localhost/upkeep:check"
SERVICES = ("ingest", "rules", "notifier", "analytics")
READY_DEADLINE_S = 300.0  # for all four together: 2 cores, one CPU each by Compose's limits
SKIPPED = "image-check: SKIPPED"


@dataclass
class Report:
    started: float = field(default_factory=time.monotonic)
    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def say(self, text: str) -> None:
        sys.stdout.write(f"[{time.monotonic() - self.started:6.1f}s] {text}\n")
        sys.stdout.flush()

    def result(self, name: str, ok: bool, detail: str) -> None:
        self.results.append((name, ok, detail))
        self.say(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(ok for _, ok, _ in self.results)

    def summary(self) -> None:
        width = max(len(name) for name, _, _ in self.results) if self.results else 0
        sys.stdout.write("\n== image check summary ==\n")
        for name, ok, detail in self.results:
            sys.stdout.write(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}\n")
        failed = sum(not ok for _, ok, _ in self.results)
        elapsed = time.monotonic() - self.started
        verdict = "image check passed" if self.ok else f"image check FAILED ({failed} failed)"
        sys.stdout.write(f"{verdict} in {elapsed:.0f}s\n")


def megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def machine_lock() -> Path:
    """Beside the compiled MongoDB-wire server's per-machine cache (``~/.cache/upkeep/``)."""
    from deploy.local.mongo_choice import cache_home

    return cache_home() / "image-check.lock"


def on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup below


def choose_mongo() -> str:
    """The compiled MongoDB-wire server when it is built; else the Python one, at once (the
    check does not wait for the five-minute build that `make test` may be running)."""
    from deploy.local.mongo_choice import binary_path

    if not os.environ.get("UPKEEP_LOCAL_MONGO") and not binary_path().exists():
        os.environ["UPKEEP_LOCAL_MONGO"] = "python"
    return os.environ.get("UPKEEP_LOCAL_MONGO") or "rust"


def step_podman(report: Report) -> Podman | None:
    try:
        podman = probe(RUN_DIR)
    except Unavailable as exc:
        sys.stdout.write(f"{SKIPPED}: podman cannot run containers here: {exc}\n")
        return None
    report.say(
        f"podman {podman.version}: runtime {podman.runtime_name}"
        + (f" (default {podman.default_runtime})" if podman.runtime else "")
        + (f", {' '.join(podman.ulimit_args())}" if podman.ulimits else ", podman's ulimits")
    )
    for finding in podman.findings:
        report.say(f"  found: {finding}")
    return podman


def step_image(
    report: Report, podman: Podman, dockerfile: Path, tag: str, rebuild_base: bool
) -> tuple[base.BaseImage, build.Built] | None:
    report.say("base image: the stand-in for python:3.11-slim-bookworm ...")
    try:
        stand_in = base.ensure_base(podman, CACHE_DIR, RUN_DIR, rebuild=rebuild_base)
    except (RuntimeError, OSError) as exc:
        report.result("base image", False, str(exc))
        return None
    report.result(
        "base image",
        True,
        f"{stand_in.tag}: Debian bookworm minbase + python3.11 {stand_in.python}, "
        f"{stand_in.how} (tarball {display(stand_in.tarball)}) in {stand_in.seconds:.0f}s",
    )
    environment = build.detect_build_environment()
    report.say(f"build mounts: {environment.describe()}")
    mounts = environment.mounts(RUN_DIR / "build")
    report.say(
        f"podman build -f {display(dockerfile)} -t {tag} (log: {display(RUN_DIR)}/build.log)"
    )
    try:
        built = build.build_image(
            podman,
            context=ROOT,
            dockerfile=dockerfile,
            tag=tag,
            base_tag=stand_in.tag,
            mounts=mounts,
            log=RUN_DIR / "build.log",
            record=machine_lock().with_name("image-check-images.json"),
        )
    except (RuntimeError, OSError) as exc:
        report.result("build", False, str(exc))
        return None
    pruned = f", {built.pruned} images of earlier checks removed" if built.pruned else ""
    report.result("build", True, f"{tag} {built.image_id[:12]} in {built.seconds:.0f}s{pruned}")
    return stand_in, built


def step_contents(report: Report, podman: Podman, tag: str, base_tag: str) -> None:
    try:
        seen = build.inspect_image(podman, tag, base_tag)
    except (RuntimeError, OSError, ValueError) as exc:
        report.result("image contents", False, str(exc))
        return
    report.say(
        f"image: {megabytes(seen.size_bytes)} (base {megabytes(seen.base_size_bytes)}), "
        f"python {seen.python} from {seen.prefix} ({seen.real_executable}), "
        f"{seen.distributions} distributions in the venv"
    )
    report.result("image size", True, megabytes(seen.size_bytes))
    user_ok = seen.uid == build.EXPECTED_UID and seen.gid == build.EXPECTED_UID
    report.result(
        "non-root user",
        user_ok,
        f"USER {seen.config_user or '(none)'}: uid {seen.uid} gid {seen.gid} ({seen.user})",
    )
    absent = "none of " + ", ".join(build.COMPILERS)
    report.result("no compilers", not seen.compilers, ", ".join(seen.compilers) or absent)
    left = {name: version for name, version in seen.packaging.items() if name != "wheel"}
    if left or seen.packaging_scripts:
        detail = next(p for p in seen.problems if p.startswith("packaging tools"))
    else:
        detail = f"no pip or setuptools in {build.VENV}"
        if "wheel" in seen.packaging:
            detail += f" (wheel {seen.packaging['wheel']} is)"
    report.result("no pip/setuptools in the venv", not (left or seen.packaging_scripts), detail)
    if seen.prefix != build.VENV:
        report.result("venv", False, f"python runs from {seen.prefix}, not {build.VENV}")


def step_compose(report: Report) -> dict[str, Any]:
    """The services' Compose definitions as podman-compose renders them (the file's own, parsed
    with PyYAML, where that render fails: the service runs still happen)."""
    report.say("podman-compose config deploy/compose.yaml ...")
    rendered = compose.render(RUN_DIR / "compose")
    for warning in rendered.warnings:
        report.say(f"  podman-compose: {warning}")
    report.result("compose render", rendered.ok, f"{rendered.tool}: {rendered.detail}")
    if rendered.model is not None:
        found: dict[str, Any] = rendered.model["services"]
        return found
    raw: dict[str, Any] = yaml.safe_load(compose.COMPOSE.read_text())["services"]
    return raw


def step_services(report: Report, podman: Podman, tag: str, specs: dict[str, Any]) -> None:
    from deploy.local.stack import ephemeral_stack  # imports pymongo, httpx: only when needed

    mongo = choose_mongo()
    check_tag = uuid.uuid4().hex[:8]
    report.say(f"starting Kafka and the MongoDB-wire server ({mongo}) for the check ...")
    with ExitStack() as stack_cleanup:
        stack = stack_cleanup.enter_context(ephemeral_stack("image-check-stack"))
        stack.start_mailsink()
        run = services.ServiceRun(podman, tag, stack, check_tag)
        stack_cleanup.callback(lambda: report_cleanup(report, run))
        report.say(
            f"Kafka {stack.kafka_node.bootstrap}, MongoDB-wire {stack.mongo_uri} "
            f"({stack.mongo_server.why}); topics, groups and database tagged {check_tag}"
        )
        ok, detail = run.run_topics_job(specs["topics"])
        report.result("topics job (python -m shared.kafka.topics)", ok, detail)
        if not ok:  # the services are checked all the same, on topics made the harness's way
            created = stack.create_topics(run.topics)
            report.say(
                "  topics made with shared.kafka.topics.ensure_topics instead: "
                + (", ".join(created) or "none missing (the job made them before it failed)")
            )
        report.say("compose options: " + " ".join(services.compose_options(specs["ingest"])))
        started = time.monotonic()
        outcomes = [run.start(name, specs[name]) for name in SERVICES]
        deadline = started + READY_DEADLINE_S
        for outcome in outcomes:
            if not outcome.problem:
                run.wait_ready(outcome, started, deadline)
            if not outcome.problem:
                run.healthcheck(outcome)
            if not outcome.problem:
                run.confinement(outcome, specs[outcome.service])
            if not outcome.problem:
                run.memory(outcome)
        for outcome in outcomes:
            run.save_logs(outcome.service, RUN_DIR / f"{outcome.service}.log")
            if not outcome.problem:
                run.stop(outcome)
            report.result(f"service {outcome.service}", outcome.ok, describe(outcome))


def describe(outcome: services.Outcome) -> str:
    if outcome.problem:
        return f"127.0.0.1:{outcome.port}: {outcome.problem}"
    parts = [
        f"127.0.0.1:{outcome.port} ready in {outcome.ready_s:.1f}s",
        f"healthcheck exit {outcome.healthcheck}",
    ]
    if outcome.memory:
        parts.append(f"memory {outcome.memory}")
    if outcome.confined:
        parts.append(outcome.confined)
    if outcome.exit_code is not None and outcome.stop_s is not None:
        parts.append(f"stopped (exit {outcome.exit_code}) in {outcome.stop_s:.1f}s")
    if outcome.note:
        parts.append(outcome.note)
    return ", ".join(parts)


def report_cleanup(report: Report, run: services.ServiceRun) -> None:
    removed = run.cleanup()
    report.say(f"removed containers: {', '.join(removed) or 'none left'}")


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.image.check", description=__doc__)
    parser.add_argument("--dockerfile", type=Path, default=ROOT / "deploy" / "Dockerfile")
    parser.add_argument("--tag", default=TAG, help=f"the image to build (default {TAG})")
    parser.add_argument("--rebuild-base", action="store_true", help="make the stand-in anew")
    args = parser.parse_args(argv)
    dockerfile = args.dockerfile.resolve()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, on_sigterm)
    report = Report()
    # one check at a time on this machine (podman's images and containers are the machine's,
    # whichever clone runs the check): the tag, the container names, ports 8001-8004
    with base.locked(machine_lock(), lambda: report.say("waiting for another image check")):
        podman = step_podman(report)
        if podman is None:
            return 0
        stale = services.remove_stale(podman)
        if stale:
            report.say(f"removed containers an earlier check left: {', '.join(stale)}")
        try:
            specs = step_compose(report)
            image = step_image(report, podman, dockerfile, args.tag, args.rebuild_base)
            if image is not None:
                step_contents(report, podman, args.tag, image[0].tag)
                try:
                    step_services(report, podman, args.tag, specs)
                except Exception as exc:  # the stack did not start, podman broke: a failure
                    report.result("services", False, f"{type(exc).__name__}: {exc}")
        finally:
            report.summary()
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
