"""Operator operations on a cluster's ZooKeeper records (used by the CLI, the
drills and the benchmarks). Each one is a conditional write plus a history
entry naming the operator and the reason; the agents carry them out."""

from __future__ import annotations

import getpass
import time

from failover import zkstore


class Refused(Exception):
    pass


def operator_name(given: str | None = None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def rejoin(store: zkstore.Store, ipc: str, operator: str, reason: str = "") -> dict:
    """A repaired IPC rejoins as standby: its agent converges it to the standby
    layout and it becomes eligible again."""
    for _ in range(5):
        v = store.cluster()
        if v is None:
            raise Refused("the cluster has no record yet (no agent has bootstrapped it)")
        roles = dict(v.data.get("roles", {}))
        if ipc not in roles:
            raise Refused(f"{ipc} is not in this cluster (roles: {', '.join(roles)})")
        if roles[ipc] == "primary":
            raise Refused(f"{ipc} is the primary; only a fenced or standby IPC can rejoin")
        roles[ipc] = "standby"
        board = [x for x in v.data.get("board_down", []) if x != ipc]
        # The marker lets the IPC's agent converge it to the standby layout even
        # while the cluster is paused: the operator asked for exactly that.
        marks = {**v.data.get("rejoin", {}), ipc: {"by": operator, "at": time.time()}}
        try:
            store.update_cluster(v.version, {**v.data, "roles": roles, "board_down": board, "rejoin": marks})
        except zkstore.Conflict:
            time.sleep(0.05)
            continue
        entry = {
            "kind": "rejoin",
            "from": ipc,
            "to": ipc,
            "epoch": v.data.get("epoch"),
            "why": reason or "repaired, rejoins as standby",
            "who": operator,
            "outcome": "done",
        }
        store.add_history(entry)
        return entry
    raise Refused("the cluster record kept changing; try again")


def rejoined(store: zkstore.Store, ipc: str) -> dict | None:
    """The IPC's member record once its agent has acted on the rejoin: the
    agent clears the rejoin marker only after converging to the standby layout.
    Checking `eligible` alone is not enough: after a switchover the record
    already says eligible from before the rejoin."""
    v = store.cluster()
    if v is None or ipc in (v.data.get("rejoin") or {}):
        return None
    m = store.member(ipc) or {}
    ok = m.get("role") == "standby" and m.get("eligible") is True and m.get("decision") == "none"
    return m if ok else None


def pause(store: zkstore.Store, operator: str, reason: str) -> None:
    store.set_pause(reason, operator)
    store.add_history({"kind": "pause", "who": operator, "why": reason or "no reason given", "outcome": "done"})


def resume(store: zkstore.Store, operator: str, reason: str = "") -> bool:
    was = store.pause()
    store.clear_pause()
    store.add_history(
        {
            "kind": "resume",
            "who": operator,
            "why": reason or "no reason given",
            "outcome": "done" if was else "was not paused",
        }
    )
    return was is not None


def new_request(
    kind: str,
    to: str,
    operator: str,
    reason: str,
    at: float | None = None,
    allow_paused: bool = False,
    force: bool = False,
    frm: str | None = None,
) -> dict:
    import secrets

    return {
        "id": secrets.token_hex(4),
        "kind": kind,
        "to": to,
        "from": frm,
        "operator": operator,
        "reason": reason,
        "at": at,
        "allow_paused": allow_paused,
        "force": force,
        "requested_at": time.time(),
        "state": "pending",
        "progress": [],
    }


def submit(store: zkstore.Store, req: dict) -> dict | None:
    """Write the request. None: it was accepted. Otherwise the pending request
    that wins (two concurrent requests: exactly one proceeds)."""
    other = store.create_request(req)
    return None if other is None else other.data


def cancel(store: zkstore.Store, operator: str) -> dict:
    cur = store.request()
    if cur is None or cur.data.get("state") not in ("pending",):
        raise Refused(
            "no pending switchover to cancel"
            if cur is None or cur.data.get("state") in zkstore.FINAL_STATES
            else "the switchover is already running; it cannot be cancelled"
        )
    store.delete_request(cur.version)
    store.add_history(
        {
            "kind": "switchover-cancelled",
            "to": cur.data.get("to"),
            "who": operator,
            "why": f"cancelled the switchover requested by {cur.data.get('operator')}",
            "outcome": "cancelled",
        }
    )
    return cur.data
