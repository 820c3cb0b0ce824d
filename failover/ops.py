"""Operator operations on a cluster's ZooKeeper records (used by the CLI, the
drills and the benchmarks). Each one is a conditional write plus a history
entry naming the operator and the reason; the agents carry them out."""

from __future__ import annotations

import getpass
import time
from dataclasses import replace

from failover import zkstore
from failover.records import HistoryEntry, MemberRecord, Request
from failover.rules import Role


class Refused(Exception):
    pass


def operator_name(given: str | None = None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def rejoin(store: zkstore.Store, ipc: str, operator: str, reason: str = "") -> HistoryEntry:
    """A repaired IPC rejoins as standby: its agent converges it to the standby
    layout and it becomes eligible again."""
    for _ in range(5):
        v = store.cluster()
        if v is None:
            raise Refused("the cluster has no record yet (no agent has bootstrapped it)")
        roles = dict(v.data.roles)
        if ipc not in roles:
            raise Refused(f"{ipc} is not in this cluster (roles: {', '.join(roles)})")
        if roles[ipc] is Role.PRIMARY:
            raise Refused(f"{ipc} is the primary; only a fenced or standby IPC can rejoin")
        roles[ipc] = Role.STANDBY
        board = tuple(x for x in v.data.board_down if x != ipc)
        # The marker lets the IPC's agent converge it to the standby layout even
        # while the cluster is paused: the operator asked for exactly that.
        marks = {**(v.data.rejoin or {}), ipc: {"by": operator, "at": time.time()}}
        try:
            store.update_cluster(v.version, replace(v.data, roles=roles, board_down=board, rejoin=marks))
        except zkstore.Conflict:
            time.sleep(0.05)
            continue
        why = reason or "repaired, rejoins as standby"
        entry = HistoryEntry.of("rejoin", operator, why, frm=ipc, to=ipc, epoch=v.data.epoch)
        store.add_history(entry)
        return entry
    raise Refused("the cluster record kept changing; try again")


def rejoined(store: zkstore.Store, ipc: str) -> MemberRecord | None:
    """The IPC's member record once its agent has acted on the rejoin: the
    agent clears the rejoin marker only after converging to the standby layout.
    Checking `eligible` alone is not enough: after a switchover the record
    already says eligible from before the rejoin."""
    v = store.cluster()
    if v is None or ipc in (v.data.rejoin or {}):
        return None
    m = store.member(ipc)
    ok = m is not None and m.role == "standby" and m.eligible is True and m.decision == "none"
    return m if ok else None


def pause(store: zkstore.Store, operator: str, reason: str) -> None:
    store.set_pause(reason, operator)
    store.add_history(HistoryEntry.of("pause", operator, reason or "no reason given"))


def resume(store: zkstore.Store, operator: str, reason: str = "") -> bool:
    was = store.pause()
    store.clear_pause()
    store.add_history(
        HistoryEntry.of("resume", operator, reason or "no reason given", "done" if was else "was not paused")
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
) -> Request:
    """`confirm_dead`: a manual failover's proof by an operator's word: that IPC
    (the old primary, `frm`) was verified powered off by a person. The agent
    holding the role hands it over; the target promotes with the proof
    {"kind": "operator", ...} (docs/cli.md). `drain`: a drained switchover's
    {below, max_wait, on_deadline} (failover/drain.py)."""
    import secrets

    return Request(
        id=secrets.token_hex(4),
        kind=kind,
        to=to,
        frm=frm,
        operator=operator,
        reason=reason,
        at=at,
        allow_paused=allow_paused,
        force=force,
        confirm_dead=confirm_dead,
        drain=drain,
        requested_at=time.time(),
        state="pending",
        progress=(),
    )


def submit(store: zkstore.Store, req: Request) -> Request | None:
    """Write the request. None: it was accepted. Otherwise the pending request
    that wins (two concurrent requests: exactly one proceeds)."""
    other = store.create_request(req)
    return None if other is None else other.data


def cancel(store: zkstore.Store, operator: str, reason: str = "", req_id: str | None = None) -> Request:
    """Cancel the request that is not finished yet: pending, scheduled or
    running. A conditional write marks it cancelled (state "cancelled", result
    {"state": "cancelled", "why": "cancelled by OPERATOR"}): an agent that
    wrote it meanwhile makes us read it again, and one that finished it first
    wins. The agents keep the role where it is then, or hand it back. Returns
    the request as it was when cancelled."""
    for _ in range(20):
        cur = store.request()
        if cur is None or cur.data.state in zkstore.FINAL_STATES:
            last = "" if cur is None else f" (the last one, {_req_text(cur.data)}, is {cur.data.state})"
            raise Refused(f"no pending, scheduled or running switchover or failover to cancel{last}")
        if req_id is not None and cur.data.id != req_id:
            raise Refused(f"the request was replaced meanwhile ({_req_text(cur.data)}): not cancelled")
        why = f"cancelled by {operator}" + (f": {reason}" if reason else "")
        data = replace(
            cur.data,
            state="cancelled",
            result={"state": "cancelled", "why": why},
            progress=(*cur.data.progress, why),
            cancelled={"by": operator, "at": time.time(), "reason": reason, "was": cur.data.state},
        )
        try:
            store.update_request(cur.version, data)
        except zkstore.Conflict:  # an agent wrote a progress line meanwhile: read it again
            time.sleep(0.05)
            continue
        kind = cur.data.kind or "switchover"
        what = f"cancelled the {cur.data.state} {_req_text(cur.data)}"
        store.add_history(
            HistoryEntry.of(
                f"{kind}-cancelled",
                operator,
                what + (f": {reason}" if reason else ""),
                "cancelled",
                frm=cur.data.frm,
                to=cur.data.to,
                request=cur.data.id,
            )
        )
        return cur.data
    raise Refused("the request kept changing while cancelling it; try again")


def answer(store: zkstore.Store, choice: str, operator: str, req_id: str | None = None) -> Request:
    """Answer a drain's deadline question ("proceed": hand over, cutting the
    calls left; "cancel": release the busy-out, keep the primary). Written
    into the request with a conditional write; the primary's agent acts on it
    next cycle. "proceed" only once the question is asked (at the deadline):
    before it, nobody has been told what would be cut. `req_id`: only that
    request (the CLI that asked). Returns the request as answered."""
    for _ in range(20):
        cur = store.request()
        if cur is None or cur.data.state in zkstore.FINAL_STATES or not cur.data.drain:
            raise Refused("no drained switchover is waiting for an answer")
        if req_id is not None and cur.data.id != req_id:
            raise Refused(f"the request was replaced meanwhile ({_req_text(cur.data)})")
        if cur.data.answer:
            raise Refused(f"already answered: {cur.data.answer}")
        if choice == "proceed" and not cur.data.question:
            raise Refused("the drain has not reached its deadline: nothing to proceed with yet (or cancel it)")
        line = f"{operator} answered: {choice}"
        data = replace(cur.data, answer=choice, progress=(*cur.data.progress, line))
        try:
            store.update_request(cur.version, data)
        except zkstore.Conflict:
            time.sleep(0.05)
            continue
        return data
    raise Refused("the request kept changing while answering; try again")


def _req_text(r: Request) -> str:
    return f"{r.kind or 'switchover'} to {r.to} requested by {r.operator}"
