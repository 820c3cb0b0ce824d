"""What the primary's agent does: bootstrap, its cycle (the rules' decision on
its own IPC), the hand-over of rule 2 (CTI and IVR stopped, or the IPC powered
off by its fence device, then the role handed over with that proof), an
operator's `--confirm-dead` of this IPC, and continuous fencing of the other
IPC. "What happens when CTI dies on the primary" starts in rules.decide and
ends in `_hand_over` here, then in takeover.py on the standby."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from failover import fencing, monitor, zkstore
from failover.agent.state import (
    _calls_down_way_out,
    _manual_meta,
    _own_stages,
    _split_app_stops,
    replace_alerts,
)
from failover.layouts import stop_order
from failover.moves import Next
from failover.records import ClusterRecord, Handoff, HistoryEntry
from failover.rules import (
    Action,
    Decision,
    IpcObs,
    Role,
    Stage,
    Step,
    decide,
)

log = logging.getLogger("failover.agent")


class PrimaryActs:
    # ----- bootstrap -------------------------------------------------------------
    def _bootstrap(self, zk: dict, raw: monitor.Raw) -> str:
        assert self.store is not None
        preferred = self.topo.home_primary == self.me
        waited = time.monotonic() - self.mem.started
        if not preferred and (zk["peer"] is not None or waited < self.t.bootstrap_grace):
            self._observe_update(raw, Role.STANDBY, ClusterRecord())
            return (
                f"No cluster record yet: waiting for the preferred primary {self.peer} to bootstrap "
                f"({waited:.0f}/{self.t.bootstrap_grace:g} s)."
            )
        obs = self._observe_update(raw, Role.PRIMARY, ClusterRecord())
        if not obs.reachable:
            return f"No cluster record yet, and {self.me} is unreachable over SSH: not bootstrapping."
        if not self.store.take_leader(self._leader_data(1), owner=self.session_id):
            return "No cluster record yet; another agent is bootstrapping."
        self.tenure.confirm(True)
        roles = {self.me: Role.PRIMARY, self.peer: Role.STANDBY}
        if not self.store.create_cluster(ClusterRecord(epoch=1, primary=self.me, roles=roles)):
            return "No cluster record yet; another agent created it first."
        self.store.add_history(
            HistoryEntry.of(
                "bootstrap", f"agent {self.me}", "first start of the cluster", frm=None, to=self.me, epoch=1
            )
        )
        return f"Bootstrapped the cluster: {self.me} is primary, epoch 1."

    # ----- primary ------------------------------------------------------------------
    def _as_primary(
        self, zk: dict, crec: ClusterRecord, roles: dict[str, Role], move: Next, req: zkstore.Versioned | None
    ) -> str:
        epoch = crec.epoch
        resumed = ""
        if self.tenure.resumed():
            # Our session may have expired meanwhile: what matters is that
            # nobody took the role (same epoch, P/leader ours again).
            resumed = f"ZooKeeper is back and nobody took the role (epoch {epoch}): "
        obs = self._observation(zk, crec, roles)
        if move is Next.SWITCH_OVER and req is not None and not self._fault_beats_drain(req, obs):
            return resumed + self._switch_over(zk, crec, req, obs)
        if move is Next.CONFIRMED_DEAD and req is not None:
            return resumed + self._confirmed_dead(zk, crec, req)
        d = decide(obs)
        if not d.execute or d.action in (Action.NONE, Action.HOLD):
            self.mem.way_out = _calls_down_way_out(obs, d, self.me, self.peer)
            sentence = f"{resumed}{self.me} is primary (epoch {epoch}): {d.reason}"
            self._publish(zk, crec, d, sentence)
            return sentence
        if d.action is Action.FAILOVER:
            return resumed + self._hand_over(zk, crec, d)
        mine = _own_stages(d.plan, self.me)
        if not mine and d.action is not Action.BOARD_DOWN:
            sentence = f"{resumed}{self.me} is primary (epoch {epoch}): {d.reason}"
            self._publish(zk, crec, d, sentence)
            return sentence
        # Rule 1 with the driver already stopped (a reboot, a crash) has nothing
        # to run, but its layout must still be recorded, or converge never
        # starts the rest and rule 1 repeats for ever (found by the simulator).
        rep = self.ex.execute(mine, guard=self.guard, fence_check=lambda host: self._fenced(host, epoch))
        self._after_plan(rep, crec)
        if d.action is Action.RESTART:
            for st in mine:
                for s in st.steps:
                    self.mem.restarts.setdefault(f"{self.me}/{s.service}", []).append(time.time())
        if d.action is Action.BOARD_DOWN and rep.ok:
            self._cas(zk, board_down=tuple(sorted({*crec.board_down, self.me})))
            self.store.add_history(  # type: ignore[union-attr]
                HistoryEntry.of("board-down", f"agent {self.me}", d.reason, frm=self.me, to=self.me, epoch=epoch)
            )
        result = "done" if rep.ok else f"FAILED: {rep.summary()}"
        sentence = f"{resumed}{self.me} is primary (epoch {epoch}): {d.reason} Result: {result}."
        self._publish(zk, crec, d, sentence)
        return sentence

    def _confirmed_dead(self, zk: dict, crec: ClusterRecord, req: zkstore.Versioned) -> str:
        """`failover failover --to PEER --confirm-dead ME` while this agent
        holds the role: a person says this IPC is powered off (its agent is
        alive on its own host). Stop what can still be stopped, then hand over
        on the operator's word; without it, the primary's agent is alive and a
        switchover is the way."""
        r = req.data
        if r.confirm_dead != self.me:
            why = f"{self.me}'s agent is alive and holds the role: use `failover switchover`"
            self._finish_request(r.id, "refused", why)
            return f"Manual failover to {self.peer} refused: {why}."
        peer_role = crec.roles.get(self.peer)
        if peer_role is not Role.STANDBY:
            why = f"{self.peer} is {peer_role}: it cannot take the role (rejoin it first); nothing was stopped"
            self._finish_request(r.id, "refused", why)
            return f"Manual failover to {self.peer} refused: {why}."
        meta = _manual_meta(r)
        self._request_progress(r.id, f"{self.me}: handing the role over ({meta['reason']})", "running")
        stops = tuple(Step(self.me, "stop", s) for s in stop_order(set(self.topo.services), self.topo.after))
        d = Decision(Action.FAILOVER, meta["reason"], plan=(Stage(f"stop all services on {self.me}", stops),))
        return self._hand_over(zk, crec, d, manual=meta)

    def _hand_over(self, zk: dict, crec: ClusterRecord, d: Decision, manual: dict | None = None) -> str:
        """Rule 2 on the primary's side: stop CTI and IVR here (or power this
        IPC off through its fence device), give the role up with a hand-over
        naming that proof, then stop the rest. `manual`: an operator's
        `failover --confirm-dead` of this IPC."""
        assert self.store is not None
        decided = time.time()
        seen = min(
            (self.mem.first_failure.get(f.what, decided) for f in d.faults if f.ipc == self.me),
            default=decided,
        )
        app, rest = _split_app_stops(_own_stages(d.plan, self.me))
        # Unreachable (a power cut, a blue screen) with a fence device: no
        # point retrying SSH stops first, the device is the proof.
        gone = self.mem.obs is not None and not self.mem.obs.reachable and self.fencer.has_device(self.me)
        rep = self.ex.execute(app, guard=self.guard) if app and not gone else None
        self._after_plan(rep, crec)
        if not gone and (rep is None or rep.ok):
            proof = fencing.Proof("verified", self.me, f"CTI and IVR stopped on {self.me} by its agent", self.me)
        else:
            attempt = self.fencer.power_off(self.me) if self.fencer.has_device(self.me) else None
            proof = attempt.proof if attempt else None
            if proof is None and manual:
                proof = fencing.Proof(
                    "operator", self.me, f"{self.me} confirmed powered off by {manual['who']}", manual["who"]
                )
            if proof is None:
                bad = [r for r in rep.results if r.status in ("failed", "unknown")] if rep else []
                alive = not all(r.detail.startswith("cannot connect") for r in bad)  # see fencing.answered
                why = "; ".join([*(r.line() for r in bad), *([attempt.why] if attempt else [])])
                tried = fencing.Attempt(None, why, alive=alive)
                return self._cannot_hand_over(zk, crec, d, tried)
            rest = ()  # powered off (or confirmed so): nothing more to stop there
        handoff = Handoff(
            frm=self.me,
            to=self.peer,
            reason=(manual or {}).get("reason") or d.reason,
            fault_seen_at=seen,
            decided_at=decided,
            stopped_at=time.time(),
            epoch=crec.epoch,
            kind=(manual or {}).get("kind", "failover"),
            proof=proof.record(),
            who=(manual or {}).get("who"),
            request=(manual or {}).get("request"),
        )
        crec = self._write_handoff(zk, crec, handoff, Role.FENCED)
        if crec is None:
            if manual and manual.get("request"):
                self._finish_request(manual["request"], "failed", f"{self.peer} can no longer take the role")
            return self._cannot_hand_over(zk, zk["cluster"].data, d, None)
        done = self.ex.execute(rest) if rest else None  # after the hand-over: the standby is starting meanwhile
        self._after_plan(done, crec)
        rest_text = "" if done is None or done.ok else f" Stopping the rest FAILED ({done.summary()}): ALERT."
        sentence = (
            f"{d.reason.rstrip('.')}. Done on {self.me}: {proof.detail}; the role handed to {self.peer} "
            f"(epoch {crec.epoch}); {self.me} is now fenced until `failover rejoin`.{rest_text}"
        )
        self._publish(zk, crec, d, sentence)
        return sentence

    def _write_handoff(self, zk: dict, crec: ClusterRecord, handoff: Handoff, my_role: Role) -> ClusterRecord | None:
        """The hand-over, with a conditional write retried on a fresh read
        (the standby may have written its own rule-3 change meanwhile); None
        when the standby cannot take the role any more. Then P/leader goes."""
        assert self.store is not None and self.mem.obs is not None
        for _ in range(5):
            current = self.store.cluster()
            if current is None or current.data.epoch != handoff.epoch:
                return None
            if current.data.roles.get(self.peer) is not Role.STANDBY:
                return None
            roles = {**current.data.roles, self.me: my_role, self.peer: Role.STANDBY}
            new = replace(current.data, roles=roles, handoff=handoff)
            try:
                self.store.update_cluster(current.version, new)
            except zkstore.Conflict:
                continue
            zk["cluster"] = zkstore.Versioned(new, current.version + 1)
            self.store.release_leader(self.session_id or 0)
            self.tenure.revoke()
            self.mem.obs = IpcObs(my_role, self.mem.obs.services, board_down=False)
            self._refresh_obs(new)
            return new
        return None

    def _cannot_hand_over(self, zk: dict, crec: ClusterRecord, d: Decision, tried: fencing.Attempt | None) -> str:
        """Hold the role and say what a person can do."""
        if tried is None:
            self.mem.way_out = (
                f"No automatic action: CTI/IVR are stopped on {self.me} but {self.peer} can no longer take the role "
                f"(role {crec.roles.get(self.peer)}). Repair {self.peer} and run `failover rejoin "
                f"{self.peer}`, or start {self.me} again with `failover rejoin {self.me}`."
            )
            sentence = f"{d.reason} Stopped CTI/IVR on {self.me}, but {self.peer} cannot take the role: holding, ALERT."
        else:
            self.mem.way_out = fencing.way_out(self.me, self.peer, tried, self.fencer.has_device(self.me))
            sentence = (
                f"{d.reason} But CTI/IVR on {self.me} could not be stopped ({tried.why}): NOT handing over, the "
                "standby will not start CTI/IVR; holding and alerting."
            )
        self._publish(zk, crec, replace_alerts(d, self.mem.way_out), sentence)
        return sentence

    def _fenced(self, host: str, epoch: int) -> tuple[bool, str]:
        """A gated stage on the primary (a restart in place, a converge): the
        peer has not been primary in this epoch (every change of primary bumps
        it, with a proof), and continuous fencing stops a stray CTI/IVR there.
        So an unreachable peer does not block us; one seen running CTI/IVR
        does, until continuous fencing has stopped them."""
        if host != self.peer:
            return self.ex.fenced(host)
        ok, why = self.ex.fenced(host)
        if ok or why.startswith("cannot verify"):
            return True, f"{host} has not been primary in epoch {epoch} ({why})"
        return False, why
