"""The agent against a real 3-node ZooKeeper and lab IPCs. Every test runs the
independent observer (every 25 ms) and fails if CTI or IVR ever runs on both
IPCs at the same instant. Each test names its fault."""

from __future__ import annotations

import time

import pytest

from tests.cluster import Harness, wait_for

pytestmark = pytest.mark.timeout(180)

PROMOTED = {"driver", "fax", "cti", "ivr", "kcxp-replica", "kcbp-replica"}


def assert_failed_over(h: Harness) -> None:
    wait_for(
        lambda: h.record().get("primary") == "ipc-b" and set(h.running("ipc-b")) == PROMOTED,
        20,
        what="ipc-b serving",
    )
    wait_for(lambda: h.running("ipc-a") == {}, 10, what="everything stopped on ipc-a")
    rec = h.record()
    assert rec["epoch"] == 2 and rec["roles"] == {"ipc-a": "fenced", "ipc-b": "primary"}
    hist = wait_for(lambda: [e.to_json() for e in h.store.history() if e.kind == "failover"], 5, what="history")
    assert len(hist) == 1 and hist[0]["from"] == "ipc-a" and hist[0]["to"] == "ipc-b" and hist[0]["epoch"] == 2
    assert hist[0]["outcome"] == "done"


def test_1_cti_killed_on_primary_fails_over(h: Harness) -> None:
    h.lab.fault("ipc-a", "kill", "cti")
    assert_failed_over(h)
    # Each agent logs its sentence when its cycle ends, which may be after the
    # other IPC already serves: wait for the line rather than read it once.
    wait_for(
        lambda: any("Took the primary role from ipc-a (epoch 1 -> 2)" in s for s in h.agents["ipc-b"].sentences()),
        10,
        what="ipc-b's sentence",
    )
    wait_for(
        lambda: any(
            "CTI stopped on primary ipc-a" in s and "handed to ipc-b" in s for s in h.agents["ipc-a"].sentences()
        ),
        10,
        what="ipc-a's sentence",
    )


def test_2_ivr_hung_on_primary_fails_over(h: Harness) -> None:
    h.lab.fault("ipc-a", "hang", "ivr")
    assert_failed_over(h)
    assert any("IVR not answering its probe on primary ipc-a" in s for s in h.agents["ipc-a"].sentences())


def test_3_line_alarm_stops_driver_only(h: Harness) -> None:
    before = h.pids("ipc-a")
    h.lab.fault("ipc-a", "line-alarm")
    wait_for(lambda: "driver" not in h.running("ipc-a"), 10, what="driver stopped")
    time.sleep(1.5)  # a few more cycles: nothing else may move
    run = h.running("ipc-a")
    assert set(run) == {"cti", "ivr", "kcxp", "kcbp"}
    after = h.pids("ipc-a")
    assert all(after[s] == before[s] for s in ("cti", "ivr", "kcxp", "kcbp"))  # not restarted
    rec = h.record()
    assert rec["primary"] == "ipc-a" and rec["epoch"] == 1 and rec["board_down"] == ["ipc-a"]
    assert any("rule 1" in s for s in h.agents["ipc-a"].sentences())
    assert set(h.running("ipc-b")) == {"driver", "fax", "kcxp", "kcbp"}


def test_4_standby_kcxp_dies_standby_fenced(h: Harness) -> None:
    before = h.pids("ipc-a")
    h.lab.fault("ipc-b", "kill", "kcxp")
    wait_for(lambda: h.running("ipc-b") == {}, 10, what="all stopped on the standby")
    wait_for(lambda: h.record()["roles"]["ipc-b"] == "fenced", 5, what="standby ineligible")
    time.sleep(1.0)
    rec = h.record()
    assert rec["primary"] == "ipc-a" and rec["epoch"] == 1
    assert h.member("ipc-b")["eligible"] is False
    assert h.pids("ipc-a") == before  # calls stay on the primary, untouched
    assert any("rule 3" in s for s in h.agents["ipc-b"].sentences())


def test_5_primary_agent_killed_and_restarted_within_grace(h: Harness) -> None:
    before = {ipc: h.pids(ipc) for ipc in ("ipc-a", "ipc-b")}
    h.kill9_and_restart_agent("ipc-a", down=1.0)  # well within the 4 s session timeout
    time.sleep(3.0 + 2.0)  # past the old session's timeout: nothing may move
    assert {ipc: h.pids(ipc) for ipc in ("ipc-a", "ipc-b")} == before
    rec = h.record()
    assert rec["primary"] == "ipc-a" and rec["epoch"] == 1
    assert h.member("ipc-a")["leader"] is True


