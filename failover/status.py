"""The cluster as the on-call engineer sees it: built from the ZooKeeper
records (pure), rendered as a table (colour only on a terminal) or JSON."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import click

from failover import capacity as cap
from failover.inventory import Cluster, Ipc
from failover.layouts import SERVICES
from failover.records import (
    PRIMARY_CHANGE_KINDS,
    ClusterRecord,
    HistoryEntry,
    LeaderRecord,
    MemberRecord,
    Pause,
    Request,
)
from failover.rules import Role

APPS = ("cti", "ivr")  # an IPC answers calls when both run and answer their probes
SHORT = {
    "RUNNING": "run",
    "STOPPED": "-",
    "START_PENDING": "start…",
    "STOP_PENDING": "stop…",
    "PAUSED": "paused",
    "UNKNOWN": "?",
}
LINE_TEXT = {"unmonitored": "not monitored"}  # no line_check in the inventory
STALE_S = 10.0  # a member record older than this is shown as stale


def _ipc_view(
    c: Cluster,
    i: Ipc,
    m: MemberRecord | None,
    roles: Mapping[str, Role],
    leader: tuple[LeaderRecord, int] | None,
    rec: ClusterRecord | None,
    now: float,
) -> dict[str, Any]:
    """One IPC as its agent last published it (its member record)."""
    obs = (m.obs if m else None) or {}
    svcs = {s: v for s, v in (obs.get("services") or {}).items()}
    return {
        "role": roles[i.name].value if i.name in roles else "unknown",
        "leader": bool(leader and leader[0].ipc == i.name),
        "eligible": bool(m and m.eligible),
        "agent": "absent" if m is None else ("stale" if now - float(m.updated or 0) > STALE_S else "alive"),
        "agent_age_s": None if m is None else round(now - float(now if m.updated is None else m.updated), 1),
        "line": obs.get("line", "unknown"),
        "board_down": bool(rec and i.name in rec.board_down),
        "reachable": obs.get("reachable"),
        "services": {
            s: {"state": (svcs.get(s) or {}).get("state", "UNKNOWN"), "probe": (svcs.get(s) or {}).get("healthy")}
            for s in SERVICES
            if s in c.services
        },
        "sentence": m.sentence if m else "",
        # "" while automatic action is still possible; else what is stuck and
        # the exact command that gets out (published by the IPC's agent)
        "way_out": str((m.way_out if m else "") or ""),
        "alerts": list(m.alerts) if m else [],
        "self_fenced": bool(m and m.self_fenced),
        "failsafe_path": m.failsafe_path if m else None,
        "channels": i.channels,
        "fax_channels": i.fax_channels,
    }


def view(
    c: Cluster,
    rec: ClusterRecord | None,
    leader: tuple[LeaderRecord, int] | None,
    members: dict[str, MemberRecord | None],
    pause: Pause | None,
    request: Request | None,
    history: list[HistoryEntry],
    now: float | None = None,
) -> dict:
    now = now or time.time()
    roles = rec.roles if rec else {}
    ipcs: dict[str, Any] = {}
    boards: list[str] = []
    answering: list[str] = []
    for i in c.ipcs:
        ipcs[i.name] = _ipc_view(c, i, members.get(i.name), roles, leader, rec, now)
        svcs = ipcs[i.name]["services"]
        if svcs.get("driver", {}).get("state") == "RUNNING":
            boards.append(i.name)
        if all(
            svcs.get(s, {}).get("state") == "RUNNING" and svcs.get(s, {}).get("probe") is not False
            for s in ("cti", "ivr")
        ):
            # Calls are answered wherever CTI and IVR run and answer, whatever
            # the record says at this instant (it changes before the promotion
            # ends): capacity must never read 0 while an IPC serves.
            answering.append(i.name)
    capa = cap.compute(
        {i.name: i.channels for i in c.ipcs}, {i.name: i.fax_channels for i in c.ipcs}, boards, bool(answering)
    )
    changes = [h for h in history if h.kind in PRIMARY_CHANGE_KINDS]
    req = request.to_json() if request else None
    return {
        "cluster": c.name,
        "primary": rec.primary if rec else None,
        "epoch": rec.epoch if rec else None,
        "leader": None if leader is None else leader[0].ipc,
        # where CTI and IVR run and answer their probes: who answers calls now
        "answering": answering,
        "paused": pause.to_json() if pause else None,
        "switchover": req if request and request.state not in ("done", "failed", "refused", "cancelled") else None,
        "last_request": req,
        "last_change": changes[-1].to_json() if changes else None,
        "capacity": {**capa.as_dict(), "ivr_with_10_agents": capa.ivr_headroom(10)},
        "calls": calls_view(members, rec.primary if rec else None, capa),
        "ipcs": ipcs,
    }


def calls_view(members: dict[str, MemberRecord | None], primary: str | None, capa: cap.Capacity) -> dict | None:
    """The primary's active calls as its agent last read them (the inventory's
    `calls`), the line channels they hold (X + 2Y) and those left; None when
    not observed. `busy_out`: its marker while a drain holds new calls off."""
    m = members.get(primary or "")
    got = (m.calls if m else None) or {}
    if m is None or got.get("active") is None:
        return None
    used = cap.channels_in_use(got.get("ivr"), got.get("agent"), int(got["active"]))
    lines = sum(capa.lines.values())
    return {
        "on": primary,
        "active": int(got["active"]),
        "ivr": got.get("ivr"),
        "agent": got.get("agent"),
        "channels_used": used,
        "channels_free": max(0, lines - used),
        "busy_out": m.busy_out,
    }


def _when(ts: float | None) -> str:
    if not ts:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))


def proof_text(proof: Any) -> str:
    """A takeover's proof that the old primary's CTI/IVR were not running:
    {"kind": "verified"|"fence-device"|"operator"|"handoff", "detail": ...}."""
    if not isinstance(proof, dict):
        return str(proof)
    kind, detail = proof.get("kind") or "?", proof.get("detail") or ""
    return f"{kind}: {detail}" if detail else str(kind)


def calls_text(calls: dict) -> str:
    split = f" (ivr {calls['ivr']}, agent {calls['agent']})" if calls.get("ivr") is not None else ""
    text = (
        f"calls: {calls['active']} active on {calls['on']}{split}, {calls['channels_used']} line channels in use, "
        f"{calls['channels_free']} free"
    )
    b = calls.get("busy_out")
    if b:
        since = _when(b.get("since"))
        text += click.style(f"; BUSIED OUT since {since} (drain, request {b.get('request')})", bold=True)
    return text


def drain_text(r: dict) -> str:
    """A drained switchover's state: its options, the calls left, the question."""
    d, dr = r["drain"], r.get("draining") or {}
    calls = dr.get("calls") or {}
    left = f"{calls.get('active')} calls left" if calls.get("active") is not None else "calls not counted yet"
    text = (
        f"  drain: hand-over at {d.get('below', 0)} or fewer calls, "
        f"deadline {d.get('max_wait'):g} s ({d.get('on_deadline')})"
    )
    if dr:
        text += f"; draining since {_when(dr.get('started'))} from {dr.get('at_start')} calls, {left}"
    if r.get("question") and not r.get("answer"):
        text += f"; QUESTION: {r['question']} (`failover switchover --answer proceed|cancel`)"
    return text


