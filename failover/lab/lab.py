"""The lab: a real ZooKeeper ensemble plus simulated IPCs, each behind its own
real sshd, driven exactly like real IPCs. `up` writes a ready inventory.

Deployment shapes: the IPC's platform profile (`lab`: simctl; `windows`: a
cmd.exe + sc.exe stand-in as the sshd's ForceCommand; `systemd`: a systemctl
stand-in on the sshd's PATH) and where the agents run (beside their IPC, or
with `agents_apart` on agent hosts of their own: one network namespace each).

State lives in <root>/lab.json so `failover lab status|fault|down` work from any
process; everything the lab starts is stopped by PID (after checking /proc).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from failover.lab import fence as fence_mod
from failover.lab import netns as netns_mod
from failover.lab import observer, simctl
from failover.lab.procs import alive, ancestors, free_ports, kill_and_wait, pids_where
from failover.lab.sshd import SshdHost, keygen, known_hosts_line
from failover.lab.zk import ZkNode, ZkStartError, wait_serving
from failover.layouts import SERVICES, Layout, running_set, start_order

SIMCTL = str(Path(simctl.__file__))
WINCMD = str(Path(__file__).with_name("wincmd.py"))  # the cmd.exe + sc.exe stand-in
SYSTEMCTL = str(Path(__file__).with_name("systemctl.py"))  # the systemctl stand-in (and linestat, labcall, labfault)
PLATFORMS = ("lab", "systemd", "windows")
PlatformName = Literal["lab", "systemd", "windows"]
# The platform's own name of each logical service (windows: those of
# inventory/example-windows.yaml); the lab platform uses the logical names.
SERVICE_NAMES: dict[str, dict[str, str]] = {
    "windows": {
        "driver": "Dialogic System Service",
        "fax": "FaxServer",
        "cti": "CTIServer",
        "ivr": "IVRService",
        "kcxp": "KCXP",
        "kcbp": "KCBP",
        "kcxp-replica": "KCXP_Replica",
        "kcbp-replica": "KCBP_Replica",
    },
    "systemd": {
        "driver": "dialogic.service",
        "fax": "cc-fax.service",
        "cti": "cc-cti.service",
        "ivr": "cc-ivr.service",
        "kcxp": "kcxp.service",
        "kcbp": "kcbp.service",
        "kcxp-replica": "kcxp-replica.service",
        "kcbp-replica": "kcbp-replica.service",
    },
}
WINDOWS_CODEPAGE = 936  # GBK: the OEM code page of the plan's (Chinese-language) Windows IPCs
LINE_CHECK = {"windows": "linestat.exe", "systemd": "linestat"}  # the board line tool on the IPC
CALL_COMMAND = {"lab": "call", "windows": "labcall.exe", "systemd": "labcall"}  # the basic call test
CALLS_COMMAND = {"lab": "calls", "windows": "labcalls.exe", "systemd": "labcalls"}  # simulated calls
SYSTEMD_TOOLS = ("systemctl", "linestat", "labcall", "labfault", "labcalls")  # wrappers in <ipc_dir>/bin
PROBED = ("cti", "ivr", "kcxp", "kcbp", "kcxp-replica", "kcbp-replica")
SERVICE_FAULTS = (
    "kill",
    "hang",
    "unhang",
    "fail-start",
    "slow-start",
    "slow-stop",
    "stop-fail",
    "pause",
    "unpause",
    "clear",
)
IPC_FAULTS = ("line-alarm", "line-clear", "driver-crash")
HOST_FAULTS = (
    "sshd-down",
    "sshd-up",
    "unreachable",
    "reachable",
    "zk-cut",
    "zk-heal",
    "isolate-site",
    "heal-site",
    "agent-isolate",
    "agent-heal",
    "power-off",
    "power-on",
    "fence-broken",
    "fence-fixed",
    "restore",
)
AGENT_NS_INDEX = 20  # namespace index (and address .30+) of the first agent host with agents_apart
ZK_NS_INDEX = 40  # namespace index (and address .50+) of the first ZooKeeper node with --netns
AGENT_HTTP_PORT = 8008  # the inventory's default http.port: what an agent on a host of its own uses
SITE_CUT, AGENT_CUT = "fo-site", "fo-agent"  # iptables chains of isolate-site and agent-isolate
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
    # agents_apart: the namespace ("agent host") and address of this IPC's agent
    agent_netns: str | None = None
    agent_address: str | None = None
    # The lab's fence device (failover/lab/fence.py): power "on" / "off", and
    # whether the device answers. Changed by other processes (the device's
    # command): re-read from lab.json before use (Lab._refresh).
    power: str = "on"
    fence_broken: bool = False

    def sshd(
        self, client_pubkey: Path, setenv: dict[str, str] | None = None, force_command: str | None = None
    ) -> SshdHost:
        return SshdHost(
            self.name,
            self.address,
            self.ssh_port,
            Path(self.dir) / "ssh",
            client_pubkey,
            self.sshd_pid,
            self.netns,
            setenv=setenv or {},
            force_command=force_command,
        )

    @property
    def bin_dir(self) -> Path:
        return Path(self.dir) / "bin"

    def control(self) -> list[str]:
        return [sys.executable, "-I", SIMCTL, self.dir]


@dataclass
class Lab:
    root: Path
    zk_count: int = 3
    clusters: int = 1
    netns: bool = False
    platform: PlatformName = "lab"
    agents_apart: bool = False
    fence: bool = True  # the inventory gives every IPC the lab's fence device
    labid: str = field(default_factory=lambda: secrets.token_hex(3))
    zk: list[ZkNode] = field(default_factory=list)
    ipcs: list[LabIpc] = field(default_factory=list)
    subnet: int | None = None
    zk_host: str = "127.0.0.1"
    started_at: float = 0.0
    up_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise LabError(f"unknown platform {self.platform!r} (one of {', '.join(PLATFORMS)})")
        if self.agents_apart:
            self.netns = True  # an agent host is a network namespace of its own

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
        room = AGENT_NS_INDEX if self.agents_apart else ZK_NS_INDEX
        if self.netns and n_ipcs > room:
            raise LabError(f"at most {room // 2} clusters in a lab with namespaces in this shape")
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
                agent_ns = agent_address = None
                if self.agents_apart:
                    # The agent's own host beside the IPC: it reaches its IPC,
                    # the peer agent and ZooKeeper over the lab's bridge.
                    net = self.net
                    assert net is not None
                    agent_ns = net.create_host(AGENT_NS_INDEX + index)
                    agent_address = net.address(AGENT_NS_INDEX + index)
                ipc_dir = self.root / f"{prefix}ipc-{suffix}"
                http_port = ports.pop()
                self.ipcs.append(
                    LabIpc(
                        cluster=cname,
                        name=f"{prefix}ipc-{suffix}",
                        index=index,
                        address=address or "127.0.0.1",
                        ssh_port=ports.pop(),
                        dir=str(ipc_dir),
                        ports={s: ports.pop() for s in PROBED},
                        # apart: alone on its host, the agent keeps the default port
                        http_port=AGENT_HTTP_PORT if self.agents_apart else http_port,
                        preferred_role=role,
                        channels=ch,
                        fax_channels=4,
                        netns=ns,
                        agent_netns=agent_ns,
                        agent_address=agent_address,
                    )
                )

    def _prepare_ipc(self, ipc: LabIpc, layout: str) -> None:
        d = Path(ipc.dir)
        d.mkdir(parents=True, exist_ok=True)
        self._sshd_profile(ipc).prepare()
        if self.platform == "systemd":
            self._write_systemd_bin(ipc)
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
                    # platform service name -> logical service (the stand-ins read it)
                    "names": {v: k for k, v in SERVICE_NAMES.get(self.platform, {}).items()},
                    # systemd: each unit's TimeoutStartSec / TimeoutStopSec
                    "unit_timeouts": {
                        n: dict(zip(("start", "stop"), _timeouts(s), strict=True))
                        for s, n in SERVICE_NAMES.get(self.platform, {}).items()
                    },
                    # windows: the plan's IPCs run a Chinese-language Windows, whose
                    # cmd.exe and sc.exe print GBK (code page 936), words localized
                    "codepage": WINDOWS_CODEPAGE,
                },
                indent=1,
            )
        )
        with contextlib.suppress(FileNotFoundError):
            (d / "sim.ready").unlink()
        # The IPC's database connection configuration (the plan's DB DR edits it).
        (d / "datasource.conf").write_text("database = shenzhen-db.cc.example:1521/CCDB\n")

    def _sshd_profile(self, ipc: LabIpc) -> SshdHost:
        """The IPC's sshd as its platform profile has it: windows runs every
        command through the cmd.exe stand-in; systemd puts the stand-in
        commands first on the PATH (sshd's SetEnv applies to exec'd commands)."""
        pub = self.client_key.with_suffix(".pub")
        if self.platform == "windows":
            cmd = shlex.join([sys.executable, "-I", WINCMD, ipc.dir])
            return ipc.sshd(pub, force_command=f"exec {cmd}")
        if self.platform == "systemd":
            return ipc.sshd(pub, setenv={"PATH": f"{ipc.bin_dir}:/usr/local/bin:/usr/bin:/bin"})
        return ipc.sshd(pub)

    def _write_systemd_bin(self, ipc: LabIpc) -> None:
        ipc.bin_dir.mkdir(parents=True, exist_ok=True)
        for tool in SYSTEMD_TOOLS:
            f = ipc.bin_dir / tool
            # -S: no site import, ~20 ms less per command (the batched status runs
            # one systemctl per service); the stand-in needs the stdlib only.
            cmd = shlex.join([sys.executable, "-I", "-S", SYSTEMCTL, ipc.dir, tool])
            f.write_text(f'#!/bin/sh\nexec {cmd} "$@"\n')
            f.chmod(0o755)

    def _start_sim(self, ipc: LabIpc) -> None:
        if ipc.sim_pid and alive(ipc.sim_pid, ipc.dir):
            return
        ipc.sim_pid = fence_mod.start_sim(ipc.dir, ipc.netns)

    def _wait_sim(self, ipc: LabIpc, timeout: float = 20) -> None:
        try:
            fence_mod.wait_sim(ipc.dir, ipc.sim_pid, timeout)
        except fence_mod.FenceError as e:
            raise LabError(str(e)) from None

    # ----- inventory -----------------------------------------------------------
    def write_inventory(self) -> None:
        clusters = []
        for cname in self.cluster_names():
            ipcs = [i for i in self.ipcs if i.cluster == cname]
            first = ipcs[0]
            services: dict[str, dict] = {}
            names = SERVICE_NAMES.get(self.platform, {})
            for s in SERVICES:
                start, stop = _timeouts(s)
                svc: dict = {"service": names.get(s, s), "start_timeout": start, "stop_timeout": stop}
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
            call = CALL_COMMAND[self.platform]
            extra = self._site_commands()
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
                    "ipcs": [self._inventory_ipc(i) for i in ipcs],
                    "services": services,
                    **extra,
                    # The lab's basic call tests, run on whichever IPC serves calls
                    # (lab: each IPC's own control command, see executor.smoke_command).
                    "smoke_checks": {
                        k: {"command": f"{call} {k}", "timeout": 10} for k in ("inbound", "outbound", "agent")
                    },
                }
            )
        doc = {"version": 1, "clusters": clusters}
        header = (
            f"# Generated by `failover lab up` for lab {self.labid} ({self.root}).\n"
            "# Valid until `failover lab down`.\n"
        )
        self.inventory_path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=120))

    def _site_commands(self) -> dict:
        """The inventory's commands a site writes for its own tools: the line
        check (exit 0 line up, 1 alarm, 3 driver not running: the stand-in's
        linestat) and the simulated calls (lab/calls.py), read and busied out
        as a real CTI would be."""
        extra: dict = {}
        if self.platform in LINE_CHECK:
            extra["line_check"] = {"command": LINE_CHECK[self.platform], "timeout": 2}
        calls = CALLS_COMMAND[self.platform]
        extra["calls"] = {
            "active": f"{calls} active",
            "busy_out": f"{calls} busy-out",
            "release": f"{calls} release",
            "timeout": 5,
        }
        return extra

    def _inventory_ipc(self, i: LabIpc) -> dict:
        out: dict = {
            "name": i.name,
            "address": i.address,
            "platform": self.platform,
            "ssh": {
                "port": i.ssh_port,
                "user": _user(),
                "key": str(self.client_key),
                "known_hosts": str(self.known_hosts),
                "connect_timeout": 2,
            },
            "probe_ports": {k: v for k, v in i.ports.items()},
        }
        if self.platform == "lab":
            out["lab"] = {"control": i.control()}
        if i.agent_address:
            # On a host of its own the agent keeps the default bind and port;
            # the peer's agent reaches it at its host's address.
            out["http"] = {"advertise": i.agent_address}
        else:
            # Beside its IPC (in its namespace with --netns): the IPC's address,
            # a port of its own.
            out["http"] = {"bind": i.address, "port": i.http_port}
        out.update(channels=i.channels, fax_channels=i.fax_channels, preferred_role=i.preferred_role)
        # The IPC's database connection configuration (the plan's DB DR edits it):
        # on the Windows stand-in a path on its "disk", elsewhere the file itself.
        conf = "datasource.conf" if self.platform == "windows" else str(Path(i.dir) / "datasource.conf")
        out["config_files"] = {"datasource": conf}
        if self.fence:
            out["fence"] = self.fence_commands(i.name)
        return out

    def fence_commands(self, ipc_name: str) -> dict:
        """The inventory's `fence` key for a lab IPC: the lab's fence device
        (failover/lab/fence.py), run by the agent on its own host, no shell."""
        base = [sys.executable, "-m", "failover.lab.fence", "--root", str(self.root.resolve()), "--ipc", ipc_name]
        out: dict = {a: shlex.join([*base, a]) for a in ("off", "status", "on")}
        out["timeout"] = 5
        return out

    # ----- agents ------------------------------------------------------------
    def agent_netns(self, ipc_name: str) -> str | None:
        """The network namespace the IPC's agent runs in: its agent host's with
        agents_apart, else its IPC's (None without --netns)."""
        ipc = self.ipc(ipc_name)
        return ipc.agent_netns or ipc.netns

    def agent_address(self, ipc_name: str) -> str:
        """The address the IPC's agent endpoint is reached at."""
        ipc = self.ipc(ipc_name)
        return ipc.agent_address or ipc.address

    def agent_url(self, ipc_name: str) -> str:
        """http://address:port of the IPC's agent endpoint (as the inventory has it)."""
        return f"http://{self.agent_address(ipc_name)}:{self.ipc(ipc_name).http_port}"

    # ----- state -------------------------------------------------------------
    def save(self) -> None:
        data = {
            "labid": self.labid,
            "root": str(self.root),
            "zk_count": self.zk_count,
            "clusters": self.clusters,
            "netns": self.netns,
            "platform": self.platform,
            "agents_apart": self.agents_apart,
            "fence": self.fence,
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
        with fence_mod.locked(self.root):
            fence_mod.write_state(self.root, data)

    def _refresh(self) -> None:
        """Re-read what other processes change in lab.json (the fence device's
        command powers IPCs off and on: new PIDs, power state)."""
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        found = {i.get("name"): i for i in data.get("ipcs", [])}
        for ipc in self.ipcs:
            got = found.get(ipc.name)
            if got is not None:
                ipc.sim_pid, ipc.sshd_pid = got.get("sim_pid"), got.get("sshd_pid")
                ipc.power, ipc.fence_broken = got.get("power", "on"), bool(got.get("fence_broken"))

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Change this lab's state: under lab.lock, from what lab.json says now, saved after."""
        with fence_mod.locked(self.root):
            self._refresh()
            yield
            self.save()

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
            platform=data.get("platform", "lab"),
            agents_apart=data.get("agents_apart", False),
            fence=data.get("fence", True),
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
        self._refresh()
        seen = observer.snapshot(self.labid)
        ipcs = {}
        for i in self.ipcs:
            if i.power == "off":
                sim = {"ok": False, "error": "powered off"}
            else:
                try:
                    sim = simctl.request(i.dir, {"op": "status"}, timeout=2)
                except (OSError, ValueError) as e:
                    sim = {"ok": False, "error": str(e)}
            ipcs[i.name] = {
                "cluster": i.cluster,
                "address": i.address,
                "ssh_port": i.ssh_port,
                "netns": i.netns,
                "agent_netns": self.agent_netns(i.name),
                "agent_address": self.agent_address(i.name),
                "agent_url": self.agent_url(i.name),
                "power": i.power,
                "fence": ("not answering (fence-broken)" if i.fence_broken else "ok") if self.fence else "none",
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
            "platform": self.platform,
            "agents_apart": self.agents_apart,
            "fence": self.fence,
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
        """Inject a fault. power-on: `service` is the services to start at boot
        besides the driver, comma-separated ("cti,ivr"); see power_on()."""
        ipc = self.ipc(ipc_name)
        self._refresh()
        if kind in ("power-off", "power-on", "fence-broken", "fence-fixed"):
            return self._power_fault(ipc, kind, service)
        if service:  # the platform's own name (CTIServer, cc-cti.service) works too
            service = {v: k for k, v in SERVICE_NAMES.get(self.platform, {}).items()}.get(service, service)
        if ipc.power == "off" and kind in (*SERVICE_FAULTS, *IPC_FAULTS, "sshd-up"):
            raise LabError(f"{ipc.name} is powered off (`failover lab fault {ipc.name} power-on`)")
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
            with self._changing():
                if ipc.power == "off":
                    raise LabError(f"{ipc.name} is powered off (`failover lab fault {ipc.name} power-on`)")
                sshd = ipc.sshd(self.client_key.with_suffix(".pub"))
                sshd.start()
                ipc.sshd_pid = sshd.pid
            sshd.wait_listening()
            return f"{ipc.name}: sshd started"
        if kind in ("unreachable", "reachable"):
            if not ipc.netns:
                raise LabError("unreachable/reachable need a lab started with --netns")
            (netns_mod.isolate if kind == "unreachable" else netns_mod.heal)(ipc.netns)
            return f"{ipc.name}: {'cut off' if kind == 'unreachable' else 'reachable again'}"
        if kind in ("zk-cut", "zk-heal"):
            # The agent is what talks to ZooKeeper: its own host's namespace
            # with agents apart, else the IPC's (the agent lives there).
            ns = self.agent_netns(ipc.name)
            if not ns:
                raise LabError("zk-cut/zk-heal need a lab started with --netns")
            fn = netns_mod.cut_from if kind == "zk-cut" else netns_mod.uncut_from
            for n in self.zk:
                fn(ns, n.host, [n.client_port])
            return f"{ipc.name}: {'cut from' if kind == 'zk-cut' else 'reconnected to'} ZooKeeper"
        if kind in ("isolate-site", "heal-site"):
            site = self._site(ipc)
            for ns, partner in site:
                if kind == "isolate-site":
                    netns_mod.cut(ns, SITE_CUT, partner)
                else:
                    netns_mod.uncut(ns, SITE_CUT)
            who = f"{ipc.name} and its agent" if ipc.agent_netns else ipc.name
            return f"{who}: {'cut off from the rest of the lab' if kind == 'isolate-site' else 'back on the network'}"
        if kind in ("agent-isolate", "agent-heal"):
            if not ipc.agent_netns:
                raise LabError(f"{kind} needs agents on hosts of their own (a lab started with agents_apart)")
            if kind == "agent-isolate":
                netns_mod.cut(ipc.agent_netns, AGENT_CUT)
            else:
                netns_mod.uncut(ipc.agent_netns, AGENT_CUT)
            return f"{ipc.name}'s agent host: {'cut off' if kind == 'agent-isolate' else 'reachable again'}"
        if kind == "restore":
            for ns in (ipc.netns, ipc.agent_netns):
                if ns:
                    netns_mod.heal(ns)
                    netns_mod.uncut(ns, SITE_CUT)
                    netns_mod.uncut(ns, AGENT_CUT)
            if ipc.fence_broken:
                self.fault(ipc_name, "fence-fixed")
            if ipc.power == "off":
                self.power_on(ipc_name)
                sshd = ipc.sshd(self.client_key.with_suffix(".pub"))
            if not sshd.running():
                self.fault(ipc_name, "sshd-up")
            for s in SERVICES:
                with contextlib.suppress(LabError):
                    self.fault(ipc_name, "unhang", s)
            simctl.request(ipc.dir, {"op": "fault", "kind": "clear"}, timeout=10)
            return f"{ipc.name}: faults cleared (services left as they are)"
        raise LabError(f"unknown fault {kind!r}; one of: " + ", ".join(SERVICE_FAULTS + IPC_FAULTS + HOST_FAULTS))

    # ----- power (the fence device's switch, failover/lab/fence.py) ------------------
    def power_off(self, ipc_name: str) -> str:
        """Cut the IPC's power: its simulator, every service process and its
        sshd (with its sessions) killed by SIGKILL. Idempotent."""
        return self._power_fault(self.ipc(ipc_name), "power-off")

    def power_on(self, ipc_name: str, autostart: Iterable[str] = ()) -> str:
        """Power the IPC back on: the simulator and sshd start; at boot the
        board driver, sim.json's AUTO_START services and `autostart` (logical
        or platform names, e.g. ("cti", "ivr")): Windows services whose start
        type is Automatic. Returns once it is up. Idempotent."""
        return self._power_fault(self.ipc(ipc_name), "power-on", ",".join(autostart))

    def powered(self, ipc_name: str) -> bool:
        """Whether the IPC is powered on (lab.json, whoever changed it)."""
        self._refresh()
        return self.ipc(ipc_name).power != "off"

    def _power_fault(self, ipc: LabIpc, kind: str, service: str | None = None) -> str:
        try:
            if kind == "power-off":
                out = fence_mod.power_off(self.root, ipc.name)
            elif kind == "power-on":
                out = fence_mod.power_on(self.root, ipc.name, [service or ""])
            else:
                out = fence_mod.set_broken(self.root, ipc.name, kind == "fence-broken")
        except fence_mod.FenceError as e:
            raise LabError(str(e)) from None
        finally:
            self._refresh()
        return out

    def _site(self, ipc: LabIpc) -> list[tuple[str, list[str]]]:
        """The namespaces of one site (the IPC and its agent host), each with
        the address of the other it keeps reaching."""
        if not ipc.netns:
            raise LabError("isolate-site/heal-site need a lab started with --netns")
        if not (ipc.agent_netns and ipc.agent_address):
            return [(ipc.netns, [])]  # the agent lives in the IPC's namespace
        return [(ipc.netns, [ipc.agent_address]), (ipc.agent_netns, [ipc.address])]

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
        with contextlib.ExitStack() as held:
            with contextlib.suppress(fence_mod.FenceError):  # no lab directory (any more): no lock
                held.enter_context(fence_mod.locked(self.root))  # a power-on meanwhile waits, then finds no lab
            # The PIDs this object knows (a failed `up` may not have saved them
            # yet) and those of lab.json (a power-on by another process).
            known = [(pid, m) for i in self.ipcs for pid, m in ((i.sshd_pid, "sshd_config"), (i.sim_pid, i.dir))]
            self._refresh()
            return self._down(remove, known)

    def _down(self, remove: bool, known: list[tuple[int | None, str]]) -> list[int]:
        stuck: list[int] = []
        for pid, marker in known:  # gone already unless this object knew better than lab.json
            if pid and not kill_and_wait(pid, marker):
                stuck.append(pid)
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
            agents = range(AGENT_NS_INDEX, AGENT_NS_INDEX + 2 * self.clusters) if self.agents_apart else ()
            net.destroy([*range(2 * self.clusters), *agents, *(ZK_NS_INDEX + i for i in range(self.zk_count))])
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()
        return stuck

    def live_pids(self) -> list[int]:
        """Every process of this lab still alive (not zombie)."""
        self._refresh()
        out = [n.pid for n in self.zk if n.pid and alive(n.pid, n.marker)]
        for i in self.ipcs:
            out += [p for p in (i.sim_pid, i.sshd_pid) if p and alive(p)]
        return out + [p for p in _lab_service_pids(self.labid) if alive(p)]


def _timeouts(service: str) -> tuple[float, float]:
    """(start, stop) timeout of a lab service, seconds: lab services stop in
    milliseconds; a short stop timeout for CTI/IVR keeps the fence grace
    (docs/agent.md) short."""
    return 10, 1 if service in ("cti", "ivr") else 10


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
