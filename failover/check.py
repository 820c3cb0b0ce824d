"""`failover check`: a Nagios/Icinga plugin. The verdict is a pure function of
the cluster view (the same one `status` and GET /cluster show).

Exit 0 OK, 1 WARNING (standby ineligible, board down, paused, capacity below
--warn), 2 CRITICAL (no primary, two primaries, the primary's CTI or IVR down,
an agent says no automatic action will happen (its `way_out`: what a person
must do), capacity below --crit), 3 UNKNOWN (no data). One status line with
perfdata that follows the Monitoring Plugins guidelines
('label'=value[UOM];[warn];[crit];[min];[max], thresholds in their range format).
"""

from __future__ import annotations

import re

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def _app_running(i: dict) -> list[str]:
    return [s for s in ("cti", "ivr") if i["services"].get(s, {}).get("state") not in (None, "STOPPED", "UNKNOWN")]


def problems(v: dict, warn: int | None = None, crit: int | None = None) -> tuple[list[str], list[str]]:
    """(critical, warning) findings of the view, each one sentence: the
    plugin's verdict and the status page's banner are the same list."""
    ipcs = v.get("ipcs") or {}
    cap = v.get("capacity") or {}
    ivr = int(cap.get("max_ivr") or 0)
    crits: list[str] = []
    warns: list[str] = []
    primary = v.get("primary")
    serving = [n for n, i in ipcs.items() if set(_app_running(i)) == {"cti", "ivr"}]
    if len(serving) > 1 or len([n for n, i in ipcs.items() if _app_running(i)]) > 1:
        crits.append(f"CTI/IVR running on {' and '.join(n for n, i in ipcs.items() if _app_running(i))}")
    if primary is None or v.get("leader") != primary:
        crits.append(f"no primary holds the role (recorded {primary}, leader {v.get('leader')})")
    elif primary in ipcs:
        p = ipcs[primary]
        down = [
            s.upper()
            for s in ("cti", "ivr")
            if p["services"].get(s, {}).get("state") != "RUNNING" or p["services"].get(s, {}).get("probe") is False
        ]
        if down:
            crits.append(f"{' and '.join(down)} down on primary {primary}")
        if p.get("board_down") or p.get("line") in ("alarm", "down"):
            warns.append(f"board down on {primary} (line {p.get('line')})")
    # A state no automatic action will get out of: the agents say so, with the
    # command that does (several agents may say the same thing: once, naming them).
    stuck: dict[str, list[str]] = {}
    for n, i in ipcs.items():
        text = " ".join(str(i.get("way_out") or "").split())
        if text:
            stuck.setdefault(text, []).append(n)
    for text, names in stuck.items():
        crits.append(f"ACTION NEEDED (reported by {' and '.join(names)}): {text}")
    if crit is not None and ivr < crit:
        crits.append(f"capacity {ivr} IVR calls < {crit}")
    elif warn is not None and ivr < warn:
        warns.append(f"capacity {ivr} IVR calls < {warn}")
    for n, i in ipcs.items():
        if n != primary and not i.get("eligible"):
            warns.append(f"standby {n} ineligible ({i.get('role')})")
        path = i.get("failsafe_path") or {}
        if path.get("ok") is False:
            warns.append(f"failsafe path from {n} broken ({path.get('why')})")
    if v.get("paused"):
        p = v["paused"]
        warns.append(f"paused by {p.get('operator')}: {p.get('reason') or 'no reason'}")
    return crits, warns


def verdict(v: dict, warn: int | None = None, crit: int | None = None) -> tuple[int, str]:
    ipcs = v.get("ipcs") or {}
    primary = v.get("primary")
    crits, warns = problems(v, warn, crit)
    code = CRITICAL if crits else WARNING if warns else OK
    what = "; ".join(crits + warns) or f"primary {primary} serving, standby eligible"
    unmonitored = sorted(n for n, i in ipcs.items() if i.get("line") == "unmonitored")
    if unmonitored:  # said, never a warning: the inventory has no line_check
        what += f" (line not monitored on {', '.join(unmonitored)})"
    calls = v.get("calls")
    if calls:  # the primary's calls in progress (inventory `calls`)
        what += f" ({calls['active']} calls active" + (", BUSIED OUT: draining)" if calls.get("busy_out") else ")")
    text = f"cluster {v.get('cluster')}: {what}".replace("|", "/")  # '|' starts the perfdata
    return code, f"FAILOVER {NAMES[code]} - {text} | {_perf(v, warn, crit)}"


def _perf(v: dict, warn: int | None, crit: int | None) -> str:
    cap = v.get("capacity") or {}
    # --warn/--crit alert when capacity is *below* them: the guidelines' range
    # "N:" (inside N..inf is fine), not a bare N (which means "above N").
    return " ".join(
        [
            perfdata("epoch", int(v.get("epoch") or 0)),
            perfdata("ivr_capacity", int(cap.get("max_ivr") or 0), warn=_below(warn), crit=_below(crit), min_=0),
            perfdata("agent_capacity", int(cap.get("max_agent") or 0), min_=0),
            perfdata("fax_capacity", int(cap.get("fax") or 0), min_=0),
            *_calls_perf(v.get("calls")),
        ]
    )


def _calls_perf(calls: dict | None) -> list[str]:
    """The primary's calls in progress, and the line channels left beside them."""
    if not calls:
        return []
    return [
        perfdata("active_calls", calls["active"], min_=0),
        perfdata("channels_free", calls["channels_free"], min_=0),
    ]


def _below(n: int | None) -> str:
    return "" if n is None else f"{n}:"


_PLAIN_LABEL = re.compile(r"^[A-Za-z0-9_.\-/]+$")


def perfdata(label: str, value: float, uom: str = "", warn: str = "", crit: str = "", min_: float | None = None) -> str:
    """One 'label'=value[UOM];[warn];[crit];[min];[max] item: the label quoted
    when it is not plain (its own ' and = are not allowed), empty trailing
    fields dropped."""
    name = label.replace("'", "").replace("=", "_")
    if not _PLAIN_LABEL.match(name):
        name = f"'{name}'"
    fields = [f"{value:g}{uom}", warn, crit, "" if min_ is None else f"{min_:g}"]
    while len(fields) > 1 and fields[-1] == "":
        fields.pop()
    return f"{name}={';'.join(fields)}"


def unknown(why: str) -> tuple[int, str]:
    return UNKNOWN, f"FAILOVER UNKNOWN - {why}"
