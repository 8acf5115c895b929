"""A local stand-in for ``python:3.11-slim-bookworm``, made with mmdebstrap (no registry).

Debian bookworm (variant minbase, the ``slim`` path exclusions of Debian's own container images)
with Debian's ``python3.11`` and ``python3.11-venv`` plus the packages the official image adds
(``ca-certificates``, ``netbase``, ``tzdata``); ``/usr/local/bin/python`` and ``python3`` link to
``/usr/bin/python3.11`` where the official image has its own build. The tarball is cached under
``.cache/image-base/`` by a digest of this recipe, so it is made once per recipe, and imported into
podman as ``localhost/upkeep-python:3.11-slim-bookworm`` (labelled with the digest, so an import
of the same recipe is reused too). How it differs from the official image: docs/image.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy.image.podman import Podman, first_line

TAG = "localhost/upkeep-python:3.11-slim-bookworm"
RECIPE_LABEL = "org.upkeep.base-recipe"
PYTHON_LABEL = "org.upkeep.base-python3.11"  # Debian's package version
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
PACKAGES = ("python3.11", "python3.11-venv", "ca-certificates", "netbase", "tzdata")
# what debian:bookworm-slim leaves out (docs, man pages, translations), as dpkg path filters
SLIM_DPKG = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
)
# the paths of the official image's interpreter
CUSTOMIZE = (
    'ln -s /usr/bin/python3.11 "$1/usr/local/bin/python"'
    ' && ln -s /usr/bin/python3.11 "$1/usr/local/bin/python3"'
)
# the official image's configuration, as `podman import --change` instructions (its PATH has
# /usr/local/bin twice: it prepends it to Debian's default, which has it already)
CHANGES = (
    "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")


@dataclass
class BaseImage:
    tag: str
    tarball: Path
    how: str  # made now, imported from the cached tarball, or already imported
    python: str  # Debian's python3.11 package version in it
    seconds: float


def mmdebstrap_argv(tarball: Path) -> list[str]:
    argv = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES)]
    argv += ['--aptopt=APT::Install-Recommends "false"']
    if MERGED_USR_HOOKS.is_dir():  # merged /usr without the usrmerge package (and its perl)
        argv += [f"--hook-dir={MERGED_USR_HOOKS}"]
    argv += [f"--dpkgopt={option}" for option in SLIM_DPKG]
    argv += [f"--customize-hook={CUSTOMIZE}", "--format=tar", SUITE, str(tarball), *MIRRORS]
    return argv


def recipe_digest() -> str:
    recipe = {
        "mmdebstrap": mmdebstrap_argv(Path("OUT")),
        "changes": CHANGES,
        "merged-usr-hooks": MERGED_USR_HOOKS.is_dir(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def locked(path: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive lock on ``path``; ``waiting`` is called first if someone else holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def image_id(podman: Podman, tag: str) -> str | None:
    done = podman.run("image", "inspect", "--format", "{{.Id}}", tag, timeout=60)
    return done.stdout.strip() or None if done.returncode == 0 else None


def image_labels(podman: Podman, tag: str) -> dict[str, str]:
    done = podman.run("image", "inspect", "--format", "{{json .Labels}}", tag, timeout=60)
    if done.returncode != 0:
        return {}
    labels = json.loads(done.stdout.strip() or "null") or {}
    return {str(key): str(value) for key, value in labels.items()}


def make_tarball(tarball: Path, tmp: Path, log: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed (Debian: apt-get install mmdebstrap)")
    partial = tarball.with_name(tarball.name + ".partial")
    partial.unlink(missing_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(
            mmdebstrap_argv(partial),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(tmp)},
            timeout=1200,
            check=False,
        )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap failed ({log}): {first_line(log.read_text())}")
    partial.rename(tarball)


def tarball_python(tarball: Path) -> str:
    """The version of Debian's python3.11 package in the tarball (from dpkg's status file)."""
    status = subprocess.run(
        ["tar", "-xOf", str(tarball), "./var/lib/dpkg/status"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    package = None
    for line in status.splitlines():
        if line.startswith("Package: "):
            package = line.split(": ", 1)[1]
        elif line.startswith("Version: ") and package == "python3.11":
            return line.split(": ", 1)[1]
    return "?"


def ensure_base(
    podman: Podman, cache: Path, run_dir: Path, tag: str = TAG, rebuild: bool = False
) -> BaseImage:
    """The stand-in image, tagged ``tag``: found imported from this recipe (podman's storage is
    the machine's, shared by every clone), imported from the cached tarball, or made."""
    started = time.monotonic()
    digest = recipe_digest()
    tarball = cache / f"upkeep-python-3.11-slim-bookworm-{digest}.tar"
    with locked(cache / ".lock"):  # one maker of the tarball per clone
        labels = image_labels(podman, tag)
        if not rebuild and labels.get(RECIPE_LABEL) == digest:
            python = labels.get(PYTHON_LABEL, "?")
            return BaseImage(tag, tarball, "already imported", python, time.monotonic() - started)
        if rebuild:
            tarball.unlink(missing_ok=True)
        how = "imported from the cached tarball"
        if not tarball.exists():
            make_tarball(tarball, run_dir / "mmdebstrap-tmp", run_dir / "mmdebstrap.log")
            how = "made now with mmdebstrap and imported"
            for stale in cache.glob("upkeep-python-3.11-slim-bookworm-*.tar"):
                if stale != tarball:  # an older recipe's tarball
                    stale.unlink()
        python = tarball_python(tarball)
        changes = [*CHANGES, f"ENV PYTHON_VERSION={python.split('-')[0]}"]
        changes += [f"LABEL {RECIPE_LABEL}={digest}", f"LABEL {PYTHON_LABEL}={python}"]
        args = ["import", "--quiet"]
        for change in changes:
            args += ["--change", change]
        previous = image_id(podman, tag)
        done = podman.run(*args, str(tarball), tag, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"podman import failed: {first_line(done.stderr)}")
        if previous and previous != image_id(podman, tag):
            podman.run("rmi", previous, timeout=120)  # refused while images build on it
    return BaseImage(tag, tarball, how, python, time.monotonic() - started)
