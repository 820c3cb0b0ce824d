"""How a planned switchover runs, in one place.

1. The operator asks: `failover switchover [--to B] [--at T]` (cli.py) shows
   `plan()` below — the same stages the agents run — and writes the request
   znode (state `pending`, oncall.submit).
2. The primary's agent picks it up when `due()` says "go" (at T, not paused
   unless the operator named the target, the target a healthy reachable
   standby). It runs `demote_stage()` on its own IPC: CTI and IVR stop, the IPC
   keeps the standby layout (it stays eligible), then it hands the role over in
   the cluster record with its proof "CTI and IVR stopped" (agent/switchover.py).
3. The target's agent takes `leader`, verifies the old primary itself when it
   can (agent/takeover.py), bumps the epoch and runs `promote_stage()`. If it
   cannot serve, or the operator cancelled meanwhile, `hand_back_why()` says
   why and it hands the role back (`switch-back`): the old primary takes it
   again and converges to its layout.
4. Each agent writes the request's progress; the request ends `done`,
   `failed`, `refused` or `cancelled` with a sentence; the CLI follows it
   (oncall.follow) and prints the cluster as it now stands.

Everything here is pure; the agent and the CLI call it."""

from __future__ import annotations

from failover.records import Request
from failover.rules import (
    IpcObs,
    Observation,
    Role,
    ServiceObs,
    Stage,
    State,
    Topology,
    converge_steps,
    faults_of,
)


def demote_stage(topo: Topology, frm: str, obs: IpcObs | None, board_down: bool) -> Stage:
    """The old primary to the standby layout. Rule 1's layout still holds
    until a rejoin: a board that was down stays stopped (starting it now would
    only be undone by converge)."""
    target = topo.expected(frm, Role.STANDBY, board_down)
    return Stage(f"demote {frm} to the standby layout", converge_steps(topo, frm, obs, target))


def promote_stage(topo: Topology, to: str, obs: IpcObs | None, fenced: str | None = None) -> Stage:
    """The new primary's layout: its own KCXP/KCBP stopped, the replicas, CTI
    and IVR started. `fenced`: the IPC that must be proven down first."""
    return Stage(f"promote {to}", converge_steps(topo, to, obs, topo.expected(to, Role.PRIMARY)), fenced)


def plan(topo: Topology, frm: str, to: str, board_down: frozenset[str] = frozenset()) -> tuple[Stage, Stage]:
    """The switchover as the CLI previews it, from the layouts the two IPCs
    should be in (the agents run the same two stages from what they observe)."""
    return (
        demote_stage(topo, frm, in_layout(topo, frm, Role.PRIMARY, frm in board_down), frm in board_down),
        promote_stage(topo, to, in_layout(topo, to, Role.STANDBY, to in board_down), frm),
    )


def in_layout(topo: Topology, ipc: str, role: Role, board_down: bool = False) -> IpcObs:
    """An IPC as its role's layout says it should be: what a preview plans
    from, with nothing observed."""
    run = topo.expected(ipc, role, board_down)
    return IpcObs(role, {s: ServiceObs(State.RUNNING if s in run else State.STOPPED, True) for s in topo.services})


def due(request: Request, obs: Observation, me: str, peer: str, now: float) -> str:
    """'go', '' (not yet: scheduled for later), or why the primary `me`
    refuses the request now."""
    if request.to != peer:
        return f"{request.to} is not the standby of primary {me}"
    if request.at and now < float(request.at):
        return ""
    if obs.policy.paused and not request.allow_paused:
        return f"paused ({obs.policy.pause_reason}); give --to to switch over while paused"
    target = obs.ipcs[peer]
    faults = faults_of(obs, peer)
    if target.role is not Role.STANDBY or faults or not target.reachable:
        detail = "unreachable" if not target.reachable else f"faults: {', '.join(map(str, faults)) or 'none'}"
        return f"{peer} cannot take the role now (role {target.role.value}, {detail})"
    return "go"


def hand_back_why(cancelled: str, reachable: bool, own_faults: tuple[str, ...], me: str) -> str:
    """Why the target `me` must not finish a switchover handed to it ('' = go
    on): the operator cancelled it (`cancelled`: the request's reason), or it
    cannot serve."""
    if cancelled:
        return f"the switchover was {cancelled}"
    if not reachable:
        return f"{me} is unreachable over SSH"
    return f"{me} cannot serve ({' and '.join(own_faults)})" if own_faults else ""
