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

import base64
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kazoo.client import KazooState

from failover import api, failsafe, fencing, monitor, zkstore
from failover import executor as exe
from failover import status as status_view
from failover.inventory import Cluster
from failover.layouts import APP_SERVICES, LABELS, stop_order
from failover.platforms import State
from failover.rules import (
    Action,
    Decision,
    IpcObs,
    Observation,
    Policy,
    Role,
    Stage,
    Step,
    Topology,
    converge_steps,
    decide,
    faults_of,
)

log = logging.getLogger("failover.agent")
WATCHDOG = 0.2  # the self-fencing watchdog's period (s)
NO_PROOF_RETRY = 5.0  # after a takeover found no proof, try again this much later (s)
PEER_CHECK_EVERY = 1.0  # continuous fencing: how often the primary checks the other IPC (s)
LEASE_PATH_EVERY = 10.0  # how often a working failsafe lease path to the peer's agent is tested (s)


@dataclass
class LeasePath:
    """Whether the failsafe lease can reach the peer's agent (tested at start
    and every LEASE_PATH_EVERY seconds, without asking for a lease)."""

    ok: bool | None = None  # None: not tested yet
    why: str = "not tested yet"

    def alert(self) -> str:
        if self.ok is not False:
            return ""
        return (
            f"failsafe path broken: {self.why}; during a ZooKeeper outage the primary will stop CTI/IVR "
            "after its self-fence deadline"
        )


@dataclass(frozen=True)
class Timing:
    """The agent's timing, derived from the inventory (docs/agent.md)."""

    interval: float  # monitor interval I
    session: float  # ZooKeeper session timeout S
    self_fence_after: float  # D: no ZooKeeper contact for this long -> stop CTI/IVR here
    stop_budget: float  # B: the longest CTI + IVR stop may take, a kill after an overrun included
    watchdog_loop: float  # W: the watchdog's worst-case loop (its period, a failing read, a lease request)
    bootstrap_grace: float  # the non-preferred IPC waits this long before bootstrapping
    lease: float  # L: a failsafe lease granted by the standby (docs/resilience.md)
    hold_after: float  # after a promise ends the standby still waits W + margin

    @classmethod
    def of(cls, c: Cluster) -> Timing:
        s, i = c.timings.session_timeout, c.timings.monitor_interval
        d = s / 2
        lease = d
        # A stop that overruns its timeout is killed (taskkill /F, kill -9):
        # allow one more stop timeout for that, per service.
        b = sum(2 * c.services[x].stop_timeout for x in APP_SERVICES if x in c.services)
        # One watchdog loop at its worst: the wait, a leader read that fails
        # at its timeout, a lease request that fails at its timeout.
        w = WATCHDOG + min(1.0, d / 4) + min(0.5, lease / 4)
        # After a promise ends the standby waits W + 0.5 s more: the primary's
        # lease (measured from when it sent the request) has surely ended on
        # its own clock. No more: a takeover needs a proof anyway, and the
        # proof (stopped over SSH, powered off, an operator's word) does not
        # depend on the old primary having stopped CTI/IVR by itself in time.
        return cls(i, s, d, b, w, 2 * s, lease, w + 0.5)


