"""From raw status to the rules' observation (pure): consecutive-failure
counters (hysteresis) and the member record agents publish for each other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from failover.rules import IpcObs, Role, ServiceObs, State, Topology


@dataclass(frozen=True)
class Raw:
    """One observation of one IPC by its agent."""

    reachable: bool
    states: Mapping[str, State] = field(default_factory=dict)
    healthy: Mapping[str, bool | None] = field(default_factory=dict)
    line: str = "unknown"


def update(prev: IpcObs | None, raw: Raw, topo: Topology, ipc: str, role: Role, board_down: bool) -> IpcObs:
    """The new observation with failure counters carried over: a service the
    role expects running that is not RUNNING-and-answering counts one more
    failure — once it has been seen healthy (a service never up yet in this
    role is for the converge step to start, not a crash); anything else resets
    to 0. Unreachable: all states UNKNOWN."""
    expected = topo.expected(ipc, role, board_down)
    if not raw.reachable:
        n = (prev.unreachable_count if prev else 0) + 1
        svcs = prev.services if prev else {s: ServiceObs(State.UNKNOWN) for s in topo.services}
        return IpcObs(
            role,
            svcs,
            reachable=False,
            unreachable_count=n,
            line="unknown",
            line_failures=prev.line_failures if prev else 0,
            board_down=board_down,
        )
    svcs = {}
    for s in sorted(topo.services):
        state = raw.states.get(s, State.UNKNOWN)
        healthy = raw.healthy.get(s)
        ok = state is State.RUNNING and healthy is not False
        p = prev.services.get(s) if prev and prev.role is role else None
        armed = p is not None and (p.failures > 0 or (p.state is State.RUNNING and p.healthy is not False))
        fails = p.failures + 1 if (p is not None and armed and s in expected and not ok) else 0
        svcs[s] = ServiceObs(state, healthy, fails)
    # A line alarm counts only while the driver runs (a stopped driver is the
    # driver's own failure), and only once the line was seen up in this role.
    driver_up = raw.states.get("driver") is State.RUNNING
    line_bad = "driver" in expected and driver_up and raw.line in ("alarm", "down")
    line_armed = prev is not None and prev.role is role and (prev.line == "up" or prev.line_failures > 0)
    lf = (prev.line_failures if prev else 0) + 1 if (line_bad and line_armed) else 0
    return IpcObs(
        role,
        svcs,
        reachable=True,
        unreachable_count=0,
        line=raw.line,
        line_failures=lf,
        board_down=board_down,
    )


def to_record(o: IpcObs) -> dict:
    return {
        "role": o.role.value,
        "reachable": o.reachable,
        "unreachable_count": o.unreachable_count,
        "line": o.line,
        "line_failures": o.line_failures,
        "board_down": o.board_down,
        "services": {
            s: {"state": v.state.value, "healthy": v.healthy, "failures": v.failures} for s, v in o.services.items()
        },
    }


def from_record(rec: Mapping | None, topo: Topology, role: Role) -> IpcObs:
    """A peer's published observation; no record (its agent is gone) reads as
    unreachable with no failures counted: not eligible, but not declared faulted."""
    if not rec or "services" not in rec:
        return IpcObs(role, {s: ServiceObs(State.UNKNOWN) for s in topo.services}, reachable=False)
    svcs = {
        s: ServiceObs(State(v.get("state", "UNKNOWN")), v.get("healthy"), int(v.get("failures", 0)))
        for s, v in rec["services"].items()
    }
    return IpcObs(
        role,
        svcs,
        reachable=bool(rec.get("reachable", False)),
        unreachable_count=int(rec.get("unreachable_count", 0)),
        line=rec.get("line", "unknown"),
        line_failures=int(rec.get("line_failures", 0)),
        board_down=bool(rec.get("board_down")),
    )