def test_6_primary_agent_killed_not_restarted_takeover_after_fencing(h: Harness) -> None:
    h.agents["ipc-a"].kill9()
    wait_for(lambda: h.record().get("primary") == "ipc-b", 30, what="takeover")
    wait_for(lambda: set(h.running("ipc-b")) == PROMOTED, 10, what="ipc-b serving")
    assert h.running("ipc-a") == {}  # fenced over SSH by ipc-b's agent before promotion
    hist = wait_for(lambda: [e.to_json() for e in h.store.history() if e.to == "ipc-b"], 5, what="history")
    assert hist[-1]["proof"]["kind"] == "verified", hist[-1]
    assert "CTI and IVR verified stopped on ipc-a" in hist[-1]["fencing"]
    assert h.record()["epoch"] == 2


def test_7_zookeeper_leader_killed_no_role_change(h: Harness) -> None:
    before = {ipc: h.pids(ipc) for ipc in ("ipc-a", "ipc-b")}
    leader = next(n for n in h.lab.zk if n.mode() == "leader")
    leader.kill9()
    time.sleep(6.0)
    wait_for(lambda: h.member("ipc-a").get("decision") == "none", 15, what="primary reporting")
    assert {ipc: h.pids(ipc) for ipc in ("ipc-a", "ipc-b")} == before
    rec = h.record()
    assert rec["primary"] == "ipc-a" and rec["epoch"] == 1


def test_8_both_agents_restarted_together(h: Harness) -> None:
    before = {ipc: h.pids(ipc) for ipc in ("ipc-a", "ipc-b")}
    for a in h.agents.values():
        a.kill9()
    for a in h.agents.values():
        a.start()
    wait_for(
        lambda: all(h.member(i).get("agent", {}).get("pid") == h.agents[i].pid for i in h.agents),
        15,
        what="both agents reporting",
    )
    time.sleep(5.0)
    assert {ipc: h.pids(ipc) for ipc in ("ipc-a", "ipc-b")} == before
    rec = h.record()
    assert rec["primary"] == "ipc-a" and rec["epoch"] == 1


def test_board_down_primary_switched_over_then_rejoined_becomes_standby(h: Harness) -> None:
    """The Sunday drill's line-fault leg, with the rejoin landing right after
    the old primary's agent stopped a service on purpose (seen in CI as a
    race): the board stays stopped until the rejoin, and what the agent stopped
    itself is never counted as a crash (no rule 3, the IPC is not fenced)."""
    from failover import ops
    from failover.lab import simctl
    from tests.test_cli import cli

    h.lab.fault("ipc-a", "line-alarm")
    wait_for(lambda: h.record().get("board_down") == ["ipc-a"], 20, what="rule 1")
    h.lab.fault("ipc-a", "line-clear")
    t_switch = time.monotonic()
    r = cli(h, "switchover", "--yes", "--to", "ipc-b", "--operator", "drill")
    assert r.returncode == 0, r.stdout + r.stderr
    shown = [ln.split() for ln in r.stdout.splitlines() if ln.strip().startswith("ipc-a ")]
    assert shown and not any(w[1] == "start" and w[2] in ("driver", "fax") for w in shown), r.stdout
    wait_for(lambda: h.member("ipc-a").get("role") == "standby" and h.member("ipc-a").get("decision") == "none", 20)
    assert h.recorder is not None
    # Rule 1's layout holds until the rejoin: the switchover did not start the board.
    assert all("driver" not in x.running.get("ipc-a", {}) for x in h.recorder.samples if x.t >= t_switch)

    # Somebody starts the board driver by hand; the standby's agent stops it
    # (board down). Freeze the agent right after that stop and rejoin the IPC
    # meanwhile, so its next observations see "driver stopped" under a layout
    # that expects it running.
    simctl.request(h.lab.ipc("ipc-a").dir, {"op": "start", "service": "driver"}, timeout=10)
    wait_for(lambda: "driver" in h.running("ipc-a"), 10, interval=0.005, what="driver up by hand")
    wait_for(lambda: "driver" not in h.running("ipc-a"), 10, interval=0.005, what="the agent stopping it")
    h.agents["ipc-a"].sigstop()
    try:
        ops.rejoin(h.store, "ipc-a", "drill", "line repaired")
    finally:
        h.agents["ipc-a"].sigcont()
    wait_for(
        lambda: h.member("ipc-a").get("eligible") is True and {"driver", "fax"} <= set(h.running("ipc-a")),
        20,
        what="ipc-a an eligible standby with its board",
    )
    assert h.record()["roles"] == {"ipc-a": "standby", "ipc-b": "primary"}
    assert not any("rule 3" in s for s in h.agents["ipc-a"].sentences())
