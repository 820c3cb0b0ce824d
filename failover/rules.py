"""The disaster-recovery plan's rules as a pure function. No I/O here.

    decide(observation) -> Decision(action, one-sentence reason, ordered plan)

"What happens when CTI dies?" — read RULES below: a CTI fault on the primary is
an APP fault, which is the plan's rule 2 (failover), unless the standby cannot
take over (rule 4: hold, restart in place if policy allows, alert).

| where   | fault                          | plan's rule | action                                   |
|---------|--------------------------------|-------------|------------------------------------------|
| primary | unreachable by SSH             | (6)         | failover, CTI/IVR start only once fenced |
| primary | CTI or IVR                     | 2           | failover: stop all here, promote standby |
| primary | board line or driver           | 1           | stop the driver only; no role change     |
| primary | KCXP / KCBP                    | (5)         | restart in place; alert if it persists   |
| standby | anything                       | 3           | stop all on the standby, ineligible      |
Primary faults are taken in that order (the first row that matches wins).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from failover import capacity as cap
from failover.layouts import (
    APP_SERVICES,
    BOARD_SERVICES,
    DEFAULT_AFTER,
    LABELS,
    MIDDLEWARE,
    Layout,
    running_set,
    start_order,
    stop_order,
)


class Role(StrEnum):
    PRIMARY = "primary"
    STANDBY = "standby"
    FENCED = "fenced"  # failed / ineligible: everything stopped until `rejoin`


class State(StrEnum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    START_PENDING = "START_PENDING"
    STOP_PENDING = "STOP_PENDING"
    PAUSED = "PAUSED"  # Windows: the process lives but does not serve; never counts as stopped
    UNKNOWN = "UNKNOWN"


class FaultClass(StrEnum):
    HOST = "host"  # the IPC cannot be reached over SSH
    APP = "app"  # CTI or IVR
    BOARD = "board"  # line alarm or board driver
    MIDDLEWARE = "middleware"  # KCXP / KCBP (own or replica)
    OTHER = "other"  # fax


class Action(StrEnum):
    NONE = "none"
    CONVERGE = "converge"  # bring an IPC back to its role's layout
    BOARD_DOWN = "board-down"  # rule 1
    FAILOVER = "failover"  # rule 2 (and 6, with fencing)
    FENCE_STANDBY = "fence-standby"  # rule 3
    RESTART = "restart"  # rule 5 (and 4 when policy allows)
    HOLD = "hold"  # nothing safe to do: keep things as they are and alert
    BOOTSTRAP = "bootstrap"  # no primary yet


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    """What the rules need from the inventory, as plain data."""

    ipcs: tuple[str, str]
    home_primary: str
    services: frozenset[str]
    channels: Mapping[str, int]
    fax_channels: Mapping[str, int]
    layouts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    after: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_AFTER))

    @classmethod
    def from_cluster(cls, c: object) -> Topology:
        from failover.inventory import Cluster

        assert isinstance(c, Cluster)
        a, b = c.ipcs
        return cls(
            ipcs=(a.name, b.name),
            home_primary=c.home_primary().name,
            services=frozenset(c.services),
            channels={i.name: i.channels for i in c.ipcs},
            fax_channels={i.name: i.fax_channels for i in c.ipcs},
            layouts={k: tuple(v) for k, v in c.layouts.items()},
            after=c.after(),
        )

    def peer(self, ipc: str) -> str:
        return self.ipcs[1] if ipc == self.ipcs[0] else self.ipcs[0]

    def layout(self, ipc: str, role: Role) -> Layout:
        if role is Role.PRIMARY:
            return Layout.PRIMARY if ipc == self.home_primary else Layout.PROMOTED
        return Layout.STANDBY if role is Role.STANDBY else Layout.FENCED

    def expected(self, ipc: str, role: Role, board_down: bool = False) -> frozenset[str]:
        return running_set(self.layout(ipc, role), self.services, self.layouts, board_down)


@dataclass(frozen=True)
class ServiceObs:
    state: State = State.RUNNING
    healthy: bool | None = None  # application probe; None = no probe configured
    failures: int = 0  # consecutive failed observations (state or probe)

    @property
    def ok(self) -> bool:
        return self.state is State.RUNNING and self.healthy is not False


@dataclass(frozen=True)
class IpcObs:
    role: Role
    services: Mapping[str, ServiceObs]
    reachable: bool = True
    unreachable_count: int = 0  # consecutive failed SSH status calls
    line: str = "up"  # up | alarm | down | unknown
    line_failures: int = 0
    board_down: bool = False  # already in rule 1's layout (driver stopped on purpose)


@dataclass(frozen=True)
class Policy:
    mode: str = "automatic"  # or "manual": decisions are proposed, not executed
    paused: bool = False
    pause_reason: str = ""
    failures_before_fault: int = 2
    recent_failovers: int = 0  # automatic failovers in the current window
    max_failovers: int = 2
    restart_in_place: bool = True
    restarts: Mapping[str, int] = field(default_factory=dict)  # "ipc/service" -> recent restarts
    max_restarts: int = 3


@dataclass(frozen=True)
class Observation:
    topology: Topology
    ipcs: Mapping[str, IpcObs]
    primary: str | None
    epoch: int = 0
    policy: Policy = Policy()


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    host: str
    op: str  # start | stop | restart
    service: str


@dataclass(frozen=True)
class Stage:
    """Steps of one stage run host by host in order; hosts may run in parallel.
    Stages run one after the other, each only if the previous one succeeded."""

    title: str
    steps: tuple[Step, ...]
    # The stage starts CTI/IVR on a new primary: the old primary must be fenced
    # first (its CTI and IVR verified stopped, or provably stopped by itself).
    requires_fenced: str | None = None


@dataclass(frozen=True)
class Fault:
    ipc: str
    kind: FaultClass
    what: str  # service name, "line" or "host"
    detail: str

    def __str__(self) -> str:
        return f"{LABELS.get(self.what, self.what)} {self.detail}"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str  # one human-readable sentence
    plan: tuple[Stage, ...] = ()
    roles: Mapping[str, Role] = field(default_factory=dict)  # roles after the plan
    board_down: frozenset[str] = frozenset()  # IPCs in rule 1's layout after the plan
    primary: str | None = None  # primary after the plan
    epoch: int = 0  # epoch after the plan (+1 on every change of primary)
    execute: bool = True  # False when paused or manual: proposed only
    alerts: tuple[str, ...] = ()
    faults: tuple[Fault, ...] = ()
    capacity: cap.Capacity | None = None

    def steps(self) -> list[Step]:
        return [s for st in self.plan for s in st.steps]


# ---------------------------------------------------------------------------
# Fault detection (hysteresis: N consecutive failed observations)
# ---------------------------------------------------------------------------

CLASS_OF: Mapping[str, FaultClass] = {
    "cti": FaultClass.APP,
    "ivr": FaultClass.APP,
    "driver": FaultClass.BOARD,
    "kcxp": FaultClass.MIDDLEWARE,
    "kcbp": FaultClass.MIDDLEWARE,
    "kcxp-replica": FaultClass.MIDDLEWARE,
    "kcbp-replica": FaultClass.MIDDLEWARE,
    "fax": FaultClass.OTHER,
}


def faults_of(obs: Observation, ipc: str) -> list[Fault]:
    """Declared faults of one IPC: a service its role expects running that has
    failed N consecutive observations (stopped, or probe not answering), a line
    alarm for N observations, or N failed SSH status calls."""
    o = obs.ipcs[ipc]
    n = obs.policy.failures_before_fault
    if not o.reachable:
        if o.unreachable_count >= n:
            return [Fault(ipc, FaultClass.HOST, "host", f"unreachable for {o.unreachable_count} checks")]
        return []
    out: list[Fault] = []
    expected = obs.topology.expected(ipc, o.role, o.board_down)
    for svc in start_order(expected, obs.topology.after):
        s = o.services.get(svc, ServiceObs(State.UNKNOWN, None, n))
        if not s.ok and s.failures >= n:
            why = "not answering its probe" if s.state is State.RUNNING else s.state.value.lower().replace("_", " ")
            out.append(Fault(ipc, CLASS_OF[svc], svc, why))
    line_bad = "driver" in expected and o.line != "up" and o.line_failures >= n
    if line_bad and not any(f.what == "driver" for f in out):
        out.append(Fault(ipc, FaultClass.BOARD, "line", o.line))
    return out


# ---------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------


def _observed_up(o: IpcObs | None, services: frozenset[str]) -> set[str]:
    """Services that may be running (anything not known to be STOPPED)."""
    if o is None or not o.reachable:
        return set(services)
    return {s for s in services if o.services.get(s, ServiceObs(State.UNKNOWN)).state is not State.STOPPED}


def converge_steps(topo: Topology, ipc: str, o: IpcObs | None, target: frozenset[str]) -> tuple[Step, ...]:
    """Stops (reverse start order) then starts (start order) to reach `target`."""
    up = _observed_up(o, topo.services)
    healthy = {s for s in up if o and o.services.get(s, ServiceObs(State.UNKNOWN)).ok}
    stops = stop_order(up - target, topo.after)
    starts = start_order(target - healthy, topo.after)
    # A service in target that is up but unhealthy (hung, pending) is restarted.
    restarts = [s for s in starts if s in up]
    steps = [Step(ipc, "stop", s) for s in stops]
    steps += [Step(ipc, "restart" if s in restarts else "start", s) for s in starts]
    return tuple(steps)


def stop_all_steps(topo: Topology, ipc: str, o: IpcObs | None) -> tuple[Step, ...]:
    return tuple(Step(ipc, "stop", s) for s in stop_order(_observed_up(o, topo.services), topo.after))


def failover_plan(obs: Observation, old: str, new: str) -> tuple[Stage, ...]:
    """Rule 2: stop all on the old primary (IVR, CTI, ..., driver last); then on
    the standby stop its own KCXP/KCBP, start the replicas, start CTI then IVR.
    Every stop on the old primary comes before any start on the new one."""
    topo = obs.topology
    target = topo.expected(new, Role.PRIMARY)
    new_obs = obs.ipcs.get(new)
    stages = [Stage(f"stop all services on {old}", stop_all_steps(topo, old, obs.ipcs.get(old)))]
    promote = converge_steps(topo, new, new_obs, target)
    stages.append(Stage(f"promote {new}", promote, requires_fenced=old))
    return tuple(s for s in stages if s.steps or s.requires_fenced)


# ---------------------------------------------------------------------------
# The decision table
# ---------------------------------------------------------------------------

# Primary faults, in priority order: the first class present decides.
PRIMARY_RULES: tuple[tuple[FaultClass, str], ...] = (
    (FaultClass.HOST, "failover_fenced"),  # (6)
    (FaultClass.APP, "failover"),  # rule 2
    (FaultClass.BOARD, "board_down"),  # rule 1
    (FaultClass.MIDDLEWARE, "restart"),  # (5)
    (FaultClass.OTHER, "restart"),
)
STANDBY_RULE = "fence_standby"  # rule 3, whatever the fault


def decide(obs: Observation) -> Decision:
    """The plan's decision for one observation of a cluster. Deterministic."""
    d = _make_safe(obs, _decide(obs))
    both = sorted(
        APP_SERVICES
        & _observed_up(obs.ipcs[obs.topology.ipcs[0]], obs.topology.services)
        & _observed_up(obs.ipcs[obs.topology.ipcs[1]], obs.topology.services)
    )
    if both:
        d = replace(
            d,
            alerts=(
                *d.alerts,
                f"{' and '.join(LABELS[x] for x in both)} may be running on both IPCs",
            ),
        )
    d = replace(d, reason=d.reason[:1].upper() + d.reason[1:], capacity=capacity_after(obs.topology, d))
    pol = obs.policy
    holds = policy_holds(pol)
    if "paused" in holds and d.action is not Action.NONE:
        why = f" ({pol.pause_reason})" if pol.pause_reason else ""
        return replace(d, execute=False, reason=f"Paused{why}: not acting; would have done: {_lc(d.reason)}")
    if "manual" in holds and d.action not in (Action.NONE, Action.HOLD):
        return replace(d, execute=False, reason=f"Manual mode: proposing, not executing: {_lc(d.reason)}")
    return d


