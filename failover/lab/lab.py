"""The lab: a real ZooKeeper ensemble plus simulated IPCs, each behind its own
real sshd, driven exactly like real IPCs. `up` writes a ready inventory.

State lives in <root>/lab.json so `failover lab status|fault|down` work from any
process; everything the lab starts is stopped by PID (after checking /proc).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from failover.lab import netns as netns_mod
from failover.lab import observer, simctl
from failover.lab.procs import alive, ancestors, free_ports, kill_and_wait, pids_where, spawn
from failover.lab.sshd import SshdHost, keygen, known_hosts_line
from failover.lab.zk import ZkNode, ZkStartError, wait_serving
from failover.layouts import SERVICES, Layout, running_set, start_order

SIMCTL = str(Path(simctl.__file__))
PROBED = ("cti", "ivr", "kcxp", "kcbp", "kcxp-replica", "kcbp-replica")
SERVICE_FAULTS = (
    "kill",
    "hang",
    "unhang",
    "fail-start",
    "slow-start",
    "slow-stop",
    "stop-fail",
    "clear",
)
IPC_FAULTS = ("line-alarm", "line-clear", "driver-crash")
HOST_FAULTS = ("sshd-down", "sshd-up", "unreachable", "reachable", "zk-cut", "zk-heal", "restore")
ZK_NS_INDEX = 40  # namespace index (and address .50+) of the first ZooKeeper node with --netns
DEFAULT_ROOT = Path(os.environ.get("FAILOVER_LAB_DIR", "/tmp/failover-lab"))


class LabError(RuntimeError):
    pass


@dataclass
class LabIpc:
    cluster: str
    name: str
    index: int
    address: str
    ssh_port: int
    dir: str
    ports: dict[str, int]
    preferred_role: str
    channels: int
    fax_channels: int
    netns: str | None = None
    sim_pid: int | None = None
    sshd_pid: int | None = None
    http_port: int = 0

    def sshd(self, client_pubkey: Path) -> SshdHost:
        return SshdHost(
            self.name,
            self.address,
            self.ssh_port,
            Path(self.dir) / "ssh",
            client_pubkey,
            self.sshd_pid,
            self.netns,
        )

    def control(self) -> list[str]:
        return [sys.executable, "-I", SIMCTL, self.dir]


@dataclass
class Lab:
    root: Path
    zk_count: int = 3
    clusters: int = 1
    netns: bool = False
    labid: str = field(default_factory=lambda: secrets.token_hex(3))
    zk: list[ZkNode] = field(default_factory=list)
    ipcs: list[LabIpc] = field(default_factory=list)
    subnet: int | None = None
    zk_host: str = "127.0.0.1"
    started_at: float = 0.0
    up_seconds: float = 0.0

    # ----- paths ---------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def inventory_path(self) -> Path:
        return self.root / "inventory.yaml"

    @property
    def client_key(self) -> Path:
        return self.root / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def net(self) -> netns_mod.LabNet | None:
        return netns_mod.LabNet(self.labid, self.subnet) if self.subnet is not None else None

    def cluster_names(self) -> list[str]:
        return ["lab"] if self.clusters == 1 else [f"lab{i + 1}" for i in range(self.clusters)]

    def cluster_ipcs(self) -> list[list[str]]:
        return [[i.name for i in self.ipcs if i.cluster == c] for c in self.cluster_names()]

    def ipc(self, name: str) -> LabIpc:
        for i in self.ipcs:
            if i.name == name:
                return i
        raise LabError(f"no IPC named {name!r} in the lab (have: {', '.join(i.name for i in self.ipcs)})")

    # ----- up --------------------------------------------------------------------
    def up(self, layout: str = "normal", attempts: int = 2) -> None:
        """Bring the lab up; a start-up failure (e.g. a port taken meanwhile)
        is cleaned up and retried once with new ports."""
        for attempt in range(attempts):
            try:
                self._up(layout)
                return
            except (ZkStartError, LabError, RuntimeError) as e:
                if attempt + 1 == attempts or (isinstance(e, LabError) and "already set up" in str(e)):
                    raise
                self.labid = secrets.token_hex(3)

    def _up(self, layout: str = "normal") -> None:
        t0 = time.monotonic()
        if self.state_file.exists():
            raise LabError(f"a lab is already set up in {self.root}; run `failover lab down` first")
        if self.netns and not netns_mod.available():
            raise LabError("--netns needs root and `ip netns`")
        self.root.mkdir(parents=True, exist_ok=True)
        self.started_at = time.time()
        try:
            self._plan()
            self.save()  # record the plan first so `down` can clean up a failed `up`
            for n in self.zk:
                n.start()
            self.save()
            keygen(self.client_key, f"lab-client-{self.labid}")
            for ipc in self.ipcs:
                self._prepare_ipc(ipc, layout)
            self.known_hosts.write_text(
                "".join(
                    known_hosts_line(i.address, i.ssh_port, Path(i.dir) / "ssh" / "ssh_host_ed25519_key.pub")
                    for i in self.ipcs
                )
            )
            for ipc in self.ipcs:
                self._start_sim(ipc)
                sshd = ipc.sshd(self.client_key.with_suffix(".pub"))
                sshd.start()
                ipc.sshd_pid = sshd.pid
            self.save()
            for ipc in self.ipcs:
                ipc.sshd(self.client_key.with_suffix(".pub")).wait_listening()
                self._wait_sim(ipc)
            wait_serving(self.zk)
            self.write_inventory()
            self.up_seconds = time.monotonic() - t0
            self.save()
        except BaseException:
            self.down(remove=False)
            raise

    def _plan(self) -> None:
        n_ipcs = 2 * self.clusters
        if self.netns:
            self.subnet = netns_mod.pick_subnet()
            net = self.net
            assert net is not None
            net.create_bridge()
            self.zk_host = net.gateway
        ports = free_ports(3 * self.zk_count + n_ipcs * (2 + len(PROBED)), self.zk_host)
        self.zk = []
        for i in range(self.zk_count):
            c, q, e = ports.pop(), ports.pop(), ports.pop()
            host, ns = self.zk_host, None
            if self.netns:
                # Each ZooKeeper node in a namespace of its own, so that one node
                # can be partitioned for real (its outgoing peer links included).
                net = self.net
                assert net is not None
                ns = net.create_host(ZK_NS_INDEX + i)
                host = net.address(ZK_NS_INDEX + i)
            self.zk.append(ZkNode(i + 1, host, c, q, e, self.root / f"zk{i + 1}", netns=ns))
        for n in self.zk:
            n.dir.mkdir(parents=True, exist_ok=True)
            n.write_config(self.zk)
        self.ipcs = []
        for ci, cname in enumerate(self.cluster_names()):
            prefix = "" if self.clusters == 1 else f"{cname}-"
            for j, (suffix, role, ch) in enumerate((("a", "primary", 60), ("b", "standby", 30))):
                index = 2 * ci + j
                ns = address = None
                if self.netns:
                    net = self.net
                    assert net is not None
                    ns = net.create_host(index)
                    address = net.address(index)
                ipc_dir = self.root / f"{prefix}ipc-{suffix}"
                self.ipcs.append(
                    LabIpc(
                        cluster=cname,
                        name=f"{prefix}ipc-{suffix}",
                        index=index,
                        address=address or "127.0.0.1",
                        ssh_port=ports.pop(),
                        dir=str(ipc_dir),
                        ports={s: ports.pop() for s in PROBED},
                        http_port=ports.pop(),
                        preferred_role=role,
                        channels=ch,
                        fax_channels=4,
                        netns=ns,
                    )
                )

    def _prepare_ipc(self, ipc: LabIpc, layout: str) -> None:
        d = Path(ipc.dir)
        d.mkdir(parents=True, exist_ok=True)
        ipc.sshd(self.client_key.with_suffix(".pub")).prepare()
        role = Layout.PRIMARY if ipc.preferred_role == "primary" else Layout.STANDBY
        autostart = start_order(running_set(role, SERVICES)) if layout == "normal" else []
        (d / "sim.json").write_text(
            json.dumps(
                {
                    "lab": self.labid,
                    "ipc": ipc.name,
                    "host": ipc.address,
                    "python": sys.executable,
                    "services": {s: {"port": ipc.ports.get(s, 0)} for s in SERVICES},
                    "autostart": autostart,
                },
                indent=1,
            )
        )
        with contextlib.suppress(FileNotFoundError):
            (d / "sim.ready").unlink()
        # The IPC's database connection configuration (the plan's DB DR edits it).
        (d / "datasource.conf").write_text("database = shenzhen-db.cc.example:1521/CCDB\n")

    def _start_sim(self, ipc: LabIpc) -> None:
        if ipc.sim_pid and alive(ipc.sim_pid, ipc.dir):
            return
        ipc.sim_pid = spawn(
            [sys.executable, "-m", "failover.lab.sim", ipc.dir],
            Path(ipc.dir) / "sim.log",
            ipc.netns,
            cwd=str(Path(__file__).resolve().parents[2]),
        )

    def _wait_sim(self, ipc: LabIpc, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not (Path(ipc.dir) / "sim.ready").exists():
            if not alive(ipc.sim_pid or 0):
                log = (Path(ipc.dir) / "sim.log").read_text(errors="replace")[-800:]
                raise LabError(f"the service simulator of {ipc.name} exited:\n{log}")
            if time.monotonic() > deadline:
                raise LabError(f"the service simulator of {ipc.name} is not ready")
            time.sleep(0.02)

    # ----- inventory -----------------------------------------------------------
    def write_inventory(self) -> None:
        clusters = []
        for cname in self.cluster_names():
            ipcs = [i for i in self.ipcs if i.cluster == cname]
            first = ipcs[0]
            services: dict[str, dict] = {}
            for s in SERVICES:
                # Lab services stop in milliseconds; a short stop timeout for CTI/IVR
                # keeps the fence grace (docs/agent.md) short.
                stop = 1 if s in ("cti", "ivr") else 10
                svc: dict = {"service": s, "start_timeout": 10, "stop_timeout": stop}
                if s in PROBED:
                    svc["probe"] = {
                        "tcp": {
                            "port": first.ports[s],
                            "send": "PING\n",
                            "expect": "PONG",
                            "timeout": 0.5,
                        }
                    }
                services[s] = svc
            clusters.append(
                {
                    "name": cname,
                    "drills_allowed": True,
                    "zookeeper": {
                        "hosts": [f"{n.host}:{n.client_port}" for n in self.zk],
                        "path": f"/failover/{cname}",
                    },
                    "timings": {
                        "monitor_interval": 0.5,
                        "failures_before_fault": 2,
                        "session_timeout": 4.0,
                    },
                    # A training lab: drills and demos make several automatic
                    # failovers an hour; real clusters keep the default (2).
                    "policy": {"max_failovers": 10},
                    "ipcs": [
                        {
                            "name": i.name,
                            "address": i.address,
                            "platform": "lab",
                            "ssh": {
                                "port": i.ssh_port,
                                "user": _user(),
                                "key": str(self.client_key),
                                "known_hosts": str(self.known_hosts),
                                "connect_timeout": 2,
                            },
                            "probe_ports": {k: v for k, v in i.ports.items()},
                            "lab": {"control": i.control()},
                            # the agent's HTTP endpoint: on the IPC's address (its
                            # namespace with --netns), a port of its own
                            "http": {"bind": i.address, "port": i.http_port},
                            "channels": i.channels,
                            "fax_channels": i.fax_channels,
                            "preferred_role": i.preferred_role,
                        }
                        for i in ipcs
                    ],
                    "services": services,
                    # The lab's basic call tests, run on whichever IPC serves calls
                    # (each IPC's own control command: see executor.smoke_command).
                    "smoke_checks": {
                        k: {"command": f"call {k}", "timeout": 10} for k in ("inbound", "outbound", "agent")
                    },
                }
            )
        doc = {"version": 1, "clusters": clusters}
        header = (
            f"# Generated by `failover lab up` for lab {self.labid} ({self.root}).\n"
            "# Valid until `failover lab down`.\n"
        )
        self.inventory_path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=120))

    # ----- state -------------------------------------------------------------
    def save(self) -> None:
        data = {
            "labid": self.labid,
            "root": str(self.root),
            "zk_count": self.zk_count,
            "clusters": self.clusters,
            "netns": self.netns,
            "subnet": self.subnet,
            "zk_host": self.zk_host,
            "started_at": self.started_at,
            "up_seconds": self.up_seconds,
            "zk": [
                {
                    "myid": n.myid,
                    "host": n.host,
                    "client_port": n.client_port,
                    "quorum_port": n.quorum_port,
                    "election_port": n.election_port,
                    "dir": str(n.dir),
                    "pid": n.pid,
                    "netns": n.netns,
                }
                for n in self.zk
            ],
            "ipcs": [asdict(i) for i in self.ipcs],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.state_file)

    @classmethod
    def load(cls, root: Path) -> Lab:
        try:
            data = json.loads((root / "lab.json").read_text())
        except FileNotFoundError:
            raise LabError(f"no lab in {root} (run `failover lab up`)") from None
        lab = cls(
            root=Path(data["root"]),
            zk_count=data["zk_count"],
            clusters=data["clusters"],
            netns=data["netns"],
            labid=data["labid"],
            subnet=data["subnet"],
            zk_host=data["zk_host"],
            started_at=data["started_at"],
            up_seconds=data.get("up_seconds", 0.0),
        )
        lab.zk = [
            ZkNode(
                z["myid"],
                z["host"],
                z["client_port"],
                z["quorum_port"],
                z["election_port"],
                Path(z["dir"]),
                z["pid"],
                z.get("netns"),
            )
            for z in data["zk"]
        ]
        lab.ipcs = [LabIpc(**i) for i in data["ipcs"]]
        return lab

    # ----- status ------------------------------------------------------------
    def zk_hosts(self) -> str:
        return ",".join(f"{n.host}:{n.client_port}" for n in self.zk)

    def status(self) -> dict:
        seen = observer.snapshot(self.labid)
        ipcs = {}
        for i in self.ipcs:
            try:
                sim = simctl.request(i.dir, {"op": "status"}, timeout=2)
            except (OSError, ValueError) as e:
                sim = {"ok": False, "error": str(e)}
            ipcs[i.name] = {
                "cluster": i.cluster,
                "address": i.address,
                "ssh_port": i.ssh_port,
                "netns": i.netns,
                "sshd": "up" if i.sshd_pid and alive(i.sshd_pid) else "down",
                "simulator": "up" if sim.get("ok") else f"down ({sim.get('error')})",
                "line": sim.get("line", "unknown"),
                "services": {s: v["state"] for s, v in sim.get("services", {}).items()},
                "processes": seen.get(i.name, {}),
            }
        return {
            "lab": self.labid,
            "root": str(self.root),
            "inventory": str(self.inventory_path),
            "up_seconds": round(self.up_seconds, 2),
            "zookeeper": [
                {
                    "id": n.myid,
                    "address": f"{n.host}:{n.client_port}",
                    "mode": n.mode() if n.running() else None,
                    "pid": n.pid,
                }
                for n in self.zk
            ],
            "ipcs": ipcs,
        }

    # ----- faults -----------------------------------------------------------
    def fault(self, ipc_name: str, kind: str, service: str | None = None, seconds: float = 5.0) -> str:
        ipc = self.ipc(ipc_name)
        if kind in SERVICE_FAULTS + IPC_FAULTS:
            if kind in SERVICE_FAULTS and kind != "clear" and not service:
                raise LabError(f"fault {kind} needs a service ({', '.join(SERVICES)})")
            if service and service not in SERVICES:
                raise LabError(f"unknown service {service!r} (one of {', '.join(SERVICES)})")
            resp = simctl.request(
                ipc.dir,
                {"op": "fault", "kind": kind, "service": service, "seconds": seconds},
                timeout=10,
            )
            if not resp.get("ok"):
                raise LabError(f"{ipc.name}: {resp.get('error')}")
            return f"{ipc.name}: {resp.get('detail')}"
        sshd = ipc.sshd(self.client_key.with_suffix(".pub"))
        if kind == "sshd-down":
            sshd.stop()
            return f"{ipc.name}: sshd stopped"
        if kind == "sshd-up":
            sshd.start()
            ipc.sshd_pid = sshd.pid
            self.save()
            sshd.wait_listening()
            return f"{ipc.name}: sshd started"
        if kind in ("unreachable", "reachable"):
            if not ipc.netns:
                raise LabError("unreachable/reachable need a lab started with --netns")
            (netns_mod.isolate if kind == "unreachable" else netns_mod.heal)(ipc.netns)
            return f"{ipc.name}: {'cut off' if kind == 'unreachable' else 'reachable again'}"
        if kind in ("zk-cut", "zk-heal"):
            if not ipc.netns:
                raise LabError("zk-cut/zk-heal need a lab started with --netns")
            fn = netns_mod.cut_from if kind == "zk-cut" else netns_mod.uncut_from
            for n in self.zk:
                fn(ipc.netns, n.host, [n.client_port])
            return f"{ipc.name}: {'cut from' if kind == 'zk-cut' else 'reconnected to'} ZooKeeper"
        if kind == "restore":
            if ipc.netns:
                netns_mod.heal(ipc.netns)
            if not sshd.running():
                self.fault(ipc_name, "sshd-up")
            for s in SERVICES:
                with contextlib.suppress(LabError):
                    self.fault(ipc_name, "unhang", s)
            simctl.request(ipc.dir, {"op": "fault", "kind": "clear"}, timeout=10)
            return f"{ipc.name}: faults cleared (services left as they are)"
        raise LabError(f"unknown fault {kind!r}; one of: " + ", ".join(SERVICE_FAULTS + IPC_FAULTS + HOST_FAULTS))

    def partition_zk(self, node: ZkNode, cut: bool = True) -> str:
        """--netns only: cut one ZooKeeper node off from everything (peers and
        clients), or heal it."""
        if not node.netns:
            raise LabError("partitioning a ZooKeeper node needs a lab started with --netns")
        (netns_mod.isolate if cut else netns_mod.heal)(node.netns)
        return f"zk{node.myid}: {'partitioned' if cut else 'healed'}"

    # ----- down ------------------------------------------------------------
    def down(self, remove: bool = True) -> list[int]:
        """Stop everything this lab started, by PID; remove its namespaces.
        Returns PIDs that could not be stopped (should be empty)."""
        stuck: list[int] = []
        for ipc in self.ipcs:
            if ipc.sshd_pid and not kill_and_wait(ipc.sshd_pid, "sshd_config"):
                stuck.append(ipc.sshd_pid)
            if ipc.sim_pid and not kill_and_wait(ipc.sim_pid, ipc.dir):
                stuck.append(ipc.sim_pid)
        for n in self.zk:
            if n.pid and not kill_and_wait(n.pid, n.marker):
                stuck.append(n.pid)
        # Service processes orphaned by a killed simulator: found in /proc.
        for pid in _lab_service_pids(self.labid):
            if not kill_and_wait(pid, observer.MARKER):
                stuck.append(pid)
        # Last sweep: any other process still running from this lab's files
        # (a daemon whose PID the state lost track of; once seen in a full
        # test run: a listening sshd outlived its lab). Found in /proc, stopped
        # by PID; never ourselves or the command that called us.
        for pid in _pids_running_from(self.root):
            if not kill_and_wait(pid, str(self.root)):
                stuck.append(pid)
        if self.subnet is not None:
            net = self.net
            assert net is not None
            net.destroy([*range(2 * self.clusters), *(ZK_NS_INDEX + i for i in range(self.zk_count))])
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()
        return stuck

    def live_pids(self) -> list[int]:
        """Every process of this lab still alive (not zombie)."""
        out = [n.pid for n in self.zk if n.pid and alive(n.pid, n.marker)]
        for i in self.ipcs:
            out += [p for p in (i.sim_pid, i.sshd_pid) if p and alive(p)]
        return out + [p for p in _lab_service_pids(self.labid) if alive(p)]


def _pids_running_from(root: Path) -> list[int]:
    """Live processes with a command-line argument inside `root`, except this
    process and its ancestors."""
    mine = str(root.resolve()).encode() + b"/"
    spared = {os.getpid(), *ancestors(os.getpid())}
    # `in` on each argument: sshd rewrites its title into one long argument.
    found = pids_where(lambda argv: any(mine in a for a in argv))
    return [p for p in found if p not in spared and alive(p)]


def _lab_service_pids(labid: str) -> list[int]:
    return pids_where(lambda argv: observer.MARKER.encode() in argv and labid.encode() in argv)


def _user() -> str:
    import getpass

    return getpass.getuser()
