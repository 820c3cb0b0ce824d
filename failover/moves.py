"""Role moves, pure: whether a standby takes the primary role when no agent
holds it, and, if not, its sentence and the way out a person can take. Beside
`rules.decide` (which decides what the primary's IPC needs), over a small typed
snapshot; the agent (agent/standby.py) builds the snapshot and acts on the
move. Table-driven tests: tests/test_moves.py."""

from __future__ import annotations

from dataclasses import dataclass

from failover.rules import Role


@dataclass(frozen=True)
class LeaderlessView:
    """What a standby's agent knows when `leader` is empty."""

    me: str
    peer: str
    epoch: int
    my_role: Role
    peer_role: Role | None  # in the cluster record (None: not in it)
    peer_agent_alive: bool  # the peer's member znode exists (its session lives)
    recorded_primary: str | None
    handed_over: bool  # a hand-over to us, for this epoch
    handed_away: bool = False  # our own hand-over to the peer, for this epoch, not taken yet
    paused: bool = False
    pause_reason: str = ""
    mode: str = "automatic"
    recent_failovers: int = 0
    max_failovers: int = 2
    own_faults: tuple[str, ...] = ()
    reachable: bool = True


@dataclass(frozen=True)
class Move:
    take: bool
    sentence: str = ""
    way_out: str = ""  # "" when some automatic action will still come


def leaderless_move(v: LeaderlessView) -> Move:
    """The one place where pause, manual mode and flap damping hold a
    standby back (a hand-over to it passes them: the old primary gave the
    role up itself, for a switchover or after stopping its CTI/IVR)."""
    head = f"No primary holds the role (epoch {v.epoch})"
    take = f"`failover failover --to {v.me} --reason '...'`"
    if v.my_role is not Role.STANDBY:
        stuck = v.peer_role is not Role.STANDBY or not v.peer_agent_alive
        out = f"No automatic action: no IPC can take the primary role. Repair {v.me} and run `failover rejoin {v.me}`."
        return Move(False, f"{head}; {v.me} is {v.my_role.value}: not taking over.", out if stuck else "")
    if v.handed_over:
        return Move(True)
    if v.paused:
        out = f"No automatic action while paused: run `failover resume`, or {take}."
        return Move(False, f"{head}; paused ({v.pause_reason}): not taking over.", out)
    if v.mode == "manual":
        return Move(
            False, f"{head}; manual mode: not taking over (use `failover failover`).", f"Manual mode: run {take}."
        )
    if v.peer_agent_alive and v.handed_away:
        # We gave the role to the peer (a switchover): it takes it, or hands
        # it back. Taking it here would undo the operator's switchover.
        return Move(False, f"{head}: handed to {v.peer}, waiting for its agent to take it.")
    if v.peer_agent_alive and v.recorded_primary == v.peer:
        # Its agent lives (a new session): it takes `leader` back itself.
        return Move(False, f"{head}, but {v.peer}'s agent is alive: waiting for it to take the role back.")
    if v.recent_failovers >= v.max_failovers:
        return Move(
            False,
            f"{head}, but {v.recent_failovers} automatic failovers already happened in the window: holding, ALERT.",
            f"No automatic action: flap damping holds after {v.recent_failovers} failovers. Run {take}.",
        )
    if v.own_faults or not v.reachable:
        what = " and ".join(v.own_faults) or "unreachable over SSH"
        stuck = v.peer_role is not Role.PRIMARY
        out = f"No automatic action: no IPC can serve calls. Repair {v.me} ({what}), or {v.peer}." if stuck else ""
        return Move(False, f"{head}, but {v.me} cannot serve ({what}): not taking over.", out)
    return Move(True)


__all__ = ["LeaderlessView", "Move", "leaderless_move"]