def policy_holds(pol: Policy) -> frozenset[str]:
    """The one place where the operator's policy holds automatic moves back
    (rules.decide on the primary, moves.leaderless_move on the standby):
    "paused" (`failover pause`), "manual" (mode: propose, never execute),
    "flap" (the automatic failovers in the window reached the limit)."""
    out = set()
    if pol.paused:
        out.add("paused")
    if pol.mode == "manual":
        out.add("manual")
    if pol.recent_failovers >= pol.max_failovers:
        out.add("flap")
    return frozenset(out)


def _make_safe(obs: Observation, d: Decision) -> Decision:
    """The invariant, whatever the rule: CTI/IVR never run on two IPCs.
    1. On every reachable IPC that will not be primary, CTI/IVR that may run and
       that the plan does not already stop are stopped first.
    2. A stage that starts CTI/IVR on an IPC whose peer may still run them (it
       is unreachable, or its stops are not in an earlier stage) requires the
       peer fenced."""
    topo = obs.topology
    stages = list(d.plan)
    stopped: dict[str, set[str]] = {i: set() for i in topo.ipcs}
    for st in stages:
        for step in st.steps:
            if step.op == "stop":
                stopped[step.host].add(step.service)
    extra = []
    for ipc in topo.ipcs:
        o = obs.ipcs[ipc]
        if d.primary == ipc or not o.reachable:
            continue
        stray = (_observed_up(o, topo.services) & APP_SERVICES) - stopped[ipc]
        if stray:
            extra.append(
                Stage(
                    f"stop CTI/IVR on {ipc}: it is not the primary",
                    tuple(Step(ipc, "stop", x) for x in stop_order(stray, topo.after)),
                )
            )
            stopped[ipc] |= stray
    stages = extra + stages
    safe = []
    for idx, st in enumerate(stages):
        starts_app = {step.host for step in st.steps if step.op != "stop" and step.service in APP_SERVICES}
        gate = st.requires_fenced
        for host in starts_app:
            peer = topo.peer(host)
            po = obs.ipcs[peer]
            before = {x.service for s2 in stages[:idx] for x in s2.steps if x.host == peer and x.op == "stop"}
            peer_may_run = _observed_up(po, topo.services) & APP_SERVICES - before
            if peer_may_run and gate is None:
                gate = peer
        safe.append(replace(st, requires_fenced=gate) if gate != st.requires_fenced else st)
    return replace(d, plan=tuple(safe))


