"""Failsafe during a ZooKeeper outage (docs/resilience.md).

Without ZooKeeper the primary cannot prove it still holds the role, so on its
own it would stop CTI/IVR after D seconds — a ZooKeeper outage would take the
phones down. The failsafe keeps them up when that is provably safe:

- The primary's agent, while it has no ZooKeeper contact, asks the standby's
  agent directly (HTTP, agent to agent) for a **lease** every watchdog period.
- The standby's agent grants a lease of L seconds only while it could not take
  the role anyway: it is *not* connected to ZooKeeper (nobody promotes without
  holding the role in ZooKeeper), or it is connected and still sees the
  primary's `leader` znode alive (its session has not expired) — and it is not
  taking the role itself. Granting is a promise: it will not take the role
  before `promised_until + W + margin`, even if ZooKeeper comes back or the
  primary's session expires meanwhile (and then only with a proof that the
  primary's CTI/IVR are not running: docs/agent.md).
- The primary keeps CTI/IVR running while it holds a valid lease, measured on
  its own clock from the moment it *sent* the request (so its lease always ends
  before the standby's promise does). A lease that cannot be renewed (standby
  unreachable, or connected to ZooKeeper and so able to take over) runs out,
  and the primary stops CTI/IVR itself (done by lease end + W + B); a standby
  that takes over meanwhile has a proof they are stopped (it stopped them).

A standby connected to ZooKeeper that sees the primary's session gone never
grants: the primary is cut off, so its lease runs out, it stops CTI/IVR, and
the standby takes over after the promise has ended (with fencing, as always).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from failover.inventory import HttpAuth


@dataclass
class Grantor:
    """The standby's side: its promises."""

    lease: float  # L, seconds
    hold_after: float  # W + margin: how long after a promise ends it still holds back
    promised_until: float = 0.0  # monotonic
    promised_to: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Where the promise is kept across an agent restart: a restarted agent
    # must not forget it and take the role early (manual paths included).
    path: Path | None = None

    def __post_init__(self) -> None:
        self._restore()

    def _restore(self) -> None:
        if self.path is None:
            return
        try:
            rec = json.loads(self.path.read_text())
            left = float(rec["until_wall"]) - time.time()
        except (OSError, ValueError, KeyError, TypeError):
            return
        if left + self.hold_after > 0:
            self.promised_until = time.monotonic() + left
            self.promised_to = str(rec.get("to", "?"))

    def _save(self) -> None:
        if self.path is None:
            return
        until_wall = time.time() + (self.promised_until - time.monotonic())
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"until_wall": until_wall, "to": self.promised_to}))
            tmp.replace(self.path)
        except OSError:
            pass  # the in-memory promise still holds for this process

    def ask(
        self,
        requester: str,
        zk_connected: bool,
        requester_session_alive: bool,
        taking_over: bool,
        now: float | None = None,
    ) -> dict:
        now = time.monotonic() if now is None else now
        if zk_connected and not requester_session_alive:
            return {
                "granted": False,
                "why": "the standby is connected to ZooKeeper and the primary's session has expired: "
                "no failsafe, the standby will take over",
            }
        if taking_over:
            return {"granted": False, "why": "the standby is taking the role"}
        with self.lock:
            self.promised_until = max(self.promised_until, now + self.lease)
            self.promised_to = requester
            self._save()
        why = (
            "the standby has no ZooKeeper either"
            if not zk_connected
            else "the standby sees the primary's session alive"
        )
        return {"granted": True, "lease_s": self.lease, "why": f"{why}; it will not take the role for {self.lease:g} s"}

    def holds_back(self, now: float | None = None) -> float:
        """Seconds the standby must still wait before taking the role (0: free)."""
        now = time.monotonic() if now is None else now
        return max(0.0, self.promised_until + self.hold_after - now) if self.promised_until else 0.0


def authorization(auth: HttpAuth | None) -> str | None:
    """The Authorization header for the peer's endpoint: its bearer token,
    read now, never logged. Never its basic credentials: those open the
    read-only status page to people, and /failsafe refuses them
    (`inventory check` requires a token beside basic_file)."""
    if auth is None:
        return None
    token, _ = auth.secrets()
    return f"Bearer {token}" if token else None


def ask(url: str, body: dict, authorization: str | None, timeout: float) -> dict:
    """POST /failsafe to the peer's agent (`authorization`: the header's
    value, see `authorization()`); raises OSError/ValueError."""
    req = urllib.request.Request(
        url.rstrip("/") + "/failsafe",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    if authorization:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            answer = json.loads(r.read())
    except urllib.error.URLError as e:
        raise OSError(str(e.reason)) from None
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    return answer


def wrong_grantor(answer: dict, grantor: str) -> str:
    """'' when the answer comes from the peer's agent, else why it is refused:
    an endpoint address that reaches any other agent (our own, with a loopback
    address on the wrong host) must never keep calls up."""
    who = answer.get("ipc")
    if who == grantor:
        return ""
    return f"the answer came from {who or 'an unnamed agent'}, not {grantor}'s agent: check http.advertise"


def probe_path(url: str, requester: str, grantor: str, authorization: str | None, timeout: float) -> tuple[bool, str]:
    """Test the lease path without asking for a lease (nothing is promised)."""
    try:
        answer = ask(url, {"from": requester, "probe": True}, authorization, timeout)
    except (OSError, ValueError) as e:
        return False, f"{grantor}'s agent at {url} cannot be reached ({e})"
    bad = wrong_grantor(answer, grantor)
    return (False, f"{url}: {bad}") if bad else (True, f"{grantor}'s agent answers at {url}")


@dataclass
class Lease:
    """The primary's side: the lease it holds, on its own clock."""

    valid_until: float = 0.0  # monotonic
    last_answer: str = ""

    def valid(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.valid_until

    def renew(
        self, url: str, requester: str, epoch: int, authorization: str | None, timeout: float, grantor: str
    ) -> bool:
        sent = time.monotonic()
        try:
            answer = ask(url, {"from": requester, "epoch": epoch}, authorization, timeout)
        except (OSError, ValueError) as e:
            self.last_answer = f"standby unreachable ({e})"
            return False
        bad = wrong_grantor(answer, grantor)
        if bad:
            self.last_answer = f"lease refused: {bad}"
            return False
        self.last_answer = answer.get("why", "")
        if answer.get("granted"):
            self.valid_until = max(self.valid_until, sent + float(answer.get("lease_s", 0)))
            return True
        return False
