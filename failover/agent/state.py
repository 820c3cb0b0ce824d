"""The agent's timing, memory and small pure helpers (docs/agent.md)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from failover import executor as exe
from failover import zkstore
from failover.inventory import Cluster
from failover.layouts import APP_SERVICES
from failover.records import Pause, Request
from failover.rules import (
    Action,
    Decision,
    IpcObs,
    Observation,
    Stage,
    faults_of,
)

log = logging.getLogger("failover.agent")

WATCHDOG = 0.2  # the self-fencing watchdog's period (s)
NO_PROOF_RETRY = 5.0  # after a takeover found no proof, try again this much later (s)
PEER_CHECK_EVERY = 1.0  # continuous fencing: how often the primary checks the other IPC (s)
LEASE_PATH_EVERY = 10.0  # how often a working failsafe lease path to the peer's agent is tested (s)


@dataclass
class LeasePath:
    """Whether the failsafe lease can reach the peer's agent (tested at start
    and every LEASE_PATH_EVERY seconds, without asking for a lease)."""

    ok: bool | None = None  # None: not tested yet
    why: str = "not tested yet"

    def alert(self) -> str:
        if self.ok is not False:
            return ""
        return (
            f"failsafe path broken: {self.why}; during a ZooKeeper outage the primary will stop CTI/IVR "
            "after its self-fence deadline"
        )


@dataclass(frozen=True)
class Timing:
    """The agent's timing, derived from the inventory (docs/agent.md)."""

    interval: float  # monitor interval I
    session: float  # ZooKeeper session timeout S
    self_fence_after: float  # D: no ZooKeeper contact for this long -> stop CTI/IVR here
    stop_budget: float  # B: the longest CTI + IVR stop may take, a kill after an overrun included
    watchdog_loop: float  # W: the watchdog's worst-case loop (its period, a failing read, a lease request)
    bootstrap_grace: float  # the non-preferred IPC waits this long before bootstrapping
    lease: float  # L: a failsafe lease granted by the standby (docs/resilience.md)
    hold_after: float  # after a promise ends the standby still waits W + margin

    @classmethod
    def of(cls, c: Cluster) -> Timing:
        s, i = c.timings.session_timeout, c.timings.monitor_interval
        d = s / 2
        lease = d
        # A stop that overruns its timeout is killed (taskkill /F, kill -9):
        # allow one more stop timeout for that, per service.
        b = sum(2 * c.services[x].stop_timeout for x in APP_SERVICES if x in c.services)
        # One watchdog loop at its worst: the wait, a leader read that fails
        # at its timeout, a lease request that fails at its timeout.
        w = WATCHDOG + min(1.0, d / 4) + min(0.5, lease / 4)
        # After a promise ends the standby waits W + 0.5 s more: the primary's
        # lease (measured from when it sent the request) has surely ended on
        # its own clock. No more: a takeover needs a proof anyway, and the
        # proof (stopped over SSH, powered off, an operator's word) does not
        # depend on the old primary having stopped CTI/IVR by itself in time.
        return cls(i, s, d, b, w, 2 * s, lease, w + 0.5)