def _lc(s: str) -> str:
    return s[:1].lower() + s[1:]


def _decide(obs: Observation) -> Decision:
    topo = obs.topology
    roles = {i: obs.ipcs[i].role for i in topo.ipcs}
    board = frozenset(i for i in topo.ipcs if obs.ipcs[i].board_down)
    base = Decision(Action.NONE, "", roles=roles, board_down=board, primary=obs.primary, epoch=obs.epoch)
    if obs.primary is None:
        return _bootstrap(obs, base)
    p, s = obs.primary, topo.peer(obs.primary)
    pf, sf = faults_of(obs, p), faults_of(obs, s)
    standby_ok = roles[s] is Role.STANDBY and not sf and obs.ipcs[s].reachable
    fence_s: tuple[Stage, ...] = ()
    alerts: list[str] = []
    if sf and roles[s] is Role.STANDBY:
        # Rule 3 applies whatever happens on the primary.
        fence_s = (Stage(f"stop all services on {s}", stop_all_steps(topo, s, obs.ipcs[s])),)
        if not obs.ipcs[s].reachable:
            fence_s = ()
        alerts.append(f"standby {s} faulted ({', '.join(map(str, sf))}): stopped and marked ineligible")
    if pf:
        for klass, handler in PRIMARY_RULES:
            hit = [f for f in pf if f.kind is klass]
            if hit:
                case = _Case(obs, base, p, s, hit, pf, sf, standby_ok, fence_s, tuple(alerts))
                return HANDLERS[handler](case)
    if sf and roles[s] is Role.STANDBY:
        return replace(
            base,
            action=Action.FENCE_STANDBY,
            plan=fence_s,
            faults=tuple(sf),
            roles={**roles, s: Role.FENCED},
            alerts=tuple(alerts),
            reason=f"Standby {s} faulted ({'; '.join(map(str, sf))}): stopping all services "
            f"on it and marking it ineligible; calls stay on primary {p} (rule 3).",
        )
    return _converge(obs, base)


