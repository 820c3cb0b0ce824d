"""A deterministic world for the real agent code: a virtual clock, a
simulated ZooKeeper (sessions, expiry, ephemeral owners, versions), simulated
IPCs behind a fake SSH executor, and fence devices. The agents are the real
`failover.agent.Agent`, driven cycle by cycle through their ports (store,
executor, fencer), so an interleaving that needs a freeze or a restart at one
exact moment is one line of a test.

What it does not model: kazoo's connection states and watches (the agent polls
and re-reads every cycle anyway), SSH timings, probes (a service's health is
its state).
"""

from __future__ import annotations

import functools
import importlib
import io
import itertools
import json
import pkgutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failover import agent as agent_mod
from failover import executor as exe
from failover import failsafe, fencing, zkstore
from failover.agent import drain
from failover.inventory import Calls, Cluster
from failover.inventory import load as load_inventory
from failover.layouts import APP_SERVICES
from failover.platforms import State
from failover.records import BusyOut, ClusterRecord, HistoryEntry, LeaderRecord, MemberRecord, Pause, Request
from failover.rules import Stage, Step


def _copy(x: Any) -> Any:
    """What a znode holds is bytes: a write and a read are a JSON round trip."""
    return json.loads(json.dumps(x))


@functools.lru_cache(maxsize=4)
def _cluster(inventory: Path) -> Cluster:
    return load_inventory(inventory).clusters[0]  # frozen: shared by every world


# Every module of the agent that reads the clock runs on the virtual one.
AGENT_MODULES = tuple(  # every module of the agent package, a new one included
    importlib.import_module(f"failover.agent.{m.name}") for m in pkgutil.iter_modules(agent_mod.__path__)
)
# The simulated IPCs' call commands (World(calls=True)): what `calls` says in
# an inventory, answered by FakeExecutor.run_shell from the host's state.
SIM_CALLS = Calls(active="calls-active", busy_out="calls-busy", release="calls-open", timeout=5.0)
MAX_CALLS = 6  # a serving IPC's calls grow to this; a busied-out one's end one per tick
EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example-windows.yaml"
RUNNING, STOPPED = State.RUNNING, State.STOPPED
BOOT_GRACE = 2.5  # s: continuous fencing's period (1 s) plus a cycle, for a service a reboot started


