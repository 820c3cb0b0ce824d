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
- A standby takes over only once P/leader is gone *and* the old primary is
  fenced: it handed the role over after stopping everything; or its CTI and IVR
  are stopped (by this agent, over SSH) and verified; or, unreachable by SSH,
  it must have stopped them itself: `fence_grace` seconds after its session
  expired (see docs/agent.md for the timing argument).
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

from failover import api, failsafe, monitor, zkstore
from failover import executor as exe
from failover import status as status_view
from failover.inventory import Cluster
from failover.layouts import APP_SERVICES, LABELS, stop_order
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
    stop_budget: float  # B: the longest CTI + IVR stop may take
    fence_grace: float  # G: wait after taking P/leader before promoting without SSH proof
    bootstrap_grace: float  # the non-preferred IPC waits this long before bootstrapping
    lease: float  # L: a failsafe lease granted by the standby (docs/resilience.md)
    hold_after: float  # after a lease ends the standby still waits W + B + margin

    @classmethod
    def of(cls, c: Cluster) -> Timing:
        s, i = c.timings.session_timeout, c.timings.monitor_interval
        d = s / 2
        b = sum(c.services[x].stop_timeout for x in APP_SERVICES if x in c.services)
        # The old primary's watchdog starts stopping CTI/IVR by (last contact) +
        # D + WATCHDOG and is done by + B; its session expires no earlier than
        # (last contact) + S, and we took P/leader after that. Waiting G more
        # covers the difference, plus a 0.5 s margin (> one ZooKeeper round trip).
        g = max(0.0, d + WATCHDOG + b - s) + 0.5
        return cls(i, s, d, b, g, 2 * s, d, WATCHDOG + b + 0.5)


