"""The lab itself: real ZooKeeper quorum, real sshd with strict host keys, the
service simulator, every fault kind visible to the independent observer."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner
from kazoo.client import KazooClient

from failover import inventory as inv_mod
from failover.cli import main
from failover.lab import observer
from failover.lab.lab import Lab
from failover.lab.procs import alive
from failover.layouts import SERVICES
from tests import labssh


def wait_for(pred, timeout: float = 10.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def test_cli_help_lists_commands() -> None:
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for cmd in ("inventory", "lab"):
        assert cmd in r.output


def test_lab_inventory_is_valid(lab: Lab) -> None:
    inv = inv_mod.load(lab.inventory_path)
    c = inv.cluster("lab")
    assert [i.name for i in c.ipcs] == ["ipc-a", "ipc-b"]
    assert c.home_primary().name == "ipc-a"


def test_zookeeper_quorum(lab: Lab) -> None:
    modes = sorted(n.mode() or "down" for n in lab.zk)
    assert modes == ["follower", "follower", "leader"]
    zk = KazooClient(hosts=lab.zk_hosts(), timeout=5)
    zk.start(timeout=10)
    try:
        zk.ensure_path("/failover-test")
        zk.create("/failover-test/x", b"hello", ephemeral=True)
        assert zk.get("/failover-test/x")[0] == b"hello"
    finally:
        zk.stop()
        zk.close()


def test_ssh_strict_host_keys(lab: Lab) -> None:
    for ipc in lab.ipcs:
        c = labssh.client(lab, ipc)
        try:
            code, st, _ = labssh.simctl(c, ipc, "status")
            assert code == 0 and st["ipc"] == ipc.name
        finally:
            c.close()


def test_unknown_host_key_refused(lab: Lab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        labssh.client(lab, lab.ipcs[0], known_hosts=str(empty))


def test_changed_host_key_refused(lab: Lab, tmp_path: Path) -> None:
    # ipc-a's address and port with ipc-b's key: a changed key.
    a, b = lab.ipcs
    other = (Path(b.dir) / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{a.address}]:{a.ssh_port} {other[0]} {other[1]}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        labssh.client(lab, a, known_hosts=str(kh))


def test_every_service_start_stop_status(lab: Lab) -> None:
    ipc = lab.ipc("ipc-b")
    c = labssh.client(lab, ipc)
    try:
        for svc in SERVICES:
            code, st, _ = labssh.simctl(c, ipc, "status")
            was = st["services"][svc]["state"]
            code, r, _ = labssh.simctl(c, ipc, "start", svc)
            assert code == 0 and r["ok"]
            assert r["changed"] == (was != "RUNNING")
            assert svc in observer.snapshot(lab.labid)["ipc-b"]
            code, r, _ = labssh.simctl(c, ipc, "start", svc)  # idempotent
            assert code == 0 and r["changed"] is False
            code, r, _ = labssh.simctl(c, ipc, "stop", svc)
            assert code == 0 and r["changed"] is True
            assert svc not in observer.snapshot(lab.labid).get("ipc-b", {})
            assert labssh.simctl(c, ipc, "status")[1]["services"][svc]["state"] == "STOPPED"
            code, r, _ = labssh.simctl(c, ipc, "stop", svc)  # idempotent
            assert code == 0 and r["changed"] is False
            if was == "RUNNING":
                assert labssh.simctl(c, ipc, "start", svc)[0] == 0
    finally:
        c.close()


def test_probe_answers_and_hang_detected(lab: Lab) -> None:
    import socket

    ipc = lab.ipc("ipc-a")

    def probe() -> bool:
        try:
            with socket.create_connection((ipc.address, ipc.ports["cti"]), timeout=0.5) as s:
                s.settimeout(0.5)
                s.sendall(b"PING\n")
                return s.recv(64).startswith(b"PONG cti ipc-a")
        except OSError:
            return False

    assert probe()
    lab.fault("ipc-a", "hang", "cti")
    try:
        assert observer.snapshot(lab.labid)["ipc-a"]["cti"] == "T"
        assert not probe()  # TCP connects (kernel), the application never answers
    finally:
        lab.fault("ipc-a", "unhang", "cti")
    assert wait_for(probe)


@pytest.fixture
def b(lab: Lab):  # type: ignore[no-untyped-def]
    """ipc-b with a paramiko client; restored to its standby layout afterwards."""
    ipc = lab.ipc("ipc-b")
    c = labssh.client(lab, ipc)
    yield ipc, c
    lab.fault("ipc-b", "restore")
    for svc in ("cti", "ivr", "kcxp-replica", "kcbp-replica"):
        labssh.simctl(c, ipc, "stop", svc)
    for svc in ("driver", "kcxp", "kcbp", "fax"):
        labssh.simctl(c, ipc, "start", svc)
    c.close()


def test_fault_kill(lab: Lab, b) -> None:  # type: ignore[no-untyped-def]
    ipc, c = b
    pid = labssh.simctl(c, ipc, "status")[1]["services"]["kcxp"]["pid"]
    code, _r, _ = labssh.simctl(c, ipc, "fault", "kill", "kcxp")  # over SSH, as drills do
    assert code == 0
    assert not alive(pid)
    assert "kcxp" not in observer.snapshot(lab.labid)["ipc-b"]
    assert wait_for(lambda: labssh.simctl(c, ipc, "status")[1]["services"]["kcxp"]["state"] == "STOPPED")


def test_fault_fail_start(lab: Lab, b) -> None:  # type: ignore[no-untyped-def]
    ipc, c = b
    lab.fault("ipc-b", "fail-start", "cti")
    code, _r, err = labssh.simctl(c, ipc, "start", "cti")
    assert code == 1 and "failed to start" in err
    assert "cti" not in observer.snapshot(lab.labid)["ipc-b"]
    assert labssh.simctl(c, ipc, "start", "cti")[0] == 0  # only the next start fails
    assert "cti" in observer.snapshot(lab.labid)["ipc-b"]


def test_fault_slow_stop_shows_pending(lab: Lab, b) -> None:  # type: ignore[no-untyped-def]
    import threading

    ipc, c = b
    lab.fault("ipc-b", "slow-stop", "kcbp", seconds=1.0)
    t = threading.Thread(target=lambda: labssh.simctl(c, ipc, "stop", "kcbp"))
    t.start()
    c2 = labssh.client(lab, ipc)
    try:
        assert wait_for(
            lambda: labssh.simctl(c2, ipc, "status")[1]["services"]["kcbp"]["state"] == "STOP_PENDING",
            timeout=1.0,
        )
        assert "kcbp" in observer.snapshot(lab.labid)["ipc-b"]  # still running meanwhile
        t.join()
        assert "kcbp" not in observer.snapshot(lab.labid)["ipc-b"]
    finally:
        c2.close()


def test_fault_stop_fail(lab: Lab, b) -> None:  # type: ignore[no-untyped-def]
    ipc, c = b
    lab.fault("ipc-b", "stop-fail", "kcxp")
    code, _, err = labssh.simctl(c, ipc, "stop", "kcxp", "--timeout", "0.5")
    assert code == 1 and "did not stop" in err
    assert "kcxp" in observer.snapshot(lab.labid)["ipc-b"]


def test_fault_line_alarm_and_driver_crash(lab: Lab, b) -> None:  # type: ignore[no-untyped-def]
    ipc, c = b
    lab.fault("ipc-b", "line-alarm")
    assert observer.line_status(ipc.dir) == "alarm"
    assert labssh.simctl(c, ipc, "status")[1]["line"] == "alarm"
    code, _, err = labssh.simctl(c, ipc, "call", "inbound")
    assert code == 1 and "line alarm" in err
    lab.fault("ipc-b", "line-clear")
    assert observer.line_status(ipc.dir) == "up"
    lab.fault("ipc-b", "driver-crash")
    assert "driver" not in observer.snapshot(lab.labid)["ipc-b"]
    assert observer.line_status(ipc.dir) == "down"


def test_fault_sshd_down(lab: Lab) -> None:
    ipc = lab.ipc("ipc-b")
    lab.fault("ipc-b", "sshd-down")
    try:
        assert not alive(ipc.sshd_pid or 0)
        with pytest.raises((paramiko.SSHException, OSError)):
            labssh.client(lab, ipc)
    finally:
        lab.fault("ipc-b", "sshd-up")
    labssh.client(lab, ipc).close()


def test_smoke_call_on_primary(lab: Lab) -> None:
    ipc = lab.ipc("ipc-a")
    c = labssh.client(lab, ipc)
    try:
        for kind in ("inbound", "outbound", "agent"):
            code, r, _ = labssh.simctl(c, ipc, "call", kind)
            assert code == 0, r
    finally:
        c.close()


def test_lab_down_leaves_nothing(fresh_lab: Lab) -> None:
    pids = fresh_lab.live_pids()
    assert len(pids) >= 1 + 2 + 2 + 8  # zk, 2 sims, 2 sshd, services
    # A daemon the lab lost track of (its PID not in the state), running from
    # the lab's files: down must find and stop it too.
    stray = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", str(fresh_lab.root / "ipc-a" / "ssh" / "sshd_config")],
        start_new_session=True,
    )
    try:
        assert fresh_lab.down() == []
        assert stray.wait(timeout=10) is not None
    finally:
        if stray.poll() is None:  # this test's own process, stopped even if it fails
            stray.kill()
            stray.wait()
    assert [p for p in pids if alive(p)] == []
    assert not fresh_lab.root.exists()


needs_root = pytest.mark.skipif(__import__("os").geteuid() != 0, reason="network namespaces need root")


SHAPES = [
    pytest.param([], "platform lab, agents beside their IPCs", id="lab"),
    pytest.param(
        ["--platform", "windows", "--agents-apart"],
        "platform windows, agents on hosts of their own",
        id="windows-apart",
        marks=needs_root,
    ),
]


@pytest.mark.parametrize(("flags", "shape"), SHAPES)
def test_cli_lab_cycle(tmp_path: Path, flags: list[str], shape: str) -> None:
    """`failover lab up` -> status -> down, as separate processes, in each shape."""
    d = str(tmp_path / "lab")
    exe = [str(Path(__import__("sys").executable).with_name("failover"))]
    up = subprocess.run(
        [*exe, "lab", "up", "--dir", d, "--zk-nodes", "1", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        assert up.returncode == 0, up.stderr
        st = subprocess.run([*exe, "lab", "status", "--dir", d], capture_output=True, text=True, timeout=30)
        assert "1/1 nodes serving" in st.stdout and "IPC ipc-b" in st.stdout and shape in st.stdout
        if flags:
            assert "agent host for ipc-a" in up.stdout and "agent at http://198.18." in st.stdout
            assert ":8008" in st.stdout  # the inventory's default port, alone on its host
            f = subprocess.run([*exe, "lab", "fault", "--dir", d, "ipc-a", "kill", "CTIServer"], capture_output=True)
            assert f.returncode == 0  # the platform's own service name
    finally:
        lab = Lab.load(Path(d))
        pids = lab.live_pids()
        down = subprocess.run([*exe, "lab", "down", "--dir", d], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert [p for p in pids if alive(p)] == []


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="network namespaces need root")
def test_netns_unreachable(tmp_path: Path) -> None:
    lab = Lab(root=tmp_path / "lab", zk_count=1, netns=True)
    lab.up()
    try:
        ipc = lab.ipc("ipc-a")
        labssh.client(lab, ipc).close()
        lab.fault("ipc-a", "unreachable")
        with pytest.raises((paramiko.SSHException, OSError)):
            c = paramiko.SSHClient()
            c.load_host_keys(str(lab.known_hosts))
            c.connect(
                ipc.address,
                port=ipc.ssh_port,
                key_filename=str(lab.client_key),
                look_for_keys=False,
                allow_agent=False,
                timeout=1,
                banner_timeout=1,
            )
        lab.fault("ipc-a", "reachable")
        labssh.client(lab, ipc).close()
    finally:
        lab.down()
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.labid not in out


# ----- deployment shapes: windows / systemd IPCs, agents on hosts of their own -------


_PROBE = """
import errno, select, socket, sys, time
targets = [(a.rpartition(":")[0], int(a.rpartition(":")[2])) for a in sys.argv[2:]]
socks = []
for t in targets:
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(t)
    socks.append(s)