@dataclass(frozen=True)
class _Case:
    """Everything a primary-fault handler looks at."""

    obs: Observation
    base: Decision
    p: str  # the primary
    s: str  # the standby
    hit: list[Fault]  # the faults of the class that decided
    pf: list[Fault]  # all primary faults
    sf: list[Fault]  # all standby faults
    standby_ok: bool  # the standby can take over
    fence_s: tuple[Stage, ...]  # rule 3 stage for a faulted standby (may be empty)
    alerts: tuple[str, ...]

    def roles_with_standby_fenced(self) -> dict[str, Role]:
        roles = {**self.base.roles}
        if self.sf and roles[self.s] is Role.STANDBY:
            roles[self.s] = Role.FENCED
        return roles


def _names(fs: list[Fault]) -> str:
    return " and ".join(str(f) for f in fs)


def _failover(c: _Case, fenced: bool = False) -> Decision:
    obs, base, p, s, hit, pf, alerts = c.obs, c.base, c.p, c.s, c.hit, c.pf, c.alerts
    pol = obs.policy
    rule = "rule 2" if not fenced else "primary unreachable"
    if not c.standby_ok:
        why = (
            "unreachable"
            if not obs.ipcs[s].reachable
            else f"{obs.ipcs[s].role.value}"
            if obs.ipcs[s].role is not Role.STANDBY
            else "faulted"
        )
        return _hold_or_restart(c, f"standby {s} is {why}")
    if "flap" in policy_holds(pol):
        return replace(
            base,
            action=Action.HOLD,
            faults=tuple(pf),
            plan=(),
            alerts=(
                *alerts,
                f"failover limit reached: {pol.recent_failovers} automatic "
                f"failovers in the window (max {pol.max_failovers})",
            ),
            reason=f"{_names(hit)} on primary {p}, but {pol.recent_failovers} "
            f"automatic failovers already happened in the window (limit "
            f"{pol.max_failovers}): holding, no failover, alerting.",
        )
    plan = failover_plan(obs, p, s)
    fence_note = f"; CTI/IVR start on {s} only once {p} is fenced" if fenced else ""
    return replace(
        base,
        action=Action.FAILOVER,
        plan=plan,
        faults=tuple(pf),
        roles={p: Role.FENCED, s: Role.PRIMARY},
        board_down=base.board_down - {s, p},
        primary=s,
        epoch=obs.epoch + 1,
        alerts=alerts,
        reason=f"{_names(hit)} on primary {p}: failing over to {s} ({rule}): "
        f"stopping all services on {p}, then on {s} stopping its own KCXP/KCBP, "
        f"starting the replicas, CTI and IVR{fence_note}; epoch {obs.epoch} -> "
        f"{obs.epoch + 1}.",
    )


