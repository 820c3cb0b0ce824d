"""Role moves, pure: which move an agent makes this cycle, over a typed
snapshot of the cluster (`ClusterView`), beside `rules.decide` (which decides
what an IPC needs within its role). The agent's cycle (agent/core.py) is
snapshot -> `leader_move` / `next_move` -> act -> publish:

- `leader_move`: no cluster record yet (bootstrap), or the recorded primary
  without `leader` (take it back; nothing started or stopped);
- `next_move`: as the holder of `leader`, finish a takeover, run a due
  switchover, hand over on an operator's --confirm-dead, or serve (the rules);
  with nobody holding it, an operator's manual failover, a switchover to hand
  back, or `leaderless_move` (take over or hold, and the way out); with the
  peer holding it, stay standby.

Pause, manual mode and flap damping hold a move back in one place:
`rules.policy_holds` (used here and by `rules.decide`). Table-driven tests:
tests/test_moves.py."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from failover.rules import Policy, Role, policy_holds


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
    holds = policy_holds(
        Policy(
            mode=v.mode,
            paused=v.paused,
            pause_reason=v.pause_reason,
            recent_failovers=v.recent_failovers,
            max_failovers=v.max_failovers,
        )
    )
    if "paused" in holds:
        out = f"No automatic action while paused: run `failover resume`, or {take}."
        return Move(False, f"{head}; paused ({v.pause_reason}): not taking over.", out)
    if "manual" in holds:
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
    if "flap" in holds:
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


class Next(Enum):
    BOOTSTRAP = "bootstrap"  # no cluster record yet
    RECLAIM = "reclaim"  # the recorded primary without `leader`: take it back
    FINISH_TAKEOVER = "finish-takeover"  # we hold `leader`, the record names the old primary
    SWITCH_OVER = "switch-over"  # a due switchover: demote here, hand the role over
    CONFIRMED_DEAD = "confirmed-dead"  # an operator's failover away from us
    SERVE = "serve"  # primary: the rules' decision on our IPC
    MANUAL_FAILOVER = "manual-failover"  # an operator's failover to us, nobody holding the role
    HAND_BACK = "hand-back"  # a switchover handed to us that we must not finish
    TAKE_OVER = "take-over"  # nobody holds the role: take it (a proof comes next)
    HOLD = "hold"  # nobody holds the role and we must not take it
    STANDBY = "standby"  # the peer holds the role


@dataclass(frozen=True)
class RequestView:
    """The operator's active request (switchover or manual failover)."""

    id: str | None
    kind: str  # "switchover" | "failover"
    to: str | None
    confirm_dead: str | None = None


@dataclass(frozen=True)
class ClusterView:
    """The typed cluster snapshot an agent's cycle decides from."""

    me: str
    peer: str
    has_record: bool
    leader: str  # "mine" | "other" | "none": who owns `leader`
    recorded_primary: str | None = None
    my_role: Role = Role.STANDBY  # in the cluster record
    request: RequestView | None = None
    reclaim_failed: bool = False  # this cycle's attempt to take `leader` back lost
    # Filled once our role is known (after our observation is updated):
    switchover_verdict: str = ""  # for a switchover request: "go", "" (not yet) or why refused
    hand_back: str = ""  # for a switchover handed to us: why we must not finish it
    leaderless: LeaderlessView | None = None  # when nobody holds `leader`


@dataclass(frozen=True)
class CycleMove:
    next: Next
    refuse: str = ""  # the active request is refused first, with this reason
    sentence: str = ""  # HOLD: why; HAND_BACK: why the switchover is not finished
    way_out: str = ""  # HOLD: what a person can do


def leader_move(v: ClusterView) -> Next | None:
    """Before anything else: bootstrap, or take `leader` back as the recorded
    primary (our session expired, or a restart). None: go on to `next_move`."""
    if not v.has_record:
        return Next.BOOTSTRAP
    if v.leader == "none" and v.recorded_primary == v.me and v.my_role is Role.PRIMARY and not v.reclaim_failed:
        return Next.RECLAIM
    return None


def next_move(v: ClusterView) -> CycleMove:
    req = v.request
    to_me = req is not None and req.kind == "failover" and req.to == v.me
    if v.leader == "mine":
        if v.recorded_primary != v.me:
            # A takeover not finished (no proof yet, or a restart in the
            # middle of one: our session was resumed). Carry on with it.
            return CycleMove(Next.FINISH_TAKEOVER)
        refuse = ""
        if req is not None and req.kind == "switchover":
            if v.switchover_verdict == "go":
                return CycleMove(Next.SWITCH_OVER)
            refuse = v.switchover_verdict
        if req is not None and req.kind == "failover" and req.to == v.peer:
            return CycleMove(Next.CONFIRMED_DEAD, refuse)
        return CycleMove(Next.SERVE, refuse)
    if v.leader == "none":
        if v.my_role is Role.STANDBY and to_me:
            return CycleMove(Next.MANUAL_FAILOVER)
        if v.my_role is Role.STANDBY and v.hand_back:
            return CycleMove(Next.HAND_BACK, sentence=v.hand_back)
        assert v.leaderless is not None, "a leaderless snapshot carries its LeaderlessView"
        m = leaderless_move(v.leaderless)
        return CycleMove(Next.TAKE_OVER) if m.take else CycleMove(Next.HOLD, "", m.sentence, m.way_out)
    if to_me and req is not None and req.confirm_dead != v.peer:
        # The holder's agent lives: a failover to us is a switchover's job
        # (with --confirm-dead of the holder, its agent hands over itself).
        return CycleMove(Next.STANDBY, f"{v.peer}'s agent is alive and holds the role: use `failover switchover`")
    return CycleMove(Next.STANDBY)


__all__ = [
    "ClusterView",
    "CycleMove",
    "LeaderlessView",
    "Move",
    "Next",
    "RequestView",
    "leader_move",
    "leaderless_move",
    "next_move",
]
