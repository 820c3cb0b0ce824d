"""The acceptance scenarios in the plan's own deployment shapes: Windows IPCs
(Win32-OpenSSH + cmd.exe + sc.exe stand-in) and systemd IPCs, each agent on a
host of its own (a network namespace reaching its IPC, the peer agent and
ZooKeeper over routed links) with the inventory's DEFAULT HTTP settings (bind
0.0.0.0, port 8008, only `advertise` set). Real 3-node ZooKeeper, real sshd,
agents as processes; the independent observer samples /proc every 25 ms and
every test fails on any instant with CTI/IVR on both IPCs.

Nothing here depends on the profile: the same scenario, the same assertions,
on every shape. The `lab` profile with co-located agents runs the same
scenarios in test_agent.py, test_cli.py and test_resilience.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.lab import netns
from failover.lab.zk import wait_serving
from tests.cluster import Harness, wait_for
from tests.test_agent import assert_failed_over
from tests.test_cli import cli, cli_bg, standby_ready

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not netns.available(), reason="agents on their own hosts need network namespaces (root)"),
]

PROFILES = ("windows", "systemd")
STANDBY = {"driver", "fax", "kcxp", "kcbp"}


@pytest.fixture(params=PROFILES)
def s(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Both agents on hosts of their own, driving IPCs of the profile; ipc-a
    primary and serving; the observer recording."""
    with Harness(tmp_path, platform=request.param, apart=True) as h:
        assert h.cluster.ipc("ipc-a").http.bind == "0.0.0.0" and h.cluster.ipc("ipc-a").http.port == 8008
        assert h.cluster.ipc("ipc-a").platform == request.param
        h.steady()
        yield h
        h.assert_never_both()


def untouched(h: Harness, before: dict[str, dict[str, int | None]]) -> None:
    """No service on either IPC was restarted (same PIDs)."""
    assert {ipc: h.pids(ipc) for ipc in ("ipc-a", "ipc-b")} == before


def all_pids(h: Harness) -> dict[str, dict[str, int | None]]:
    return {ipc: h.pids(ipc) for ipc in ("ipc-a", "ipc-b")}


# ----- the plan's three rules ---------------------------------------------------
def test_rule2_cti_killed_fails_over_then_rejoin(s: Harness) -> None:
    s.lab.fault("ipc-a", "kill", "cti")
    assert_failed_over(s)
    assert any("CTI stopped on primary ipc-a" in x and "handed to ipc-b" in x for x in s.agents["ipc-a"].sentences())
    r = cli(s, "rejoin", "ipc-a", "--reason", "CTI repaired")
    assert r.returncode == 0 and "rejoin done: ipc-a is an eligible standby" in r.stdout, r.stdout + r.stderr
    assert set(s.running("ipc-a")) == STANDBY and s.record()["roles"]["ipc-a"] == "standby"


def test_rule2_ivr_hung_fails_over(s: Harness) -> None:
    s.lab.fault("ipc-a", "hang", "ivr")  # SIGSTOP: its service manager still says running
    assert_failed_over(s)
    assert any("IVR not answering its probe on primary ipc-a" in x for x in s.agents["ipc-a"].sentences())


@pytest.mark.parametrize("fault", ["line-alarm", "driver-crash"])
def test_rule1_board_fault_stops_the_driver_only(s: Harness, fault: str) -> None:
    before = s.pids("ipc-a")
    s.lab.fault("ipc-a", fault)
    # A line alarm is seen only through the inventory's line_check on these profiles.
    wait_for(lambda: s.record().get("board_down") == ["ipc-a"], 15, what="rule 1")
    wait_for(lambda: "driver" not in s.running("ipc-a"), 10, what="driver stopped")
    time.sleep(1.5)  # a few more cycles: nothing else may move
    assert set(s.running("ipc-a")) == {"cti", "ivr", "kcxp", "kcbp"}
    after = s.pids("ipc-a")
    assert all(after[x] == before[x] for x in ("cti", "ivr", "kcxp", "kcbp"))  # not restarted
    rec = s.record()
    assert rec["primary"] == "ipc-a" and rec["epoch"] == 1
    assert any("rule 1" in x for x in s.agents["ipc-a"].sentences())
    assert set(s.running("ipc-b")) == STANDBY