def _failover_fenced(c: _Case) -> Decision:
    return _failover(c, fenced=True)


def _hold_or_restart(c: _Case, why_not: str) -> Decision:
    """Rule 4: the primary's CTI/IVR failed but the standby cannot take over."""
    obs, base, p, hit, pf, sf, fence_s, alerts = c.obs, c.base, c.p, c.hit, c.pf, c.sf, c.fence_s, c.alerts
    pol = obs.policy
    roles = c.roles_with_standby_fenced()
    restartable = [
        f for f in hit if f.kind is FaultClass.APP and pol.restarts.get(f"{p}/{f.what}", 0) < pol.max_restarts
    ]
    if pol.restart_in_place and restartable and obs.ipcs[p].reachable:
        steps = tuple(Step(p, "restart", f.what) for f in restartable)
        return replace(
            base,
            action=Action.RESTART,
            roles=roles,
            faults=tuple(pf + sf),
            plan=(*fence_s, Stage(f"restart in place on {p}", steps)),
            alerts=(*alerts, f"no failover possible: {why_not}"),
            reason=f"{_names(hit)} on primary {p}, but {why_not}: no failover; "
            f"restarting {', '.join(f.what for f in restartable)} in place on {p} "
            f"(rule 4) and alerting.",
        )
    return replace(
        base,
        action=Action.HOLD,
        roles=roles,
        faults=tuple(pf + sf),
        plan=fence_s,
        alerts=(*alerts, f"no failover possible: {why_not}"),
        reason=f"{_names(hit)} on primary {p}, but {why_not}: no failover, "
        f"keeping {p} as primary (rule 4) and alerting.",
    )


