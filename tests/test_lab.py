"""The lab itself: real ZooKeeper quorum, real sshd with strict host keys, the
service simulator, every fault kind visible to the independent observer."""

from __future__ import annotations

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


def test_cli_lab_cycle(tmp_path: Path) -> None:
    """`failover lab up` -> status -> down, as separate processes."""
    d = str(tmp_path / "lab")
    exe = [str(Path(__import__("sys").executable).with_name("failover"))]
    up = subprocess.run(
        [*exe, "lab", "up", "--dir", d, "--zk-nodes", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        assert up.returncode == 0, up.stderr
        st = subprocess.run([*exe, "lab", "status", "--dir", d], capture_output=True, text=True, timeout=30)
        assert "1/1 nodes serving" in st.stdout and "IPC ipc-b" in st.stdout
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