class Clock:
    """Virtual time: monotonic() and time() advance only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.on_advance: Callable[[], None] | None = None  # the world's tick (sessions expire)

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_800_000_000.0 + self.now

    def sleep(self, dt: float) -> None:
        self.advance(max(0.0, dt))

    def advance(self, dt: float) -> None:
        self.now += dt
        if self.on_advance is not None:
            self.on_advance()


# ----------------------------------------------------------------------------- ZooKeeper
@dataclass
class Znode:
    data: Any
    version: int = 0
    owner: int = 0  # ephemeral owner session (0: persistent)


class ZkServer:
    """The ensemble: znodes by path, sessions that expire."""

    def __init__(self, clock: Clock, session_timeout: float) -> None:
        self.clock = clock
        self.timeout = session_timeout
        self.nodes: dict[str, Znode] = {}
        self.sessions: dict[int, float] = {}  # session id -> last heard (monotonic)
        self._ids = itertools.count(0x1000)
        self.history: list[dict] = []

    def new_session(self) -> int:
        sid = next(self._ids)
        self.sessions[sid] = self.clock.monotonic()
        return sid

    def expire(self, sid: int) -> None:
        self.sessions.pop(sid, None)
        for path in [p for p, n in self.nodes.items() if n.owner == sid]:
            del self.nodes[path]

    def tick(self) -> None:
        """Expire sessions not heard from within the session timeout."""
        now = self.clock.monotonic()
        for sid, heard in list(self.sessions.items()):
            if now - heard > self.timeout:
                self.expire(sid)


class FakeStore:
    """zkstore.Store's interface on a ZkServer, for one client session."""

    def __init__(self, server: ZkServer, sid: int, path: str = "/failover/c") -> None:
        self.server = server
        self.sid = sid
        self.path = path
        self.up = True  # False: this client is cut off (partition, ensemble down)
        self.client: FakeZkClient | None = None
        self.before_cluster_write: Callable[[], None] | None = None  # interleave a write here (once)

    # paths (as zkstore.Store names them)
    @property
    def leader_path(self) -> str:
        return f"{self.path}/leader"

    @property
    def cluster_path(self) -> str:
        return f"{self.path}/cluster"

    def member_path(self, ipc: str) -> str:
        return f"{self.path}/members/{ipc}"

    def _ok(self) -> None:
        if not self.up:
            raise zkstore.ZkUnavailable("not connected (simulated)")
        if self.sid not in self.server.sessions:
            # Expired while we were away: kazoo reports LOST, then connects
            # with a new session (the ephemerals of the old one are gone).
            self.sid = self.server.new_session()
            if self.client is not None:
                self.client.client_id = (self.sid, b"password")
        self.server.sessions[self.sid] = self.server.clock.monotonic()

    def connected(self) -> bool:
        if not self.up:
            return False
        self._ok()  # an expired session is replaced at once, as kazoo does after LOST
        return True

    def ensure_layout(self) -> None:
        self._ok()

    def _get(self, path: str) -> Znode | None:
        self._ok()
        return self.server.nodes.get(path)

    # Znodes hold the records' JSON (what the real ones hold as bytes); the
    # typed records are made and taken at this interface, as zkstore.Store does.
    def leader(self, timeout: float = 0) -> tuple[LeaderRecord, int] | None:
        n = self._get(self.leader_path)
        return None if n is None else (LeaderRecord.from_json(_copy(n.data)), n.owner)

    def take_leader(self, rec: LeaderRecord, owner: int | None = None) -> bool:
        n = self._get(self.leader_path)
        if n is not None:
            return owner is not None and n.owner == owner
        self.server.nodes[self.leader_path] = Znode(_copy(rec.to_json()), 0, self.sid)
        return True

    def release_leader(self, session_id: int) -> None:
        n = self._get(self.leader_path)
        if n is not None and n.owner == session_id:
            del self.server.nodes[self.leader_path]

    def cluster(self) -> zkstore.Versioned[ClusterRecord] | None:
        n = self._get(self.cluster_path)
        return None if n is None else zkstore.Versioned(ClusterRecord.from_json(_copy(n.data)), n.version)

    def create_cluster(self, rec: ClusterRecord) -> bool:
        if self._get(self.cluster_path) is not None:
            return False
        self.server.nodes[self.cluster_path] = Znode(_copy(rec.to_json()))
        return True

    def update_cluster(self, expected_version: int, rec: ClusterRecord) -> int:
        hook, self.before_cluster_write = self.before_cluster_write, None
        if hook:
            hook()
        n = self._get(self.cluster_path)
        if n is None or n.version != expected_version:
            raise zkstore.Conflict("the cluster record changed meanwhile")
        n.data, n.version = _copy(rec.to_json()), n.version + 1
        return n.version

    def publish_member(self, ipc: str, rec: MemberRecord) -> None:
        n = self._get(self.member_path(ipc))
        if n is None:
            self.server.nodes[self.member_path(ipc)] = Znode(_copy(rec.to_json()), 0, self.sid)
        else:
            n.data = _copy(rec.to_json())

    def member_owner(self, ipc: str) -> tuple[MemberRecord, int] | None:
        n = self._get(self.member_path(ipc))
        return None if n is None else (MemberRecord.from_json(_copy(n.data)), n.owner)

    def member(self, ipc: str) -> MemberRecord | None:
        n = self._get(self.member_path(ipc))
        return None if n is None else MemberRecord.from_json(_copy(n.data))

    def add_history(self, entry: HistoryEntry) -> None:
        self._ok()
        self.server.history.append({**entry.to_json(), "ts": self.server.clock.time()})

    def history_count(self) -> int:
        self._ok()
        return len(self.server.history)

    def history(self, limit: int = 50) -> list[HistoryEntry]:
        self._ok()
        return [HistoryEntry.from_json(e) for e in _copy(self.server.history[-limit:])]

    def request(self) -> zkstore.Versioned[Request] | None:
        n = self._get(f"{self.path}/switchover")
        return None if n is None else zkstore.Versioned(Request.from_json(_copy(n.data)), n.version)

    def update_request(self, version: int, req: Request) -> int:
        n = self._get(f"{self.path}/switchover")
        if n is None or n.version != version:
            raise zkstore.Conflict("the request changed")
        n.data, n.version = _copy(req.to_json()), n.version + 1
        return n.version

    def pause(self) -> Pause | None:
        n = self._get(f"{self.path}/pause")
        return None if n is None else Pause.from_json(_copy(n.data))

    # A drained switchover's busy-out marker (the example inventory has no
    # `calls`, so the simulated agents only ever read it).
    def busy_out(self, ipc: str) -> BusyOut | None:
        n = self._get(f"{self.path}/busy-out-{ipc}")
        return None if n is None else BusyOut.from_json(_copy(n.data))

    def set_busy_out(self, ipc: str, request: str | None) -> None:
        self._ok()
        rec = BusyOut(ipc, request, self.server.clock.time())
        self.server.nodes[f"{self.path}/busy-out-{ipc}"] = Znode(rec.to_json())

    def clear_busy_out(self, ipc: str) -> None:
        self._ok()
        self.server.nodes.pop(f"{self.path}/busy-out-{ipc}", None)