res = [None] * len(socks)
deadline = time.monotonic() + float(sys.argv[1])
while None in res and time.monotonic() < deadline:
    pending = [s for s, r in zip(socks, res) if r is None]
    _, ready, _ = select.select([], pending, [], max(0.0, deadline - time.monotonic()))
    for s in ready:
        e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        res[socks.index(s)] = "open" if e == 0 else "refused" if e == errno.ECONNREFUSED else errno.errorcode[e]
print(" ".join(r or "dropped" for r in res))
"""


def _tcp_from(ns: str, targets: dict[str, tuple[str, int]], timeout: float = 0.4) -> dict[str, str]:
    """From inside namespace `ns`, TCP connects to every target at once: "open"
    (connected), "refused" (a RST: the address is reachable, nothing listens)
    or "dropped" (no answer within the timeout)."""
    args = [f"{h}:{p}" for h, p in targets.values()]
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-I", "-c", _PROBE, str(timeout), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout.split()
    return dict(zip(targets, out, strict=True))


def _check_inventory(lab: Lab) -> None:
    """The written inventory validates (line_check and http.advertise are keys of
    the inventory format)."""
    _, problems = inv_mod.check(lab.inventory_path)
    assert problems == [], problems


@pytest.fixture
def apart_lab(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fresh 1-node lab of the profile given by indirect parametrization, agents apart."""
    from tests.conftest import _need_lab_tools

    _need_lab_tools()
    lab = Lab(root=tmp_path / "lab", zk_count=1, platform=request.param, agents_apart=True)
    lab.up()
    try:
        yield lab
    finally:
        assert lab.down() == []
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lab.labid not in out


