"""The lab's fence device (failover/lab/fence.py) and the power faults: a power
switch per simulated IPC, driven as the agent drives it (the inventory's
commands, no shell), from any network namespace. Real lab, no agents."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from failover import inventory as inv_mod
from failover.lab import netns, observer
from failover.lab.lab import Lab
from failover.lab.procs import alive, pids_where
from failover.layouts import SERVICES
from tests import labssh

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A 1-node lab (no agents); every test leaves both IPCs powered on."""
    lab = Lab(root=tmp_path_factory.mktemp("power") / "lab", zk_count=1)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


def fence(lab: Lab, ipc: str, action: str, netns_name: str | None = None) -> tuple[int, str, float]:
    """Run the inventory's fence command for `action` as the agent does: split
    with shlex, no shell (inside `netns_name` when given)."""
    doc = yaml.safe_load(lab.inventory_path.read_text())
    conf = next(i for i in doc["clusters"][0]["ipcs"] if i["name"] == ipc)["fence"]
    argv = shlex.split(conf[action])
    if netns_name:
        argv = ["ip", "netns", "exec", netns_name, *argv]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def probe(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as c:
            c.settimeout(0.5)
            c.sendall(b"PING\n")
            return c.recv(64).startswith(b"PONG")
    except OSError:
        return False


def sims(lab: Lab, ipc: str) -> list[int]:
    """Live service managers of one lab IPC, from /proc."""
    d = lab.ipc(ipc).dir.encode()
    return [p for p in pids_where(lambda argv: b"failover.lab.sim" in argv and d in argv) if alive(p)]


def test_inventory_fence_key(lab: Lab) -> None:
    c = inv_mod.load(lab.inventory_path).cluster()
    for i in c.ipcs:
        assert i.fence is not None and i.fence.timeout == 5
        assert shlex.split(i.fence.status)[:3] == [sys.executable, "-m", "failover.lab.fence"]
        assert f"--ipc {i.name} status" in i.fence.status
    lab.fence = False
    try:
        assert "fence" not in lab._inventory_ipc(lab.ipc("ipc-a"))
    finally:
        lab.fence = True


def test_off_on_status_exit_codes_and_idempotence(lab: Lab) -> None:
    a = lab.ipc("ipc-a")
    before = set(observer.snapshot(lab.labid)["ipc-a"])
    assert {"cti", "ivr"} <= before
    assert fence(lab, "ipc-a", "status")[0] == 0
    rc, out, took_off = fence(lab, "ipc-a", "off")
    assert rc == 0, out
    # Everything of the IPC is gone: SSH refused, every probe fails, no service process.
    assert refused(a.address, a.ssh_port)
    for svc in ("cti", "ivr", "kcxp", "kcbp"):
        assert not probe(a.address, a.ports[svc]), svc
    assert "ipc-a" not in observer.snapshot(lab.labid)
    assert sims(lab, "ipc-a") == []
    assert fence(lab, "ipc-a", "status")[0] == 2
    assert fence(lab, "ipc-a", "off")[0] == 0  # idempotent
    assert fence(lab, "ipc-a", "status")[0] == 2
    st = lab.status()["ipcs"]["ipc-a"]
    assert (st["power"], st["sshd"], st["simulator"]) == ("off", "down", "down (powered off)")
    assert lab.status()["ipcs"]["ipc-b"]["power"] == "on"  # the peer untouched
    rc, out, took_on = fence(lab, "ipc-a", "on")
    assert rc == 0, out
    assert fence(lab, "ipc-a", "on")[0] == 0  # idempotent
    assert set(observer.snapshot(lab.labid)["ipc-a"]) == {"driver"}  # at boot: the driver only
    assert not refused(a.address, a.ssh_port)
    rc, _, took_status = fence(lab, "ipc-a", "status")
    assert rc == 0
    print(f"fence device: status {took_status:.3f} s, off {took_off:.3f} s, on {took_on:.3f} s")
    # Driven over SSH again (the in-memory Lab re-reads the PIDs the command changed).
    c = labssh.client(lab, lab.ipc("ipc-a"))
    try:
        code, st, _ = labssh.simctl(c, lab.ipc("ipc-a"), "status")
        assert code == 0 and st["services"]["driver"]["state"] == "RUNNING"
    finally:
        c.close()
    _back_to_normal(lab, "ipc-a")


def _back_to_normal(lab: Lab, ipc: str) -> None:
    """The IPC's layout of `lab up` again (services started over simctl)."""
    from failover.layouts import Layout, running_set, start_order

    role = Layout.PRIMARY if lab.ipc(ipc).preferred_role == "primary" else Layout.STANDBY
    for s in start_order(running_set(role, SERVICES)):
        out = subprocess.run([*lab.ipc(ipc).control(), "start", s], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr


def test_power_faults_autostart_and_observer(lab: Lab) -> None:
    b = lab.ipc("ipc-b")
    assert lab.fault("ipc-b", "power-off").startswith("ipc-b: powered off")
    assert not lab.powered("ipc-b") and "ipc-b" not in observer.snapshot(lab.labid)
    with pytest.raises(Exception, match="powered off"):
        lab.fault("ipc-b", "kill", "cti")
    # CTI and IVR set to start automatically: they come back by themselves,
    # beside ipc-a's, and the observer sees both IPCs answering calls.
    with observer.Recorder(lab.labid, lab.cluster_ipcs()) as rec:
        assert "driver, cti, ivr" in lab.fault("ipc-b", "power-on", "cti,ivr")
        assert set(observer.snapshot(lab.labid)["ipc-b"]) == {"driver", "cti", "ivr"}
        assert probe(b.address, b.ports["cti"]) and probe(b.address, b.ports["ivr"])
        time.sleep(0.1)
    assert {svc for _, svc, _ in rec.violations()} == {"cti", "ivr"}
    st = json.loads(subprocess.run([*b.control(), "status"], capture_output=True, check=True).stdout)
    assert st["services"]["cti"]["start_type"] == 2  # AUTO_START, as sc qc would show it
    # sim.json's own AUTO_START services start at every boot; restore powers on.
    cfg_path = Path(b.dir) / "sim.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "start_types": {"kcxp": "AUTO_START"}}))
    try:
        lab.power_off("ipc-b")
        lab.power_off("ipc-b")  # idempotent
        assert lab.fault("ipc-b", "restore").endswith("faults cleared (services left as they are)")
        assert lab.powered("ipc-b")
        assert set(observer.snapshot(lab.labid)["ipc-b"]) == {"driver", "kcxp"}
    finally:
        cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="unknown service 'bogus'"):
        lab.power_on("ipc-b", ("bogus",))  # validated even when already on
    subprocess.run([*b.control(), "stop", "kcxp"], capture_output=True, check=True)
    _back_to_normal(lab, "ipc-b")


def test_fence_broken(lab: Lab) -> None:
    lab.fault("ipc-a", "fence-broken")
    try:
        for action in ("status", "off", "on"):
            rc, out, _ = fence(lab, "ipc-a", action)
            assert rc == 1 and "no answer from its management controller" in out, (action, out)
        assert lab.powered("ipc-a") and "cti" in observer.snapshot(lab.labid)["ipc-a"]  # `off` did nothing
        assert lab.status()["ipcs"]["ipc-a"]["fence"] == "not answering (fence-broken)"
    finally:
        lab.fault("ipc-a", "fence-fixed")
    assert fence(lab, "ipc-a", "status")[0] == 0


def test_usage_error_is_never_powered_off(lab: Lab) -> None:
    base = [sys.executable, "-m", "failover.lab.fence", "--root", str(lab.root)]
    for argv in (["--ipc", "ipc-a"], ["--ipc", "ipc-a", "reboot"], ["--ipc", "nope", "status"], ["status"]):
        p = subprocess.run([*base, *argv], capture_output=True, text=True, check=False)
        assert p.returncode == 1, (argv, p.stdout, p.stderr)
    alt = subprocess.run([*base, "-n", "ipc-a", "-o", "status"], capture_output=True, text=True, check=False)
    assert alt.returncode == 0 and "Status: ON" in alt.stdout


def test_concurrent_status_and_power_changes(lab: Lab) -> None:
    """status read while other processes power the IPC off and on: always 0
    or 2, never an error; two `on` at once start one simulator."""
    codes: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            codes.append(fence(lab, "ipc-b", "status")[0])

    t = threading.Thread(target=poll)
    t.start()
    try:
        for _ in range(2):
            assert fence(lab, "ipc-b", "off")[0] == 0
            argv = shlex.split(yaml.safe_load(lab.inventory_path.read_text())["clusters"][0]["ipcs"][1]["fence"]["on"])
            ons = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
            assert [p.wait(30) for p in ons] == [0, 0]
            assert len(sims(lab, "ipc-b")) == 1
    finally:
        stop.set()
        t.join()
    assert codes and set(codes) <= {0, 2}, codes
    assert lab.powered("ipc-b") and lab.ipc("ipc-b").sim_pid in sims(lab, "ipc-b")
    _back_to_normal(lab, "ipc-b")


def test_down_stops_what_the_device_started(tmp_path: Path) -> None:
    """A Lab object holding stale PIDs (the device's command, another process,
    powered an IPC off and on) still stops everything by PID."""
    lab = Lab(root=tmp_path / "lab", zk_count=1)
    lab.up()
    try:
        old = lab.ipc("ipc-a").sim_pid
        assert fence(lab, "ipc-a", "off")[0] == 0
        assert fence(lab, "ipc-a", "on")[0] == 0
        assert old == lab.ipc("ipc-a").sim_pid  # this object has not looked yet
        started = lab.live_pids()  # re-reads lab.json
        assert lab.ipc("ipc-a").sim_pid != old and lab.ipc("ipc-a").sim_pid in started
        lab.fault("ipc-b", "power-off")
    finally:
        assert lab.down() == []
    assert not any(alive(p) for p in started)
    assert sims(lab, "ipc-a") == []


@pytest.mark.skipif(not netns.available(), reason="agents on their own hosts need network namespaces (root)")
def test_device_from_an_agent_host_windows(tmp_path: Path) -> None:
    """Agents apart, windows IPCs: the inventory's commands run in the agent
    host's namespace; the simulator comes back in the IPC's namespace."""
    lab = Lab(root=tmp_path / "lab", zk_count=1, platform="windows", agents_apart=True)
    lab.up()
    try:
        a = lab.ipc("ipc-a")
        ns = lab.agent_netns("ipc-a")
        assert ns and ns != a.netns
        assert fence(lab, "ipc-a", "status", ns)[0] == 0
        rc, out, _ = fence(lab, "ipc-a", "off", ns)
        assert rc == 0, out
        assert "ipc-a" not in observer.snapshot(lab.labid) and fence(lab, "ipc-a", "status", ns)[0] == 2
        rc, out, _ = fence(lab, "ipc-a", "on", ns)
        assert rc == 0, out
        lab.live_pids()  # refresh
        ipc_ns = os.stat(f"/run/netns/{a.netns}").st_ino
        assert os.readlink(f"/proc/{lab.ipc('ipc-a').sim_pid}/ns/net") == f"net:[{ipc_ns}]"
        c = labssh.client(lab, lab.ipc("ipc-a"))
        try:
            _, out, _ = labssh.run_line(c, 'sc query "Dialogic System Service" & sc query CTIServer')
            assert out.count("RUNNING") == 1 and "STOPPED" in out, out
        finally:
            c.close()
    finally:
        assert lab.down() == []