class FakeZkClient:
    """The bits of a KazooClient the agent touches outside the Store."""

    def __init__(self, sid: int) -> None:
        self.client_id = (sid, b"password")
        self.state = "CONNECTED"

    def DataWatch(self, *_: Any, **__: Any) -> None:
        return None


# ----------------------------------------------------------------------------- IPCs
@dataclass
class Host:
    """One simulated IPC."""

    name: str
    services: dict[str, State]
    ssh: str = "up"  # up | refused (power cut, sshd down) | hung (handshake stalls) | hostkey (changed key)
    powered: bool = True
    stop_fails: set[str] = field(default_factory=set)
    start_fails: set[str] = field(default_factory=set)
    autostart: set[str] = field(default_factory=lambda: {"driver"})  # started at power-on (as in the lab)
    booted_at: float | None = None  # when it last powered on (what the boot started is nobody's decision)
    booted: set[str] = field(default_factory=set)  # what that boot started
    calls: int = 0  # calls in progress (World(calls=True))
    busied: bool = False  # busied out: no new calls
    cut: int = 0  # calls cut by CTI/IVR stopping

    def tick_calls(self) -> None:
        """One tick of simulated calls: new ones arrive unless busied out,
        one ends when busied out; CTI or IVR down cuts them all."""
        if not ({"cti", "ivr"} <= self.running()):
            self.cut += self.calls
            self.calls = 0
        elif self.busied:
            self.calls = max(0, self.calls - 1)
        else:
            self.calls = min(MAX_CALLS, self.calls + 1)

    def running(self) -> set[str]:
        return {s for s, v in self.services.items() if v is RUNNING} if self.powered else set()

    def power_off(self) -> None:
        self.powered = False
        self.services = {s: STOPPED for s in self.services}

    def power_on(self, now: float | None = None) -> None:
        self.powered = True
        self.ssh = "up"  # a reboot starts sshd afresh
        self.booted_at, self.booted = now, set(self.autostart)
        self.services = {s: (RUNNING if s in self.autostart else STOPPED) for s in self.services}


class Hosts:
    """The SSH side of the world: what an Executor would do, instantly."""

    def __init__(self, hosts: dict[str, Host]) -> None:
        self.hosts = hosts
        self.log: list[str] = []

    def tcp_answers(self, host: str) -> bool:
        """A TCP connect to the SSH port: refused or powered off does not answer;
        a hung sshd or one with a changed key does (the kernel accepts)."""
        h = self.hosts[host]
        return h.powered and h.ssh != "refused"

    def _reach(self, host: str, action: str) -> Host:
        h = self.hosts[host]
        mode = "refused" if not h.powered else h.ssh
        if mode == "refused":
            raise exe.Unreachable(host, action, f"cannot connect to {host}:22: [Errno 111] Connection refused")
        if mode == "hung":
            raise exe.Unreachable(host, action, f"SSH handshake with {host}:22 failed: timed out")
        if mode == "hostkey":
            raise exe.HostKeyChanged(host, action, "the host key changed")
        return h


class SyncThreading:
    """`threading` for the agent's calls reader in the simulator: the thread's
    work runs at once, in order (the schedule stays deterministic)."""

    class Thread:
        def __init__(self, target: Callable[..., None], args: tuple = (), **_: Any) -> None:
            self.target, self.args = target, args

        def start(self) -> None:
            self.target(*self.args)

        def is_alive(self) -> bool:
            return False