def test_rule3_standby_kcxp_killed_standby_fenced(s: Harness) -> None:
    before = s.pids("ipc-a")
    s.lab.fault("ipc-b", "kill", "kcxp")
    wait_for(lambda: s.running("ipc-b") == {}, 10, what="all stopped on the standby")
    wait_for(lambda: s.record()["roles"]["ipc-b"] == "fenced", 5, what="standby ineligible")
    time.sleep(1.0)
    assert s.record()["primary"] == "ipc-a" and s.record()["epoch"] == 1
    assert s.pids("ipc-a") == before  # calls stay on the primary, untouched
    assert any("rule 3" in x for x in s.agents["ipc-b"].sentences())


# ----- the on-call engineer's moves ------------------------------------------------
def test_switchover_and_switch_back(s: Harness) -> None:
    r = cli(s, "switchover", "--yes", "--reason", "monthly test", "--operator", "alice")
    assert r.returncode == 0 and "switchover done: ipc-b is primary, epoch 2" in r.stdout, r.stdout + r.stderr
    assert s.serving("ipc-b") and not ({"cti", "ivr"} & set(s.running("ipc-a")))
    standby_ready(s, "ipc-a")
    r = cli(s, "switchover", "--yes", "--operator", "bob")
    assert r.returncode == 0 and "ipc-a is primary, epoch 3" in r.stdout, r.stdout + r.stderr
    wait_for(lambda: s.serving("ipc-a") and set(s.running("ipc-b")) == STANDBY, 10, what="back to normal")


def test_two_concurrent_switchovers_exactly_one_proceeds(s: Harness) -> None:
    procs = [cli_bg(s, "switchover", "--yes", "--operator", who) for who in ("carol", "dave")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 3], outs
    assert s.record()["epoch"] == 2 and s.serving("ipc-b")


# ----- agents and ZooKeeper failing -------------------------------------------------
def test_primary_agent_kill9_and_restart_nothing_bounced(s: Harness) -> None:
    before = all_pids(s)
    s.kill9_and_restart_agent("ipc-a", down=1.0)  # well within the 4 s session timeout
    time.sleep(5.0)  # past the old session's timeout: nothing may move
    untouched(s, before)
    rec = s.record()
    assert rec["primary"] == "ipc-a" and rec["epoch"] == 1 and s.member("ipc-a")["leader"] is True


def test_whole_ensemble_down_60s_calls_stay_up(s: Harness) -> None:
    """The failsafe lease crosses from the primary's agent host to the
    standby's, at the default port: calls never stop."""
    before = all_pids(s)
    t0 = time.monotonic()
    for n in s.lab.zk:
        n.stop()
    time.sleep(60)
    assert any("failsafe" in x for x in s.agents["ipc-a"].sentences())
    assert not any("(self-fencing)" in x for x in s.agents["ipc-a"].sentences())
    for n in s.lab.zk:
        n.start()
    wait_serving(s.lab.zk)
    wait_for(
        lambda: s.record().get("primary") == "ipc-a" and s.member("ipc-a").get("leader") is True,
        30,
        what="ipc-a the one primary again",
    )
    assert s.record()["epoch"] == 1
    assert s.recorder is not None
    assert all({"cti", "ivr"} <= set(x.running.get("ipc-a", {})) for x in s.recorder.samples if x.t >= t0)
    untouched(s, before)


def test_primary_site_isolated_never_both(s: Harness) -> None:
    """The primary IPC and its agent cut off from ZooKeeper, the standby IPC
    and the standby's agent (they still reach each other): the primary's agent
    gets no lease (the peer is unreachable) and stops CTI/IVR itself; the
    standby promotes; never both."""
    t0 = time.monotonic()
    s.lab.fault("ipc-a", "isolate-site")
    wait_for(lambda: s.serving("ipc-b") and s.record().get("primary") == "ipc-b", 40, what="ipc-b serving")
    rec = s.recorder
    assert rec is not None

    def first(cond) -> float | None:  # type: ignore[no-untyped-def]
        return next((x.t for x in list(rec.samples) if x.t > t0 and cond(x.running)), None)

    # the observer's own samples (it may be a sample behind the wait above)
    t_serving = wait_for(lambda: first(lambda r: {"cti", "ivr"} <= set(r.get("ipc-b", {}))), 5, what="observed")
    t_fenced = first(lambda r: not ({"cti", "ivr"} & set(r.get("ipc-a", {}))))
    s.assert_never_both()
    assert t_fenced is not None
    assert t_fenced < t_serving
    assert any("self-fencing" in x for x in s.agents["ipc-a"].sentences())
    s.lab.fault("ipc-a", "heal-site")
    wait_for(lambda: s.member("ipc-a").get("role") == "fenced", 30, what="ipc-a back, fenced")
    time.sleep(2)
    assert s.record()["primary"] == "ipc-b" and not ({"cti", "ivr"} & set(s.running("ipc-a")))
