"""The agent's HTTP endpoint for monitoring: read-only, answered from the
agent's cached state (never waits on ZooKeeper or SSH).

  GET /health    200 when the agent runs and its IPC's layout matches its role
  GET /primary   200 only on the agent holding the primary role (confirmed, fresh)
  GET /standby   200 on a healthy, eligible standby
  GET /cluster   roles, epoch, services, line, capacity, pause, last change
  GET /history   role changes, switchovers, pauses, drills
  GET /metrics   Prometheus text format
  GET /desk      the status page (HTML, polls /desk.json); /desks: the inventory's clusters
  POST /failsafe  agent to agent only: the failsafe lease (docs/resilience.md)
HEAD is supported everywhere; unknown path 404; other methods 405. /failsafe is
the one endpoint that changes state (the standby's promise not to promote).
/cluster, /history and the status page may require a bearer token or basic
auth (inventory); with basic auth the 401 challenges a browser to ask for it.

Responses are rendered once per agent cycle (`render`, pure) and the server
only writes the cached bytes; the role-dependent answers (/primary, /health's
ZooKeeper part) are chosen per request from a cheap in-memory check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from failover import desk, desk_page
from failover.layouts import SERVICES
from failover.records import PROMOTION_KINDS

# What the takeover counts in the cluster record (agent/takeover.py, by kind).
ROLE_MOVE_KINDS = (*PROMOTION_KINDS, "switch-back")

Response = tuple[int, bytes, str]  # status, body, content type
JSON = "application/json"
PROM = "text/plain; version=0.0.4; charset=utf-8"
HTML = "text/html; charset=utf-8"
PAGE = desk_page.page()  # static: the data comes from /desk.json
REASONS = {
    200: "OK",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
    400: "Bad Request",
}
PROTECTED = ("/cluster", "/history", "/failsafe", "/desk", "/desk.json", "/desks")
# A browser cannot send a bearer token: say what the operator must configure.
DESK_NEEDS_BASIC = (
    "a browser signs in with basic auth only: give this endpoint http.auth.basic_file (docs/monitoring.md)"
)
ENDPOINTS = ["/health", "/primary", "/standby", "/cluster", "/history", "/metrics", "/desk", "/desk.json", "/desks"]


def _json(code: int, data: Any) -> Response:
    return code, (json.dumps(data, sort_keys=True, default=str) + "\n").encode(), JSON


def render(state: dict) -> dict[str, Response]:
    """Every endpoint's response for one snapshot of the agent's state.
    /primary is rendered both ways: key '/primary' (holder) and '/primary:no'."""
    me, role = state["ipc"], state["role"]
    zk = state["zookeeper"]
    cluster = {**state.get("view", {}), "zookeeper": zk, "reported_by": me}
    health = {
        "cluster": state["cluster"],
        "ipc": me,
        "role": role,
        "epoch": state.get("epoch"),
        "layout_matches_role": state["healthy"],
        "eligible": state.get("eligible", False),
        "zookeeper": zk,
        "paused": state.get("paused"),
        "sentence": state.get("sentence", ""),
        "alerts": state.get("alerts", []),
        "self_fenced": state.get("self_fenced", False),
    }
    out = {
        "/health": _json(200 if state["healthy"] else 503, health),
        "/primary": _json(200, {**health, "primary": True}),
        "/primary:no": _json(503, {**health, "primary": False}),
        "/standby": _json(200 if role == "standby" and state.get("eligible") else 503, health),
        "/cluster": _json(200, cluster),
        "/history": _json(200, state.get("history", [])),
        "/metrics": (200, metrics(state).encode(), PROM),
        "/desk": (200, PAGE, HTML),
        "/desk.json": _json(200, desk.payload(cluster, state)),
        "/desks": (200, desk_page.index(state.get("desks") or []), HTML),
    }
    return out


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics(state: dict) -> str:
    """Prometheus text exposition (names failover_*): this agent's own
    gauges, then the cluster's as this agent sees it."""
    c, me = _esc(state["cluster"]), _esc(state["ipc"])
    lines: list[str] = []
    base = f'cluster="{c}",ipc="{me}"'
    _agent_metrics(lines, state, base)
    _cluster_metrics(lines, state, c)
    _calls_metrics(lines, c, (state.get("view") or {}).get("calls") or {})
    _agent_health_metrics(lines, state, base)
    return "\n".join(lines) + "\n"