@dataclass
class Memory:
    """What the agent remembers between cycles (all in this process; its
    hold on the role is the Tenure's, agent/tenure.py)."""

    obs: IpcObs | None = None
    first_failure: dict[str, float] = field(default_factory=dict)  # service -> wall time
    restarts: dict[str, list[float]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    sentence: str = ""
    last_logged: tuple[str, float] = ("", 0.0)
    disarmed: set[str] = field(default_factory=set)  # stopped by us (self-fencing): not faults
    wake_at: float | None = None  # monotonic: wake the loop early (a scheduled switchover, a promise ends)
    raw: Any = None  # this cycle's monitor.Raw of our IPC (the status page's own tile, also without ZooKeeper)
    way_out: str = ""  # no automatic action will happen: why, and the command that gets out
    stray: str = ""  # continuous fencing found CTI/IVR on the peer it cannot stop (its own thread sets it)
    no_proof: tuple[float, str, str] = (0.0, "", "")  # (retry after, sentence, way out) of a takeover without proof


class DuplicateAgent(Exception):
    """A second agent for the same IPC: it must not act."""


def _active(req: zkstore.Versioned | None) -> zkstore.Versioned | None:
    return req if req is not None and req.data.state in ("pending", "running") else None


def _failed_starts(obs: IpcObs, rep: exe.PlanReport, n: int) -> IpcObs:
    """A start that failed is a declared fault at once (no point waiting N checks)."""
    from dataclasses import replace

    svcs = dict(obs.services)
    for r in rep.results:
        if r.step.op in ("start", "restart") and r.status in ("failed", "unknown") and r.step.service in svcs:
            svcs[r.step.service] = replace(svcs[r.step.service], failures=max(n, svcs[r.step.service].failures))
    return replace(obs, services=svcs)


def _calls_down_way_out(obs: Observation, d: Decision, me: str, peer: str) -> str:
    """A primary whose CTI/IVR are down and that will not act by itself (rule
    4 with restarts used up, paused, manual mode): say what a person can do."""
    down = [f for f in faults_of(obs, me) if f.what in APP_SERVICES or f.what == "host"]
    if not down or (d.execute and d.action is not Action.HOLD):
        return ""
    what = " and ".join(map(str, down))
    if any(f.what == "host" for f in down):
        return (
            f"No automatic action: primary {me} is {what} and {peer} cannot take over. Repair or power-cycle "
            f"{me}, or repair {peer} and run `failover rejoin {peer}` (then it takes over)."
        )
    if not d.execute:
        return f"No automatic action ({d.reason}): {what} on {me}. Run `failover resume`, or act by hand."
    return (
        f"No automatic action: {what} on primary {me} and {peer} cannot take over. Start it on {me} by hand, "
        f"or repair {peer} and run `failover rejoin {peer}` (then it takes over)."
    )


def _split_app_stops(stages: Sequence[Stage]) -> tuple[tuple[Stage, ...], tuple[Stage, ...]]:
    """CTI and IVR stops first, the rest after: a hand-over waits only for
    the stops that keep a second primary out."""
    app = tuple(s for st in stages for s in st.steps if s.service in APP_SERVICES)
    rest = tuple(s for st in stages for s in st.steps if s.service not in APP_SERVICES)
    return (
        (Stage("stop CTI and IVR", app),) if app else (),
        (Stage("stop the other services", rest),) if rest else (),
    )


def _manual_meta(r: Request) -> dict:
    """An operator's `failover failover` request, as hand-over metadata."""
    who = r.operator
    return {
        "kind": "manual-failover",
        "who": who,
        "request": r.id,
        "reason": f"manual failover by {who}: {r.reason or 'no reason given'}",
        "confirm_dead": r.confirm_dead,
        "confirmed_by": f"{who} ({r.reason or 'no reason given'})" if r.confirm_dead else "",
    }


def _own_stages(plan: Sequence[Stage], host: str) -> tuple[Stage, ...]:
    out = []
    for st in plan:
        steps = tuple(s for s in st.steps if s.host == host)
        if steps:
            out.append(Stage(st.title, steps, st.requires_fenced))
    return tuple(out)


def _pause_text(pause: Pause | None) -> str:
    if not pause:
        return ""
    return f"paused by {pause.operator}: {pause.reason or 'no reason given'}"


def _standby_text(d: Decision, me: str, role: str) -> str:
    """A non-primary agent's sentence: about its own IPC; what the decision says
    about the primary is the primary's agent's to carry out."""
    if d.action is Action.NONE:
        return d.reason
    others = [f for f in d.faults if f.ipc != me]
    if others:
        what = " and ".join(map(str, others))
        return f"its services match the {role} layout; the primary reports {what}, its agent acts."
    return f"its services match the {role} layout; the primary's agent is converging its own IPC."


def replace_alerts(d: Decision, alert: str) -> Decision:
    from dataclasses import replace

    return replace(d, alerts=(*d.alerts, alert))
