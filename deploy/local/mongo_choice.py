"""Which embedded MongoDB-wire server the local stack runs, and building the compiled one.

Two servers speak the MongoDB wire protocol over WiredTiger for ``make up``, the tests and the
benchmarks (production runs the official ``mongo`` image; no service knows either):

* ``rust`` (the default): ``secantusd-rs`` from the ``secantus-mdb`` crate, compiled once per
  machine and version into a cache outside the clone (``~/.cache/upkeep/secantus-mdb/<version>/``,
  or ``$UPKEEP_CACHE_HOME``), so every fresh clone on this machine reuses it. The build takes
  about five minutes on 2 cores; concurrent builders wait for one another on a file lock.
* ``python``: ``secantusdb`` from PyPI (``deploy/local/mongo_server.py``), the fallback when the
  build fails or there is no Rust toolchain. ``UPKEEP_LOCAL_MONGO=python`` chooses it outright;
  ``UPKEEP_LOCAL_MONGO=rust`` refuses to fall back.

``python -m deploy.local.mongo_choice build`` builds (or finds) the binary and prints which
server the stack will run; ``--background`` starts the build detached and returns at once, so
``make test`` can overlap it with work that needs no server.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deploy.local.kafka import ROOT

log = logging.getLogger(__name__)

CRATE = "secantus-mdb"
VERSION = "0.5.3-beta.196"  # pinned; the crate builds on the stable toolchain installed here
BINARY = "secantusd-rs"
Kind = Literal["rust", "python"]


def cache_home() -> Path:
    """Per machine, shared by every clone: ``$UPKEEP_CACHE_HOME`` or ``~/.cache/upkeep``."""
    configured = os.environ.get("UPKEEP_CACHE_HOME")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    home = (Path(xdg) if xdg else Path.home() / ".cache") / "upkeep"
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only or missing home: the clone's own cache
        return ROOT / ".cache" / "upkeep"
    return home


def build_dir() -> Path:
    return cache_home() / CRATE / VERSION


def binary_path() -> Path:
    return build_dir() / "bin" / BINARY


def build_log() -> Path:
    return build_dir() / "build.log"


def failure_marker() -> Path:
    """Written when a build fails, so the next start falls back at once instead of spending
    another five minutes on the same failure; older than ``RETRY_FAILED_BUILD_S``, it is ignored."""
    return build_dir() / "build.failed"


RETRY_FAILED_BUILD_S = 3600


@dataclass(frozen=True)
class ServerChoice:
    kind: Kind
    argv: list[str]  # the command up to (not including) the common flags
    why: str  # one line for ``make up``'s output

    def command(self, host: str, port: int, storage: Path, *, auth: bool) -> list[str]:
        """The full command line: both servers take the same flags."""
        flags = ["--host", host, "--port", str(port), "--storage-path", str(storage)]
        flags += ["--log-level", "WARNING", *(["--auth"] if auth else [])]
        return [*self.argv, *flags]


def python_server(why: str) -> ServerChoice:
    return ServerChoice("python", [sys.executable, "-m", "deploy.local.mongo_server"], why)


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One builder per machine and version; others wait here, then find the binary."""
    build_dir().mkdir(parents=True, exist_ok=True)
    with (build_dir().parent / f"{VERSION}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(*, retry_failed: bool = False) -> Path:
    """The compiled server's path, building it first if this machine has none for VERSION.

    Raises ``RuntimeError`` (with the build log's tail) if cargo is missing or the build fails,
    or failed less than an hour ago (unless ``retry_failed``). The binary appears atomically: a
    half-built one is never found."""
    target = binary_path()
    if target.exists():
        return target
    cargo = shutil.which("cargo") or _home_cargo()
    if cargo is None:
        raise RuntimeError("no Rust toolchain (cargo) on this machine")
    with _build_lock():
        if target.exists():  # another builder finished while we waited
            return target
        if not retry_failed:
            _refuse_recent_failure()
        staging = Path(tempfile.mkdtemp(prefix="install-", dir=build_dir()))
        try:
            with build_log().open("wb") as out:
                done = subprocess.run(
                    [
                        cargo,
                        "install",
                        CRATE,
                        "--version",
                        f"={VERSION}",
                        "--locked",
                        "--ignore-rust-version",  # the crate declares 1.98; 1.95 builds it
                        "--root",
                        str(staging),
                        "--target-dir",
                        str(build_dir() / "target"),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
            built = staging / "bin" / BINARY
            if done.returncode != 0 or not built.exists():
                tail = build_log().read_text(errors="replace").splitlines()[-15:]
                message = (
                    f"cargo install {CRATE} {VERSION} failed (exit {done.returncode}); "
                    f"see {build_log()}:\n" + "\n".join(tail)
                )
                failure_marker().write_text(message)
                raise RuntimeError(message)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(built, target)
            failure_marker().unlink(missing_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    # the intermediate objects are ~1 GB and no longer needed
    shutil.rmtree(build_dir() / "target", ignore_errors=True)
    return target


def _refuse_recent_failure() -> None:
    marker = failure_marker()
    with contextlib.suppress(FileNotFoundError):
        if time.time() - marker.stat().st_mtime < RETRY_FAILED_BUILD_S:
            raise RuntimeError(
                f"the last build failed less than an hour ago (delete {marker} to try again "
                "now, or set UPKEEP_LOCAL_MONGO=rust):\n" + marker.read_text(errors="replace")
            )


def _home_cargo() -> str | None:
    cargo = Path.home() / ".cargo" / "bin" / "cargo"
    return str(cargo) if cargo.exists() else None


def wanted_server() -> str:
    """``UPKEEP_LOCAL_MONGO``, normalised: ``rust``, ``python`` or empty (the default)."""
    return os.environ.get("UPKEEP_LOCAL_MONGO", "").strip().lower()


def choose() -> ServerChoice:
    """The server the local stack starts, per ``UPKEEP_LOCAL_MONGO`` (``rust`` | ``python`` |
    unset: the compiled one, else the Python one with the reason)."""
    wanted = wanted_server()
    if wanted == "python":
        return python_server("secantusdb (pure Python), chosen by UPKEEP_LOCAL_MONGO=python")
    if wanted not in ("", "rust"):
        raise ValueError(f"UPKEEP_LOCAL_MONGO must be 'rust' or 'python', not {wanted!r}")
    try:
        path = build(retry_failed=wanted == "rust")
    except (RuntimeError, OSError) as exc:  # OSError: an unwritable cache, cargo not runnable
        if wanted == "rust":
            raise
        log.warning("falling back to the Python server: %s", exc)
        first_line = str(exc).splitlines()[0]
        return python_server(f"secantusdb (pure Python) — the compiled server: {first_line}")
    return ServerChoice("rust", [str(path)], f"{BINARY} {VERSION} (compiled, {path})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.mongo_choice")
    parser.add_argument("command", choices=["build"])
    parser.add_argument(
        "--background", action="store_true", help="start the build detached and return"
    )
    args = parser.parse_args(argv)
    if wanted_server() == "python" or binary_path().exists():  # nothing to build
        sys.stdout.write(f"MongoDB-wire server: {choose().why}\n")
        return 0
    if args.background:
        build_dir().mkdir(parents=True, exist_ok=True)
        subprocess.Popen(
            [sys.executable, "-m", "deploy.local.mongo_choice", "build"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        sys.stdout.write(
            f"building {CRATE} {VERSION} in the background (about 5 minutes on 2 cores; "
            f"log {build_log()})\n"
        )
        return 0
    sys.stdout.write(f"building {CRATE} {VERSION} (about 5 minutes; log {build_log()}) ...\n")
    sys.stdout.flush()
    choice = choose()
    sys.stdout.write(f"MongoDB-wire server: {choice.why}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