@needs_root
@pytest.mark.parametrize("apart_lab", ["systemd"], indirect=True)
def test_systemd_ipc_behind_sshd(apart_lab: Lab) -> None:
    lab = apart_lab
    a = lab.ipc("ipc-a")
    assert Lab.load(lab.root).platform == "systemd" and Lab.load(lab.root).agents_apart
    c = labssh.client(lab, a)
    try:
        assert labssh.run(c, ["systemctl", "show", "-p", "ActiveState", "--value", "cc-cti.service"])[:2] == (
            0,
            "active\n",
        )
        assert labssh.run(c, ["systemctl", "is-active", "kcxp-replica.service"])[0] == 3
        assert labssh.run(c, ["linestat"])[0] == 0
        assert labssh.run(c, ["labcall", "inbound"])[0] == 0
        lab.fault("ipc-a", "line-alarm")
        assert labssh.run(c, ["sh", "-c", "linestat"])[0] == 1  # the executor's line check goes through sh
        assert labssh.run(c, ["labcall", "inbound"])[0] == 1
        lab.fault("ipc-a", "line-clear")
        # A crash leaves the unit failed; a start brings it back.
        assert labssh.run(c, ["systemctl", "kill", "-s", "KILL", "dialogic.service"])[0] == 0
        assert labssh.run(c, ["linestat"])[0] == 3
        assert labssh.run(c, ["systemctl", "show", "-p", "ActiveState", "--value", "dialogic.service"])[1] == "failed\n"
        assert labssh.run(c, ["systemctl", "start", "dialogic.service"])[0] == 0
        assert labssh.run(c, ["systemctl", "is-active", "dialogic.service"])[:2] == (0, "active\n")
        lab.fault("ipc-a", "fail-start", "cc-ivr.service")  # the unit's name works for lab faults
        assert labssh.run(c, ["systemctl", "stop", "cc-ivr.service"])[0] == 0
        code, _, err = labssh.run(c, ["systemctl", "start", "cc-ivr.service"])
        assert code == 1 and err.startswith("Job for cc-ivr.service failed because")
        assert labssh.run(c, ["systemctl", "show", "-p", "ActiveState", "--value", "cc-ivr.service"])[1] == "failed\n"
        assert labssh.run(c, ["systemctl", "start", "no-such.service"])[0] == 5
    finally:
        c.close()
    _check_inventory(lab)
    inv = inv_mod.load(lab.inventory_path).cluster()
    assert inv.line_check is not None and inv.line_check.command == "linestat"
    assert inv.services["cti"].service == "cc-cti.service"
    assert inv.smoke_checks["inbound"].command == "labcall inbound"
    assert inv.ipc("ipc-a").http.advertise == a.agent_address and inv.ipc("ipc-a").lab is None


