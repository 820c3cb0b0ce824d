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
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from failover import api, desk_page, failsafe, fencing, zkstore
from failover import executor as exe
from failover.agent.continuous import ContinuousFencing
from failover.agent.drain import DrainActs
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
from failover.agent.tenure import Tenure
from failover.inventory import Cluster
from failover.moves import ClusterView, CycleMove, Next, RequestView, leader_move, next_move
from failover.notify import notifier
from failover.records import ClusterRecord, Handoff, HistoryEntry, MemberRecord
from failover.rules import (
    Action,
    Decision,
    Role,
    Topology,
)

log = logging.getLogger("failover.agent")


class Agent(
    Leadership,
    Publishing,
    Observing,
    PrimaryActs,
    StandbyActs,
    SwitchoverActs,
    DrainActs,
    TakeOverActs,
    ContinuousFencing,
):
    def __init__(
        self,
        cluster: Cluster,
        ipc: str,
        state_dir: Path,
        out: TextIO | None = None,
        clusters: Sequence[Cluster] = (),
    ) -> None:
        """clusters: every cluster of the inventory, for the status page's
        index (/desks); an agent knows only its own cluster's state."""
        self.c = cluster
        self.desks = desk_page.links(clusters or (cluster,), cluster.name)
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
        self.tenure = Tenure()  # our hold on the role: one lock, four threads
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
        self._peer_auth = failsafe.authorization(peer.auth)  # bearer token, or basic when it has only that
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
        notifier.start(self.c, self.me, self.store, self.state_dir, self.stop_event)  # docs/monitoring.md
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
        """Snapshot -> move (failover/moves.py) -> act -> publish."""
        self.mem.way_out = ""  # set again by whichever path finds itself stuck
        own_raw = self._observe_own()
        self.mem.raw = own_raw
        try:
            zk = self._read_zk()
        except zkstore.ZkUnavailable as e:
            return self._without_zk(own_raw, str(e))
        self.tenure.contact()
        view = self._records_view(zk)
        first = leader_move(view)
        if first is Next.BOOTSTRAP:
            return self._bootstrap(zk, own_raw)
        crec = zk["cluster"].data
        roles = dict(crec.roles)
        if first is Next.RECLAIM:
            sentence = self._reclaim(zk, crec, own_raw)
            if sentence:
                return sentence
            view = replace(view, reclaim_failed=True, leader="none")
        holds = view.leader == "mine"
        self.tenure.confirm(holds)
        my_role = Role.PRIMARY if holds else roles.get(self.me, Role.STANDBY)
        if my_role is Role.PRIMARY and not holds:
            my_role = Role.STANDBY  # the record lags: act as standby until it says otherwise
        self._observe_update(own_raw, my_role, crec)
        if not holds:
            self.tenure.stop_taking()  # whatever we were taking, we do not hold P/leader
        if my_role is Role.PRIMARY:
            self._observe_calls(zk)  # active calls: published, and a drain's measure
        else:
            self.calls_seen, self.calls_read_at = None, 0.0
        released = self._sweep_busy_out(zk, my_role is Role.PRIMARY)
        move = next_move(self._full_view(view, zk, crec, roles))
        return released + self._act(move, zk, crec, roles)

    def _records_view(self, zk: dict) -> ClusterView:
        """The records part of the snapshot: who holds `leader`, the record's
        primary and our role in it, the operator's active request."""
        leader = zk["leader"]
        crec: ClusterRecord | None = zk["cluster"].data if zk["cluster"] is not None else None
        req = _active(zk.get("request"))
        return ClusterView(
            me=self.me,
            peer=self.peer,
            has_record=crec is not None,
            leader="none" if leader is None else "mine" if leader[1] == self.session_id else "other",
            recorded_primary=crec.primary if crec else None,
            my_role=crec.roles.get(self.me, Role.STANDBY) if crec else Role.STANDBY,
            request=None
            if req is None
            else RequestView(req.data.id, req.data.kind, req.data.to, req.data.confirm_dead),
        )

    def _full_view(self, view: ClusterView, zk: dict, crec: ClusterRecord, roles: dict[str, Role]) -> ClusterView:
        """The parts of the snapshot that need our observation of this cycle."""
        req = _active(zk.get("request"))
        if view.leader == "mine" and view.recorded_primary == self.me:
            if req is not None and req.data.kind == "switchover":
                return replace(view, switchover_verdict=self._switchover_due(req, self._observation(zk, crec, roles)))
            return view
        if view.leader != "none":
            return view
        handoff = self._handoff_to_me(crec)
        return replace(
            view,
            hand_back=self._hand_back_why(zk, crec, roles, handoff),
            leaderless=self._leaderless_view(zk, crec, roles, handoff),
        )

    def _act(self, move: CycleMove, zk: dict, crec: ClusterRecord, roles: dict[str, Role]) -> str:
        req = _active(zk.get("request"))
        if move.refuse and req is not None:
            self._finish_request(req.data.id, "refused", move.refuse)
        n = move.next
        if n is Next.FINISH_TAKEOVER:
            to_me = req is not None and req.data.kind == "failover" and req.data.to == self.me
            manual = _manual_meta(req.data) if to_me and req is not None else None
            return self._take_over(zk, crec, self._handoff_to_me(crec), manual=manual)
        if n in (Next.SWITCH_OVER, Next.CONFIRMED_DEAD, Next.SERVE):
            return self._as_primary(zk, crec, roles, n, req)
        if n is Next.MANUAL_FAILOVER and req is not None:
            return self._manual_failover(zk, crec, req)
        if n is Next.HAND_BACK:
            handoff = self._handoff_to_me(crec)
            assert handoff is not None, "a hand-back needs the switchover's hand-over"
            return self._hand_back(zk, crec, handoff, move.sentence)
        if n is Next.HOLD:
            self.mem.way_out = move.way_out
            self._publish(zk, crec, Decision(Action.HOLD, move.sentence), move.sentence)
            return move.sentence
        if n is Next.TAKE_OVER:
            return self._take_over(zk, crec, self._handoff_to_me(crec))
        return self._as_standby(zk, crec, roles)

    def _reclaim(self, zk: dict, crec: ClusterRecord, own_raw: Any) -> str:
        """The recorded primary without P/leader (our session expired, or a
        restart): take it back; nothing is started or stopped for that. ''
        when another session was quicker."""
        if not self.store.take_leader(self._leader_data(crec.epoch)):  # type: ignore[union-attr]
            return ""
        self._observe_update(own_raw, Role.PRIMARY, crec)
        self._publish(zk, crec, Decision(Action.NONE, ""))
        return (
            f"{self.me} took P/leader back as the recorded primary (epoch {crec.epoch}); no service started or stopped."
        )

    def _handoff_to_me(self, crec: ClusterRecord) -> Handoff | None:
        """The peer's hand-over to us, if it is for the current epoch: one left
        from an earlier epoch is history, not a licence to promote."""
        h = crec.handoff
        if h is not None and h.to == self.me and h.frm == self.peer and h.epoch == crec.epoch:
            return h
        return None


def main_loop(cluster: Cluster, ipc: str, state_dir: Path, clusters: Sequence[Cluster] = ()) -> int:
    import signal

    agent = Agent(cluster, ipc, state_dir, clusters=clusters)

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
