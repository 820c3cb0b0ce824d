"""How a planned switchover runs, on the agents' side (the CLI's side is
oncall.py / ops.py): the primary demotes itself to the standby layout and hands
the role over; the target takes it (takeover.py), or hands it back when it
cannot serve or the operator cancelled."""

from __future__ import annotations

import logging
import time

from failover import fencing, zkstore
from failover.records import ClusterRecord, Handoff
from failover.rules import (
    Observation,
    Role,
    Stage,
    converge_steps,
    faults_of,
)

log = logging.getLogger("failover.agent")


class SwitchoverActs:
    def _switchover_due(self, req: zkstore.Versioned, obs: Observation) -> str:
        """'go', '' (not yet: scheduled), or why the request is refused now."""
        r = req.data
        if r.to != self.peer:
            return f"{r.to} is not the standby of primary {self.me}"
        if r.at and time.time() < float(r.at):
            self.mem.wake_at = time.monotonic() + max(0.0, float(r.at) - time.time())
            return ""
        if obs.policy.paused and not r.allow_paused:
            return f"paused ({obs.policy.pause_reason}); give --to to switch over while paused"
        peer = obs.ipcs[self.peer]
        if peer.role is not Role.STANDBY or faults_of(obs, self.peer) or not peer.reachable:
            return f"{self.peer} cannot take the role now (role {peer.role.value}, " + (
                "unreachable)"
                if not peer.reachable
                else f"faults: {', '.join(map(str, faults_of(obs, self.peer))) or 'none'})"
            )
        return "go"

    def _switch_over(self, zk: dict, crec: ClusterRecord, req: zkstore.Versioned, obs: Observation) -> str:
        """A planned switchover, on the primary's side: converge this IPC to the
        standby layout (CTI and IVR stopped, KCXP/KCBP running: it stays
        eligible), then hand the role over to the standby."""
        assert self.store is not None and self.mem.obs is not None
        r = req.data
        rid = r.id
        epoch = crec.epoch
        decided = time.time()
        self._request_progress(rid, f"{self.me}: switchover to {self.peer} started (epoch {epoch})", "running")
        # Rule 1's layout still holds here until a rejoin: a board that was down
        # stays stopped (starting it now would only be undone by converge).
        target = self.topo.expected(self.me, Role.STANDBY, self.me in crec.board_down)
        steps = converge_steps(self.topo, self.me, self.mem.obs, target)
        rep = self.ex.execute((Stage(f"demote {self.me}", steps),), progress=self._progress_to(rid)) if steps else None
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
        )
        if self._write_handoff(zk, crec, handoff, Role.STANDBY) is None:
            why = f"{self.peer} can no longer take the role; {self.me} converges back to the primary layout"
            self._finish_request(rid, "failed", why, primary=self.me, epoch=epoch)
            return f"Switchover to {self.peer} FAILED: {why}."
        self._request_progress(rid, f"{self.me}: CTI and IVR stopped, role handed to {self.peer}")
        return (
            f"Switchover to {self.peer} requested by {r.operator}: {self.me} demoted to standby "
            f"and the role handed over (epoch {epoch})."
        )

    def _hand_back_why(self, zk: dict, crec: ClusterRecord, roles: dict[str, Role], handoff: Handoff | None) -> str:
        """A switchover handed to us that we must not finish: we cannot serve,
        or the operator cancelled it meanwhile ('' = go on)."""
        if handoff is None or handoff.kind != "switchover":
            return ""
        req = zk.get("request")
        if req is not None and req.data.id == handoff.request and req.data.state == "cancelled":
            return f"the switchover was {(req.data.result or {}).get('why') or 'cancelled'}"
        if self.mem.obs is None or not self.mem.obs.reachable:
            return f"{self.me} is unreachable over SSH"
        own = faults_of(self._observation(zk, crec, roles), self.me)
        return f"{self.me} cannot serve ({' and '.join(map(str, own))})" if own else ""

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