@dataclass
class Memory:
    """What the agent remembers between cycles (all in this process)."""

    obs: IpcObs | None = None
    first_failure: dict[str, float] = field(default_factory=dict)  # service -> wall time
    last_zk_ok: float = field(default_factory=time.monotonic)
    leader: bool = False  # confirmed owner of P/leader at the last successful read
    self_fenced: bool = False
    takeover_started: float | None = None  # monotonic: holding P/leader for a takeover not done yet
    restarts: dict[str, list[float]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    sentence: str = ""
    fence_note: str = ""  # what the watchdog did
    last_logged: tuple[str, float] = ("", 0.0)
    disarmed: set[str] = field(default_factory=set)  # stopped by us (self-fencing): not faults
    takeover_wall: float | None = None  # wall time we took P/leader for a takeover
    wake_at: float | None = None  # monotonic: wake the loop early (a scheduled switchover, a promise ends)
    way_out: str = ""  # no automatic action will happen: why, and the command that gets out
    no_proof: tuple[float, str, str] = (0.0, "", "")  # (retry after, sentence, way out) of a takeover without proof


class DuplicateAgent(Exception):
    """A second agent for the same IPC: it must not act."""


class Agent:
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
        self._member_rec: dict | None = None  # our last published member record
        self._history: list[dict] = []
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

    def primary_now(self) -> bool:
        """Primary right now (for /primary): holds P/leader per the last read
        with recent ZooKeeper contact, connected, not self-fenced — or, during a
        ZooKeeper outage, serving under a valid failsafe lease."""
        if self.mem.self_fenced:
            return False
        fresh = time.monotonic() - self.mem.last_zk_ok < self.t.self_fence_after / 2
        if self.mem.leader and fresh and self.store and self.store.connected():
            return True
        return self._believes_primary() and self.lease.valid()

    def _publish_api(self) -> None:
        if self.http is None:
            return
        try:
            self.http.publish(api.render(self._api_state()))
        except Exception:  # monitoring must never break the control loop
            log.exception("cannot render the health endpoint")

    def _api_state(self) -> dict:
        zk = self._zk_snapshot
        crec = zk.get("cluster").data if zk.get("cluster") else None
        req = zk.get("request")
        members = {self.me: self._member_rec, self.peer: zk.get("peer")}
        view = status_view.view(
            self.c, crec, zk.get("leader"), members, zk.get("pause"), req.data if req else None, self._history
        )
        o = self.mem.obs
        healthy = False
        if o is not None and o.reachable:
            expected = self.topo.expected(self.me, o.role, o.board_down)
            ok = {s for s, v in o.services.items() if v.ok}
            running = {s for s, v in o.services.items() if v.state.value != "STOPPED"}
            healthy = expected <= ok and not (running - expected)
        changes = [
            h for h in self._history if h.get("kind") in ("failover", "takeover", "switchover", "manual-failover")
        ]
        connected = bool(self.store and self.store.connected())
        return {
            "cluster": self.c.name,
            "ipc": self.me,
            "role": o.role.value if o else "unknown",
            "leader": self.primary_now(),
            "epoch": (crec or {}).get("epoch"),
            "zookeeper": {"connected": connected, "last_contact_s": round(time.monotonic() - self.mem.last_zk_ok, 2)},
            "healthy": healthy,
            "eligible": bool((self._member_rec or {}).get("eligible")),
            "paused": zk.get("pause"),
            "sentence": self.mem.sentence,
            "alerts": (self._member_rec or {}).get("alerts", []),
            "self_fenced": self.mem.self_fenced,
            "failsafe_path": {"ok": self.lease_path.ok, "why": self.lease_path.why},
            "view": view,
            "history": self._history,
            "failovers_total": (crec or {}).get("counts", {}),
            "last_failover": changes[-1] if changes else None,
        }

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
            self.mem.leader = False  # stop acting as primary at once
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
            self._zk_snapshot = {**self._zk_snapshot, "peer": rec}
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
                self.mem.last_zk_ok = time.monotonic()
                if leader is None or leader[1] != self.session_id:
                    self.mem.leader = False
            except zkstore.ZkUnavailable:
                pass
        stale = time.monotonic() - self.mem.last_zk_ok
        if self._believes_primary() and not self.mem.self_fenced and stale >= 2 * WATCHDOG:
            self._renew_lease()  # failsafe: the standby confirms it cannot promote
        if (
            self._believes_primary()
            and not self.mem.self_fenced
            and stale >= self.t.self_fence_after
            and not self.lease.valid()
        ):
            with self._fence_lock:
                if not self.mem.self_fenced:
                    self.mem.leader = False
                    self.mem.fence_note = self._self_fence()
                    self.wake.set()
                    self._publish_api()

    def _lease_path_loop(self) -> None:
        """Test the lease path now and every LEASE_PATH_EVERY seconds: a broken
        one must be an alert before a ZooKeeper outage needs it."""
        while True:
            if self._peer_url is None:
                self.lease_path = LeasePath(False, f"{self.peer}'s agent has no HTTP endpoint (http.enabled: false)")
            else:
                ok, why = failsafe.probe_path(self._peer_url, self.me, self.peer, self._peer_token, timeout=1.0)
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
        fresh = time.monotonic() - self.mem.last_zk_ok < self.t.self_fence_after / 2
        connected = bool(self.store and self.store.connected() and fresh)
        taking = self.mem.leader or self.mem.takeover_started is not None
        leader = self._zk_snapshot.get("leader")
        alive = bool(leader and leader[0].get("ipc") == req.get("from"))
        answer = self.grantor.ask(str(req.get("from", "?")), connected, alive, taking)
        log.info("failsafe request from %s: %s", req.get("from"), answer["why"])
        return {**answer, "ipc": self.me}

    def _renew_lease(self) -> None:
        """As a primary without ZooKeeper: ask the standby for a lease."""
        if self._peer_url is None:
            self.lease.last_answer = "the standby's agent has no HTTP endpoint (http.enabled: false)"
            return
        rec = self._zk_snapshot.get("cluster")
        epoch = int((rec.data if rec else {}).get("epoch", 0))
        self.lease.renew(
            self._peer_url, self.me, epoch, self._peer_token, timeout=min(0.5, self.t.lease / 4), grantor=self.peer
        )

    def _believes_primary(self) -> bool:
        return self.mem.obs is not None and self.mem.obs.role is Role.PRIMARY

    def guard(self, step: Step) -> str:
        """Refuse a CTI/IVR start unless we are a confirmed, fresh primary."""
        if step.service not in APP_SERVICES or step.op == "stop" or step.host != self.me:
            return ""
        if not self.mem.leader:
            return "this agent is not a confirmed primary"
        if self.mem.self_fenced:
            return "self-fenced"
        age = time.monotonic() - self.mem.last_zk_ok
        if age >= self.t.self_fence_after / 2:
            return f"no ZooKeeper contact for {age:.1f} s"
        return ""

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
        roles = {k: Role(v) for k, v in crec.get("roles", {}).items()}
        leader = zk["leader"]
        holds = leader is not None and leader[1] == self.session_id
        if leader is None and crec.get("primary") == self.me and roles.get(self.me) is Role.PRIMARY:
            # The recorded primary without P/leader (our session expired, or a
            # restart): take it back; nothing is started or stopped for that.
            holds = self.store.take_leader(self._leader_data(crec["epoch"]))  # type: ignore[union-attr]
            if holds:
                self._observe_update(own_raw, Role.PRIMARY, crec)
                self._publish(zk, crec, Decision(Action.NONE, ""))
                return (
                    f"{self.me} took P/leader back as the recorded primary (epoch {crec['epoch']}); "
                    "no service started or stopped."
                )
        self.mem.leader = holds
        my_role = Role.PRIMARY if holds else roles.get(self.me, Role.STANDBY)
        if my_role is Role.PRIMARY and not holds:
            my_role = Role.STANDBY  # the record lags: act as standby until it says otherwise
        self._observe_update(own_raw, my_role, crec)
        if holds and crec.get("primary") != self.me:
            # We hold P/leader but the record still names the old primary: a
            # takeover not finished (no proof yet, or a restart in the middle
            # of one: our session was resumed). Carry on with it.
            handoff = self._handoff_to_me(crec)
            req = _active(zk.get("request"))
            manual = None
            if req is not None and req.data.get("kind") == "failover" and req.data.get("to") == self.me:
                manual = _manual_meta(req.data)
            return self._take_over(zk, crec, handoff, manual=manual)
        if holds:
            return self._as_primary(zk, crec, roles)
        self.mem.takeover_started = None  # whatever we were taking, we do not hold P/leader
        if leader is None:
            return self._leaderless(zk, crec, roles)
        return self._as_standby(zk, crec, roles)

    def _handoff_to_me(self, crec: dict) -> dict | None:
        """The peer's hand-over to us, if it is for the current epoch: one left
        from an earlier epoch is history, not a licence to promote."""
        h = crec.get("handoff") or {}
        if h.get("to") == self.me and h.get("from") == self.peer and h.get("epoch") == crec.get("epoch"):
            return h
        return None

    # ----- observation -------------------------------------------------------
    def _observe_own(self) -> monitor.Raw:
        try:
            st = self.ex.observe(self.me)
            return monitor.Raw(True, st.states, st.healthy, st.line)
        except exe.ExecError as e:
            log.warning("cannot observe %s: %s", self.me, e)
            return monitor.Raw(False)

    def _observe_update(self, raw: monitor.Raw, role: Role, crec: dict) -> IpcObs:
        board_down = self.me in crec.get("board_down", [])
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
                other = got[0].get("agent") or {}
                raise DuplicateAgent(
                    f"another agent for {self.me} is running (host {other.get('host', '?')}, pid "
                    f"{other.get('pid', '?')}, its ZooKeeper session still alive): this one refuses to run"
                )
            time.sleep(0.2)

    def _observation(self, zk: dict, crec: dict, roles: dict[str, Role]) -> Observation:
        assert self.mem.obs is not None
        peer_role = roles.get(self.peer, Role.STANDBY)
        if crec.get("primary") == self.peer and peer_role is Role.PRIMARY and not self.mem.leader:
            peer_role = Role.PRIMARY
        peer = monitor.from_record((zk["peer"] or {}).get("obs"), self.topo, peer_role)
        pause = zk["pause"]
        pol = self.c.policy
        window = time.time() - pol.failover_window
        recent = [t for t in crec.get("failovers", []) if t >= window]
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
            crec.get("primary"),
            int(crec.get("epoch", 0)),
            policy,
        )

    # ----- publishing ----------------------------------------------------------
    def _leader_data(self, epoch: int) -> dict:
        return {"ipc": self.me, "epoch": epoch, "since": time.time(), "host": self.host, "pid": os.getpid()}

    def _publish(self, zk: dict, crec: dict, d: Decision, sentence: str = "") -> None:
        assert self.store is not None and self.mem.obs is not None
        o = self.mem.obs
        own_faults = [str(f) for f in d.faults if f.ipc == self.me]
        rec = {
            "ipc": self.me,
            "cluster": self.c.name,
            "role": o.role.value,
            "leader": self.mem.leader,
            "epoch": crec.get("epoch", 0),
            "eligible": o.role is Role.STANDBY and not own_faults and o.reachable,
            "obs": monitor.to_record(o),
            "sentence": sentence or self.mem.sentence,
            "decision": d.action.value,
            "alerts": list(dict.fromkeys([*d.alerts, *filter(None, [self.lease_path.alert(), self.mem.way_out])])),
            "way_out": self.mem.way_out,
            "failsafe_path": {"ok": self.lease_path.ok, "why": self.lease_path.why},
            "faults": own_faults,
            "paused": zk.get("pause") is not None,
            "self_fenced": self.mem.self_fenced,
            "updated": time.time(),
            "agent": {"host": self.host, "pid": os.getpid()},
        }
        self._member_rec = rec
        try:
            self.store.publish_member(self.me, rec)
        except zkstore.ZkUnavailable as e:
            log.warning("cannot publish member record: %s", e)

    def _cas(self, zk: dict, change: dict) -> dict | None:
        """Apply `change` to P/cluster with a conditional write; None if it lost."""
        assert self.store is not None
        v = zk["cluster"]
        new = {**v.data, **change}
        try:
            self.store.update_cluster(v.version, new)
        except zkstore.Conflict:
            return None
        return new

    # ----- without ZooKeeper ---------------------------------------------------
    def _without_zk(self, raw: monitor.Raw, why: str) -> str:
        was_primary = self.mem.obs is not None and self.mem.obs.role is Role.PRIMARY
        self.mem.leader = False
        gone = time.monotonic() - self.mem.last_zk_ok
        if not was_primary:
            return f"ZooKeeper unreachable for {gone:.1f} s ({why}): {self.me} holds as it is, no action."
        if gone < self.t.self_fence_after:
            return (
                f"ZooKeeper unreachable for {gone:.1f} s ({why}): not acting as primary; CTI and IVR keep "
                f"running until {self.t.self_fence_after:g} s without ZooKeeper."
            )
        if self.lease.valid() and not self.mem.self_fenced:
            left = self.lease.valid_until - time.monotonic()
            return (
                f"ZooKeeper unreachable for {gone:.1f} s ({why}): failsafe: {self.peer} confirms it cannot promote "
                f"({self.lease.last_answer}); CTI and IVR keep running (lease {left:.1f} s more)."
            )
        with self._fence_lock:  # normally the watchdog has done it already
            if not self.mem.self_fenced and not self.mem.fence_note:
                self.mem.fence_note = self._self_fence()
            elif raw.reachable and any(
                raw.states.get(s) not in (State.STOPPED, State.UNKNOWN, None) for s in APP_SERVICES
            ):
                # A start that was in flight landed after the self-fence: again.
                self.mem.fence_note = self._self_fence() + " again (a start landed after the first self-fence)"
        return (
            f"ZooKeeper unreachable for {gone:.1f} s (limit {self.t.self_fence_after:g} s): {self.mem.fence_note}; "
            "the standby may take over once our session has expired."
        )

    def _self_fence(self) -> str:
        stopped, failed = [], []
        for s in stop_order(APP_SERVICES & self.topo.services, self.topo.after):
            try:
                self.ex.stop(self.me, s)
                stopped.append(LABELS[s])
            except exe.ExecError as e:
                failed.append(f"{LABELS[s]} ({e.detail})")
        self.mem.self_fenced = not failed
        self.mem.disarmed |= APP_SERVICES & self.topo.services
        if failed:
            return f"FAILED to stop {', '.join(failed)} on {self.me} (ALERT: cannot self-fence)"
        return f"stopped {' and '.join(stopped)} on {self.me} (self-fencing)"

    def _after_plan(self, rep: exe.PlanReport | None, crec: dict) -> None:
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

    def _refresh_obs(self, crec: dict) -> None:
        """Observe our IPC again after acting on it, so that the record we
        publish next (and every endpoint built from it) shows what runs now, not
        what ran before the plan: right after a promotion CTI and IVR run."""
        assert self.mem.obs is not None
        raw = self._observe_own()
        if raw.reachable:
            self._observe_update(raw, self.mem.obs.role, crec)

    # ----- bootstrap -------------------------------------------------------------
    def _bootstrap(self, zk: dict, raw: monitor.Raw) -> str:
        assert self.store is not None
        preferred = self.topo.home_primary == self.me
        waited = time.monotonic() - self.mem.started
        if not preferred and (zk["peer"] is not None or waited < self.t.bootstrap_grace):
            self._observe_update(raw, Role.STANDBY, {})
            return (
                f"No cluster record yet: waiting for the preferred primary {self.peer} to bootstrap "
                f"({waited:.0f}/{self.t.bootstrap_grace:g} s)."
            )
        obs = self._observe_update(raw, Role.PRIMARY, {})
        if not obs.reachable:
            return f"No cluster record yet, and {self.me} is unreachable over SSH: not bootstrapping."
        if not self.store.take_leader(self._leader_data(1)):
            return "No cluster record yet; another agent is bootstrapping."
        self.mem.leader = True
        roles = {self.me: Role.PRIMARY.value, self.peer: Role.STANDBY.value}
        if not self.store.create_cluster(
            {
                "epoch": 1,
                "primary": self.me,
                "roles": roles,
                "board_down": [],
                "failovers": [],
                "handoff": None,
            }
        ):
            return "No cluster record yet; another agent created it first."
        self.store.add_history(
            {
                "kind": "bootstrap",
                "from": None,
                "to": self.me,
                "epoch": 1,
                "why": "first start of the cluster",
                "who": f"agent {self.me}",
                "outcome": "done",
            }
        )
        return f"Bootstrapped the cluster: {self.me} is primary, epoch 1."

    # ----- primary ------------------------------------------------------------------
    def _as_primary(self, zk: dict, crec: dict, roles: dict[str, Role]) -> str:
        epoch = crec["epoch"]
        resumed = ""
        if self.mem.self_fenced or self.mem.fence_note:
            self.mem.self_fenced = False
            self.mem.fence_note = ""
            # Our session may have expired meanwhile: what matters is that
            # nobody took the role (same epoch, P/leader ours again).
            resumed = f"ZooKeeper is back and nobody took the role (epoch {epoch}): "
        obs = self._observation(zk, crec, roles)
        req = _active(zk.get("request"))
        if req is not None and req.data.get("kind") == "switchover":
            verdict = self._switchover_due(req, obs)
            if verdict == "go":
                return resumed + self._switch_over(zk, crec, req, obs)
            if verdict:
                self._finish_request(req.data.get("id"), "refused", verdict)
        if req is not None and req.data.get("kind") == "failover" and req.data.get("to") == self.peer:
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
            self._cas(zk, {"board_down": sorted({*crec.get("board_down", []), self.me})})
            self.store.add_history(
                {
                    "kind": "board-down",
                    "from": self.me,
                    "to": self.me,
                    "epoch": epoch,  # type: ignore[union-attr]
                    "why": d.reason,
                    "who": f"agent {self.me}",
                    "outcome": "done",
                }
            )
        result = "done" if rep.ok else f"FAILED: {rep.summary()}"
        sentence = f"{resumed}{self.me} is primary (epoch {epoch}): {d.reason} Result: {result}."
        self._publish(zk, crec, d, sentence)
        return sentence

    def _confirmed_dead(self, zk: dict, crec: dict, req: zkstore.Versioned) -> str:
        """`failover failover --to PEER --confirm-dead ME` while this agent
        holds the role: a person says this IPC is powered off (its agent is
        alive on its own host). Stop what can still be stopped, then hand over
        on the operator's word; without it, the primary's agent is alive and a
        switchover is the way."""
        r = req.data
        if r.get("confirm_dead") != self.me:
            why = f"{self.me}'s agent is alive and holds the role: use `failover switchover`"
            self._finish_request(r.get("id"), "refused", why)
            return f"Manual failover to {self.peer} refused: {why}."
        meta = _manual_meta(r)
        self._request_progress(r.get("id"), f"{self.me}: handing the role over ({meta['reason']})", "running")
        stops = tuple(Step(self.me, "stop", s) for s in stop_order(set(self.topo.services), self.topo.after))
        d = Decision(Action.FAILOVER, meta["reason"], plan=(Stage(f"stop all services on {self.me}", stops),))
        return self._hand_over(zk, crec, d, manual=meta)

    def _peer_fence_loop(self) -> None:
        """Continuous fencing in a thread of its own: an unreachable peer must
        not slow the primary's cycle by an SSH connect timeout."""
        while not self.stop_event.wait(PEER_CHECK_EVERY):
            try:
                note = self._keep_peer_fenced()
            except Exception:  # never let this thread die
                log.exception("continuous fencing check failed")
                continue
            if note:
                self.say(note)

    def _keep_peer_fenced(self) -> str:
        """Continuous fencing: while we hold the role, CTI and IVR must not
        run on the peer (Windows auto-start after a reboot, a start that landed
        late). Stopped if found, only while our own leadership is fresh (a
        stale primary must not stop a legitimately promoted one)."""
        crec = self._zk_snapshot.get("cluster")
        epoch = int((crec.data if crec else {}).get("epoch", 0))
        if not self.mem.leader or not crec or crec.data.get("primary") != self.me:
            return ""
        try:
            st = self.ex.status_fast(self.peer)
        except exe.ExecError:
            return ""  # down or cut off: nothing runs there that we could stop now
        stray = sorted(
            s for s in APP_SERVICES & self.topo.services if st.states.get(s) not in (State.STOPPED, State.UNKNOWN)
        )
        if not stray or self.guard(Step(self.me, "start", "cti")):
            return ""
        done = []
        for s in stray:
            try:
                self.ex.stop(self.peer, s)
                done.append(LABELS[s])
            except exe.ExecError as e:
                done.append(f"{LABELS[s]} FAILED ({e.detail})")
        what = " and ".join(done)
        assert self.store is not None
        self.store.add_history(
            {
                "kind": "stray-stopped",
                "from": self.peer,
                "to": self.me,
                "epoch": epoch,
                "why": f"{what} found running on {self.peer} while {self.me} is primary",
                "who": f"agent {self.me}",
                "outcome": "failed" if "FAILED" in what else "done",
            }
        )
        return f"Continuous fencing: {what} found running on {self.peer} while {self.me} is primary, stopped."

    def _hand_over(self, zk: dict, crec: dict, d: Decision, manual: dict | None = None) -> str:
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
        rep = self.ex.execute(app, guard=self.guard) if app else None
        self._after_plan(rep, crec)
        if rep is None or rep.ok:
            proof = fencing.Proof("verified", self.me, f"CTI and IVR stopped on {self.me} by its agent", self.me)
        else:
            attempt = self.fencer.power_off(self.me) if self.fencer.has_device(self.me) else None
            proof = attempt.proof if attempt else None
            if proof is None and manual:
                proof = fencing.Proof(
                    "operator", self.me, f"{self.me} confirmed powered off by {manual['who']}", manual["who"]
                )
            if proof is None:
                bad = [r for r in rep.results if r.status in ("failed", "unknown")]
                alive = not all(r.detail.startswith("cannot connect") for r in bad)  # see fencing.answered
                why = "; ".join(r.line() for r in bad) + (f"; {attempt.why}" if attempt else "")
                tried = fencing.Attempt(None, why, alive=alive)
                return self._cannot_hand_over(zk, crec, d, tried)
            rest = ()  # powered off (or confirmed so): nothing more to stop there
        handoff = {
            "from": self.me,
            "to": self.peer,
            "reason": (manual or {}).get("reason") or d.reason,
            "fault_seen_at": seen,
            "decided_at": decided,
            "stopped_at": time.time(),
            "epoch": crec["epoch"],
            "kind": (manual or {}).get("kind", "failover"),
            "proof": proof.record(),
            **{k: v for k, v in (manual or {}).items() if k in ("who", "request")},
        }
        crec = self._write_handoff(zk, crec, handoff, Role.FENCED)
        if crec is None:
            return self._cannot_hand_over(zk, zk["cluster"].data, d, None)
        done = self.ex.execute(rest) if rest else None  # after the hand-over: the standby is starting meanwhile
        self._after_plan(done, crec)
        rest_text = "" if done is None or done.ok else f" Stopping the rest FAILED ({done.summary()}): ALERT."
        sentence = (
            f"{d.reason.rstrip('.')}. Done on {self.me}: {proof.detail}; the role handed to {self.peer} "
            f"(epoch {crec['epoch']}); {self.me} is now fenced until `failover rejoin`.{rest_text}"
        )
        self._publish(zk, crec, d, sentence)
        return sentence

    def _write_handoff(self, zk: dict, crec: dict, handoff: dict, my_role: Role) -> dict | None:
        """The hand-over, with a conditional write retried on a fresh read
        (the standby may have written its own rule-3 change meanwhile); None
        when the standby cannot take the role any more. Then P/leader goes."""
        assert self.store is not None and self.mem.obs is not None
        for _ in range(5):
            current = self.store.cluster()
            if current is None or current.data.get("epoch") != handoff["epoch"]:
                return None
            if current.data.get("roles", {}).get(self.peer) != Role.STANDBY.value:
                return None
            roles = {**current.data["roles"], self.me: my_role.value, self.peer: Role.STANDBY.value}
            new = {**current.data, "roles": roles, "handoff": handoff}
            try:
                self.store.update_cluster(current.version, new)
            except zkstore.Conflict:
                continue
            zk["cluster"] = zkstore.Versioned(new, current.version + 1)
            self.store.release_leader(self.session_id or 0)
            self.mem.leader = False
            self.mem.obs = IpcObs(my_role, self.mem.obs.services, board_down=False)
            self._refresh_obs(new)
            return new
        return None

    def _cannot_hand_over(self, zk: dict, crec: dict, d: Decision, tried: fencing.Attempt | None) -> str:
        """Hold the role and say what a person can do."""
        if tried is None:
            self.mem.way_out = (
                f"No automatic action: CTI/IVR are stopped on {self.me} but {self.peer} can no longer take the role "
                f"(role {crec.get('roles', {}).get(self.peer)}). Repair {self.peer} and run `failover rejoin "
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
            if cur is None or cur.data.get("id") != req_id:
                return
            if cur.data.get("state") in zkstore.FINAL_STATES:
                return  # finished (or cancelled by the operator): its outcome is not ours to rewrite
            data = dict(cur.data)
            if line:
                data["progress"] = [*data.get("progress", []), line]
            if state:
                data["state"] = state
            if result is not None:
                data["result"] = result
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

    def _switchover_due(self, req: zkstore.Versioned, obs: Observation) -> str:
        """'go', '' (not yet: scheduled), or why the request is refused now."""
        r = req.data
        if r.get("to") != self.peer:
            return f"{r.get('to')} is not the standby of primary {self.me}"
        if r.get("at") and time.time() < float(r["at"]):
            self.mem.wake_at = time.monotonic() + max(0.0, float(r["at"]) - time.time())
            return ""
        if obs.policy.paused and not r.get("allow_paused"):
            return f"paused ({obs.policy.pause_reason}); give --to to switch over while paused"
        peer = obs.ipcs[self.peer]
        if peer.role is not Role.STANDBY or faults_of(obs, self.peer) or not peer.reachable:
            return f"{self.peer} cannot take the role now (role {peer.role.value}, " + (
                "unreachable)"
                if not peer.reachable
                else f"faults: {', '.join(map(str, faults_of(obs, self.peer))) or 'none'})"
            )
        return "go"

    def _switch_over(self, zk: dict, crec: dict, req: zkstore.Versioned, obs: Observation) -> str:
        """A planned switchover, on the primary's side: converge this IPC to the
        standby layout (CTI and IVR stopped, KCXP/KCBP running: it stays
        eligible), then hand the role over to the standby."""
        assert self.store is not None and self.mem.obs is not None
        r = req.data
        rid = r.get("id")
        epoch = crec["epoch"]
        decided = time.time()
        self._request_progress(rid, f"{self.me}: switchover to {self.peer} started (epoch {epoch})", "running")
        # Rule 1's layout still holds here until a rejoin: a board that was down
        # stays stopped (starting it now would only be undone by converge).
        target = self.topo.expected(self.me, Role.STANDBY, self.me in crec.get("board_down", []))
        steps = converge_steps(self.topo, self.me, self.mem.obs, target)
        rep = self.ex.execute((Stage(f"demote {self.me}", steps),), progress=self._progress_to(rid)) if steps else None
        self._after_plan(rep, crec)
        if rep is not None and not rep.ok:
            why = (
                f"demoting {self.me} failed: {rep.summary()}; {self.me} stays primary and converges back to its layout"
            )
            self._finish_request(rid, "failed", why, primary=self.me, epoch=epoch)
            return f"Switchover to {self.peer} FAILED: {why}."
        handoff = {
            "from": self.me,
            "to": self.peer,
            "kind": "switchover",
            "who": r.get("operator", "?"),
            "reason": f"switchover requested by {r.get('operator', '?')}: {r.get('reason') or 'no reason given'}",
            "request": rid,
            "fault_seen_at": float(r.get("requested_at", decided)),
            "decided_at": decided,
            "stopped_at": time.time(),
            "epoch": epoch,
            "proof": fencing.Proof(
                "verified", self.me, f"CTI and IVR stopped on {self.me} by its agent", self.me
            ).record(),
        }
        if self._write_handoff(zk, crec, handoff, Role.STANDBY) is None:
            why = f"{self.peer} can no longer take the role; {self.me} converges back to the primary layout"
            self._finish_request(rid, "failed", why, primary=self.me, epoch=epoch)
            return f"Switchover to {self.peer} FAILED: {why}."
        self._request_progress(rid, f"{self.me}: CTI and IVR stopped, role handed to {self.peer}")
        return (
            f"Switchover to {self.peer} requested by {r.get('operator', '?')}: {self.me} demoted to standby "
            f"and the role handed over (epoch {epoch})."
        )

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

    def _hand_back_why(self, zk: dict, crec: dict, roles: dict[str, Role], handoff: dict | None) -> str:
        """A switchover handed to us that we must not finish: we cannot serve,
        or the operator cancelled it meanwhile ('' = go on)."""
        if handoff is None or handoff.get("kind") != "switchover":
            return ""
        req = zk.get("request")
        if req is not None and req.data.get("id") == handoff.get("request") and req.data.get("state") == "cancelled":
            return f"the switchover was {(req.data.get('result') or {}).get('why') or 'cancelled'}"
        if self.mem.obs is None or not self.mem.obs.reachable:
            return f"{self.me} is unreachable over SSH"
        own = faults_of(self._observation(zk, crec, roles), self.me)
        return f"{self.me} cannot serve ({' and '.join(map(str, own))})" if own else ""

    def _hand_back(self, zk: dict, crec: dict, handoff: dict, why: str) -> str:
        """Give a switchover's role back to the old primary (its CTI/IVR were
        stopped for the switchover; ours never started): it takes it back."""
        assert self.store is not None
        rid = handoff.get("request")
        back = {
            "from": self.me,
            "to": self.peer,
            "kind": "switch-back",
            "who": f"agent {self.me}",
            "reason": f"switchover to {self.me} not done: {why}",
            "decided_at": time.time(),
            "stopped_at": time.time(),
            "epoch": crec["epoch"],
            "proof": fencing.Proof(
                "verified", self.me, f"{self.me} is a standby: CTI/IVR not started", self.me
            ).record(),
        }
        if self._cas(zk, {"handoff": back}) is None:
            return "Switchover: the cluster record changed meanwhile; retrying next cycle."
        if rid:
            self._finish_request(rid, "failed", f"{why}; the role goes back to {self.peer}", primary=self.peer)
        return f"Switchover to {self.me} not done ({why}): the role goes back to {self.peer} (epoch {crec['epoch']})."

    def _take_over(self, zk: dict, crec: dict, handoff: dict | None, manual: dict | None = None) -> str:
        """Take the primary role: P/leader, a proof that the old primary's CTI
        and IVR are not running, epoch + 1, promotion. `handoff`: the old
        primary handed over (failover or switchover) in this epoch; `manual`:
        an operator's `failover failover --to` this IPC."""
        assert self.store is not None
        epoch = crec["epoch"]
        meta = handoff or manual or {}
        rid = meta.get("request")
        retry_at, said, way = self.mem.no_proof
        if time.monotonic() < retry_at and not manual and not self.mem.leader:
            # No proof a moment ago: do not hold `leader` again at once (the
            # recorded primary's agent may come back and take it; an
            # operator's request is tried at once).
            self.mem.way_out = way
            self._publish(zk, crec, Decision(Action.HOLD, said, alerts=(way,)), said)
            return said
        refused = self._claim_role(epoch, handoff is not None)
        if refused:
            return refused
        attempt = self._prove_peer(handoff, (manual or {}).get("confirmed_by", ""))
        if attempt.proof is None:
            # No proof: give P/leader back (the recorded primary's agent may
            # retake it) and say what a person can do. Nothing was started.
            self.store.release_leader(self.session_id or 0)
            self.mem.leader = False
            self.mem.takeover_started = None
            self.mem.way_out = fencing.way_out(self.peer, self.me, attempt, self.fencer.has_device(self.peer))
            if rid:
                self._finish_request(rid, "failed", f"no proof that {self.peer} is down: {attempt.why}")
            sentence = f"Not taking the role from {self.peer}: {attempt.why}; {self.me} not promoted, ALERT."
            self.mem.no_proof = (time.monotonic() + NO_PROOF_RETRY, sentence, self.mem.way_out)
            self._publish(zk, crec, Decision(Action.HOLD, sentence, alerts=(self.mem.way_out,)), sentence)
            return sentence
        return self._promote(zk, crec, meta, attempt.proof)

    def _claim_role(self, epoch: int, handed_over: bool) -> str:
        """Hold P/leader before anything else ('' = held). A failsafe promise
        to the old primary is honoured by every path, manual ones included:
        a hand-over ends it (the primary gave the role up itself)."""
        assert self.store is not None
        wait = 0.0 if handed_over else self.grantor.holds_back()
        if wait > 0:
            self.mem.wake_at = time.monotonic() + wait
            return (
                f"No primary holds the role (epoch {epoch}), but {self.me} promised {self.grantor.promised_to} a "
                f"failsafe lease: not taking over for {wait:.1f} s more."
            )
        if self.mem.takeover_started is None or not self.mem.leader:
            # Our own session may already own it (an agent restarted in the
            # middle of a takeover resumes its session): that is ours.
            if not self.store.take_leader(self._leader_data(epoch + 1), owner=self.session_id):
                self.mem.takeover_started = None
                return f"No primary held the role; another agent took it first (epoch {epoch})."
            self.mem.takeover_started = time.monotonic()
            self.mem.takeover_wall = time.time()
        self.mem.leader = True
        return ""

    def _prove_peer(self, handoff: dict | None, confirmed_by: str) -> fencing.Attempt:
        """The proof that the old primary's CTI/IVR are not running. After a
        hand-over we verify it ourselves when we can; when we cannot reach it,
        the old primary's agent's own proof stands (it stopped them, or powered
        its IPC off, before giving the role up in this epoch)."""
        if handoff is None:
            return self.fencer.prove_down(self.peer, confirmed_by)
        seen = self.fencer.verify(self.peer)
        if seen.proof is not None:
            return seen
        theirs = fencing.Proof.from_record(handoff.get("proof"))
        if theirs is None and "proof" not in handoff:  # a hand-over written before proofs existed
            theirs = fencing.Proof("verified", self.peer, "its agent stopped CTI and IVR, then handed over", self.peer)
        if not seen.alive and theirs is not None:
            return fencing.Attempt(
                fencing.Proof(theirs.kind, self.peer, f"{theirs.detail} (its agent's proof; {seen.why})", theirs.by),
                "",
            )
        # It answers and CTI/IVR run there again (a late start, an auto-start):
        # stop them, or power it off, like any other old primary.
        return self.fencer.prove_down(self.peer, confirmed_by)

    def _promote(self, zk: dict, crec: dict, meta: dict, proof: fencing.Proof) -> str:
        """Epoch + 1 with a conditional write, then CTI/IVR up here."""
        assert self.store is not None and self.mem.obs is not None
        epoch = crec["epoch"]
        kind = meta.get("kind", "takeover")
        t_fenced = time.time()
        failovers = list(crec.get("failovers", []))
        if kind in ("failover", "takeover"):  # automatic ones count for flap damping
            failovers.append(t_fenced)
        old_role = Role.STANDBY if kind in ("switchover", "switch-back") else Role.FENCED
        if meta.get("request"):
            self._request_progress(meta["request"], f"{self.me}: fencing {self.peer}: {proof}")
        counts = crec.get("counts", {})
        change = {
            "epoch": epoch + 1,
            "primary": self.me,
            "handoff": None,
            "failovers": failovers[-20:],
            "roles": {**crec["roles"], self.me: Role.PRIMARY.value, self.peer: old_role.value},
            "board_down": [x for x in crec.get("board_down", []) if x != self.me],
            "counts": {**counts, kind: counts.get(kind, 0) + 1},  # monotonic, for failover_failovers_total
        }
        if self._cas(zk, change) is None:
            # Start again from P/leader next cycle: never promote on a claim
            # made before a record we did not see.
            self.store.release_leader(self.session_id or 0)
            self.mem.leader = False
            self.mem.takeover_started = None
            return "Lost the race for the cluster record while taking over; retrying next cycle."
        self.mem.takeover_started = None
        self.mem.obs = IpcObs(Role.PRIMARY, self.mem.obs.services, board_down=False)
        steps = converge_steps(self.topo, self.me, self.mem.obs, self.topo.expected(self.me, Role.PRIMARY))
        progress = self._progress_to(meta["request"]) if meta.get("request") else None
        rep = (
            self.ex.execute((Stage(f"promote {self.me}", steps),), progress=progress, guard=self.guard)
            if steps
            else None
        )
        self._after_plan(rep, {**crec, **change})
        sentence = self._record_takeover(meta, proof, epoch, t_fenced, rep)
        self._publish(zk, {**crec, **change}, Decision(Action.FAILOVER, sentence), sentence)
        return sentence

    def _record_takeover(
        self, meta: dict, proof: fencing.Proof, epoch: int, t_fenced: float, rep: exe.PlanReport | None
    ) -> str:
        """The history entry (with its proof and timings), the operator's
        request, and the sentence."""
        assert self.store is not None
        t_done = time.time()
        ok = rep is None or rep.ok
        took = self.mem.takeover_wall or t_fenced
        seen = meta.get("fault_seen_at") or took
        entry = {
            "kind": meta.get("kind", "takeover"),
            "from": self.peer,
            "to": self.me,
            "epoch": epoch + 1,
            "why": meta.get("reason") or f"{self.peer}'s agent lost its ZooKeeper session",
            "who": meta.get("who", f"agent {self.me}"),
            "fencing": str(proof),
            "proof": proof.record(),
            "outcome": "done" if ok else "failed",
            # detection: first failed check -> decision; stop: the old primary
            # stopping CTI/IVR; fencing: from the hand-over (or from taking
            # P/leader) to the proof; promotion: proof -> CTI and IVR answering.
            "detection_s": round(meta.get("decided_at", took) - seen, 3),
            "stop_s": round(meta.get("stopped_at", took) - meta.get("decided_at", took), 3),
            "fencing_s": round(t_fenced - meta.get("stopped_at", took), 3),
            "promotion_s": round(t_done - t_fenced, 3),
            "duration_s": round(t_done - seen, 3),
        }
        if not ok:
            entry["failed"] = rep.summary() if rep else ""
        self.store.add_history(entry)
        rid = meta.get("request")
        if rid and ok:
            self._finish_request(
                rid,
                "done",
                f"{self.me} is primary, epoch {epoch + 1}, in {t_done - seen:.1f} s ({proof.kind})",
                primary=self.me,
                epoch=epoch + 1,
                duration_s=round(t_done - seen, 3),
            )
        elif rid and rep is not None:
            why = f"{self.me} took the role (epoch {epoch + 1}) but promotion failed: {rep.summary()}"
            self._finish_request(rid, "failed", why, primary=self.me, epoch=epoch + 1)
        result = f"promoted in {t_done - t_fenced:.1f} s" if ok else f"promotion FAILED: {entry.get('failed')}"
        return f"Took the primary role from {self.peer} (epoch {epoch} -> {epoch + 1}): {proof}; {result}."

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


def _active(req: zkstore.Versioned | None) -> zkstore.Versioned | None:
    return req if req is not None and req.data.get("state") in ("pending", "running") else None


def _failed_starts(obs: IpcObs, rep: exe.PlanReport, n: int) -> IpcObs:
    """A start that failed is a declared fault at once (no point waiting N checks)."""
    from dataclasses import replace

    svcs = dict(obs.services)
    for r in rep.results:
        if r.step.op in ("start", "restart") and r.status in ("failed", "unknown") and r.step.service in svcs:
            svcs[r.step.service] = replace(svcs[r.step.service], failures=max(n, svcs[r.step.service].failures))
    return replace(obs, services=svcs)


def _calls_down_way_out(obs: Observation, d: Decision, me: str, peer: str) -> str:
    """A primary whose CTI/IVR are down and that will not act by itself (rule
    4 with restarts used up, paused, manual mode): say what a person can do."""
    down = [f for f in faults_of(obs, me) if f.what in APP_SERVICES]
    if not down or (d.execute and d.action is not Action.HOLD):
        return ""
    what = " and ".join(map(str, down))
    if not d.execute:
        return f"No automatic action ({d.reason}): {what} on {me}. Run `failover resume`, or act by hand."
    return (
        f"No automatic action: {what} on primary {me} and {peer} cannot take over. Start it on {me} by hand, "
        f"or repair {peer} and run `failover rejoin {peer}` (then it takes over)."
    )


def _split_app_stops(stages: Sequence[Stage]) -> tuple[tuple[Stage, ...], tuple[Stage, ...]]:
    """CTI and IVR stops first, the rest after: a hand-over waits only for
    the stops that keep a second primary out."""
    app = tuple(s for st in stages for s in st.steps if s.service in APP_SERVICES)
    rest = tuple(s for st in stages for s in st.steps if s.service not in APP_SERVICES)
    return (
        (Stage("stop CTI and IVR", app),) if app else (),
        (Stage("stop the other services", rest),) if rest else (),
    )


def _manual_meta(r: dict) -> dict:
    """An operator's `failover failover` request, as hand-over metadata."""
    who = r.get("operator", "?")
    return {
        "kind": "manual-failover",
        "who": who,
        "request": r.get("id"),
        "reason": f"manual failover by {who}: {r.get('reason') or 'no reason given'}",
        "confirm_dead": r.get("confirm_dead"),
        "confirmed_by": f"{who} ({r.get('reason') or 'no reason given'})" if r.get("confirm_dead") else "",
    }


def _own_stages(plan: Sequence[Stage], host: str) -> tuple[Stage, ...]:
    out = []
    for st in plan:
        steps = tuple(s for s in st.steps if s.host == host)
        if steps:
            out.append(Stage(st.title, steps, st.requires_fenced))
    return tuple(out)


def _pause_text(pause: dict | None) -> str:
    if not pause:
        return ""
    return f"paused by {pause.get('operator', '?')}: {pause.get('reason') or 'no reason given'}"


def _standby_text(d: Decision, me: str, role: str) -> str:
    """A non-primary agent's sentence: about its own IPC; what the decision says
    about the primary is the primary's agent's to carry out."""
    if d.action is Action.NONE:
        return d.reason
    others = [f for f in d.faults if f.ipc != me]
    if others:
        what = " and ".join(map(str, others))
        return f"its services match the {role} layout; the primary reports {what}, its agent acts."
    return f"its services match the {role} layout; the primary's agent is converging its own IPC."


def replace_alerts(d: Decision, alert: str) -> Decision:
    from dataclasses import replace

    return replace(d, alerts=(*d.alerts, alert))


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