@dataclass
class Memory:
    """What the agent remembers between cycles (all in this process)."""

    obs: IpcObs | None = None
    first_failure: dict[str, float] = field(default_factory=dict)  # service -> wall time
    last_zk_ok: float = field(default_factory=time.monotonic)
    leader: bool = False  # confirmed owner of P/leader at the last successful read
    self_fenced: bool = False
    takeover_started: float | None = None  # monotonic, while waiting for fence_grace
    restarts: dict[str, list[float]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    sentence: str = ""
    fence_note: str = ""  # what the watchdog did
    last_logged: tuple[str, float] = ("", 0.0)
    peer_fenced_epoch: int | None = None  # we fenced the peer when taking this epoch
    disarmed: set[str] = field(default_factory=set)  # stopped by us (self-fencing): not faults
    takeover_wall: float | None = None  # wall time we took P/leader for a takeover
    wake_at: float | None = None  # monotonic: wake the loop early (fence grace ends)


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
        self.grantor = failsafe.Grantor(self.t.lease, self.t.hold_after)  # as standby
        self.lease = failsafe.Lease()  # as primary
        peer = cluster.ipc(self.peer).http
        # The peer's endpoint as the peer advertises it (never our own bind).
        self._peer_url = peer.url() if peer.enabled else None
        self._peer_token = peer.auth.secrets()[0] if peer.auth else None
        self.lease_path = LeasePath()

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
        try:
            while not self.stop_event.is_set():
                t0 = time.monotonic()
                try:
                    sentence = self.cycle()
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
            # takeover waiting for fencing. Carry on with it.
            handoff = crec.get("handoff") or {}
            to_me = handoff.get("to") == self.me and handoff.get("from") == self.peer
            req = _active(zk.get("request"))
            manual = None
            if req is not None and req.data.get("kind") == "failover" and req.data.get("to") == self.me:
                manual = {
                    "kind": "manual-failover",
                    "who": req.data.get("operator", "?"),
                    "request": req.data.get("id"),
                    "reason": f"manual failover by {req.data.get('operator', '?')}: "
                    f"{req.data.get('reason') or 'no reason given'}",
                }
            return self._take_over(zk, crec, handoff if to_me else None, manual=manual)
        if holds:
            return self._as_primary(zk, crec, roles)
        if leader is None:
            return self._leaderless(zk, crec, roles)
        self.mem.takeover_started = None
        return self._as_standby(zk, crec, roles)

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
        self.mem.disarmed = {s for s in self.mem.disarmed if not obs.services[s].ok}
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
            "alerts": [*d.alerts, *filter(None, [self.lease_path.alert()])],
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
        d = decide(obs)
        if not d.execute or d.action in (Action.NONE, Action.HOLD):
            sentence = f"{resumed}{self.me} is primary (epoch {epoch}): {d.reason}"
            self._publish(zk, crec, d, sentence)
            return sentence
        if d.action is Action.FAILOVER:
            return resumed + self._hand_over(zk, crec, d)
        mine = _own_stages(d.plan, self.me)
        if not mine:
            sentence = f"{resumed}{self.me} is primary (epoch {epoch}): {d.reason}"
            self._publish(zk, crec, d, sentence)
            return sentence
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

    def _hand_over(self, zk: dict, crec: dict, d: Decision) -> str:
        """Rule 2 on the primary's side: stop everything here, then give the role
        up with a handoff record the standby's agent acts on."""
        assert self.store is not None
        epoch = crec["epoch"]
        decided = time.time()
        seen = min(
            (self.mem.first_failure.get(f.what, decided) for f in d.faults if f.ipc == self.me),
            default=decided,
        )
        mine = _own_stages(d.plan, self.me)
        rep = self.ex.execute(mine, guard=self.guard)
        if not rep.ok:
            sentence = (
                f"{d.reason} But stopping the services on {self.me} failed ({rep.summary()}): NOT "
                "handing over, the standby will not start CTI/IVR; holding and alerting."
            )
            self._publish(zk, crec, replace_alerts(d, "stop failed on the old primary: cluster holding"), sentence)
            return sentence
        roles = {**crec["roles"], self.me: Role.FENCED.value, self.peer: Role.STANDBY.value}
        handoff = {
            "from": self.me,
            "to": self.peer,
            "reason": d.reason,
            "fault_seen_at": seen,
            "decided_at": decided,
            "stopped_at": time.time(),
            "epoch": epoch,
            "kind": "failover",
        }
        if self._cas(zk, {"roles": roles, "handoff": handoff}) is None:
            return f"{d.reason} Services stopped on {self.me}, but the cluster record changed meanwhile; retrying."
        self.store.release_leader(self.session_id or 0)
        self.mem.leader = False
        self.mem.obs = IpcObs(Role.FENCED, self.mem.obs.services, board_down=False) if self.mem.obs else None
        if self.mem.obs is not None:
            self._refresh_obs({**crec, "roles": roles})
        sentence = (
            f"{d.reason.rstrip('.')}. Done on {self.me}: all services stopped and the role handed "
            f"to {self.peer} (epoch {epoch}); {self.me} is now fenced until `failover rejoin`."
        )
        self._publish(zk, {**crec, "roles": roles}, d, sentence)
        return sentence

    # ----- standby / fenced -------------------------------------------------------
    def _as_standby(self, zk: dict, crec: dict, roles: dict[str, Role]) -> str:
        req = _active(zk.get("request"))
        if req is not None and req.data.get("kind") == "failover" and req.data.get("to") == self.me:
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
        roles = {**crec["roles"], self.me: Role.STANDBY.value, self.peer: Role.STANDBY.value}
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
        }
        if self._cas(zk, {"roles": roles, "handoff": handoff}) is None:
            return "Switchover: the cluster record changed meanwhile; retrying next cycle."
        self.store.release_leader(self.session_id or 0)
        self.mem.leader = False
        self.mem.obs = IpcObs(Role.STANDBY, self.mem.obs.services)
        self._request_progress(rid, f"{self.me}: CTI and IVR stopped, role handed to {self.peer}")
        return (
            f"Switchover to {self.peer} requested by {r.get('operator', '?')}: {self.me} demoted to standby "
            f"and the role handed over (epoch {epoch})."
        )

    def _manual_failover(self, zk: dict, crec: dict, req: zkstore.Versioned) -> str:
        """`failover failover --to ME`: the operator takes the role here for a
        dead primary, whatever the pause or mode; fencing is never skipped."""
        r = req.data
        rid = r.get("id")
        own = faults_of(self._observation(zk, crec, {k: Role(v) for k, v in crec.get("roles", {}).items()}), self.me)
        if (own or not self.mem.obs or not self.mem.obs.reachable) and not r.get("force"):
            why = f"{self.me} is not healthy ({' and '.join(map(str, own)) or 'unreachable'}); --force to insist"
            self._finish_request(rid, "refused", why)
            return f"Manual failover to {self.me} refused: {why}."
        if crec.get("roles", {}).get(self.me) == Role.FENCED.value and not r.get("force"):
            why = f"{self.me} is fenced; rejoin it first, or --force"
            self._finish_request(rid, "refused", why)
            return f"Manual failover to {self.me} refused: {why}."
        self._request_progress(
            rid, f"{self.me}: taking the role (manual failover by {r.get('operator', '?')})", "running"
        )
        handoff = {
            "kind": "manual-failover",
            "who": r.get("operator", "?"),
            "request": rid,
            "reason": f"manual failover by {r.get('operator', '?')}: {r.get('reason') or 'no reason given'}",
        }
        return self._take_over(zk, crec, None, manual=handoff)

    # ----- no leader: take over? -----------------------------------------------------
    def _leaderless(self, zk: dict, crec: dict, roles: dict[str, Role]) -> str:
        epoch = crec["epoch"]
        my_role = roles.get(self.me, Role.STANDBY)
        handoff = crec.get("handoff") or {}
        to_me = handoff.get("to") == self.me and handoff.get("from") == self.peer
        peer_agent = zk["peer"]
        obs = self._observation(zk, crec, roles)
        self._publish(zk, crec, Decision(Action.NONE, ""))
        if my_role is not Role.STANDBY:
            return f"No primary holds the role (epoch {epoch}); {self.me} is {my_role.value}: not taking over."
        req = _active(zk.get("request"))
        manual_failover = req is not None and req.data.get("kind") == "failover" and req.data.get("to") == self.me
        if manual_failover:
            return self._manual_failover(zk, crec, req)
        if obs.policy.paused and not to_me:
            return f"No primary holds the role (epoch {epoch}); paused ({obs.policy.pause_reason}): not taking over."
        if obs.policy.mode == "manual" and not to_me:
            return f"No primary holds the role (epoch {epoch}); manual mode: not taking over (use `failover failover`)."
        if not to_me and peer_agent is not None:
            # Its agent lives (new session): it will take P/leader back itself.
            return (
                f"No primary holds the role (epoch {epoch}), but {self.peer}'s agent is alive: waiting for it "
                "to take the role back."
            )
        if obs.policy.recent_failovers >= obs.policy.max_failovers and not to_me:
            return (
                f"No primary holds the role (epoch {epoch}), but {obs.policy.recent_failovers} automatic "
                f"failovers already happened in the window: holding, ALERT."
            )
        own = faults_of(obs, self.me)
        wait = self.grantor.holds_back()
        if wait > 0 and not to_me:
            self.mem.wake_at = time.monotonic() + wait
            return (
                f"No primary holds the role (epoch {epoch}), but {self.me} promised {self.grantor.promised_to} a "
                f"failsafe lease: not taking over for {wait:.1f} s more."
            )
        if own or not obs.ipcs[self.me].reachable:
            what = " and ".join(map(str, own)) or "unreachable over SSH"
            return f"No primary holds the role (epoch {epoch}), but {self.me} cannot serve ({what}): not taking over."
        return self._take_over(zk, crec, handoff if to_me else None)

    def _take_over(self, zk: dict, crec: dict, handoff: dict | None, manual: dict | None = None) -> str:
        """Take the primary role: P/leader, fencing, epoch + 1, promotion.
        `handoff`: the old primary handed over (failover or switchover);
        `manual`: an operator's `failover failover --to` this IPC."""
        assert self.store is not None
        epoch = crec["epoch"]
        t_start = time.time()
        meta = handoff or manual or {}
        rid = meta.get("request")
        if self.mem.takeover_started is None:
            if not self.store.take_leader(self._leader_data(epoch + 1)):
                return f"No primary held the role; another agent took it first (epoch {epoch})."
            # The fence grace counts from here: the old primary's session has expired.
            self.mem.takeover_started = time.monotonic()
            self.mem.takeover_wall = time.time()
        self.mem.leader = True
        fenced, how = self._fence_peer(handoff)
        if not fenced:
            if how.startswith("waiting"):
                # Keep P/leader while waiting: nobody else may take over meanwhile.
                return f"Taking the role from {self.peer} (epoch {epoch} -> {epoch + 1}): {how}."
            self.store.release_leader(self.session_id or 0)
            self.mem.leader = False
            self.mem.takeover_started = None
            if rid:
                self._finish_request(rid, "failed", f"cannot fence {self.peer}: {how}; {self.me} not promoted")
            return f"Cannot take the role from {self.peer}: {how}; not promoting {self.me}, ALERT."
        t_fenced = time.time()
        failovers = list(crec.get("failovers", []))
        if meta.get("kind", "takeover") in ("failover", "takeover"):  # automatic ones count for flap damping
            failovers.append(t_fenced)
        old_role = Role.STANDBY if meta.get("kind") == "switchover" else Role.FENCED
        if rid:
            self._request_progress(rid, f"{self.me}: fencing {self.peer}: {how}")
        change = {
            "epoch": epoch + 1,
            "primary": self.me,
            "handoff": None,
            "failovers": failovers[-20:],
            "roles": {**crec["roles"], self.me: Role.PRIMARY.value, self.peer: old_role.value},
            "board_down": [x for x in crec.get("board_down", []) if x != self.me],
            # monotonic per-reason counters (for failover_failovers_total)
            "counts": {
                **crec.get("counts", {}),
                meta.get("kind", "takeover"): crec.get("counts", {}).get(meta.get("kind", "takeover"), 0) + 1,
            },
        }
        if self._cas(zk, change) is None:
            self.store.release_leader(self.session_id or 0)
            self.mem.leader = False
            return "Lost the race for the cluster record while taking over; retrying next cycle."
        self.mem.takeover_started = None
        self.mem.peer_fenced_epoch = epoch + 1
        assert self.mem.obs is not None
        self.mem.obs = IpcObs(Role.PRIMARY, self.mem.obs.services, board_down=False)
        target = self.topo.expected(self.me, Role.PRIMARY)
        steps = converge_steps(self.topo, self.me, self.mem.obs, target)
        progress = self._progress_to(rid) if rid else None
        rep = (
            self.ex.execute((Stage(f"promote {self.me}", steps),), progress=progress, guard=self.guard)
            if steps
            else None
        )
        self._after_plan(rep, {**crec, **change})
        t_done = time.time()
        ok = rep is None or rep.ok
        hand = handoff or {}
        took = self.mem.takeover_wall or t_start
        seen = hand.get("fault_seen_at") or took
        why = meta.get("reason") or f"{self.peer}'s agent lost its ZooKeeper session"
        entry = {
            "kind": meta.get("kind", "takeover"),
            "from": self.peer,
            "to": self.me,
            "epoch": epoch + 1,
            "why": why,
            "who": meta.get("who", f"agent {self.me}"),
            "fencing": how,
            "outcome": "done" if ok else "failed",
            # detection: first failed check -> decision; stop: the old primary
            # stopping everything; fencing: from the handover (or from taking
            # P/leader) to fenced; promotion: fenced -> CTI and IVR answering.
            "detection_s": round(hand.get("decided_at", took) - seen, 3),
            "stop_s": round(hand.get("stopped_at", took) - hand.get("decided_at", took), 3),
            "fencing_s": round(t_fenced - hand.get("stopped_at", took), 3),
            "promotion_s": round(t_done - t_fenced, 3),
            "duration_s": round(t_done - seen, 3),
        }
        if not ok:
            entry["failed"] = rep.summary() if rep else ""
        self.store.add_history(entry)
        if rid:
            if ok:
                self._finish_request(
                    rid,
                    "done",
                    f"{self.me} is primary, epoch {epoch + 1}, in {t_done - seen:.1f} s",
                    primary=self.me,
                    epoch=epoch + 1,
                    duration_s=round(t_done - seen, 3),
                )
            else:
                self._finish_request(
                    rid,
                    "failed",
                    f"{self.me} took the role (epoch {epoch + 1}) but promotion failed: {rep.summary()}",
                    primary=self.me,
                    epoch=epoch + 1,
                )  # type: ignore[union-attr]
        result = f"promoted in {t_done - t_fenced:.1f} s" if ok else f"promotion FAILED: {rep.summary()}"  # type: ignore[union-attr]
        sentence = f"Took the primary role from {self.peer} (epoch {epoch} -> {epoch + 1}): {how}; {result}."
        d = Decision(Action.FAILOVER, sentence)
        self._publish(zk, {**crec, **change}, d, sentence)
        return sentence

    def _fence_peer(self, handoff: dict | None) -> tuple[bool, str]:
        """Fencing before CTI/IVR start here (docs/agent.md)."""
        if handoff is not None:
            ok, why = self.ex.fenced(self.peer)
            if ok:
                return True, f"{self.peer} handed over after stopping its services ({why})"
            if why.startswith("cannot verify"):
                return True, f"{self.peer} handed over after stopping its services (its own report; {why})"
            return False, f"{self.peer} handed over but {why}"
        # The old primary's agent is gone: stop its services ourselves, over SSH.
        try:
            self.ex.connection(self.peer)
            st = self.ex.status_all(self.peer)
        except exe.ExecError as e:
            return self._fence_by_time(f"{self.peer} unreachable over SSH ({e.detail})")
        up = {s for s, v in st.states.items() if v.value != "STOPPED"}
        steps = tuple(Step(self.peer, "stop", s) for s in stop_order(up, self.topo.after))
        rep = self.ex.execute((Stage(f"stop all services on {self.peer}", steps),)) if steps else None
        if rep is not None and not rep.ok:
            return False, f"stopping services on {self.peer} failed ({rep.summary()})"
        ok, why = self.ex.fenced(self.peer)
        return (True, f"{self.peer} fenced: {why}") if ok else (False, why)

    def _fenced(self, host: str, epoch: int) -> tuple[bool, str]:
        """A gated stage on the primary: the peer counts as fenced if we fenced
        it when taking this epoch and the record still says it is fenced."""
        if host == self.peer and self.mem.peer_fenced_epoch == epoch:
            return True, f"{host} fenced when this agent took epoch {epoch}"
        return self.ex.fenced(host)

    def _fence_by_time(self, why: str) -> tuple[bool, str]:
        now = time.monotonic()
        if self.mem.takeover_started is None:
            self.mem.takeover_started = now
        waited = now - self.mem.takeover_started
        if waited >= self.t.fence_grace:
            return True, (
                f"{why}; its agent must have stopped CTI/IVR itself: its session expired and "
                f"{waited:.1f} s more have passed (fence grace {self.t.fence_grace:g} s)"
            )
        self.mem.wake_at = self.mem.takeover_started + self.t.fence_grace
        return (
            False,
            f"waiting: {why}; promoting after a fence grace of {self.t.fence_grace:g} s ({waited:.1f} s so far)",
        )


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
        f"ZooKeeper, fence grace {agent.t.fence_grace:g} s."
    )
    agent.run()
    return 0


__all__ = ["Agent", "Timing", "main_loop"]