class FakeExecutor:
    """executor.Executor's interface, for the agent and its Fencer."""

    def __init__(self, world: Hosts) -> None:
        self.world = world
        # (host, op, service) -> called right before that command runs: an
        # interleaving at one exact moment of a plan.
        self.before: dict[tuple[str, str, str], Callable[[], None]] = {}

    def close(self) -> None:
        pass

    def status_all(self, host: str) -> exe.HostStatus:
        h = self.world._reach(host, "status")
        return exe.HostStatus(host, dict(h.services), "up", 0.0, {s: v is RUNNING for s, v in h.services.items()})

    status_fast = status_all
    observe = status_all

    def stop(self, host: str, service: str) -> str:
        return self._control(host, "stop", service)

    def start(self, host: str, service: str) -> str:
        return self._control(host, "start", service)

    def _control(self, host: str, op: str, service: str) -> str:
        if hook := self.before.pop((host, op, service), None):
            hook()
        h = self.world._reach(host, f"{op} {service}")
        if service in (h.stop_fails if op == "stop" else h.start_fails):
            raise exe.CommandFailed(host, f"{op} {service}", f"simulated {op} failure")
        h.services[service] = STOPPED if op == "stop" else RUNNING
        self.world.log.append(f"{host} {op} {service}")
        return f"{service} {'stopped' if op == 'stop' else 'running'}"

    def run_shell(
        self, host: str, command: str, timeout: float, action: str = "", check: bool = False, grace: float = 10.0
    ) -> exe.Result:
        """The simulated IPCs' call commands (SIM_CALLS)."""
        h = self.world._reach(host, action or command)
        if command == SIM_CALLS.active:
            out = f"{h.calls}\n"
        elif command in (SIM_CALLS.busy_out, SIM_CALLS.release):
            h.busied = command == SIM_CALLS.busy_out
            self.world.log.append(f"{host} {command}")
            out = ""
        else:
            raise exe.CommandFailed(host, action, f"the simulator has no command {command!r}")
        return exe.Result(host, command, 0, out, "", 0.0)

    def probe(self, host: str, service: str) -> bool:
        """An application probe, from the agent's host: no SSH needed."""
        h = self.world.hosts[host]
        return h.powered and h.services.get(service) is RUNNING

    def fenced(self, host: str) -> tuple[bool, str]:
        try:
            st = self.status_all(host)
        except exe.ExecError as e:
            return False, f"cannot verify: {e}"
        up = [s for s in sorted(APP_SERVICES) if st.states.get(s) is not STOPPED]
        return (False, f"{', '.join(up)} not stopped on {host}") if up else (True, f"verified stopped on {host}")

    def execute(
        self,
        plan: tuple[Stage, ...],
        progress: Any = None,
        fence_check: Callable[[str], tuple[bool, str]] | None = None,
        guard: Callable[[Step], str] | None = None,
    ) -> exe.PlanReport:
        results = [exe.StepResult(s, "not run") for st in plan for s in st.steps]
        k = 0
        for st in plan:
            if st.requires_fenced:
                ok, why = (fence_check or self.fenced)(st.requires_fenced)
                if not ok:
                    return exe.PlanReport(results, f"{st.requires_fenced} not verified fenced: {why}")
            for step in st.steps:
                r = results[k]
                k += 1
                refused = guard(step) if guard else ""
                if refused:
                    r.status, r.detail = "failed", f"refused: {refused}"
                    return exe.PlanReport(results, "")
                try:
                    if step.op == "restart":
                        self.stop(step.host, step.service)
                        refused = guard(step) if guard else ""
                        if refused:
                            raise exe.CommandFailed(step.host, "restart", f"start refused: {refused}")
                    r.detail = (self.stop if step.op == "stop" else self.start)(step.host, step.service)
                    r.status = "done"
                except exe.ExecError as e:
                    r.status, r.detail = "failed", e.detail
                    return exe.PlanReport(results, "")
        return exe.PlanReport(results, "")