def _board_down(c: _Case) -> Decision:
    obs, base, p, hit, pf, sf, fence_s, alerts = c.obs, c.base, c.p, c.hit, c.pf, c.sf, c.fence_s, c.alerts
    o = obs.ipcs[p]
    up = _observed_up(o, obs.topology.services)
    steps = tuple(Step(p, "stop", x) for x in stop_order(up & BOARD_SERVICES, obs.topology.after))
    roles = c.roles_with_standby_fenced()
    return replace(
        base,
        action=Action.BOARD_DOWN,
        faults=tuple(pf + sf),
        roles=roles,
        board_down=base.board_down | {p},
        plan=(*fence_s, Stage(f"stop the board driver on {p}", steps)),
        alerts=(*alerts, f"board down on {p}: capacity reduced"),
        reason=f"{_names(hit)} on primary {p}: stopping the board driver only "
        f"(rule 1); every other service keeps running, no role change, capacity "
        f"reduced.",
    )


def _restart(c: _Case) -> Decision:
    obs, base, p, hit, pf, sf, fence_s, alerts = c.obs, c.base, c.p, c.hit, c.pf, c.sf, c.fence_s, c.alerts
    pol = obs.policy
    roles = c.roles_with_standby_fenced()
    todo = [f for f in hit if pol.restarts.get(f"{p}/{f.what}", 0) < pol.max_restarts]
    if not pol.restart_in_place or not todo:
        why = (
            "restart in place is disabled by policy"
            if not pol.restart_in_place
            else f"it was already restarted {pol.max_restarts} times"
        )
        return replace(
            base,
            action=Action.HOLD,
            faults=tuple(pf + sf),
            roles=roles,
            plan=fence_s,
            alerts=(*alerts, f"{_names(hit)} keeps failing on {p}"),
            reason=f"{_names(hit)} on primary {p}: {why}; the plan names no failover for it, so holding and alerting.",
        )
    steps = tuple(Step(p, "restart", f.what) for f in todo)
    return replace(
        base,
        action=Action.RESTART,
        faults=tuple(pf + sf),
        roles=roles,
        plan=(*fence_s, Stage(f"restart in place on {p}", steps)),
        alerts=alerts,
        reason=f"{_names(todo)} on primary {p}: restarting it in place (the plan names no failover for it).",
    )


HANDLERS = {
    "failover": _failover,
    "failover_fenced": _failover_fenced,
    "board_down": _board_down,
    "restart": _restart,
}


def _converge(obs: Observation, base: Decision) -> Decision:
    topo = obs.topology
    stages = []
    for ipc in topo.ipcs:
        o = obs.ipcs[ipc]
        if not o.reachable:
            continue
        target = topo.expected(ipc, o.role, o.board_down)
        steps = converge_steps(topo, ipc, o, target)
        # Pending or unhealthy services that have not yet failed N times are
        # given time (hysteresis), not restarted.
        steps = tuple(st for st in steps if not _still_settling(obs, ipc, st))
        if steps:
            stages.append(Stage(f"converge {ipc} to its {topo.layout(ipc, o.role).value} layout", steps))
    # Stops everywhere before starts anywhere: CTI/IVR must never overlap.
    stages.sort(key=lambda st: 0 if all(s.op == "stop" for s in st.steps) else 1)
    if not stages:
        unreachable = [i for i in topo.ipcs if not obs.ipcs[i].reachable]
        if unreachable:
            n = obs.policy.failures_before_fault
            what = ", ".join(f"{i} ({obs.ipcs[i].unreachable_count} of {n} failed checks)" for i in unreachable)
            return replace(
                base,
                reason=f"Cannot reach {what}: not yet a fault, nothing to do "
                f"(primary {obs.primary}, epoch {obs.epoch}).",
            )
        return replace(
            base,
            reason=f"All services match their roles (primary {obs.primary}, epoch {obs.epoch}); nothing to do.",
        )
    what = "; ".join(f"{st.steps[0].host}: " + ", ".join(f"{s.op} {s.service}" for s in st.steps) for st in stages)
    return replace(
        base,
        action=Action.CONVERGE,
        plan=tuple(stages),
        reason=f"Layout differs from the roles: converging ({what}).",
    )


