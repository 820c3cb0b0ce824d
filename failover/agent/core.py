"""The agent: one per IPC. Each cycle it observes its IPC (one batched status
over SSH plus the application probes), reads the cluster's records in
ZooKeeper, asks the rules what to do, does the part that is its own, and ends
with one sentence saying what it decided and why.

Election (docs/agent.md):
- The primary is the agent holding the ephemeral znode P/leader. The persistent
  record P/cluster names the primary, the roles and the epoch; it is only ever
  changed with a conditional write, and the epoch (the fencing token) is bumped
  on every change of primary.
- An agent stops acting as primary the moment it cannot confirm, this cycle,
  that it still owns P/leader through a connected session (kazoo keeps running
  an Election holder while SUSPENDED: we never rely on that). It stops CTI/IVR
  on its IPC when it has had no contact with ZooKeeper for `self_fence_after`
  seconds (default: half the session timeout).
- A standby takes over only once P/leader is gone *and* it holds a proof that
  the old primary's CTI and IVR are not running (failover/fencing.py): seen
  stopped over SSH, powered off by its fence device, or confirmed powered off
  by an operator. Time alone is never proof: without one it holds and says
  what a person can do.
- Reattach: the agent saves its ZooKeeper session id; restarted within the
  session timeout it resumes the same session, so P/leader never disappears
  and nothing is started or stopped.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from failover import api, failsafe, fencing, zkstore
from failover import executor as exe
from failover.agent.continuous import ContinuousFencing
from failover.agent.leadership import Leadership
from failover.agent.observing import Observing
from failover.agent.primary import PrimaryActs
from failover.agent.publishing import Publishing
from failover.agent.standby import StandbyActs
from failover.agent.state import (
    DuplicateAgent,
    LeasePath,
    Memory,
    Timing,
    _active,
    _manual_meta,
)
from failover.agent.switchover import SwitchoverActs
from failover.agent.takeover import TakeOverActs
from failover.inventory import Cluster
from failover.records import ClusterRecord, Handoff, HistoryEntry, MemberRecord
from failover.rules import (
    Action,
    Decision,
    Role,
    Topology,
)

log = logging.getLogger("failover.agent")


class Agent(
    Leadership, Publishing, Observing, PrimaryActs, StandbyActs, SwitchoverActs, TakeOverActs, ContinuousFencing
):
    def __init__(self, cluster: Cluster, ipc: str, state_dir: Path, out: TextIO | None = None) -> None:
        self.c = cluster
        self.me = ipc
        self.peer = cluster.peer(ipc).name
        self.topo = Topology.from_cluster(cluster)
        self.t = Timing.of(cluster)
        self.n = cluster.timings.failures_before_fault
        self.ex = exe.Executor(
            cluster, exe.RetryPolicy(attempts=2, total_seconds=2, initial_backoff=0.1, max_backoff=0.5)
        )
        self.state_dir = state_dir
        self.out = out or sys.stdout
        self.mem = Memory()
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.zk = None
        self.store: zkstore.Store | None = None
        self.session_id: int | None = None
        self._watching = False
        self._fence_lock = threading.Lock()
        self.host = socket.gethostname()
        self.http: api.HttpServer | None = None
        self._zk_snapshot: dict = {}  # the last successful ZooKeeper read
        self._member_rec: MemberRecord | None = None  # our last published member record
        self._history: list[HistoryEntry] = []
        self._history_count = -1
        # As standby: its promises survive a restart of this agent.
        self.grantor = failsafe.Grantor(
            self.t.lease, self.t.hold_after, path=state_dir / f"{cluster.name}-{ipc}.promise"
        )
        self.fencer = fencing.Fencer.of(self.ex, cluster, ipc, self.topo.services, self.topo.after)
        self.lease = failsafe.Lease()  # as primary
        peer = cluster.ipc(self.peer).http
        # The peer's endpoint as the peer advertises it (never our own bind).
        self._peer_url = peer.url() if peer.enabled else None
        self._peer_token = peer.auth.secrets()[0] if peer.auth else None
        self.lease_path = LeasePath()
        self.refused = ""  # why this agent refused to run (a duplicate)

    # ------------------------------------------------------------------ lifecycle
    @property
    def session_file(self) -> Path:
        return self.state_dir / f"{self.c.name}-{self.me}.session"

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        client_id = self._saved_session()
        self.zk = zkstore.connect(self.c, client_id=client_id)
        self.zk.add_listener(self._on_state)
        self.store = zkstore.Store(self.zk, self.c.zookeeper.path, acl=zkstore.acl_for(self.c))
        self.zk.start_async()
        self._start_http()

    def run(self) -> None:
        self.start()
        threading.Thread(target=self._watchdog, name="self-fence-watchdog", daemon=True).start()
        threading.Thread(target=self._lease_path_loop, name="lease-path", daemon=True).start()
        threading.Thread(target=self._peer_fence_loop, name="continuous-fencing", daemon=True).start()
        try:
            while not self.stop_event.is_set():
                t0 = time.monotonic()
                try:
                    sentence = self.cycle()
                except DuplicateAgent as e:
                    self.say(f"Refusing to run: {e}.")
                    self.refused = str(e)
                    return
                except Exception as e:  # the loop must survive anything
                    log.exception("cycle failed")
                    sentence = f"Cycle failed ({type(e).__name__}: {e}); retrying next cycle."
                self.say(sentence)
                self._publish_api()
                delay = self.t.interval - (time.monotonic() - t0)
                if self.mem.wake_at is not None:
                    delay = min(delay, self.mem.wake_at - time.monotonic())
                    self.mem.wake_at = None
                self.wake.wait(max(0.0, delay))
                self.wake.clear()
        finally:
            self.close()

    def close(self) -> None:
        # Deliberately no zk.stop(): closing the session would delete P/leader
        # and hand the role over; a restarted agent resumes the session instead.
        if self.http is not None:
            self.http.stop()
        self.ex.close()

    def say(self, sentence: str, **extra: Any) -> None:
        self.mem.sentence = sentence
        last, when = self.mem.last_logged
        now = time.monotonic()
        if sentence != last or now - when > 30:
            rec = {
                "ts": round(time.time(), 3),
                "cluster": self.c.name,
                "ipc": self.me,
                "role": self._my_role_name(),
                "sentence": sentence,
                **extra,
            }
            self.out.write(json.dumps(rec) + "\n")
            self.out.flush()
            self.mem.last_logged = (sentence, now)

    def _my_role_name(self) -> str:
        return self.mem.obs.role.value if self.mem.obs else "unknown"

    # ------------------------------------------------------------------ one cycle
    def cycle(self) -> str:
        self.mem.way_out = ""  # set again by whichever path finds itself stuck
        own_raw = self._observe_own()
        try:
            zk = self._read_zk()
        except zkstore.ZkUnavailable as e:
            return self._without_zk(own_raw, str(e))
        self.mem.last_zk_ok = time.monotonic()
        if zk["cluster"] is None:
            return self._bootstrap(zk, own_raw)
        crec = zk["cluster"].data
        roles = dict(crec.roles)
        leader = zk["leader"]
        holds = leader is not None and leader[1] == self.session_id
        if leader is None and crec.primary == self.me and roles.get(self.me) is Role.PRIMARY:
            # The recorded primary without P/leader (our session expired, or a
            # restart): take it back; nothing is started or stopped for that.
            holds = self.store.take_leader(self._leader_data(crec.epoch))  # type: ignore[union-attr]
            if holds:
                self._observe_update(own_raw, Role.PRIMARY, crec)
                self._publish(zk, crec, Decision(Action.NONE, ""))
                return (
                    f"{self.me} took P/leader back as the recorded primary (epoch {crec.epoch}); "
                    "no service started or stopped."
                )
        self.mem.leader = holds
        my_role = Role.PRIMARY if holds else roles.get(self.me, Role.STANDBY)
        if my_role is Role.PRIMARY and not holds:
            my_role = Role.STANDBY  # the record lags: act as standby until it says otherwise
        self._observe_update(own_raw, my_role, crec)
        if holds and crec.primary != self.me:
            # We hold P/leader but the record still names the old primary: a
            # takeover not finished (no proof yet, or a restart in the middle
            # of one: our session was resumed). Carry on with it.
            handoff = self._handoff_to_me(crec)
            req = _active(zk.get("request"))
            manual = None
            if req is not None and req.data.kind == "failover" and req.data.to == self.me:
                manual = _manual_meta(req.data)
            return self._take_over(zk, crec, handoff, manual=manual)
        if holds:
            return self._as_primary(zk, crec, roles)
        self.mem.takeover_started = None  # whatever we were taking, we do not hold P/leader
        if leader is None:
            return self._leaderless(zk, crec, roles)
        return self._as_standby(zk, crec, roles)

    def _handoff_to_me(self, crec: ClusterRecord) -> Handoff | None:
        """The peer's hand-over to us, if it is for the current epoch: one left
        from an earlier epoch is history, not a licence to promote."""
        h = crec.handoff
        if h is not None and h.to == self.me and h.frm == self.peer and h.epoch == crec.epoch:
            return h
        return None


def main_loop(cluster: Cluster, ipc: str, state_dir: Path) -> int:
    import signal

    agent = Agent(cluster, ipc, state_dir)

    def stop(*_: object) -> None:
        agent.stop_event.set()
        agent.wake.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.say(
        f"Agent for {ipc} (cluster {cluster.name}) starting: monitor every {agent.t.interval:g} s, "
        f"session {agent.t.session:g} s, self-fence after {agent.t.self_fence_after:g} s without "
        f"ZooKeeper; a takeover needs a proof that the old primary is down (fence device: "
        f"{'yes' if agent.fencer.has_device(agent.peer) else 'none'} for {agent.peer})."
    )
    agent.run()
    return 1 if agent.refused else 0


__all__ = ["Agent", "Timing", "main_loop"]