@needs_root
@pytest.mark.parametrize("apart_lab", ["windows"], indirect=True)
def test_windows_ipc_behind_sshd(apart_lab: Lab) -> None:
    import json

    from failover.lab.lab import WINCMD

    lab = apart_lab
    a = lab.ipc("ipc-a")
    config = (Path(a.dir) / "ssh" / "sshd_config").read_text()
    assert f"ForceCommand exec {sys.executable} -I {WINCMD} {a.dir}" in config
    names = json.loads((Path(a.dir) / "sim.json").read_text())["names"]
    assert names["CTIServer"] == "cti" and names["Dialogic System Service"] == "driver" and len(names) == 8
    _check_inventory(lab)
    inv = inv_mod.load(lab.inventory_path).cluster()
    assert inv.ipc("ipc-a").platform == "windows" and inv.services["kcxp-replica"].service == "KCXP_Replica"
    assert inv.line_check is not None and inv.line_check.command == "linestat.exe"
    assert inv.smoke_checks["agent"].command == "labcall.exe agent"
    if not Path(WINCMD).exists():
        pytest.skip("failover/lab/wincmd.py (the cmd.exe + sc.exe stand-in) is not there yet")
    c = labssh.client(lab, a)
    try:
        code, out, _ = labssh.run_line(c, 'sc.exe queryex "CTIServer"')
        assert code == 0 and "\r\n" in out
        assert re.search(r"STATE\s+: 4  RUNNING", out), out
        assert labssh.run_line(c, "linestat.exe")[0] == 0
        lab.fault("ipc-a", "line-alarm")
        assert labssh.run_line(c, "linestat.exe")[0] == 1
        lab.fault("ipc-a", "driver-crash")
        assert labssh.run_line(c, "linestat.exe")[0] == 3
    finally:
        c.close()


