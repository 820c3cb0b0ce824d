"""What the status page ("the desk", docs/monitoring.md) says, as data: the
headline (who answers calls, and why) and the banner of what needs a human.

Built from the very dict GET /cluster serves (status.view plus the reporting
agent's ZooKeeper state) and the agent's own failsafe state; the findings are
`failover check`'s (check.problems), so the page and the plugin never disagree.
Pure: the agent renders it once per cycle into /desk.json (api.render), the
page (desk_page.py) only draws it.
"""

from __future__ import annotations

import time
from typing import Any

from failover import check
from failover.layouts import SERVICES

HISTORY_SHOWN = 20  # timeline entries on the page (newest first)
# A failed switchover stays on the banner this long after it was requested:
# someone must look at why, but not for days (the next request replaces it anyway).
FAILED_SHOWN_S = 3600.0


def payload(cluster: dict, state: dict, now: float | None = None) -> dict[str, Any]:
    """/desk.json: `cluster` is /cluster's body, `state` the agent's API state."""
    now = time.time() if now is None else now
    return {
        "cluster": cluster,
        "headline": headline(cluster),
        "attention": attention(cluster, state.get("failsafe") or {}, now, state.get("history") or []),
        "history": list(reversed((state.get("history") or [])[-HISTORY_SHOWN:])),
        # this cluster's agents' pages: where to go when this agent stops answering
        "peers": next((d["desks"] for d in state.get("desks") or [] if d.get("own")), []),
        "generated_at": round(now, 3),
        "service_order": list(SERVICES),  # JSON objects arrive sorted by name: the plan's order instead
    }


def headline(v: dict) -> dict[str, Any]:
    """The one line the page shows in big letters, level ok/warn/crit, and why.
    An IPC whose agent is not reporting (stale, absent) is not known to answer
    or not: the page says so rather than trust its last reading."""
    answering = list(v.get("answering") or [])
    change = v.get("last_change") or {}
    silent = {n: i for n, i in (v.get("ipcs") or {}).items() if i.get("agent") != "alive"}
    if len(answering) == 1 and answering[0] in silent:
        who, i = answering[0], silent[answering[0]]
        age = f", last report {i['agent_age_s']:.0f} s ago" if i.get("agent_age_s") is not None else ""
        return {
            "level": "warn",
            "text": f"Calls answered by {who}, as last reported",
            "why": f"{who}'s agent is {i.get('agent')}{age}: this is its last reading, not a live one",
            "since": None,
        }
    if not answering and silent:
        names = " and ".join(silent)
        return {
            "level": "crit",
            "text": "UNKNOWN who answers calls",
            "why": f"{names}'s agent is not reporting: its IPC may still answer calls, or not; " + _why_nobody(v),
            "since": None,
        }
    if len(answering) == 1:
        who = answering[0]
        if change.get("to") == who:
            return {
                "level": "ok",
                "text": f"Calls answered by {who}",
                "why": _change_text(change),
                "since": change.get("when"),
            }
        # The change is not in the history yet (it is written once the
        # promotion is done): the serving IPC's agent says where it stands.
        return {"level": "ok", "text": f"Calls answered by {who}", "why": _sentence(v, who), "since": None}
    if answering:
        return {
            "level": "crit",
            "text": f"CTI and IVR run on {' and '.join(answering)}",
            "why": "two IPCs answering: the plan forbids it; see the banner",
            "since": None,
        }
    return {"level": "crit", "text": "NOBODY is answering calls", "why": _why_nobody(v), "since": None}


def _change_text(c: dict) -> str:
    moved = f"{c['from']} -> {c.get('to')}" if c.get("from") else f"to {c.get('to')}"
    return f"{c.get('kind')} {moved} (epoch {c.get('epoch')}): {c.get('why') or 'no reason recorded'}"


def _sentence(v: dict, ipc: str) -> str:
    return str(((v.get("ipcs") or {}).get(ipc) or {}).get("sentence") or f"({ipc}'s agent has not reported)")


