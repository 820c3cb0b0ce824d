"""What a standby's (or fenced IPC's) agent does: its own layout, rule 3 (a
fault on the standby fences it), and, when no agent holds the role, whether
to take it (and if not, the way out it names)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from failover import zkstore
from failover.agent.state import (
    _active,
    _manual_meta,
    _own_stages,
    _standby_text,
)
from failover.layouts import stop_order
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
    def _as_standby(self, zk: dict, crec: dict, roles: dict[str, Role]) -> str:
        req = _active(zk.get("request"))
        if (
            req is not None
            and req.data.get("kind") == "failover"
            and req.data.get("to") == self.me
            and req.data.get("confirm_dead") != self.peer  # the holder's agent hands over on the operator's word
        ):
            self._finish_request(
                req.data.get("id"),
                "refused",
                f"{self.peer}'s agent is alive and holds the role: use `failover switchover`",
            )
        obs = self._observation(zk, crec, roles)
        d = decide(obs)
        epoch = crec["epoch"]
        role = self.mem.obs.role.value if self.mem.obs else "standby"
        own_faults = faults_of(obs, self.me)
        if own_faults and self.mem.obs and self.mem.obs.role is Role.STANDBY:
            if not d.execute:
                self._publish(zk, crec, d, d.reason)
                return f"{self.me} is standby (epoch {epoch}): {d.reason}"
            return self._fence_self(zk, crec, own_faults, d)
        rejoining = self.me in crec.get("rejoin", {})
        mine = _own_stages(d.plan, self.me) if (d.execute or rejoining) else ()
        if rejoining and d.action is Action.NONE:
            marks = {k: v for k, v in crec.get("rejoin", {}).items() if k != self.me}
            self._cas(zk, {"rejoin": marks})  # converged: the operator's rejoin is done
        if d.action is Action.CONVERGE and mine:
            rep = self.ex.execute(mine, guard=self.guard)
            self._after_plan(rep, crec)
            result = "done" if rep.ok else f"FAILED: {rep.summary()}"
            sentence = f"{self.me} is {role} (epoch {epoch}): {d.reason} Result: {result}."
        else:
            sentence = f"{self.me} is {role} (epoch {epoch}): " + _standby_text(d, self.me, role)
        self._publish(zk, crec, d, sentence)
        return sentence

    def _fence_self(self, zk: dict, crec: dict, faults: Sequence, d: Decision) -> str:
        """Rule 3: a fault on the standby stops everything there; ineligible."""
        assert self.store is not None and self.mem.obs is not None
        steps = tuple(
            Step(self.me, "stop", s)
            for s in stop_order(
                {s for s, v in self.mem.obs.services.items() if v.state.value != "STOPPED"}, self.topo.after
            )
        )
        rep = self.ex.execute((Stage(f"stop all services on {self.me}", steps),)) if steps else None
        roles = {**crec["roles"], self.me: Role.FENCED.value}
        self._cas(zk, {"roles": roles})
        what = " and ".join(str(f) for f in faults)
        self.store.add_history(
            {
                "kind": "standby-fault",
                "from": self.me,
                "to": self.me,
                "epoch": crec["epoch"],
                "why": f"{what} on standby {self.me} (rule 3)",
                "who": f"agent {self.me}",
                "outcome": "done" if rep is None or rep.ok else "failed",
            }
        )
        result = "" if rep is None or rep.ok else f" Stopping FAILED: {rep.summary()}."
        sentence = (
            f"{what[:1].upper() + what[1:]} on standby {self.me}: stopped all services here and marked "
            f"it ineligible (rule 3); calls stay on {crec.get('primary')}.{result}"
        )
        self.mem.obs = IpcObs(Role.FENCED, self.mem.obs.services)
        self._publish(zk, {**crec, "roles": roles}, d, sentence)
        return sentence

    def _manual_failover(self, zk: dict, crec: dict, req: zkstore.Versioned) -> str:
        """`failover failover --to ME`: the operator takes the role here for a
        dead primary, whatever the pause or mode; a proof is never skipped
        (`--confirm-dead` is the operator's own)."""
        r = req.data
        rid = r.get("id")
        own = faults_of(self._observation(zk, crec, {k: Role(v) for k, v in crec.get("roles", {}).items()}), self.me)
        why = ""
        if (own or not self.mem.obs or not self.mem.obs.reachable) and not r.get("force"):
            why = f"{self.me} is not healthy ({' and '.join(map(str, own)) or 'unreachable'}); --force to insist"
        elif crec.get("roles", {}).get(self.me) == Role.FENCED.value and not r.get("force"):
            why = f"{self.me} is fenced; rejoin it first, or --force"
        elif r.get("confirm_dead") not in (None, self.peer):
            why = f"--confirm-dead names {r.get('confirm_dead')}, not the old primary {self.peer}"
        if why:
            self._finish_request(rid, "refused", why)
            return f"Manual failover to {self.me} refused: {why}."
        self._request_progress(
            rid, f"{self.me}: taking the role (manual failover by {r.get('operator', '?')})", "running"
        )
        return self._take_over(zk, crec, None, manual=_manual_meta(r))

    # ----- no leader: take over? -----------------------------------------------------
    def _leaderless(self, zk: dict, crec: dict, roles: dict[str, Role]) -> str:
        handoff = self._handoff_to_me(crec)
        req = _active(zk.get("request"))
        if roles.get(self.me, Role.STANDBY) is Role.STANDBY:
            if req is not None and req.data.get("kind") == "failover" and req.data.get("to") == self.me:
                return self._manual_failover(zk, crec, req)
            back = self._hand_back_why(zk, crec, roles, handoff)
            if back:
                return self._hand_back(zk, crec, handoff or {}, back)
        held = self._why_not_take_over(zk, crec, roles, handoff)
        if held is not None:
            sentence, self.mem.way_out = held
            self._publish(zk, crec, Decision(Action.HOLD, sentence), sentence)
            return sentence
        return self._take_over(zk, crec, handoff)

    def _why_not_take_over(
        self, zk: dict, crec: dict, roles: dict[str, Role], handoff: dict | None
    ) -> tuple[str, str] | None:
        """Why this standby does not take the role now (the sentence, and the
        way out when no automatic action will come), or None: take it."""
        epoch = crec["epoch"]
        me, peer = self.me, self.peer
        head = f"No primary holds the role (epoch {epoch})"
        my_role = roles.get(me, Role.STANDBY)
        obs = self._observation(zk, crec, roles)
        if my_role is not Role.STANDBY:
            stuck = roles.get(peer) is not Role.STANDBY or zk["peer"] is None
            out = f"No automatic action: no IPC can take the primary role. Repair {me} and run `failover rejoin {me}`."
            return f"{head}; {me} is {my_role.value}: not taking over.", out if stuck else ""
        if handoff is not None:
            return None
        take = f"`failover failover --to {me} --reason '...'`"
        if obs.policy.paused:
            out = f"No automatic action while paused: run `failover resume`, or {take}."
            return f"{head}; paused ({obs.policy.pause_reason}): not taking over.", out
        if obs.policy.mode == "manual":
            return f"{head}; manual mode: not taking over (use `failover failover`).", f"Manual mode: run {take}."
        if zk["peer"] is not None and crec.get("primary") == peer:
            # Its agent lives (new session): it takes P/leader back itself.
            return f"{head}, but {peer}'s agent is alive: waiting for it to take the role back.", ""
        if obs.policy.recent_failovers >= obs.policy.max_failovers:
            out = f"No automatic action: flap damping holds after {obs.policy.recent_failovers} failovers. Run {take}."
            return (
                f"{head}, but {obs.policy.recent_failovers} automatic failovers already happened in the window: "
                "holding, ALERT.",
                out,
            )
        own = faults_of(obs, me)
        if own or not obs.ipcs[me].reachable:
            what = " and ".join(map(str, own)) or "unreachable over SSH"
            stuck = roles.get(peer) is not Role.PRIMARY
            out = f"No automatic action: no IPC can serve calls. Repair {me} ({what}), or {peer}." if stuck else ""
            return f"{head}, but {me} cannot serve ({what}): not taking over.", out
        return None