def _banners(v: dict) -> list[str]:
    """What needs a person, then what is going on: ACTION NEEDED, PAUSED, a
    pending switchover, the last change of primary."""
    out: list[str] = []
    for name, i in v["ipcs"].items():
        if i.get("way_out"):
            out.append(click.style(f"{name}: ACTION NEEDED: {i['way_out']}", fg="red", bold=True))
    if v["paused"]:
        p = v["paused"]
        out.append(
            click.style(
                f"PAUSED by {p.get('operator')} since {_when(p.get('since'))}: "
                f"{p.get('reason') or 'no reason given'} (no automatic action)",
                fg="yellow",
                bold=True,
            )
        )
    if v["switchover"]:
        r = v["switchover"]
        at = f" at {_when(r.get('at'))}" if r.get("at") else ""
        dead = f" ({r['confirm_dead']} confirmed powered off)" if r.get("confirm_dead") else ""
        out.append(
            click.style(
                f"{r.get('kind') or 'switchover'} to {r.get('to')}{at}{dead} requested by {r.get('operator')} "
                f"({r.get('reason') or 'no reason'}): {r.get('state')} (cancel: `failover switchover --cancel`)",
                fg="cyan",
            )
        )
        if r.get("drain"):
            out.append(click.style(drain_text(r), fg="cyan"))
    lc = v["last_change"]
    if lc:
        dur = f" in {lc['duration_s']:.1f} s" if lc.get("duration_s") is not None else ""
        out.append(
            f"last change: {_when(lc.get('when'))} {lc.get('kind')} {lc.get('from') or '-'} -> {lc.get('to')} "
            f"(epoch {lc.get('epoch')}, by {lc.get('who')}){dur}: {lc.get('why')}"
            + (f" [proof: {proof_text(lc['proof'])}]" if lc.get("proof") else "")
        )
    return out


