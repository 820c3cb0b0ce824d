"""What to tell people: a pure function from what was already notified (the
shared cursor, `Seen`) and what the cluster looks like now (`Snapshot`) to the
new events and the cursor after them.

Two sources:
- the history in ZooKeeper (role changes, faults acted on, failed steps): each
  entry after the cursor is an event, its id the entry's sequential name;
- the member records' conditions (a way out = the agent holds and a person must
  act, a broken failsafe path, a fault, an alert): an event when one appears,
  and a `recovery` event when it clears. A member record that is gone (its
  agent down) clears nothing: its conditions are unknown, not over.

Ids are stable: two agents computing from the same cursor (its znode version
is part of a condition's id) get the same ids, so a receiver can deduplicate
on them (docs/monitoring.md, "Exactly one notification per event").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

# History kinds that move the primary role, and those that record a fault the
# agents acted on. Other kinds (pause, rejoin, drill, ...) are operators'
# own actions: notified only when they failed.
ROLE_CHANGES = frozenset({"failover", "takeover", "manual-failover", "switchover", "switch-back"})
PLANNED = frozenset({"switchover", "switch-back"})
FAULTS = frozenset({"standby-fault", "board-down", "stray-stopped", "fenced"})
SCHEMA = "failover.notification/1"


@dataclass(frozen=True)
class Event:
    id: str
    type: str  # role-change, fault, hold, failed-step, failsafe-path, alert, recovery
    severity: str  # critical, warning, info
    cluster: str
    ipc: str | None
    summary: str
    at: float  # when it happened (the history entry's time, or when it was seen)
    detail: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON body (docs/monitoring.md documents every field)."""
        return {
            "schema": SCHEMA,
            "id": self.id,
            "type": self.type,
            "severity": self.severity,
            "cluster": self.cluster,
            "ipc": self.ipc,
            "summary": self.summary,
            "at": self.at,
            "detail": self.detail,
        }

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> Event:
        return cls(p["id"], p["type"], p["severity"], p["cluster"], p.get("ipc"), p["summary"], p["at"], p["detail"])


@dataclass(frozen=True)
class Seen:
    """The shared cursor: the last history entry notified, the conditions
    that are raised (key -> {id, type, ipc, text, since}), those seen but
    not yet lasting long enough to be raised, and raised ones gone but not
    yet gone long enough to be recovered."""

    history: str = ""
    active: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)  # seen, not yet settled: key -> first seen
    clearing: dict[str, float] = field(default_factory=dict)  # raised, gone, not yet settled: key -> first gone


@dataclass(frozen=True)
class Snapshot:
    cluster: str
    history: list[dict[str, Any]]  # entries after some point, each with its "id" (h-NNNNNNNNNN), any order
    members: dict[str, dict[str, Any] | None]  # None: the member znode is gone
    now: float


def compute(seen: Seen, snap: Snapshot, version: int, settle: float = 0.0) -> tuple[list[Event], Seen]:
    """The events since `seen`, and the cursor after them. `version` is the
    cursor znode's version the caller read (part of the new conditions' ids).
    A condition is raised once it has lasted `settle` seconds (at least its
    type's SETTLE_FLOOR): one that comes and goes within a cycle or two (an
    agent starting before its peer) is not worth waking anyone for."""
    events: list[Event] = []
    last = seen.history
    for entry in sorted(snap.history, key=lambda e: str(e.get("id", ""))):
        hid = str(entry.get("id", ""))
        if hid and hid > seen.history:
            events += history_events(snap.cluster, entry)
            last = max(last, hid)
    state = Seen(last, dict(seen.active), dict(seen.pending), dict(seen.clearing))
    for ipc, rec in sorted(snap.members.items()):
        if rec is not None:  # a gone agent's conditions are unknown, not cleared
            events += _recovered(snap, ipc, conditions(ipc, rec), state, settle)
            events += _raised_now(snap, ipc, conditions(ipc, rec), state, version, settle)
    return events, state


# The failsafe path is re-tested every 10 s: one failed test (the peer's agent
# not started yet) is not news; three in a row are.
SETTLE_FLOOR = {"failsafe-path": 30.0}


def _settle(kind: str, settle: float) -> float:
    return max(settle, SETTLE_FLOOR.get(kind, 0.0))


def _recovered(
    snap: Snapshot, ipc: str, current: dict[str, tuple[str, str]], state: Seen, settle: float
) -> list[Event]:
    """Recoveries of one agent's raised conditions gone for the settle time
    (one that comes back meanwhile was never over); updates `state` in place."""
    events = []
    for key, old in sorted(state.active.items()):
        if old["ipc"] != ipc:
            continue
        if key in current:
            state.clearing.pop(key, None)
            continue
        gone = state.clearing.setdefault(key, snap.now)
        if snap.now - gone >= _settle(old["type"], settle):
            events.append(_recovery(snap, old))
            del state.active[key], state.clearing[key]
    return events


