"""The executor's Windows path end to end: a real sshd whose every command goes
to the cmd.exe + sc.exe stand-in (CRLF output, sc.exe's states, timings and
Win32 codes). What the plan's IPCs put in front of the product: pending
states, 1056/1061/1062/1053, PAUSED, a service that ignores its stop killed
with `taskkill /F /PID` (PID from `sc.exe queryex`) at its stop timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover import executor as ex
from failover import inventory as inv_mod
from failover.inventory import Cluster
from failover.lab.lab import Lab
from failover.lab.observer import snapshot
from failover.rules import State
from tests.test_executor import with_service

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def wlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    from tests.conftest import _need_lab_tools

    _need_lab_tools()
    lab = Lab(root=tmp_path_factory.mktemp("wlab") / "lab", zk_count=1, platform="windows")
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def wc(wlab: Lab) -> Cluster:
    c = inv_mod.load(wlab.inventory_path).cluster()
    assert {i.platform for i in c.ipcs} == {"windows"}
    return c


@pytest.fixture
def clean_b(wlab: Lab, wc: Cluster) -> Iterator[None]:
    yield
    wlab.fault("ipc-b", "restore")
    with ex.Executor(wc) as e:
        for s in ("kcxp-replica", "kcbp-replica", "cti", "ivr"):
            e.stop("ipc-b", s)


def test_batched_status_reads_every_service_and_the_line(wlab: Lab, wc: Cluster) -> None:
    with ex.Executor(wc) as e:
        st = e.status_all("ipc-a")
        assert st.line == "up"
        assert {s for s, v in st.states.items() if v is State.RUNNING} == {
            "driver",
            "fax",
            "cti",
            "ivr",
            "kcxp",
            "kcbp",
        }
        assert st.states["kcxp-replica"] is State.STOPPED
        wlab.fault("ipc-a", "line-alarm")
        try:
            assert e.status_all("ipc-a").line == "alarm"  # through line_check: linestat.exe's exit code
        finally:
            wlab.fault("ipc-a", "line-clear")
        assert e.status_all("ipc-a").line == "up"


def test_start_stop_idempotent_through_1056_and_1062(wlab: Lab, wc: Cluster, clean_b: None) -> None:
    with ex.Executor(wc) as e:
        assert e.start("ipc-b", "kcxp-replica") == "kcxp-replica running"
        assert "kcxp-replica" in snapshot(wlab.labid)["ipc-b"]
        assert e.start("ipc-b", "kcxp-replica") == "kcxp-replica running"  # sc.exe 1056: already running
        assert e.stop("ipc-b", "kcxp-replica") == "kcxp-replica stopped"
        assert "kcxp-replica" not in snapshot(wlab.labid)["ipc-b"]
        assert e.stop("ipc-b", "kcxp-replica") == "kcxp-replica stopped"  # sc.exe 1062: not started


def test_start_pending_is_polled_until_running(wlab: Lab, wc: Cluster, clean_b: None) -> None:
    wlab.fault("ipc-b", "slow-start", "cti", seconds=1.5)
    with ex.Executor(wc) as e:
        t0 = time.monotonic()
        assert e.start("ipc-b", "cti") == "cti running"
        assert time.monotonic() - t0 >= 1.5  # START_PENDING meanwhile, not taken as running
        assert e.status_all("ipc-b").states["cti"] is State.RUNNING


def test_start_while_stop_pending_waits_through_1061(wlab: Lab, wc: Cluster, clean_b: None) -> None:
    with ex.Executor(wc) as e:
        e.start("ipc-b", "kcbp-replica")
        wlab.fault("ipc-b", "slow-stop", "kcbp-replica", seconds=1.5)
        res = e.run("ipc-b", 'sc.exe stop "KCBP_Replica"', 10)
        assert res.exit_code == 0 and "STOP_PENDING" in res.stdout and "\r\n" in res.stdout
        assert e.status_all("ipc-b").states["kcbp-replica"] is State.STOP_PENDING
        # The SCM refuses the start while the stop is pending (1061): the
        # executor waits for STOPPED and asks again.
        assert e.start("ipc-b", "kcbp-replica") == "kcbp-replica running"


@pytest.mark.parametrize("fault", ["hang", "stop-fail"])
def test_a_service_that_ignores_its_stop_is_killed_by_pid(wlab: Lab, wc: Cluster, clean_b: None, fault: str) -> None:
    """hang: no answer to the control (1053, still RUNNING); stop-fail:
    STOP_PENDING for ever. Either way: taskkill /F /PID at the stop timeout."""
    c = with_service(wc, "ivr", stop_timeout=1.0)
    with ex.Executor(c) as e:
        e.start("ipc-b", "ivr")
        pid = e.platform("ipc-b").parse_pid(e.run("ipc-b", 'sc.exe queryex "IVRService"', 10).stdout)
        assert pid
        wlab.fault("ipc-b", fault, "ivr")
        t0 = time.monotonic()
        out = e.stop("ipc-b", "ivr")
        assert out.startswith("ivr killed (`taskkill /F /PID ") and f"/PID {pid}`" in out, out
        assert time.monotonic() - t0 >= 1.0
        assert e.status_all("ipc-b").states["ivr"] is State.STOPPED
        assert "ivr" not in snapshot(wlab.labid)["ipc-b"]


def test_paused_is_neither_serving_nor_stopped(wlab: Lab, wc: Cluster, clean_b: None) -> None:
    with ex.Executor(wc) as e:
        e.start("ipc-b", "cti")
        wlab.fault("ipc-b", "pause", "cti")
        st = e.observe("ipc-b")
        assert st.states["cti"] is State.PAUSED
        ok, why = e.fenced("ipc-b")
        assert not ok, why  # a PAUSED CTI is not proof it is stopped
        assert e.stop("ipc-b", "cti") == "cti stopped"  # a paused service takes its stop
        assert "cti" not in snapshot(wlab.labid)["ipc-b"]


def test_failed_start_is_reported(wlab: Lab, wc: Cluster, clean_b: None) -> None:
    wlab.fault("ipc-b", "fail-start", "ivr")
    with ex.Executor(wc) as e, pytest.raises(ex.CommandFailed, match=r"ipc-b: start ivr"):
        e.start("ipc-b", "ivr")


def test_unknown_service_is_a_configuration_error(wc: Cluster) -> None:
    c = with_service(wc, "kcxp-replica", service="No Such Service")
    with ex.Executor(c) as e, pytest.raises(ex.ConfigError, match="1060"):
        e.start("ipc-b", "kcxp-replica")


def test_smoke_checks_and_commands_run_through_cmd(wlab: Lab, wc: Cluster) -> None:
    with ex.Executor(wc) as e:
        assert e.run_shell("ipc-a", "labcall.exe inbound", 10).exit_code == 0
        # %errorlevel% under `call` is read after the command, as the product relies on
        res = e.run("ipc-a", "linestat.exe & call echo rc=%^errorlevel%", 10)
        assert "rc=0" in res.stdout
        assert Path(wlab.ipc("ipc-a").dir).exists()


def test_status_session_matches_exec_and_recovers(wlab: Lab, wc: Cluster) -> None:
    """One long-lived `cmd /q` per IPC carries the status and the polls; it
    answers what an exec channel answers, and a broken one is replaced."""
    with ex.Executor(wc) as e:
        assert e.status_fast("ipc-a").states == e.status_all("ipc-a").states
        assert e.service_state("ipc-a", "cti") is State.RUNNING
        assert e.service_state("ipc-a", "kcxp-replica") is State.STOPPED
        first = e._sessions["ipc-a"]
        first.chan.close()  # the session dies under us
        assert e.service_state("ipc-a", "cti") is State.RUNNING  # answered through an exec channel
        assert e.status_fast("ipc-a").states["cti"] is State.RUNNING
        assert e._sessions["ipc-a"] is not first and e._sessions["ipc-a"].alive()


def test_a_session_that_does_not_start_falls_back_to_exec_channels(wc: Cluster) -> None:
    """A Windows host whose shell is not cmd.exe (or a cmd that never answers):
    the status still comes, through exec channels, and the session is not
    tried again on every poll (each try would cost up to connect_timeout)."""
    with ex.Executor(wc) as e:
        # a program that ends at once instead of reading command lines
        e.platform("ipc-b").session_cmd = lambda: "ver"  # type: ignore[method-assign]
        t0 = time.monotonic()
        assert e.status_fast("ipc-b").states["driver"] is State.RUNNING
        assert e.service_state("ipc-b", "driver") is State.RUNNING
        first = time.monotonic() - t0
        t0 = time.monotonic()
        for _ in range(5):
            assert e.service_state("ipc-b", "driver") is State.RUNNING
        assert time.monotonic() - t0 < 5 * 0.5 and first < wc.ipc("ipc-b").ssh.connect_timeout + 2
        assert "ipc-b" not in e._sessions