def _still_settling(obs: Observation, ipc: str, st: Step) -> bool:
    """Hysteresis: a service counting failures (1 .. N-1) is left alone until the
    fault is declared (or it recovers); it is neither started nor restarted."""
    s = obs.ipcs[ipc].services.get(st.service)
    return bool(st.op in ("start", "restart") and s and 0 < s.failures < obs.policy.failures_before_fault)


def _bootstrap(obs: Observation, base: Decision) -> Decision:
    topo = obs.topology
    order = [topo.home_primary, topo.peer(topo.home_primary)]
    for cand in order:
        o = obs.ipcs[cand]
        if o.reachable and o.role is not Role.FENCED and not _board_faulted(obs, cand):
            other = topo.peer(cand)
            roles = {
                cand: Role.PRIMARY,
                other: obs.ipcs[other].role if obs.ipcs[other].role is Role.FENCED else Role.STANDBY,
            }
            stages = []
            for ipc in (other, cand):  # the other IPC's stops first
                steps = converge_steps(
                    topo,
                    ipc,
                    obs.ipcs[ipc],
                    topo.expected(ipc, roles[ipc], obs.ipcs[ipc].board_down),
                )
                if steps and obs.ipcs[ipc].reachable:
                    stages.append(
                        Stage(
                            f"bring {ipc} to its {roles[ipc].value} layout",
                            steps,
                            requires_fenced=other if ipc == cand else None,
                        )
                    )
            return replace(
                base,
                action=Action.BOOTSTRAP,
                roles=roles,
                primary=cand,
                epoch=obs.epoch + 1,
                plan=tuple(stages),
                reason=f"No primary yet: {cand} takes the role "
                f"({'preferred primary' if cand == topo.home_primary else 'the preferred primary cannot'}), "
                f"epoch {obs.epoch} -> {obs.epoch + 1}.",
            )
    return replace(
        base,
        action=Action.HOLD,
        alerts=("no IPC can serve calls",),
        reason="No primary and neither IPC can take the role: holding and alerting.",
    )


def _board_faulted(obs: Observation, ipc: str) -> bool:
    return any(f.kind in (FaultClass.BOARD, FaultClass.HOST) for f in faults_of(obs, ipc))


# ---------------------------------------------------------------------------
# End states (used by capacity and by the invariants' tests)
# ---------------------------------------------------------------------------


def end_state(obs: Observation, d: Decision) -> dict[str, frozenset[str]]:
    """What may run on each IPC once the plan has run, stage by stage (services
    the plan does not touch stay as observed; an unreachable IPC may run
    anything). A stage that requires an IPC fenced only proceeds once that
    IPC's CTI and IVR are stopped (verified, or stopped by the IPC itself)."""
    now = {i: set(_observed_up(obs.ipcs[i], obs.topology.services)) for i in obs.topology.ipcs}
    if d.execute:
        for st in d.plan:
            if st.requires_fenced:
                now[st.requires_fenced] -= APP_SERVICES
            for step in st.steps:
                if step.op == "stop":
                    now[step.host].discard(step.service)
                else:
                    now[step.host].add(step.service)
    return {k: frozenset(v) for k, v in now.items()}


def capacity_after(topo: Topology, d: Decision) -> cap.Capacity:
    """Capacity once the decision's roles and layouts are in place."""
    boards = [i for i in topo.ipcs if "driver" in topo.expected(i, d.roles.get(i, Role.FENCED), i in d.board_down)]
    serving = d.primary is not None and d.roles.get(d.primary) is Role.PRIMARY
    return cap.compute(topo.channels, topo.fax_channels, boards, serving)


__all__ = [
    "APP_SERVICES",
    "MIDDLEWARE",
    "Action",
    "Decision",
    "Fault",
    "FaultClass",
    "IpcObs",
    "Observation",
    "Policy",
    "Role",
    "ServiceObs",
    "Stage",
    "State",
    "Step",
    "Topology",
    "decide",
    "end_state",
    "faults_of",
]