def _table(v: dict) -> list[str]:
    """One row per IPC: role, eligibility, line, every service, its agent."""
    out: list[str] = []
    services = [s for s in SERVICES if any(s in i["services"] for i in v["ipcs"].values())]
    cols = ["IPC", "ROLE", "ELIGIBLE", "LINE", *services, "AGENT"]
    rows = []
    for name, i in v["ipcs"].items():
        role = i["role"] + ("*" if i["leader"] else "")
        line = LINE_TEXT.get(i["line"], i["line"]) + (" (board down)" if i["board_down"] else "")
        eligible = "-" if i["role"] == "primary" else ("yes" if i["eligible"] else "no")
        cells = [name, role, eligible, line]
        cells += [
            SHORT.get(i["services"][s]["state"], "?") + ("!" if i["services"][s]["probe"] is False else "")
            for s in services
        ]
        cells.append(i["agent"] + (f" {i['agent_age_s']:.0f}s" if i["agent"] == "stale" else ""))
        rows.append(cells)
    widths = [max(len(str(r[k])) for r in [cols, *rows]) for k in range(len(cols))]
    out.append("  ".join(str(h).ljust(w) for h, w in zip(cols, widths, strict=True)))
    for r, (_, i) in zip(rows, v["ipcs"].items(), strict=True):
        text = "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True))
        color = "green" if i["role"] == "primary" else ("red" if i["role"] == "fenced" else None)
        out.append(click.style(text, fg=color) if color else text)
    return out


def render(v: dict, now: float | None = None) -> str:
    now = now or time.time()
    out: list[str] = []
    head = f"cluster {v['cluster']}: "
    if v["primary"] is None:
        head += click.style("NO PRIMARY", fg="red", bold=True)
    else:
        ok = v["leader"] == v["primary"]
        head += f"primary {click.style(v['primary'], bold=True)}, epoch {v['epoch']}"
        if not ok:
            head += click.style(f" (role not held: leader {v['leader'] or 'none'})", fg="yellow")
    c = v["capacity"]
    head += (
        f"; capacity {c['max_ivr']} IVR or {c['max_agent']} agent calls "
        f"({c['ivr_with_10_agents'] if c['ivr_with_10_agents'] is not None else 'n/a'} IVR beside 10 agents), "
        f"fax {c['fax']}"
    )
    out.append(head)
    if v.get("calls"):
        out.append(calls_text(v["calls"]))
    out += _banners(v)
    out += _table(v)
    out.append("(* holds the role; run = running, - = stopped, ! = probe failing)")
    for name, i in v["ipcs"].items():
        out.append(f"{name}: {i['sentence'] or '(no agent report)'}")
        for a in i["alerts"]:
            out.append(click.style(f"{name}: ALERT: {a}", fg="red"))
    return "\n".join(out)
