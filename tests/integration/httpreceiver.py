"""A loopback HTTP receiver that records every request, for tests.

Stands in for Apprise `json://` / `form://` endpoints, healthchecks.io pings, or any
small HTTP API a test needs (pass `responder` to answer with real payloads).

    with HttpReceiver() as rx:
        send(["json://127.0.0.1:%d/notify" % rx.port], "title", "body")
        req = rx.wait(lambda r: r.path == "/notify")
        assert "body" in req.json()["message"]

Tests wait on the queue with a bounded timeout; they never sleep. Import it from
a test module in tests/integration (`from httpreceiver import HttpReceiver`), or use
the `http_receiver` fixture after `from httpreceiver import http_receiver`.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

WAIT_SECONDS = 15.0


@dataclass(frozen=True)
class Recorded:
    """One request as the receiver saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        """Return the body parsed as JSON."""
        return json.loads(self.body.decode())

    def text(self) -> str:
        """Return the body as text."""
        return self.body.decode(errors="replace")

    def form(self) -> dict[str, list[str]]:
        """Return the body parsed as an urlencoded form."""
        return parse_qs(self.text())


Reply = tuple[int, dict[str, str], bytes]
Responder = Callable[[Recorded], Reply]


def ok(_: Recorded) -> Reply:
    """Answer 200 with a small JSON body."""
    return 200, {"Content-Type": "application/json"}, b'{"ok": true}'


@dataclass
class HttpReceiver:
    """A threaded HTTP server on 127.0.0.1 (a free port) recording requests in a queue."""

    responder: Responder = ok
    requests: queue.Queue[Recorded] = field(default_factory=queue.Queue)
    seen: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Return http://127.0.0.1:PORT (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=WAIT_SECONDS)

    def wait(self, match: Callable[[Recorded], bool] | None = None, timeout: float = WAIT_SECONDS) -> Recorded:
        """Return the next request that matches (any if match is None); fail the test after timeout."""
        while True:
            try:
                request = self.requests.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no matching request arrived within {timeout}s; saw {[r.path for r in self.seen]}")
            if match is None or match(request):
                return request

    def drain(self) -> list[Recorded]:
        """Return the requests queued so far without waiting."""
        out: list[Recorded] = []
        while True:
            try:
                out.append(self.requests.get_nowait())
            except queue.Empty:
                return out

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                recorded = Recorded(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), body)
                status, headers, payload = receiver.responder(recorded)
                # Recorded before answering: once a client has its answer, the request is
                # in the queue, so "nothing arrived" checks with drain() are reliable.
                receiver.seen.append(recorded)
                receiver.requests.put(recorded)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
                return

        return Handler


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    """A running HttpReceiver, shut down after the test."""
    with HttpReceiver() as receiver:
        yield receiver
