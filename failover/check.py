"""`failover check`: a Nagios/Icinga plugin. The verdict is a pure function of
the cluster view (the same one `status` and GET /cluster show).

Exit 0 OK, 1 WARNING (standby ineligible, board down, paused, capacity below
--warn), 2 CRITICAL (no primary, two primaries, the primary's CTI or IVR down,
an agent says no automatic action will happen (its `way_out`: what a person
must do), capacity below --crit), 3 UNKNOWN (no data). One status line with
perfdata.
"""

from __future__ import annotations

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def _app_running(i: dict) -> list[str]:
    return [s for s in ("cti", "ivr") if i["services"].get(s, {}).get("state") not in (None, "STOPPED", "UNKNOWN")]


def verdict(v: dict, warn: int | None = None, crit: int | None = None) -> tuple[int, str]:
    ipcs = v.get("ipcs") or {}
    cap = v.get("capacity") or {}
    ivr = int(cap.get("max_ivr") or 0)
    crits, warns = [], []
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
        text = " ".join(str(i.get("way_out") or "").split()).replace("|", "/")  # '|' starts perfdata
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
    code = CRITICAL if crits else WARNING if warns else OK
    what = "; ".join(crits + warns) or f"primary {primary} serving, standby eligible"
    unmonitored = sorted(n for n, i in ipcs.items() if i.get("line") == "unmonitored")
    if unmonitored:  # said, never a warning: the inventory has no line_check
        what += f" (line not monitored on {', '.join(unmonitored)})"
    perf = (
        f"epoch={v.get('epoch') or 0} ivr_capacity={ivr};{warn if warn is not None else ''};"
        f"{crit if crit is not None else ''};0 agent_capacity={int(cap.get('max_agent') or 0)} "
        f"fax_capacity={int(cap.get('fax') or 0)}"
    )
    calls = v.get("calls")
    if calls:  # the primary's calls in progress, and the line channels left beside them
        perf += f" active_calls={calls['active']} channels_free={calls['channels_free']}"
        what += f" ({calls['active']} calls active" + (", BUSIED OUT: draining)" if calls.get("busy_out") else ")")
    return code, f"FAILOVER {NAMES[code]} - cluster {v.get('cluster')}: {what} | {perf}"


def unknown(why: str) -> tuple[int, str]:
    return UNKNOWN, f"FAILOVER UNKNOWN - {why}"
