"""A real local webhook receiver for the notification tests: http.server in a
thread on a free loopback port. It records every request (headers and JSON
body) and can be down (not listening), or answer errors for a while."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Request:
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.time)  # when it arrived


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    fail_first: int = 0  # answer 503 to this many requests before accepting
    status: int = 200  # then this
    requests: list[Request] = field(default_factory=list)  # every request, accepted or not
    accepted: list[Request] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def ids(self, type_: str | None = None) -> list[str]:
        with self.lock:
            return [r.body["id"] for r in self.accepted if type_ is None or r.body["type"] == type_]

    def up(self) -> Receiver:
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                req = Request({k.lower(): v for k, v in self.headers.items()}, json.loads(self.rfile.read(n)))
                with recv.lock:
                    recv.requests.append(req)
                    code = 503 if len(recv.requests) <= recv.fail_first else recv.status
                    if code == 200:
                        recv.accepted.append(req)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    """Wait for a condition with a deadline (never sleep-and-hope); this module
    is pure, so the fast tier can use it (tests.cluster marks a module `lab`)."""
    deadline = time.monotonic() + timeout
    while not (v := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)
    return v
