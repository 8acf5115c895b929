"""A container health check: ``python -m shared.healthcheck`` asks this container's service
for ``/readyz`` and exits 0 when it is ready, 1 otherwise. The port is the one in the
service's ``UPKEEP_<SERVICE>_HTTP_PORT`` (the image runs one service per container); no curl
or wget is needed in the image."""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

PORT_VARIABLE = re.compile(r"^UPKEEP_[A-Z]+_HTTP_PORT$")


def ready_url(env: Mapping[str, str]) -> str:
    ports = sorted(value for name, value in env.items() if PORT_VARIABLE.match(name))
    if len(ports) != 1:
        raise SystemExit(f"expected one UPKEEP_<SERVICE>_HTTP_PORT, found {len(ports)}")
    return f"http://127.0.0.1:{int(ports[0])}/readyz"


def main() -> int:
    url = ready_url(os.environ)
    try:
        with urllib.request.urlopen(url, timeout=4) as answer:  # noqa: S310 (loopback only)
            return 0 if answer.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 503: a dependency is down
        sys.stderr.write(
            f"not ready: {url}: {exc.code} {exc.read()[:500].decode(errors='replace')}\n"
        )
        return 1
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"not ready: {url}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
