"""Leadership: the ZooKeeper session (saved and resumed across a restart),
the `leader` znode's ownership as this agent last confirmed it, the watchdog
that self-fences on time, and the failsafe lease (asked for as primary, granted
as standby; docs/resilience.md). The start guard lives here: a CTI/IVR start
is refused the moment this agent is not a confirmed, fresh primary."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from typing import Any

from kazoo.client import KazooState

from failover import executor as exe
from failover import failsafe, monitor, zkstore
from failover.agent.state import (
    LEASE_PATH_EVERY,
    WATCHDOG,
    LeasePath,
)
from failover.layouts import APP_SERVICES, LABELS, stop_order
from failover.platforms import State
from failover.records import LeaderRecord, MemberRecord
from failover.rules import (
    Role,
    Step,
)

log = logging.getLogger("failover.agent")


class Leadership:
    def _saved_session(self) -> tuple[int, bytes] | None:
        try:
            data = json.loads(self.session_file.read_text())
            return int(data["id"]), base64.b64decode(data["password"])
        except (OSError, ValueError, KeyError):
            return None

    def _save_session(self) -> None:
        assert self.zk is not None
        cid = self.zk.client_id
        if not cid or cid[0] == self.session_id:
            return
        self.session_id = cid[0]
        tmp = self.session_file.with_suffix(".tmp")
        # The session password lets a restarted agent resume this session: 0600.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"id": cid[0], "password": base64.b64encode(cid[1]).decode()}, f)
        tmp.replace(self.session_file)

    def _on_state(self, state: KazooState) -> None:
        # Listener callbacks must not block: note it and wake the loop.
        if state != KazooState.CONNECTED:
            self.tenure.revoke()  # stop acting as primary at once
        self.wake.set()

    def _on_leader_change(self, *_: Any) -> bool:
        self.wake.set()
        return not self.stop_event.is_set()

    def _on_peer_record(self, data: bytes | None, *_: Any) -> bool:
        """The peer published: show it on our endpoint at once, not a cycle
        later (right after a failover the old primary's endpoint must not
        report the new primary as not serving). Rendering is cheap and local."""
        if self._zk_snapshot:
            try:
                rec = zkstore.loads(data)
            except ValueError:
                return not self.stop_event.is_set()
            peer = None if rec is None else MemberRecord.from_json(rec)
            self._zk_snapshot = {**self._zk_snapshot, "peer": peer}
            self._publish_api()
        return not self.stop_event.is_set()

    def _watchdog(self) -> None:
        """ZooKeeper liveness and self-fencing on time, whatever the main loop is
        doing (an SSH call to an unreachable peer may hold a cycle up for
        seconds). Every WATCHDOG seconds: read P/leader (fail fast); success
        refreshes the last-contact time and revokes our leadership at once if
        the znode is not ours. A primary without contact for D seconds stops
        CTI and IVR on its IPC."""
        while not self.stop_event.wait(WATCHDOG):
            self._watchdog_tick()

    def _watchdog_tick(self) -> None:
        store = self.store
        if store is not None and self.session_id is not None and store.connected():
            try:
                leader = store.leader(timeout=min(1.0, self.t.self_fence_after / 4))
                self.tenure.contact()
                if leader is None or leader[1] != self.session_id:
                    self.tenure.revoke()
            except zkstore.ZkUnavailable:
                pass
        stale = self.tenure.contact_age()
        if self._believes_primary() and not self.tenure.self_fenced and stale >= 2 * WATCHDOG:
            self._renew_lease()  # failsafe: the standby confirms it cannot promote
        if (
            self._believes_primary()
            and not self.tenure.self_fenced
            and stale >= self.t.self_fence_after
            and not self.lease.valid()
        ):
            with self.tenure.lock:
                if not self.tenure.self_fenced:
                    self.tenure.self_fence(self._self_fence)
                    self.wake.set()
                    self._publish_api()

    def _lease_path_loop(self) -> None:
        """Test the lease path now and every LEASE_PATH_EVERY seconds: a broken
        one must be an alert before a ZooKeeper outage needs it."""
        while True:
            if self._peer_url is None:
                self.lease_path = LeasePath(False, f"{self.peer}'s agent has no HTTP endpoint (http.enabled: false)")
            else:
                ok, why = failsafe.probe_path(self._peer_url, self.me, self.peer, self._peer_auth, timeout=1.0)
                if ok != self.lease_path.ok:
                    (log.info if ok else log.error)("failsafe lease path: %s", why)
                self.lease_path = LeasePath(ok, why)
            # A broken path is tested again every second (the peer's agent may
            # just be starting), a working one every LEASE_PATH_EVERY seconds.
            if self.stop_event.wait(LEASE_PATH_EVERY if self.lease_path.ok else 1.0):
                return

    def _grant(self, req: dict) -> dict:
        """POST /failsafe from the primary's agent (docs/resilience.md)."""
        if req.get("probe"):
            return {"ipc": self.me, "probe": True, "granted": False, "why": "lease path test: nothing promised"}
        fresh = self.tenure.contact_age() < self.t.self_fence_after / 2
        connected = bool(self.store and self.store.connected() and fresh)
        taking = self.tenure.confirmed or self.tenure.taking_since is not None
        leader = self._zk_snapshot.get("leader")
        alive = bool(leader and leader[0].ipc == req.get("from"))
        answer = self.grantor.ask(str(req.get("from", "?")), connected, alive, taking)
        log.info("failsafe request from %s: %s", req.get("from"), answer["why"])
        return {**answer, "ipc": self.me}

    def _renew_lease(self) -> None:
        """As a primary without ZooKeeper: ask the standby for a lease."""
        if self._peer_url is None:
            self.lease.last_answer = "the standby's agent has no HTTP endpoint (http.enabled: false)"
            return
        rec = self._zk_snapshot.get("cluster")
        epoch = int(rec.data.epoch) if rec else 0
        self.lease.renew(
            self._peer_url, self.me, epoch, self._peer_auth, timeout=min(0.5, self.t.lease / 4), grantor=self.peer
        )

    def _believes_primary(self) -> bool:
        return self.mem.obs is not None and self.mem.obs.role is Role.PRIMARY

    def guard(self, step: Step) -> str:
        """Refuse a CTI/IVR start unless we are a confirmed, fresh primary."""
        if step.service not in APP_SERVICES or step.op == "stop" or step.host != self.me:
            return ""
        if not self.tenure.confirmed:
            return "this agent is not a confirmed primary"
        if self.tenure.self_fenced:
            return "self-fenced"
        age = self.tenure.contact_age()
        if age >= self.t.self_fence_after / 2:
            return f"no ZooKeeper contact for {age:.1f} s"
        return ""

    def primary_now(self) -> bool:
        """Primary right now (for /primary): holds P/leader per the last read
        with recent ZooKeeper contact, connected, not self-fenced — or, during a
        ZooKeeper outage, serving under a valid failsafe lease."""
        if self.tenure.self_fenced:
            return False
        fresh = self.tenure.contact_age() < self.t.self_fence_after / 2
        if self.tenure.confirmed and fresh and self.store and self.store.connected():
            return True
        return self._believes_primary() and self.lease.valid()

    # ----- without ZooKeeper ---------------------------------------------------
    def _without_zk(self, raw: monitor.Raw, why: str) -> str:
        was_primary = self.mem.obs is not None and self.mem.obs.role is Role.PRIMARY
        self.tenure.revoke()
        gone = self.tenure.contact_age()
        if not was_primary:
            stray = [s for s in sorted(APP_SERVICES) if raw.states.get(s) not in (State.STOPPED, State.UNKNOWN, None)]
            crec = self._zk_snapshot.get("cluster")
            known_not_primary = (
                crec is not None and crec.data.primary != self.me and crec.data.roles.get(self.me) is not Role.PRIMARY
            )
            if raw.reachable and stray and known_not_primary:
                # Not the primary when this process last read the record, and
                # only this agent ever starts CTI/IVR here: these are strays (a
                # reboot's auto-start). A freshly started agent that has not
                # read the record yet knows nothing: it holds (it may be the
                # serving primary's agent, restarted during an outage).
                done = self._stop_strays(stray)
                return f"ZooKeeper unreachable for {gone:.1f} s ({why}): {self.me} is not the primary: {done}."
            return f"ZooKeeper unreachable for {gone:.1f} s ({why}): {self.me} holds as it is, no action."
        if gone < self.t.self_fence_after:
            return (
                f"ZooKeeper unreachable for {gone:.1f} s ({why}): not acting as primary; CTI and IVR keep "
                f"running until {self.t.self_fence_after:g} s without ZooKeeper."
            )
        if self.lease.valid() and not self.tenure.self_fenced:
            left = self.lease.valid_until - time.monotonic()
            released = self._release_without_zk(gone)  # serving on: not busied out for a drain that cannot go on
            return (
                f"ZooKeeper unreachable for {gone:.1f} s ({why}): failsafe: {self.peer} confirms it cannot promote "
                f"({self.lease.last_answer}); {released}CTI and IVR keep running (lease {left:.1f} s more)."
            )
        with self.tenure.lock:  # normally the watchdog has done it already
            if not self.tenure.self_fenced and not self.tenure.fence_note:
                self.tenure.self_fence(self._self_fence)
            elif raw.reachable and any(
                raw.states.get(s) not in (State.STOPPED, State.UNKNOWN, None) for s in APP_SERVICES
            ):
                # A start that was in flight landed after the self-fence: again.
                self.tenure.self_fence(self._self_fence_again, again=True)
        return (
            f"ZooKeeper unreachable for {gone:.1f} s (limit {self.t.self_fence_after:g} s): {self.tenure.fence_note}; "
            "the standby may take over once our session has expired."
        )

    def _stop_strays(self, stray: list[str]) -> str:
        """CTI/IVR found running on a non-primary IPC: stopped (not a self-fence:
        this agent may well promote later)."""
        stopped, failed = [], []
        for s in stop_order(set(stray), self.topo.after):
            try:
                self.ex.stop(self.me, s)
                stopped.append(LABELS[s])
            except exe.ExecError as e:
                failed.append(f"{LABELS[s]} ({e.detail})")
        self.mem.disarmed |= set(stray)
        if failed:
            return f"FAILED to stop stray {', '.join(failed)} (ALERT)"
        return f"stopped stray {' and '.join(stopped)}"

    def _self_fence_again(self) -> tuple[str, bool]:
        note, ok = self._self_fence()
        return note + " again (a start landed after the first self-fence)", ok

    def _self_fence(self) -> tuple[str, bool]:
        """Stop CTI and IVR here (called under the tenure's lock): the note,
        and whether all stopped."""
        stopped, failed = [], []
        for s in stop_order(APP_SERVICES & self.topo.services, self.topo.after):
            try:
                self.ex.stop(self.me, s)
                stopped.append(LABELS[s])
            except exe.ExecError as e:
                failed.append(f"{LABELS[s]} ({e.detail})")
        self.mem.disarmed |= APP_SERVICES & self.topo.services
        if failed:
            return f"FAILED to stop {', '.join(failed)} on {self.me} (ALERT: cannot self-fence)", False
        return f"stopped {' and '.join(stopped)} on {self.me} (self-fencing)", True

    # ----- publishing ----------------------------------------------------------
    def _leader_data(self, epoch: int) -> LeaderRecord:
        return LeaderRecord(self.me, epoch, time.time(), self.host, os.getpid())