def _metric(lines: list[str], name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
    lines.append(f"# HELP {name} {help_}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        lines.append(f"{name}{{{labels}}} {value:g}" if labels else f"{name} {value:g}")


def _agent_metrics(lines: list[str], state: dict, base: str) -> None:
    roles = ("primary", "standby", "fenced", "unknown")
    _metric(
        lines,
        "failover_role",
        "gauge",
        "1 for this IPC's current role",
        [(f'{base},role="{r}"', 1.0 if state["role"] == r else 0.0) for r in roles],
    )
    _metric(
        lines,
        "failover_leader",
        "gauge",
        "1 if this agent holds the primary role (confirmed)",
        [(base, 1.0 if state.get("leader") else 0.0)],
    )
    _metric(lines, "failover_epoch", "gauge", "cluster epoch (fencing token)", [(base, float(state.get("epoch") or 0))])


def _agent_health_metrics(lines: list[str], state: dict, base: str) -> None:
    _metric(
        lines,
        "failover_zookeeper_connected",
        "gauge",
        "1 if this agent's ZooKeeper session is connected",
        [(base, 1.0 if state["zookeeper"].get("connected") else 0.0)],
    )
    _metric(
        lines, "failover_paused", "gauge", "1 while automation is paused", [(base, 1.0 if state.get("paused") else 0.0)]
    )
    path = state.get("failsafe_path") or {}
    _metric(
        lines,
        "failover_failsafe_path_ok",
        "gauge",
        "1 if the failsafe lease reaches the peer's agent (tested every 10 s), 0 if broken",
        [(base, 0.0 if path.get("ok") is False else 1.0)],
    )
    _metric(
        lines,
        "failover_healthy",
        "gauge",
        "1 if this IPC's layout matches its role",
        [(base, 1.0 if state["healthy"] else 0.0)],
    )


def _cluster_metrics(lines: list[str], state: dict, c: str) -> None:
    view = state.get("view") or {}
    up = []
    for ipc, i in (view.get("ipcs") or {}).items():
        for s in SERVICES:
            if s in i.get("services", {}):
                sv = i["services"][s]
                ok = sv.get("state") == "RUNNING" and sv.get("probe") is not False
                up.append((f'cluster="{c}",ipc="{_esc(ipc)}",service="{s}"', 1.0 if ok else 0.0))
    _metric(lines, "failover_service_up", "gauge", "1 if the service runs (and answers its probe)", up)
    totals = state.get("failovers_total")
    # Every kind from 0: an alert on increase() misses a series' first sample.
    kinds = sorted({*ROLE_MOVE_KINDS, *(totals or {})})
    _metric(
        lines,
        "failover_failovers_total",
        "counter",
        "role changes by reason",
        [] if totals is None else [(f'cluster="{c}",reason="{_esc(k)}"', float(totals.get(k, 0))) for k in kinds],
    )
    ipcs = view.get("ipcs") or {}
    _metric(
        lines,
        "failover_eligible",
        "gauge",
        "1 if the IPC can take the primary role (a healthy standby)",
        [(f'cluster="{c}",ipc="{_esc(n)}"', 1.0 if i.get("eligible") else 0.0) for n, i in ipcs.items()],
    )
    _metric(
        lines,
        "failover_action_needed",
        "gauge",
        "1 while an agent says no automatic action will happen and names the way out (`failover status`)",
        [(f'cluster="{c}"', 1.0 if any(i.get("way_out") for i in ipcs.values()) else 0.0)],
    )
    last = state.get("last_failover") or {}
    _metric(
        lines,
        "failover_last_failover_seconds",
        "gauge",
        "phases of the last role change",
        [
            (f'cluster="{c}",phase="{p}"', float(last.get(f"{p}_s") or 0.0))
            for p in ("detection", "stop", "fencing", "promotion", "duration")
        ],
    )
    cap = view.get("capacity") or {}
    _metric(
        lines,
        "failover_capacity_calls",
        "gauge",
        "calls the cluster can take now",
        [
            (f'cluster="{c}",kind="ivr"', float(cap.get("max_ivr") or 0)),
            (f'cluster="{c}",kind="agent"', float(cap.get("max_agent") or 0)),
            (f'cluster="{c}",kind="fax"', float(cap.get("fax") or 0)),
        ],
    )


def _calls_metrics(lines: list[str], c: str, calls: dict) -> None:
    """The primary's active calls (inventory `calls`) and a drain's busy-out.
    The total and the split apart: a sum over a metric's labels must not
    double count."""
    total = [(f'cluster="{c}"', float(calls["active"]))] if calls.get("active") is not None else []
    _metric(
        lines, "failover_active_calls", "gauge", "calls in progress on the primary (inventory `calls.active`)", total
    )
    _metric(
        lines,
        "failover_active_calls_by_kind",
        "gauge",
        "calls in progress on the primary, in the IVR or with an agent (when the CTI tells them apart)",
        [(f'cluster="{c}",kind="{k}"', float(calls[k])) for k in ("ivr", "agent") if calls.get(k) is not None],
    )
    busy = 1.0 if calls.get("busy_out") else 0.0
    _metric(
        lines, "failover_busy_out", "gauge", "1 while the primary is busied out (a drain)", [(f'cluster="{c}"', busy)]
    )


@dataclass
class Auth:
    token: str | None = None
    basic: str | None = None  # "user:password"

    def agent_ok(self, header: str | None) -> bool:
        """Agent to agent (POST /failsafe): the bearer token only. The basic
        credentials open the read-only status page to people; whoever holds
        them must not be able to make the standby promise to hold back."""
        if not self.token and not self.basic:
            return True
        kind, _, value = (header or "").partition(" ")
        return (
            bool(self.token)
            and kind.lower() == "bearer"
            and hmac.compare_digest(value.strip().encode(), (self.token or "").encode())
        )

    def ok(self, header: str | None) -> bool:
        if not self.token and not self.basic:
            return True
        if not header:
            return False
        kind, _, value = header.partition(" ")
        if kind.lower() == "bearer" and self.token:
            return hmac.compare_digest(value.strip().encode(), self.token.encode())
        if kind.lower() == "basic" and self.basic:
            try:
                given = base64.b64decode(value.strip(), validate=True)
            except ValueError:
                return False
            return hmac.compare_digest(given, self.basic.encode())
        return False


@dataclass
class HttpServer:
    bind: str
    port: int
    auth: Auth = field(default_factory=Auth)
    is_primary: Callable[[], bool] = lambda: False
    failsafe: Callable[[dict], dict] | None = None  # the agent's lease grantor
    responses: dict[str, Response] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _server: Any = None
    error: str = ""

    def publish(self, responses: dict[str, Response]) -> None:
        self.responses = responses  # one reference swap: readers see old or new, never half

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        self._ready.wait(5)
        if self.error:
            raise OSError(self.error)

    def stop(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # stopped already: its loop is closed
                self._loop.call_soon_threadsafe(self._shutdown)

    def _shutdown(self) -> None:
        # Close the listening socket too: a stopped server refuses connections
        # (clients see it at once) and its port is free again.
        if self._server is not None:
            self._server.close()
        if self._loop is not None:
            self._loop.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._client, self.bind, self.port, reuse_address=True, backlog=256)
            )
        except OSError as e:
            self.error = f"cannot listen on {self.bind}:{self.port}: {e}"
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        # Stopped: end the kept-alive connections too (their clients see them
        # closed, not hanging), then the loop.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    def lookup(self, method: str, path: str, authorization: str | None) -> Response:
        path = path.split("?", 1)[0]
        key = ("/primary" if self.is_primary() else "/primary:no") if path == "/primary" else path
        if key not in self.responses or path.endswith(":no"):
            return _json(
                404,
                {"error": f"no such endpoint {path}", "endpoints": ENDPOINTS},
            )
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": f"{method} not allowed: this endpoint is read-only"})
        if path in PROTECTED and not self.auth.ok(authorization):
            if path.startswith("/desk") and not self.auth.basic:
                return _json(401, {"error": "authentication required", "hint": DESK_NEEDS_BASIC})
            return _json(401, {"error": "authentication required"})
        return self.responses[key]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split()
                if len(parts) != 3:
                    await self._send(writer, "GET", _json(400, {"error": "bad request line"}), False)
                    return
                method, path, version = parts
                headers = {}
                for ln in lines[1:]:
                    k, sep, v = ln.partition(":")
                    if sep:
                        headers[k.strip().lower()] = v.strip()
                conn = headers.get("connection", "").lower()
                keep = (version == "HTTP/1.1" and conn != "close") or conn == "keep-alive"
                if method == "POST" and path == "/failsafe" and self.failsafe is not None:
                    resp = await self._failsafe(reader, headers)
                    keep = False
                else:
                    if method not in ("GET", "HEAD"):
                        keep = False  # we never read request bodies: close after answering
                    resp = self.lookup(method, path, headers.get("authorization"))
                await self._send(writer, method, resp, keep)
                if not keep:
                    return
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _failsafe(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> Response:
        if not self.auth.agent_ok(headers.get("authorization")):
            return _json(401, {"error": "authentication required"})
        try:
            n = min(int(headers.get("content-length", "0")), 4096)
            body = json.loads(await reader.readexactly(n)) if n else {}
        except (ValueError, asyncio.IncompleteReadError):
            return _json(400, {"error": "bad failsafe request"})
        assert self.failsafe is not None
        return _json(200, self.failsafe(body))

    def _challenge(self) -> str:
        # A browser cannot send a bearer token on its own, but it asks for basic
        # auth when challenged (and Basic is the challenge it picks among several):
        # that is how the status page is opened on an endpoint with auth.
        basic = 'WWW-Authenticate: Basic realm="failover", charset="UTF-8"\r\n' if self.auth.basic else ""
        return 'WWW-Authenticate: Bearer realm="failover"\r\n' + basic

    async def _send(self, writer: asyncio.StreamWriter, method: str, resp: Response, keep: bool) -> None:
        code, body, ctype = resp
        extra = self._challenge() if code == 401 else ""
        head = (
            f"HTTP/1.1 {code} {REASONS.get(code, 'OK')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n{extra}"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()
        writer.write(head if method == "HEAD" else head + body)
        await writer.drain()