@needs_root
@pytest.mark.parametrize("apart_lab", ["systemd"], indirect=True)
def test_agents_apart_network_faults(apart_lab: Lab) -> None:
    lab = apart_lab
    a, b = lab.ipc("ipc-a"), lab.ipc("ipc-b")
    na, nb = lab.agent_netns("ipc-a"), lab.agent_netns("ipc-b")
    assert na and nb and na not in (a.netns, b.netns)
    assert lab.agent_url("ipc-b") == f"http://{b.agent_address}:8008"
    st = lab.status()
    assert st["platform"] == "systemd" and st["agents_apart"] is True
    assert st["ipcs"]["ipc-a"]["agent_address"] == a.agent_address
    zk = lab.zk[0]
    assert a.agent_address is not None and b.agent_address is not None

    targets = {
        "ipc-a": (a.address, a.ssh_port),
        "ipc-b": (b.address, b.ssh_port),
        # refused = reachable: nothing listens on the agent hosts' 8008 yet
        "agent-a": (a.agent_address, 8008),
        "agent-b": (b.agent_address, 8008),
        "zk": (zk.host, zk.client_port),
    }

    def view(ns: str) -> dict[str, str]:
        return _tcp_from(ns, targets)  # type: ignore[arg-type]  # agent addresses asserted above

    everyone = {"ipc-a": "open", "ipc-b": "open", "agent-a": "refused", "agent-b": "refused", "zk": "open"}
    assert view(na) == view(nb) == everyone

    lab.fault("ipc-a", "isolate-site")
    # The site's own pair still talk; nothing else reaches them, either way.
    assert view(na) == {**dict.fromkeys(everyone, "dropped"), "ipc-a": "open", "agent-a": "refused"}
    assert view(nb) == {**everyone, "ipc-a": "dropped", "agent-a": "dropped"}
    lab.fault("ipc-a", "heal-site")
    assert view(na) == everyone

    lab.fault("ipc-a", "agent-isolate")  # its IPC keeps answering the peer
    assert view(na) == {**dict.fromkeys(everyone, "dropped"), "agent-a": "refused"}  # itself: loopback
    assert view(nb) == {**everyone, "agent-a": "dropped"}
    lab.fault("ipc-a", "agent-heal")

    lab.fault("ipc-a", "zk-cut")  # the agent (not the IPC) loses ZooKeeper
    assert view(na) == {**everyone, "zk": "dropped"}
    assert _tcp_from(a.netns or "", {"zk": (zk.host, zk.client_port)}) == {"zk": "open"}
    lab.fault("ipc-a", "isolate-site")
    lab.fault("ipc-a", "heal-site")  # healing the site leaves the ZooKeeper cut in place
    assert view(na) == {**everyone, "zk": "dropped"}

    lab.fault("ipc-a", "unreachable")  # the IPC is cut from everyone, its agent included
    assert view(na)["ipc-a"] == view(nb)["ipc-a"] == "dropped"
    lab.fault("ipc-a", "agent-isolate")
    lab.fault("ipc-a", "restore")
    assert view(na) == everyone


