"""Publishing: what this agent tells others. Its member record in ZooKeeper
(with its sentence, alerts and way out), its HTTP endpoint's pre-rendered
state, the conditional write of the cluster record, and the progress lines of
an operator's request."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Any

from failover import api, monitor, zkstore
from failover import executor as exe
from failover import status as status_view
from failover.records import PROMOTION_KINDS, ClusterRecord, MemberRecord
from failover.rules import (
    Decision,
    Role,
)

log = logging.getLogger("failover.agent")


class Publishing:
    def _start_http(self) -> None:
        conf = self.c.ipc(self.me).http
        if not conf.enabled:
            return
        token, basic = conf.auth.secrets() if conf.auth else (None, None)
        self.http = api.HttpServer(
            conf.bind, conf.port, api.Auth(token, basic), is_primary=self.primary_now, failsafe=self._grant
        )
        try:
            self.http.start()
        except OSError as e:
            # Failover matters more than monitoring: keep running, say it loudly.
            log.error("health endpoint disabled: %s", e)
            self.say(f"Health endpoint NOT available: {e}.")
            self.http = None
        self._publish_api()

    def _publish_api(self) -> None:
        if self.http is None:
            return
        try:
            self.http.publish(api.render(self._api_state()))
        except Exception:  # monitoring must never break the control loop
            log.exception("cannot render the health endpoint")

    def _own_member_now(self) -> MemberRecord | None:
        """Our member record as of this cycle's observation, for our own
        endpoint: the published one is only refreshed through ZooKeeper, and
        during an outage (a self-fence!) the page must not show old news."""
        rec, o, raw = self._member_rec, self.mem.obs, self.mem.raw
        if rec is None or o is None or raw is None:
            return rec
        now = monitor.update(o, raw, self.topo, self.me, o.role, o.board_down)
        return replace(
            rec,
            obs=monitor.to_record(now),
            self_fenced=self.tenure.self_fenced,
            sentence=self.mem.sentence or rec.sentence,
            updated=time.time(),
        )

    def _api_state(self) -> dict:
        zk = self._zk_snapshot
        crec = zk.get("cluster").data if zk.get("cluster") else None
        req = zk.get("request")
        members = {self.me: self._own_member_now(), self.peer: zk.get("peer")}
        view = status_view.view(
            self.c, crec, zk.get("leader"), members, zk.get("pause"), req.data if req else None, self._history
        )
        pause = zk.get("pause")
        o = self.mem.obs
        healthy = False
        if o is not None and o.reachable:
            expected = self.topo.expected(self.me, o.role, o.board_down)
            ok = {s for s, v in o.services.items() if v.ok}
            running = {s for s, v in o.services.items() if v.state.value != "STOPPED"}
            healthy = expected <= ok and not (running - expected)
        changes = [h for h in self._history if h.kind in PROMOTION_KINDS]
        connected = bool(self.store and self.store.connected())
        return {
            "cluster": self.c.name,
            "ipc": self.me,
            "role": o.role.value if o else "unknown",
            "leader": self.primary_now(),
            "epoch": crec.epoch if crec else None,
            "zookeeper": {"connected": connected, "last_contact_s": round(self.tenure.contact_age(), 2)},
            "healthy": healthy,
            "eligible": bool(self._member_rec and self._member_rec.eligible),
            "paused": pause.to_json() if pause else None,
            "sentence": self.mem.sentence,
            "alerts": list(self._member_rec.alerts) if self._member_rec else [],
            "self_fenced": self.tenure.self_fenced,
            "failsafe_path": {"ok": self.lease_path.ok, "why": self.lease_path.why},
            "failsafe": self._failsafe_state(connected),
            "desks": self.desks,
            "view": view,
            "history": [h.to_json() for h in self._history],
            # None: the cluster record not read yet (an agent restarted during
            # an outage): no samples, never a counter that drops to 0.
            "failovers_total": None if crec is None else dict(crec.counts or {}),
            "last_failover": changes[-1].to_json() if changes else None,
        }

    def _failsafe_state(self, connected: bool) -> dict:
        """For the status page's banner: serving on the standby's lease (as a
        primary without ZooKeeper), or holding a promise not to take the role
        (as the standby that granted one)."""
        fresh = connected and self.tenure.contact_age() < self.t.self_fence_after / 2
        on_lease = not fresh and not self.tenure.self_fenced and self._believes_primary() and self.lease.valid()
        left = self.grantor.holds_back()
        return {
            "serving_on_lease": on_lease,
            "why": self.lease.last_answer if on_lease else "",
            "promised_to": self.grantor.promised_to if left > 0 else "",
            "promise_left_s": round(left, 1),
        }

    def _publish(self, zk: dict, crec: ClusterRecord, d: Decision, sentence: str = "") -> None:
        assert self.store is not None and self.mem.obs is not None
        o = self.mem.obs
        own_faults = [str(f) for f in d.faults if f.ipc == self.me]
        rec = MemberRecord(
            ipc=self.me,
            cluster=self.c.name,
            role=o.role.value,
            leader=self.tenure.confirmed,
            epoch=crec.epoch,
            eligible=o.role is Role.STANDBY and not own_faults and o.reachable,
            obs=monitor.to_record(o),
            sentence=sentence or self.mem.sentence,
            decision=d.action.value,
            alerts=tuple(
                dict.fromkeys([*d.alerts, *filter(None, [self.lease_path.alert(), self.mem.way_out, self.mem.stray])])
            ),
            way_out=self.mem.stray or self.mem.way_out,
            failsafe_path={"ok": self.lease_path.ok, "why": self.lease_path.why},
            faults=tuple(own_faults),
            paused=zk.get("pause") is not None,
            self_fenced=self.tenure.self_fenced,
            calls=self.calls_seen.record() if self.calls_seen is not None else None,
            busy_out=busy.to_json() if (busy := zk.get("busy_out")) is not None else None,
            updated=time.time(),
            agent={"host": self.host, "pid": os.getpid()},
        )
        self._member_rec = rec
        try:
            self.store.publish_member(self.me, rec)
        except zkstore.ZkUnavailable as e:
            log.warning("cannot publish member record: %s", e)

    def _cas(self, zk: dict, **change: Any) -> ClusterRecord | None:
        """Apply `change` (fields of ClusterRecord) to P/cluster with a conditional
        write; None if it lost."""
        assert self.store is not None
        v = zk["cluster"]
        new = replace(v.data, **change)
        try:
            self.store.update_cluster(v.version, new)
        except zkstore.Conflict:
            return None
        return new

    # ----- operator requests ------------------------------------------------------
    def _request_progress(
        self, req_id: str | None, line: str = "", state: str | None = None, result: dict | None = None
    ) -> None:
        """Append a progress line (and/or a state) to the operator's request."""
        assert self.store is not None
        for _ in range(5):
            try:
                cur = self.store.request()
            except zkstore.ZkUnavailable:
                return
            if cur is None or cur.data.id != req_id:
                return
            if cur.data.state in zkstore.FINAL_STATES:
                return  # finished (or cancelled by the operator): its outcome is not ours to rewrite
            data = cur.data
            if line:
                data = replace(data, progress=(*data.progress, line))
            if state:
                data = replace(data, state=state)
            if result is not None:
                data = replace(data, result=result)
            try:
                self.store.update_request(cur.version, data)
                return
            except zkstore.Conflict:
                continue
            except zkstore.ZkUnavailable:
                return

    def _finish_request(self, req_id: str | None, state: str, why: str, **result: Any) -> None:
        self._request_progress(req_id, f"{state}: {why}", state, {"state": state, "why": why, **result})

    def _progress_to(self, req_id: str | None) -> exe.Progress:
        def say(msg: str) -> None:
            if msg.endswith("…"):
                return  # only completed steps
            self._request_progress(req_id, msg)

        return say
