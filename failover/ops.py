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
    confirm_dead: str | None = None,
    drain: dict | None = None,
) -> dict:
    """`confirm_dead`: a manual failover's proof by an operator's word: that IPC
    (the old primary, `frm`) was verified powered off by a person. The agent
    holding the role hands it over; the target promotes with the proof
    {"kind": "operator", ...} (docs/cli.md). `drain`: a drained switchover's
    {below, max_wait, on_deadline} (failover/drain.py)."""
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
        "confirm_dead": confirm_dead,
        "drain": drain,
        "requested_at": time.time(),
        "state": "pending",
        "progress": [],
    }


def submit(store: zkstore.Store, req: dict) -> dict | None:
    """Write the request. None: it was accepted. Otherwise the pending request
    that wins (two concurrent requests: exactly one proceeds)."""
    other = store.create_request(req)
    return None if other is None else other.data


def cancel(store: zkstore.Store, operator: str, reason: str = "") -> dict:
    """Cancel the request that is not finished yet: pending, scheduled or
    running. A conditional write marks it cancelled (state "cancelled", result
    {"state": "cancelled", "why": "cancelled by OPERATOR"}): an agent that
    wrote it meanwhile makes us read it again, and one that finished it first
    wins. The agents keep the role where it is then, or hand it back. Returns
    the request as it was when cancelled."""
    for _ in range(20):
        cur = store.request()
        if cur is None or cur.data.get("state") in zkstore.FINAL_STATES:
            last = "" if cur is None else f" (the last one, {_req_text(cur.data)}, is {cur.data.get('state')})"
            raise Refused(f"no pending, scheduled or running switchover or failover to cancel{last}")
        why = f"cancelled by {operator}" + (f": {reason}" if reason else "")
        data = {
            **cur.data,
            "state": "cancelled",
            "result": {"state": "cancelled", "why": why},
            "progress": [*cur.data.get("progress", []), why],
            "cancelled": {"by": operator, "at": time.time(), "reason": reason, "was": cur.data.get("state")},
        }
        try:
            store.update_request(cur.version, data)
        except zkstore.Conflict:  # an agent wrote a progress line meanwhile: read it again
            time.sleep(0.05)
            continue
        kind = cur.data.get("kind") or "switchover"
        what = f"cancelled the {cur.data.get('state')} {_req_text(cur.data)}"
        store.add_history(
            {
                "kind": f"{kind}-cancelled",
                "from": cur.data.get("from"),
                "to": cur.data.get("to"),
                "request": cur.data.get("id"),
                "who": operator,
                "why": what + (f": {reason}" if reason else ""),
                "outcome": "cancelled",
            }
        )
        return cur.data
    raise Refused("the request kept changing while cancelling it; try again")


def answer(store: zkstore.Store, choice: str, operator: str) -> dict:
    """Answer a drain's deadline question ("proceed": hand over, cutting the
    calls left; "cancel": release the busy-out, keep the primary). Written
    into the request with a conditional write; the primary's agent acts on it
    next cycle. Returns the request as answered."""
    for _ in range(20):
        cur = store.request()
        if cur is None or cur.data.get("state") in zkstore.FINAL_STATES or not cur.data.get("drain"):
            raise Refused("no drained switchover is waiting for an answer")
        if cur.data.get("answer"):
            raise Refused(f"already answered: {cur.data['answer']}")
        line = f"{operator} answered: {choice}"
        data = {**cur.data, "answer": choice, "progress": [*cur.data.get("progress", []), line]}
        try:
            store.update_request(cur.version, data)
        except zkstore.Conflict:
            time.sleep(0.05)
            continue
        return data
    raise Refused("the request kept changing while answering; try again")


def _req_text(r: dict) -> str:
    return f"{r.get('kind') or 'switchover'} to {r.get('to')} requested by {r.get('operator')}"
