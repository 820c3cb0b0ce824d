"""Observing: this agent's view of its own IPC (one batched status plus the
probes), of the cluster's records in ZooKeeper, and the typed snapshot the
rules decide on."""

from __future__ import annotations

import logging
import time

from failover import executor as exe
from failover import monitor, zkstore
from failover.agent.state import (
    DuplicateAgent,
    _failed_starts,
    _pause_text,
)
from failover.records import ClusterRecord
from failover.rules import (
    IpcObs,
    Observation,
    Policy,
    Role,
)

log = logging.getLogger("failover.agent")


class Observing:
    # ----- observation -------------------------------------------------------
    def _observe_own(self) -> monitor.Raw:
        try:
            st = self.ex.observe(self.me)
            return monitor.Raw(True, st.states, st.healthy, st.line)
        except exe.ExecError as e:
            log.warning("cannot observe %s: %s", self.me, e)
            return monitor.Raw(False)

    def _observe_update(self, raw: monitor.Raw, role: Role, crec: ClusterRecord) -> IpcObs:
        board_down = self.me in crec.board_down
        prev = self.mem.obs
        if prev is not None and self.mem.disarmed:
            # Services we stopped ourselves are not crashes: forget their history
            # so that converge restarts them instead of the rules failing over.
            keep = {s: v for s, v in prev.services.items() if s not in self.mem.disarmed}
            prev = IpcObs(
                prev.role, keep, prev.reachable, prev.unreachable_count, prev.line, prev.line_failures, prev.board_down
            )
        obs = monitor.update(prev, raw, self.topo, self.me, role, board_down)
        # Disarmed until seen running again (an unreachable IPC shows nothing).
        self.mem.disarmed = {s for s in self.mem.disarmed if s not in obs.services or not obs.services[s].ok}
        now = time.time()
        for s, v in obs.services.items():
            if v.failures == 1:
                self.mem.first_failure[s] = now
            elif v.failures == 0:
                self.mem.first_failure.pop(s, None)
        if obs.line_failures == 1:
            self.mem.first_failure["line"] = now
        if obs.unreachable_count == 1:  # the "host" fault (a power cut): its detection starts here
            self.mem.first_failure["host"] = now
        elif obs.unreachable_count == 0:
            self.mem.first_failure.pop("host", None)
        self.mem.obs = obs
        return obs

    def _read_zk(self) -> dict:
        assert self.store is not None and self.zk is not None
        if not self.store.connected():
            raise zkstore.ZkUnavailable(f"not connected ({self.zk.state})")
        self._save_session()
        if not self._watching:
            self.store.ensure_layout()
            self._claim_member()
            self.zk.DataWatch(self.store.leader_path, self._on_leader_change)
            self.zk.DataWatch(self.store.member_path(self.peer), self._on_peer_record)
            self._watching = True
        snap = {
            "cluster": self.store.cluster(),
            "leader": self.store.leader(),
            "pause": self.store.pause(),
            "peer": self.store.member(self.peer),
            "request": self.store.request(),
            "busy_out": self.store.busy_out(self.me),  # a drained switchover's, until released
        }
        count = self.store.history_count()
        if count != self._history_count:  # refresh the monitoring copy only when it grew
            self._history = self.store.history(50)
            self._history_count = count
        self._zk_snapshot = snap
        return snap

    def _claim_member(self) -> None:
        """One agent per IPC: our member znode is ephemeral, so another live
        session owning it is another agent for this IPC. A predecessor that
        crashed (its session not resumable) is waited out: its znode goes
        when its session expires."""
        assert self.store is not None
        deadline = time.monotonic() + self.t.session + 2.0
        while True:
            got = self.store.member_owner(self.me)
            if got is None or got[1] == self.session_id:
                return
            if time.monotonic() > deadline:
                other = got[0].agent or {}
                raise DuplicateAgent(
                    f"another agent for {self.me} is running (host {other.get('host', '?')}, pid "
                    f"{other.get('pid', '?')}, its ZooKeeper session still alive): this one refuses to run"
                )
            time.sleep(0.2)

    def _observation(self, zk: dict, crec: ClusterRecord, roles: dict[str, Role]) -> Observation:
        assert self.mem.obs is not None
        peer_role = roles.get(self.peer, Role.STANDBY)
        if crec.primary == self.peer and peer_role is Role.PRIMARY and not self.tenure.confirmed:
            peer_role = Role.PRIMARY
        peer = monitor.from_record(zk["peer"].obs if zk["peer"] else None, self.topo, peer_role)
        pause = zk["pause"]
        pol = self.c.policy
        window = time.time() - pol.failover_window
        recent = [t for t in crec.failovers if t >= window]
        restarts = {k: len([t for t in v if t >= window]) for k, v in self.mem.restarts.items()}
        policy = Policy(
            mode=pol.mode,
            paused=pause is not None,
            pause_reason=_pause_text(pause),
            failures_before_fault=self.n,
            recent_failovers=len(recent),
            max_failovers=pol.max_failovers,
            restart_in_place=pol.restart_in_place,
            restarts=restarts,
            max_restarts=pol.max_restarts,
        )
        return Observation(
            self.topo,
            {self.me: self.mem.obs, self.peer: peer},
            crec.primary,
            int(crec.epoch),
            policy,
        )

    def _after_plan(self, rep: exe.PlanReport | None, crec: ClusterRecord) -> None:
        """What our own plan did is not a fault. A service it stopped is
        disarmed until seen running again, so that when the layout changes
        later (a rejoin clears board_down, a role changes) converge starts it
        instead of the rules counting "stopped" as a crash and fencing this
        IPC. A start that failed is a declared fault at once."""
        if rep is None:
            return
        self.mem.disarmed |= {
            r.step.service for r in rep.results if r.step.host == self.me and r.step.op == "stop" and r.status == "done"
        }
        if self.mem.obs is not None:
            self.mem.obs = _failed_starts(self.mem.obs, rep, self.n)
            self._refresh_obs(crec)

    def _refresh_obs(self, crec: ClusterRecord) -> None:
        """Observe our IPC again after acting on it, so that the record we
        publish next (and every endpoint built from it) shows what runs now, not
        what ran before the plan: right after a promotion CTI and IVR run."""
        assert self.mem.obs is not None
        raw = self._observe_own()
        if raw.reachable:
            self._observe_update(raw, self.mem.obs.role, crec)
