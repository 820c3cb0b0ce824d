"""What a standby's (or fenced IPC's) agent does: its own layout, rule 3 (a
fault on the standby fences it), and, when no agent holds the role, whether
to take it (and if not, the way out it names)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from failover import zkstore
from failover.agent.state import (
    _manual_meta,
    _own_stages,
    _standby_text,
)
from failover.layouts import stop_order
from failover.moves import LeaderlessView
from failover.records import ClusterRecord, Handoff, HistoryEntry
from failover.rules import (
    Action,
    Decision,
    IpcObs,
    Role,
    Stage,
    Step,
    decide,
    faults_of,
)

log = logging.getLogger("failover.agent")


class StandbyActs:
    # ----- standby / fenced -------------------------------------------------------
    def _as_standby(self, zk: dict, crec: ClusterRecord, roles: dict[str, Role]) -> str:
        obs = self._observation(zk, crec, roles)
        d = decide(obs)
        epoch = crec.epoch
        role = self.mem.obs.role.value if self.mem.obs else "standby"
        own_faults = faults_of(obs, self.me)
        if own_faults and self.mem.obs and self.mem.obs.role is Role.STANDBY:
            if not d.execute:
                self._publish(zk, crec, d, d.reason)
                return f"{self.me} is standby (epoch {epoch}): {d.reason}"
            return self._fence_self(zk, crec, own_faults, d)
        rejoining = self.me in (crec.rejoin or {})
        mine = _own_stages(d.plan, self.me) if (d.execute or rejoining) else ()
        if rejoining and d.action is Action.NONE:
            marks = {k: v for k, v in (crec.rejoin or {}).items() if k != self.me}
            self._cas(zk, rejoin=marks)  # converged: the operator's rejoin is done
        if d.action is Action.CONVERGE and mine:
            rep = self.ex.execute(mine, guard=self.guard)
            self._after_plan(rep, crec)
            result = "done" if rep.ok else f"FAILED: {rep.summary()}"
            sentence = f"{self.me} is {role} (epoch {epoch}): {d.reason} Result: {result}."
        else:
            sentence = f"{self.me} is {role} (epoch {epoch}): " + _standby_text(d, self.me, role)
        self._publish(zk, crec, d, sentence)
        return sentence

    def _fence_self(self, zk: dict, crec: ClusterRecord, faults: Sequence, d: Decision) -> str:
        """Rule 3: a fault on the standby stops everything there; ineligible."""
        assert self.store is not None and self.mem.obs is not None
        steps = tuple(
            Step(self.me, "stop", s)
            for s in stop_order(
                {s for s, v in self.mem.obs.services.items() if v.state.value != "STOPPED"}, self.topo.after
            )
        )
        rep = self.ex.execute((Stage(f"stop all services on {self.me}", steps),)) if steps else None
        roles = {**crec.roles, self.me: Role.FENCED}
        self._cas(zk, roles=roles)
        what = " and ".join(str(f) for f in faults)
        self.store.add_history(
            HistoryEntry.of(
                "standby-fault",
                f"agent {self.me}",
                f"{what} on standby {self.me} (rule 3)",
                "done" if rep is None or rep.ok else "failed",
                frm=self.me,
                to=self.me,
                epoch=crec.epoch,
            )
        )
        result = "" if rep is None or rep.ok else f" Stopping FAILED: {rep.summary()}."
        sentence = (
            f"{what[:1].upper() + what[1:]} on standby {self.me}: stopped all services here and marked "
            f"it ineligible (rule 3); calls stay on {crec.primary}.{result}"
        )
        self.mem.obs = IpcObs(Role.FENCED, self.mem.obs.services)
        self._publish(zk, replace(crec, roles=roles), d, sentence)
        return sentence

    def _manual_failover(self, zk: dict, crec: ClusterRecord, req: zkstore.Versioned) -> str:
        """`failover failover --to ME`: the operator takes the role here for a
        dead primary, whatever the pause or mode; a proof is never skipped
        (`--confirm-dead` is the operator's own)."""
        r = req.data
        rid = r.id
        own = faults_of(self._observation(zk, crec, dict(crec.roles)), self.me)
        why = ""
        if (own or not self.mem.obs or not self.mem.obs.reachable) and not r.force:
            why = f"{self.me} is not healthy ({' and '.join(map(str, own)) or 'unreachable'}); --force to insist"
        elif crec.roles.get(self.me) is Role.FENCED and not r.force:
            why = f"{self.me} is fenced; rejoin it first, or --force"
        elif r.confirm_dead not in (None, self.peer):
            why = f"--confirm-dead names {r.confirm_dead}, not the old primary {self.peer}"
        if why:
            self._finish_request(rid, "refused", why)
            return f"Manual failover to {self.me} refused: {why}."
        self._request_progress(rid, f"{self.me}: taking the role (manual failover by {r.operator})", "running")
        return self._take_over(zk, crec, None, manual=_manual_meta(r))

    # ----- no leader: take over? -----------------------------------------------------
    def _leaderless_view(
        self, zk: dict, crec: ClusterRecord, roles: dict[str, Role], handoff: Handoff | None
    ) -> LeaderlessView:
        """What moves.leaderless_move decides from when nobody holds `leader`."""
        obs = self._observation(zk, crec, roles)
        p = obs.policy
        return LeaderlessView(
            me=self.me,
            peer=self.peer,
            epoch=crec.epoch,
            my_role=roles.get(self.me, Role.STANDBY),
            peer_role=roles.get(self.peer),
            peer_agent_alive=zk["peer"] is not None,
            recorded_primary=crec.primary,
            handed_over=handoff is not None,
            handed_away=_handed_away(crec, self.me, self.peer),
            paused=p.paused,
            pause_reason=p.pause_reason,
            mode=p.mode,
            recent_failovers=p.recent_failovers,
            max_failovers=p.max_failovers,
            own_faults=tuple(map(str, faults_of(obs, self.me))),
            reachable=obs.ipcs[self.me].reachable,
        )


def _handed_away(crec: ClusterRecord, me: str, peer: str) -> bool:
    """Our own hand-over to the peer, for this epoch, still in the record."""
    h = crec.handoff
    return h is not None and h.frm == me and h.to == peer and h.epoch == crec.epoch
