"""The containers' health check (python -m shared.healthcheck): it asks the service's own
/readyz, on the port of its UPKEEP_<SERVICE>_HTTP_PORT, and exits 0 only on 200."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared import healthcheck


class Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "not ready", "checks": {"kafka": "TimeoutError"}}')

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    Answer.status = 200


def test_the_url_is_the_services_own_readiness_port() -> None:
    env = {"UPKEEP_RULES_HTTP_PORT": "8002", "UPKEEP_RULES_HTTP_HOST": "0.0.0.0", "PATH": "/bin"}
    assert healthcheck.ready_url(env) == "http://127.0.0.1:8002/readyz"
    with pytest.raises(SystemExit, match="found 0"):
        healthcheck.ready_url({"PATH": "/bin"})
    with pytest.raises(SystemExit, match="found 2"):
        healthcheck.ready_url({"UPKEEP_A_HTTP_PORT": "1", "UPKEEP_B_HTTP_PORT": "2"})


def test_ready_is_0_not_ready_or_no_answer_is_1(
    server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UPKEEP_INGEST_HTTP_PORT", str(server.server_address[1]))
    assert healthcheck.main() == 0
    Answer.status = 503
    assert healthcheck.main() == 1
    assert "503" in capsys.readouterr().err
    server.shutdown()
    server.server_close()
    assert healthcheck.main() == 1
