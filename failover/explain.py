"""`failover explain`: what the plan's rules would do for given faults, with
the exact commands per host — computed, never executed, nothing contacted."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from failover import platforms
from failover.inventory import Cluster
from failover.layouts import SERVICES
from failover.platforms import LINE_UNMONITORED
from failover.rules import (
    Action,
    Decision,
    IpcObs,
    Observation,
    Policy,
    Role,
    ServiceObs,
    Stage,
    State,
    Topology,
    decide,
)

FAULT_KINDS = (*SERVICES, "line", "host")


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class FaultSpec:
    what: str  # a service, "line" or "host"
    ipc: str


def parse_faults(specs: Iterable[str], cluster: Cluster) -> list[FaultSpec]:
    names = [i.name for i in cluster.ipcs]
    out = []
    for spec in specs:
        what, sep, ipc = spec.partition("@")
        if not sep or not what or not ipc:
            raise FaultSpecError(f"fault {spec!r}: expected KIND@IPC, e.g. cti@{names[0]}")
        if what not in FAULT_KINDS:
            raise FaultSpecError(f"fault {spec!r}: unknown kind {what!r}; one of: {', '.join(FAULT_KINDS)}")
        if ipc not in names:
            raise FaultSpecError(f"fault {spec!r}: unknown IPC {ipc!r}; cluster {cluster.name} has {', '.join(names)}")
        out.append(FaultSpec(what, ipc))
    return out


def policy_of(cluster: Cluster, **overrides: object) -> Policy:
    p = cluster.policy
    base = Policy(
        mode=p.mode,
        failures_before_fault=cluster.timings.failures_before_fault,
        max_failovers=p.max_failovers,
        restart_in_place=p.restart_in_place,
        max_restarts=p.max_restarts,
    )
    return Policy(**{**base.__dict__, **overrides})  # type: ignore[arg-type]


def hypothetical(
    cluster: Cluster, faults: list[FaultSpec], paused: bool = False, standby_down: bool = False
) -> Observation:
    """The cluster in its normal layout (home primary serving, the other standby),
    with the given faults already declared (N consecutive failures)."""
    topo = Topology.from_cluster(cluster)
    pol = policy_of(cluster, paused=paused, pause_reason="explain --paused" if paused else "")
    n = pol.failures_before_fault
    ipcs = {}
    for name in topo.ipcs:
        role = Role.PRIMARY if name == topo.home_primary else Role.STANDBY
        if standby_down and role is Role.STANDBY:
            role = Role.FENCED
        running = topo.expected(name, role)
        svcs = {
            s: ServiceObs(State.RUNNING if s in running else State.STOPPED, True if s in running else None)
            for s in topo.services
        }
        monitored = cluster.line_monitored(name)
        line, line_failures, reachable, unreach = ("up" if monitored else LINE_UNMONITORED), 0, True, 0
        for f in faults:
            if f.ipc != name:
                continue
            if f.what == "line":
                if monitored:  # an unmonitored line's alarm is never seen (see notes())
                    line, line_failures = "alarm", n
            elif f.what == "host":
                reachable, unreach = False, n
            elif f.what in svcs:
                svcs[f.what] = ServiceObs(State.STOPPED, False, n)
        ipcs[name] = IpcObs(
            role=role,
            services=svcs,
            reachable=reachable,
            unreachable_count=unreach,
            line=line,
            line_failures=line_failures,
        )
    return Observation(topo, ipcs, primary=topo.home_primary, epoch=0, policy=pol)


def commands(cluster: Cluster, d: Decision) -> list[dict]:
    """The plan, stage by stage, with the exact commands per step."""
    out = []
    refs = platforms.refs(cluster.services)
    for i, st in enumerate(d.plan, 1):
        steps = []
        for s in st.steps:
            steps.append(
                {
                    "host": s.host,
                    "op": s.op,
                    "service": s.service,
                    "commands": platforms.step_commands(cluster, s.host, s.op, s.service, refs),
                }
            )
        out.append({"stage": i, "title": st.title, "requires_fenced": st.requires_fenced, "steps": steps})
    return out


def as_dict(cluster: Cluster, d: Decision, fault_specs: Iterable[str] = ()) -> dict:
    c = d.capacity
    return {
        "notes": notes(cluster, fault_specs, d),
        "cluster": cluster.name,
        "action": d.action.value,
        "execute": d.execute,
        "reason": d.reason,
        "faults": [str(f) for f in d.faults],
        "roles_after": {k: v.value for k, v in d.roles.items()},
        "primary_after": d.primary,
        "epoch_after": d.epoch,
        "board_down_after": sorted(d.board_down),
        "alerts": list(d.alerts),
        "capacity_after": None if c is None else {**c.as_dict(), "ivr_with_10_agents": c.ivr_headroom(10)},
        "plan": commands(cluster, d),
    }


def notes(cluster: Cluster, fault_specs: Iterable[str], d: Decision) -> list[str]:
    """Requested faults that the rules did not count, and why."""
    topo = Topology.from_cluster(cluster)
    declared = {(f.what, f.ipc) for f in d.faults}
    out = []
    for f in parse_faults(fault_specs, cluster):
        if (f.what, f.ipc) in declared or f.what in ("host",):
            continue
        if f.what == "line" and not cluster.line_monitored(f.ipc):
            out.append(
                f"line@{f.ipc}: the line is not monitored on {f.ipc} (no `line_check` in the inventory): a line "
                "alarm there is never seen, so rule 1 acts only on a board driver crash"
            )
            continue
        role = Role.PRIMARY if f.ipc == topo.home_primary else Role.STANDBY
        running = topo.expected(f.ipc, role)
        if (f.what == "line" and "driver" in running) or f.what in running:
            continue
        out.append(
            f"{f.what}@{f.ipc}: {f.what} does not run on {f.ipc} in its {topo.layout(f.ipc, role).value}"
            " layout, so it cannot fail there; not a fault"
        )
    return out


def render(cluster: Cluster, d: Decision, fault_specs: Iterable[str] = ()) -> str:
    data = as_dict(cluster, d)
    lines = [
        f"Decision: {d.action.value}" + ("" if d.execute else " (proposed, not executed)"),
        f"Reason:   {d.reason}",
    ]
    lines += [f"Note:     {n}" for n in notes(cluster, fault_specs, d)]
    if d.alerts:
        lines += [f"Alert:    {a}" for a in d.alerts]
    roles = ", ".join(f"{k} {v}" for k, v in data["roles_after"].items())
    label = "After:   " if d.execute else "If run:  "
    lines.append(f"{label} {roles}; primary {d.primary or 'none'}, epoch {d.epoch}")
    c = d.capacity
    if c is not None:
        h = c.ivr_headroom(10)
        lines.append(
            f"Capacity: {c.max_ivr} IVR calls or {c.max_agent} agent calls"
            f" (with 10 agent calls: {h if h is not None else 'n/a'} IVR); fax {c.fax}"
        )
    if not data["plan"]:
        lines.append("Plan:     nothing to run")
    lines += plan_lines(cluster, d.plan)
    return "\n".join(lines)


def plan_lines(cluster: Cluster, stages: Sequence[Stage], gate: str = "") -> list[str]:
    """The one renderer of a plan, for `explain` and for the CLI's preview of
    a switchover or failover: each stage, the condition that gates it, and
    each step with its exact commands. `gate`: what must hold before a gated
    stage [default: the old primary fenced, CTI and IVR verified stopped]."""
    lines = []
    for st in commands(cluster, Decision(Action.NONE, "", plan=tuple(stages))):
        cond = gate or f"only once {st['requires_fenced']} is fenced: its CTI and IVR verified stopped"
        lines.append(f"  {st['stage']}. {st['title']}" + (f"   [{cond}]" if st["requires_fenced"] else ""))
        for s in st["steps"]:
            lines.append(f"     {s['host']:<10} {s['op']:<7} {s['service']:<13} {s['commands'][0]}")
            lines += [f"     {'':<10} {'':<7} {'':<13} {c}" for c in s["commands"][1:]]
    return lines


def explain(cluster: Cluster, fault_specs: Iterable[str], paused: bool = False, standby_down: bool = False) -> Decision:
    faults = parse_faults(fault_specs, cluster)
    return decide(hypothetical(cluster, faults, paused, standby_down))