def _raised_now(
    snap: Snapshot, ipc: str, current: dict[str, tuple[str, str]], state: Seen, version: int, settle: float
) -> list[Event]:
    """Raises of one agent's conditions that have lasted the settle time;
    updates `state.pending` (key -> first seen) and `state.active` in place."""
    pending, events = state.pending, []
    for key in [k for k in pending if k.split("/")[1] == ipc and k not in current]:
        del pending[key]  # gone before it settled: never notified
    for key, (kind, text) in sorted(current.items()):
        if key in state.active:
            continue
        first = pending.setdefault(key, snap.now)
        if snap.now - first < _settle(kind, settle):
            continue
        del pending[key]
        raised = {"id": f"{snap.cluster}/{key}/{version}", "type": kind, "ipc": ipc, "text": text}
        state.active[key] = {**raised, "since": first}
        events.append(_raised(snap, raised))
    return events


def history_events(cluster: str, e: dict[str, Any]) -> list[Event]:
    kind, outcome = str(e.get("kind", "")), str(e.get("outcome", ""))
    hid, at = str(e["id"]), float(e.get("when") or 0.0)
    who = e.get("to") if kind in ROLE_CHANGES else e.get("from") or e.get("to")
    detail = {k: v for k, v in e.items() if k != "id"}
    out: list[Event] = []
    if kind in ROLE_CHANGES:
        severity = "warning" if kind in PLANNED else "critical"
        text = f"{kind}: {e.get('from')} -> {e.get('to')} (epoch {e.get('epoch')}), {outcome}: {e.get('why', '')}"
        out.append(Event(f"{cluster}/{hid}", "role-change", severity, cluster, who, text, at, detail))
    elif kind in FAULTS:
        text = f"{kind} on {who} (epoch {e.get('epoch')}), {outcome}: {e.get('why', '')}"
        out.append(Event(f"{cluster}/{hid}", "fault", "warning", cluster, who, text, at, detail))
    if outcome == "failed":
        text = f"{kind} FAILED: {e.get('failed') or e.get('why', '')}"
        out.append(Event(f"{cluster}/{hid}/failed", "failed-step", "critical", cluster, who, text, at, detail))
    return out


def conditions(ipc: str, rec: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """An agent's raised conditions, key -> (type, latest text). Keys are
    stable while the condition lasts, though its text changes every cycle
    ("unreachable for 7 checks", a hold quoting the last fencing attempt):
    an agent holds once (hold/<ipc>), the failsafe path is broken once, and
    a fault or an alert is its text with the numbers taken out."""
    out: dict[str, tuple[str, str]] = {}
    way_out = " ".join(str(rec.get("way_out") or "").split())
    if way_out:
        out[f"hold/{ipc}"] = ("hold", way_out)
    path = rec.get("failsafe_path") or {}
    if path.get("ok") is False:
        out[f"failsafe-path/{ipc}"] = ("failsafe-path", f"failsafe path from {ipc} broken: {path.get('why', '')}")
    for f in rec.get("faults") or []:
        out[_key("fault", ipc, str(f))] = ("fault", str(f))
    for a in rec.get("alerts") or []:
        text = " ".join(str(a).split())
        if text and text != way_out and not text.startswith("failsafe path broken"):
            out[_key("alert", ipc, text)] = ("alert", text)
    return out


# A number standing alone (a count, seconds, an epoch), not one inside a name
# (ipc-2, h-0000000012): two IPCs named apart stay two conditions.
_NUMBER = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?")


def _key(kind: str, ipc: str, text: str) -> str:
    shape = _NUMBER.sub("#", " ".join(text.split()))
    return f"{kind}/{ipc}/{hashlib.sha256(shape.encode()).hexdigest()[:12]}"


SEVERITY = {"hold": "critical", "failsafe-path": "warning", "fault": "warning", "alert": "warning"}


def _raised(snap: Snapshot, c: dict[str, Any]) -> Event:
    what = "ACTION NEEDED: " if c["type"] == "hold" else ""
    return Event(
        c["id"], c["type"], SEVERITY[c["type"]], snap.cluster, c["ipc"], f"{c['ipc']}: {what}{c['text']}", snap.now
    )


def _recovery(snap: Snapshot, old: dict[str, Any]) -> Event:
    return Event(
        f"{old['id']}/recovered",
        "recovery",
        "info",
        snap.cluster,
        old["ipc"],
        f"{old['ipc']}: cleared: {old['text']}",
        snap.now,
        {"recovers": old["id"], "recovers_type": old["type"], "since": old.get("since")},
    )
