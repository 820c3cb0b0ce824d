"""The on-call CLI, as a real process, against the lab with both agents running."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster import FAILOVER, Harness, wait_for

pytestmark = pytest.mark.timeout(240)


def cli(h: Harness, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FAILOVER, *args, "-i", str(h.lab.inventory_path)], capture_output=True, text=True, timeout=timeout
    )


def cli_bg(h: Harness, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [FAILOVER, *args, "-i", str(h.lab.inventory_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def standby_ready(h: Harness, ipc: str) -> None:
    wait_for(
        lambda: h.member(ipc).get("eligible") is True and h.member(ipc).get("decision") == "none",
        30,
        what=f"{ipc} eligible standby",
    )


def test_switchover_both_ways(h: Harness) -> None:
    r = cli(h, "switchover", "--yes", "--reason", "monthly test", "--operator", "alice")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Plan:" in r.stdout and "switchover done: ipc-b is primary, epoch 2" in r.stdout
    assert "stop IVR on ipc-a: done" in r.stdout and "start CTI on ipc-b: done" in r.stdout  # live progress
    assert h.record()["roles"] == {"ipc-a": "standby", "ipc-b": "primary"}
    assert h.serving("ipc-b") and not ({"cti", "ivr"} & set(h.running("ipc-a")))
    standby_ready(h, "ipc-a")
    r = cli(h, "switchover", "--yes", "--operator", "bob")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ipc-a is primary, epoch 3" in r.stdout
    wait_for(lambda: h.serving("ipc-a"), 10)
    hist = cli(h, "history")
    assert "by alice: switchover requested by alice: monthly test" in hist.stdout
    assert "by bob" in hist.stdout


def test_two_concurrent_switchovers_exactly_one_proceeds(h: Harness) -> None:
    procs = [
        cli_bg(h, "switchover", "--yes", "--operator", name, "--reason", f"test {name}") for name in ("carol", "dave")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    loser = outs[[p.returncode for p in procs].index(3)]
    assert "is switching over to ipc-b" in loser[1] and "since" in loser[1], loser
    assert h.record()["epoch"] == 2


def test_switchover_refused_unhealthy_candidate(h: Harness) -> None:
    h.lab.fault("ipc-b", "kill", "kcxp")  # rule 3: the standby fences itself
    wait_for(lambda: h.record()["roles"]["ipc-b"] == "fenced", 15)
    r = cli(h, "switchover", "--yes")
    assert r.returncode == 3 and "refused: cannot switch over to ipc-b" in r.stderr and "fenced" in r.stderr
    assert "Traceback" not in r.stderr
    assert h.record()["primary"] == "ipc-a"


def test_switchover_paused_needs_explicit_target(h: Harness) -> None:
    assert cli(h, "pause", "--reason", "carrier maintenance", "--operator", "erin").returncode == 0
    r = cli(h, "switchover", "--yes")
    assert r.returncode == 3 and "paused" in r.stderr
    r = cli(h, "switchover", "--yes", "--to", "ipc-b")
    assert r.returncode == 0, r.stdout + r.stderr
    assert h.record()["primary"] == "ipc-b"


def test_scheduled_switchover_runs_and_can_be_cancelled(h: Harness) -> None:
    r = cli(h, "switchover", "--yes", "--at", "+60s", "--reason", "tonight")
    assert r.returncode == 0 and "scheduled" in r.stdout
    st = cli(h, "status")
    assert "switchover to ipc-b at" in st.stdout and "tonight" in st.stdout
    r = cli(h, "switchover", "--cancel")
    assert r.returncode == 0 and "cancelled" in r.stdout
    assert "switchover to ipc-b" not in cli(h, "status").stdout
    r = cli(h, "switchover", "--yes", "--at", "+3s")
    assert r.returncode == 0
    time.sleep(1)
    assert h.record()["primary"] == "ipc-a"  # not yet
    wait_for(lambda: h.record().get("primary") == "ipc-b", 20, what="scheduled switchover done")
    wait_for(lambda: h.serving("ipc-b"), 10)


def test_pause_blocks_automatic_failover(h: Harness) -> None:
    assert cli(h, "pause", "--reason", "drill prep", "--operator", "frank").returncode == 0
    h.lab.fault("ipc-a", "kill", "cti")
    time.sleep(4)
    assert h.record()["primary"] == "ipc-a" and h.record()["epoch"] == 1
    st = cli(h, "status")
    assert "PAUSED by frank" in st.stdout and "drill prep" in st.stdout
    assert "Paused (paused by frank: drill prep): not acting; would have done" in st.stdout
    assert cli(h, "resume").returncode == 0
    wait_for(lambda: h.record().get("primary") == "ipc-b", 20, what="failover after resume")


def test_forced_failover_with_dead_primary_and_rejoin(h: Harness) -> None:
    assert cli(h, "pause", "--reason", "manual mode tonight").returncode == 0
    h.agents["ipc-a"].kill9()
    wait_for(lambda: h.store.leader() is None, 15, what="old session expired")
    time.sleep(1)
    assert h.record()["primary"] == "ipc-a"  # paused: nobody took over
    r = cli(h, "failover", "--to", "ipc-b", "--yes", "--reason", "ipc-a agent host died", "--operator", "gina")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "failover done" in r.stdout and "fencing ipc-a" in r.stdout
    assert h.serving("ipc-b") and h.running("ipc-a") == {}
    assert h.record()["roles"]["ipc-a"] == "fenced"
    h.agents["ipc-a"].start()
    r = cli(h, "rejoin", "ipc-a", "--reason", "agent host repaired")
    assert r.returncode == 0, r.stdout + r.stderr
    assert h.record()["roles"]["ipc-a"] == "standby"
    assert {"driver", "kcxp", "kcbp"} <= set(h.running("ipc-a"))
    hist = cli(h, "history").stdout
    assert "manual-failover" in hist and "by gina" in hist and "ipc-a agent host died" in hist and "rejoin" in hist


def test_rejoin_waits_for_the_agent_not_a_stale_record(h: Harness) -> None:
    """After a switchover the old primary's member record already says
    "eligible standby"; a rejoin is done only once its agent has acted on it."""
    assert cli(h, "switchover", "--yes").returncode == 0
    standby_ready(h, "ipc-a")
    h.agents["ipc-a"].sigstop()
    try:
        r = cli(h, "rejoin", "ipc-a", "--timeout", "3")
        assert r.returncode == 1 and "rejoin FAILED" in r.stderr, r.stdout + r.stderr
    finally:
        h.agents["ipc-a"].sigcont()
    r = cli(h, "rejoin", "ipc-a")
    assert r.returncode == 0 and "rejoin done: ipc-a is an eligible standby" in r.stdout, r.stdout + r.stderr
    assert "ipc-a" not in (h.record().get("rejoin") or {})


def test_failover_refused_while_primary_alive(h: Harness) -> None:
    r = cli(h, "failover", "--to", "ipc-b", "--yes")
    assert r.returncode == 3 and "use `failover switchover`" in r.stderr


def test_status_json_matches_table(h: Harness) -> None:
    r = cli(h, "status", "--json", "--cluster", "lab")
    assert r.returncode == 0
    v = json.loads(r.stdout)
    assert json.loads(cli(h, "status", "--json").stdout)[0]["primary"] == "ipc-a"  # all clusters: a list
    assert v["primary"] == "ipc-a" and v["epoch"] == 1 and v["leader"] == "ipc-a"
    assert v["ipcs"]["ipc-b"]["role"] == "standby" and v["ipcs"]["ipc-b"]["eligible"] is True
    assert v["ipcs"]["ipc-a"]["services"]["cti"]["state"] == "RUNNING"
    assert v["capacity"]["max_ivr"] == 90 and v["capacity"]["ivr_with_10_agents"] == 70
    table = cli(h, "status").stdout
    assert f"primary ipc-a, epoch {v['epoch']}" in table and "capacity 90 IVR or 45 agent calls" in table
    for line in table.splitlines():
        if line.startswith("ipc-b "):
            assert "standby" in line and "yes" in line
    hj = json.loads(cli(h, "history", "--json").stdout)
    assert hj[0]["kind"] == "bootstrap"


def test_zookeeper_unreachable_is_one_sentence(tmp_path: Path) -> None:
    from tests.test_inventory import GOOD, _write

    p = _write(tmp_path, GOOD.replace("127.0.0.1:2181", "127.0.0.1:9"))
    r = subprocess.run([FAILOVER, "status", "-i", str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "ZooKeeper unreachable for cluster cc" in (r.stdout + r.stderr)
    assert "Traceback" not in r.stderr