@needs_root
def test_harness_agents_apart(tmp_path: Path) -> None:
    """Agents on their own hosts, driving systemd IPCs over SSH: they bootstrap,
    each endpoint answers at its agent host's address."""
    import json
    import urllib.error
    import urllib.request

    from tests.cluster import Harness

    with Harness(tmp_path, zk_nodes=1, platform="systemd", apart=True) as h:
        assert h.agents["ipc-a"].netns == h.lab.ipc("ipc-a").agent_netns
        h.steady()
        for ipc in ("ipc-a", "ipc-b"):
            try:
                with urllib.request.urlopen(h.url(ipc, "/health"), timeout=2) as r:
                    body = json.loads(r.read())
            except urllib.error.HTTPError as e:  # 503: answering, not healthy
                body = json.loads(e.read())
            assert body, ipc
        assert h.zk_server_of("ipc-a") is h.lab.zk[0]
        h.assert_never_both()


def test_sshd_force_command_and_setenv(tmp_path: Path) -> None:
    """What the windows and systemd profiles rely on: sshd runs its ForceCommand
    with the client's command in SSH_ORIGINAL_COMMAND, and SetEnv's PATH reaches
    exec'd commands (through sh too: the executor's line check runs in one)."""
    from failover.lab.procs import free_ports
    from failover.lab.sshd import SshdHost, keygen, known_hosts_line

    keygen(tmp_path / "client", "test")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "hello").write_text("#!/bin/sh\necho hello from bin\n")
    (tmp_path / "bin" / "hello").chmod(0o755)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    hosts = {
        "plain": SshdHost("plain", "127.0.0.1", 0, tmp_path / "plain", tmp_path / "client.pub", setenv=env),
        "forced": SshdHost(
            "forced",
            "127.0.0.1",
            0,
            tmp_path / "forced",
            tmp_path / "client.pub",
            force_command='echo "[$SSH_ORIGINAL_COMMAND]"',
        ),
    }
    for h, port in zip(hosts.values(), free_ports(2), strict=True):
        h.port = port
        h.prepare()
    (tmp_path / "kh").write_text(
        "".join(known_hosts_line(h.host, h.port, h.host_key.with_suffix(".pub")) for h in hosts.values())
    )
    try:
        for h in hosts.values():
            h.start()
        for h in hosts.values():
            h.wait_listening()
        outs = {}
        for name, h in hosts.items():
            c = paramiko.SSHClient()
            c.load_host_keys(str(tmp_path / "kh"))
            c.connect(
                h.host, port=h.port, key_filename=str(tmp_path / "client"), look_for_keys=False, allow_agent=False
            )
            try:
                outs[name] = [labssh.run(c, cmd)[1] for cmd in (["hello"], ["sh", "-c", "hello"])]
            finally:
                c.close()
    finally:
        for h in hosts.values():
            h.stop()
    assert outs["plain"] == ["hello from bin\n"] * 2
    assert outs["forced"] == ["[hello]\n", "[sh -c hello]\n"]