class FakeDevice:
    """A fence device (fence-agents' contract) for one simulated IPC."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.broken = False
        self.calls: list[str] = []

    def power_off(self) -> fencing.Attempt:
        self.calls.append("off")
        if self.broken:
            return fencing.Attempt(None, "its fence device failed to power it off (exit 1: no answer from the BMC)")
        self.host.power_off()
        return fencing.Attempt(fencing.Proof("fence-device", self.host.name, "powered off by its fence device", ""), "")


# ----------------------------------------------------------------------------- the world
LAYOUT = {
    "primary": {"driver", "kcxp", "kcbp", "cti", "ivr"},
    "standby": {"driver", "kcxp", "kcbp"},
}


class World:
    """Two IPCs, their agents (real code), one ZooKeeper, one clock."""

    def __init__(self, tmp: Path, devices: bool = True, inventory: Path = EXAMPLE, calls: bool = False) -> None:
        self.tmp = tmp
        self.clock = Clock()
        self.cluster: Cluster = _cluster(inventory)
        if calls:  # the IPCs carry calls, and a switchover can drain them
            self.cluster = self.cluster.model_copy(update={"calls": SIM_CALLS})
        self.a, self.b = (i.name for i in self.cluster.ipcs)
        self.zk = ZkServer(self.clock, self.cluster.timings.session_timeout)
        services = set(self.cluster.services)
        self.hosts = Hosts(
            {
                self.a: Host(self.a, {s: RUNNING if s in LAYOUT["primary"] else STOPPED for s in services}),
                self.b: Host(self.b, {s: RUNNING if s in LAYOUT["standby"] else STOPPED for s in services}),
            }
        )
        self.devices = {n: FakeDevice(h) for n, h in self.hosts.hosts.items()} if devices else {}
        self.executor = FakeExecutor(self.hosts)  # one SSH world, shared by both agents
        self.agents: dict[str, agent_mod.Agent] = {}
        self.violations: list[str] = []
        self.cut_agents: set[str] = set()  # agents whose lease traffic is cut
        self.clock.on_advance = self.tick
        self.crashed: dict[str, int | None] = {}  # crashed agents' sessions (alive until they expire)
        self.frozen: dict[str, float] = {}  # agent -> frozen until (virtual monotonic)
        self._seen_epochs: set[int] = set()

    # ----- agents ------------------------------------------------------------
    def start_agent(self, ipc: str, sid: int | None = None) -> agent_mod.Agent:
        """A (re)started agent: a fresh process with the same state dir; `sid`
        resumes a session (what a restart within the session timeout does)."""
        ag = agent_mod.Agent(self.cluster, ipc, self.tmp / "state", out=io.StringIO())
        ag.state_dir.mkdir(parents=True, exist_ok=True)
        sid = sid if sid is not None and sid in self.zk.sessions else self.zk.new_session()
        fake = self.executor
        ag.ex = fake  # type: ignore[assignment]
        ag.fencer.ex = fake  # type: ignore[assignment]
        ag.fencer.devices = dict(self.devices)  # type: ignore[arg-type]
        ag.fencer.tcp_answers = self.hosts.tcp_answers
        store = FakeStore(self.zk, sid)
        store.client = FakeZkClient(sid)
        ag.store = store  # type: ignore[assignment]
        ag.zk = store.client  # type: ignore[assignment]
        ag.grantor = failsafe.Grantor(ag.t.lease, ag.t.hold_after, path=ag.grantor.path)
        ag._peer_url = f"sim://{ag.peer}"  # the failsafe lease goes to the peer agent's object
        ag.mem.started = self.clock.monotonic()
        ag.tenure.contact()
        self.agents[ipc] = ag
        return ag

    def store(self, ipc: str) -> FakeStore:
        return self.agents[ipc].store  # type: ignore[return-value]

    def cycle(self, ipc: str) -> str:
        """One cycle of an agent, then the invariants."""
        ag = self.agents[ipc]
        try:
            sentence = ag.cycle()
        except agent_mod.DuplicateAgent:
            del self.agents[ipc]  # it exits; its supervisor starts it again later
            self.crashed[ipc] = None
            return "refused to run"
        except zkstore.ZkUnavailable as e:  # Agent.run survives anything, so does the world
            sentence = f"Cycle failed (ZkUnavailable: {e}); retrying next cycle."
        ag.say(sentence)
        self.check()
        return sentence

    def run(self, seconds: float, order: tuple[str, ...] | None = None, frozen: tuple[str, ...] = ()) -> None:
        """Both agents cycle every monitor interval for `seconds` of virtual time."""
        step = self.cluster.timings.monitor_interval
        for ipc in frozen:  # SIGSTOPped: not even kazoo's heartbeats
            self.frozen[ipc] = float("inf")
        for _ in range(int(seconds / step)):
            for ipc in order or (self.a, self.b):
                if ipc in self.agents and ipc not in frozen:
                    self.cycle(ipc)
                    self.agents[ipc]._keep_peer_fenced()  # its own thread in production, every second
                    self.check()
            self.clock.advance(step)

    def tick(self) -> None:
        """kazoo's heartbeats: a live agent's session stays alive whatever its
        main loop does; a crashed or frozen one, or one cut off, is not heard
        from and its session expires."""
        for ipc, ag in self.agents.items():
            st: FakeStore = ag.store  # type: ignore[assignment]
            if self.frozen.get(ipc, 0) <= self.clock.now and st.up and st.sid in self.zk.sessions:
                self.zk.sessions[st.sid] = self.clock.now
        self.zk.tick()
        if self.cluster.calls is not None:
            for h in self.hosts.hosts.values():
                h.tick_calls()

    def watchdog(self, ipc: str) -> None:
        self.agents[ipc]._watchdog_tick()
        self.check()

    # ----- observations -------------------------------------------------------
    def record(self) -> dict:
        n = self.zk.nodes.get(f"{self.store_path}/cluster")
        return _copy(n.data) if n else {}

    @property
    def store_path(self) -> str:
        return "/failover/c"

    def leader_owner(self) -> int | None:
        n = self.zk.nodes.get(f"{self.store_path}/leader")
        return n.owner if n else None

    def serving(self, ipc: str) -> bool:
        return {"cti", "ivr"} <= self.hosts.hosts[ipc].running()

    def member(self, ipc: str) -> dict:
        n = self.zk.nodes.get(f"{self.store_path}/members/{ipc}")
        return _copy(n.data) if n else {}

    def request(self, data: dict) -> None:
        self.zk.nodes[f"{self.store_path}/switchover"] = Znode({"state": "pending", "id": "r1", **data})

    def request_state(self) -> dict:
        n = self.zk.nodes.get(f"{self.store_path}/switchover")
        return _copy(n.data) if n else {}

    def check(self) -> None:
        """Invariants at every step: never CTI/IVR on two IPCs; a promotion
        (a new epoch) only by the holder of `leader`, with a proof."""
        # What a reboot started (Windows services set to Automatic) is nobody's
        # decision: continuous fencing must stop it within BOOT_GRACE, or (no
        # fence device, and neither SSH nor a stop works there) the primary's
        # agent must say so: nothing else can stop it.
        both = [
            s
            for s in ("cti", "ivr")
            if all(s in h.running() for h in self.hosts.hosts.values())
            and not any(
                h.booted_at is not None
                and s in h.booted
                and (self.clock.now - h.booted_at <= BOOT_GRACE or self._alerted_stray(h.name))
                for h in self.hosts.hosts.values()
            )
        ]
        if both:
            self.violations.append(f"t={self.clock.now:.1f}: {', '.join(both)} running on both IPCs")
        n = self.zk.nodes.get(f"{self.store_path}/cluster")
        rec = n.data if n else {}
        epoch = rec.get("epoch")
        if epoch and epoch not in self._seen_epochs:
            self._seen_epochs.add(epoch)
            primary = rec.get("primary")
            holder = self.agents.get(primary)
            if epoch > 1 and (holder is None or self.leader_owner() != holder.session_id):
                self.violations.append(f"t={self.clock.now:.1f}: epoch {epoch} ({primary}) without holding leader")
            took = [e for e in self.zk.history if e.get("epoch") == epoch and e.get("to") == primary]
            if epoch > 1 and took and not took[-1].get("proof"):
                self.violations.append(f"t={self.clock.now:.1f}: epoch {epoch} promoted without a proof")

    def _alerted_stray(self, host: str) -> bool:
        return any(f"run on {host}" in ag.mem.stray for ag in self.agents.values())

    def assert_safe(self) -> None:
        assert not self.violations, self.violations

    def _ask(self, url: str, body: dict, token: str | None, timeout: float) -> dict:
        """The failsafe lease between agents (HTTP in production)."""
        peer = self.agents.get(url.removeprefix("sim://"))
        if peer is None or url.removeprefix("sim://") in self.cut_agents or body.get("from") in self.cut_agents:
            raise OSError("connection refused (simulated)")
        return peer._grant(body)

    @contextmanager
    def patched(self, monkeypatch: Any) -> Iterator[World]:
        """Virtual time for the agent's modules, the lease through objects."""
        for mod in (*AGENT_MODULES, failsafe, fencing):
            if hasattr(mod, "time"):
                monkeypatch.setattr(mod, "time", self.clock)
        monkeypatch.setattr(failsafe, "ask", self._ask, raising=True)
        monkeypatch.setattr(drain, "threading", SyncThreading)
        yield self


def bootstrap(w: World) -> None:
    """Both agents up, the preferred primary bootstraps, steady state."""
    w.start_agent(w.a)
    w.start_agent(w.b)
    w.run(3.0)
    assert w.record().get("primary") == w.a, w.record()
    for ag in w.agents.values():
        ag.session_id = ag.store.sid  # type: ignore[union-attr]