def _why_nobody(v: dict) -> str:
    """The stuck agent's way out first (it names the command), else what the
    recorded primary's agent (or any agent) last said."""
    ipcs = v.get("ipcs") or {}
    for i in ipcs.values():
        if i.get("way_out"):
            return str(i["way_out"])
    order = [v.get("primary"), *ipcs]
    for name in order:
        if name in ipcs and ipcs[name].get("sentence"):
            return f"{name}: {ipcs[name]['sentence']}"
    return "no agent has reported"


def attention(v: dict, failsafe: dict, now: float, history: list[dict] | None = None) -> list[dict[str, str]]:
    """What needs a human, most urgent first: [{"level": "crit"|"warn", "text"}]."""
    crits, warns = check.problems(v)
    crits += _zookeeper(v) + _self_fenced(v) + _failed_request(v, now) + _failed_steps(history or [], now)
    warns += _failsafe(v, failsafe) + _alerts(v)
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for level, texts in (("crit", crits), ("warn", warns)):
        for t in texts:
            if t not in seen:
                seen.add(t)
                out.append({"level": level, "text": t})
    return out


def _zookeeper(v: dict) -> list[str]:
    zk = v.get("zookeeper") or {}
    if zk.get("connected", True):
        return []
    return [
        f"ZooKeeper unreachable from {v.get('reported_by')}'s agent (last contact {zk.get('last_contact_s')} s "
        "ago): no role can change until it is back; this page shows that agent's last reading"
    ]


def _self_fenced(v: dict) -> list[str]:
    return [
        f"{n} self-fenced: it stopped its CTI and IVR after losing ZooKeeper"
        for n, i in (v.get("ipcs") or {}).items()
        if i.get("self_fenced")
    ]


def _failed_request(v: dict, now: float) -> list[str]:
    r = v.get("last_request") or {}
    if r.get("state") != "failed" or now - float(r.get("requested_at") or 0) > FAILED_SHOWN_S:
        return []
    why = (r.get("result") or {}).get("why") or ((r.get("progress") or ["no reason recorded"])[-1])
    return [f"{r.get('kind') or 'switchover'} to {r.get('to')} requested by {r.get('operator')} FAILED: {why}"]


def _failed_steps(history: list[dict], now: float) -> list[str]:
    """Role changes, fencings, rejoins, drills that failed in the last hour
    (the history's outcome): a step that failed needs someone to look."""
    out = []
    for h in history:
        if (
            str(h.get("outcome") or "done").lower().startswith("fail")
            and now - float(h.get("when") or 0) <= FAILED_SHOWN_S
        ):
            what = f"{h.get('kind')} {h.get('from') or ''} -> {h.get('to') or ''}".replace("  ", " ").rstrip(" ->")
            out.append(f"{what} FAILED at {time.strftime('%H:%M:%S', time.localtime(float(h['when'])))}: "
                       f"{h.get('failed') or h.get('why') or 'see `failover history`'}")  # fmt: skip
    return out


def _failsafe(v: dict, f: dict) -> list[str]:
    me = v.get("reported_by")
    out = []
    if f.get("serving_on_lease"):
        out.append(
            f"failsafe active: {me} keeps CTI and IVR running without ZooKeeper on its peer's lease "
            f"({f.get('why') or 'granted'})"
        )
    if f.get("promised_to"):
        out.append(
            f"failsafe active: {me} promised {f['promised_to']} not to take the role "
            f"for {f.get('promise_left_s')} s more"
        )
    return out


def _alerts(v: dict) -> list[str]:
    """The agents' own alerts, minus what check.problems already says (the
    way out is ACTION NEEDED there, a broken lease path a warning)."""
    out = []
    for n, i in (v.get("ipcs") or {}).items():
        for a in i.get("alerts") or []:
            if a and a != i.get("way_out") and not str(a).startswith("failsafe path broken"):
                out.append(f"{n}: {a}")
    return out
