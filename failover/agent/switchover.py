"""A planned switchover, the agents' acts (the protocol and its plan:
failover/switchover.py): the primary demotes itself to the standby layout and
hands the role over; the target takes it (takeover.py), or hands it back when
it cannot serve or the operator cancelled."""

from __future__ import annotations

import logging
import time

from failover import fencing, zkstore
from failover import switchover as plan
from failover.agent.state import _calls_down_way_out
from failover.drain import DrainSpec
from failover.records import ClusterRecord, Handoff
from failover.rules import Action, Decision, Observation, Role, decide, faults_of

log = logging.getLogger("failover.agent")


class SwitchoverActs:
    def _switchover_due(self, req: zkstore.Versioned, obs: Observation) -> str:
        """'go', '' (not yet: scheduled), or why the request is refused now."""
        verdict = plan.due(req.data, obs, self.me, self.peer, time.time())
        if verdict == "" and req.data.at is not None:  # wake when it is due, not a whole interval later
            self.mem.wake_at = time.monotonic() + max(0.0, float(req.data.at) - time.time())
        return verdict

    def _switch_over(self, zk: dict, crec: ClusterRecord, req: zkstore.Versioned, obs: Observation) -> str:
        """A planned switchover, on the primary's side: converge this IPC to the
        standby layout (CTI and IVR stopped, KCXP/KCBP running: it stays
        eligible), then hand the role over to the standby."""
        assert self.store is not None and self.mem.obs is not None
        r = req.data
        rid = r.id
        epoch = crec.epoch
        spec = DrainSpec.of(r.drain)
        if spec is not None:
            held = self._drain(req, spec)  # the calls finish first, over as many cycles as they take
            if held:
                # Status shows the drain live, and what the rules see meanwhile
                # (a fault they hold back on: paused, manual, restarts used up)
                # with its way out: a drain never hides a fault.
                d = decide(obs)
                self.mem.way_out = _calls_down_way_out(obs, d, self.me, self.peer)
                self._publish(zk, crec, d if d.action is not Action.NONE else Decision(Action.NONE, held), held)
                return held
        else:
            self.drained = None
        decided = time.time()
        self._request_progress(rid, f"{self.me}: switchover to {self.peer} started (epoch {epoch})", "running")
        demote = plan.demote_stage(self.topo, self.me, self.mem.obs, self.me in crec.board_down)
        rep = self.ex.execute((demote,), progress=self._progress_to(rid)) if demote.steps else None
        self._after_plan(rep, crec)
        if rep is not None and not rep.ok:
            why = (
                f"demoting {self.me} failed: {rep.summary()}; {self.me} stays primary and converges back to its layout"
            )
            self._finish_request(rid, "failed", why, primary=self.me, epoch=epoch)
            return f"Switchover to {self.peer} FAILED: {why}."
        handoff = Handoff(
            frm=self.me,
            to=self.peer,
            kind="switchover",
            who=r.operator,
            reason=f"switchover requested by {r.operator}: {r.reason or 'no reason given'}",
            request=rid,
            fault_seen_at=float(decided if r.requested_at is None else r.requested_at),
            decided_at=decided,
            stopped_at=time.time(),
            epoch=epoch,
            proof=fencing.Proof(
                "verified", self.me, f"CTI and IVR stopped on {self.me} by its agent", self.me
            ).record(),
            calls=self._switchover_calls(),
        )
        if self._write_handoff(zk, crec, handoff, Role.STANDBY) is None:
            why = f"{self.peer} can no longer take the role; {self.me} converges back to the primary layout"
            self._finish_request(rid, "failed", why, primary=self.me, epoch=epoch)
            return f"Switchover to {self.peer} FAILED: {why}."
        self._request_progress(rid, f"{self.me}: CTI and IVR stopped, role handed to {self.peer}")
        if spec is not None:  # CTI and IVR are stopped: no call can come in any more
            self._request_progress(rid, f"{self.me}: " + self._release_busy_out("handed over"))
        return (
            f"Switchover to {self.peer} requested by {r.operator}: {self.me} demoted to standby "
            f"and the role handed over (epoch {epoch})."
        )

    def _switchover_calls(self) -> dict | None:
        """The calls of this switchover, for its history: at the start of the
        drain, at the hand-over, and cut (those still active when CTI and IVR
        stopped; 0 for a complete drain). A plain switchover cuts what is active."""
        if self.c.calls is None:
            return None
        now = self.calls_seen.total if self.calls_seen is not None else None
        drained = self.drained or {"at_start": now, "at_handover": now}
        self.drained = None
        return {**drained, "cut": drained.get("at_handover")}

    def _hand_back_why(self, zk: dict, crec: ClusterRecord, roles: dict[str, Role], handoff: Handoff | None) -> str:
        """A switchover handed to us that we must not finish: we cannot serve,
        or the operator cancelled it meanwhile ('' = go on)."""
        if handoff is None or handoff.kind != "switchover":
            return ""
        req = zk.get("request")
        cancelled = ""
        if req is not None and req.data.id == handoff.request and req.data.state == "cancelled":
            cancelled = (req.data.result or {}).get("why") or "cancelled"
        reachable = self.mem.obs is not None and self.mem.obs.reachable
        own = faults_of(self._observation(zk, crec, roles), self.me) if reachable and not cancelled else ()
        return plan.hand_back_why(cancelled, reachable, tuple(map(str, own)), self.me)

    def _hand_back(self, zk: dict, crec: ClusterRecord, handoff: Handoff, why: str) -> str:
        """Give a switchover's role back to the old primary (its CTI/IVR were
        stopped for the switchover; ours never started): it takes it back."""
        assert self.store is not None
        rid = handoff.request
        back = Handoff(
            frm=self.me,
            to=self.peer,
            kind="switch-back",
            who=f"agent {self.me}",
            reason=f"switchover to {self.me} not done: {why}",
            decided_at=time.time(),
            stopped_at=time.time(),
            epoch=crec.epoch,
            proof=fencing.Proof("verified", self.me, f"{self.me} is a standby: CTI/IVR not started", self.me).record(),
        )
        if self._cas(zk, handoff=back) is None:
            return "Switchover: the cluster record changed meanwhile; retrying next cycle."
        if rid:
            self._finish_request(rid, "failed", f"{why}; the role goes back to {self.peer}", primary=self.peer)
        return f"Switchover to {self.me} not done ({why}): the role goes back to {self.peer} (epoch {crec.epoch})."
