"""The SSH executor against real sshd processes (the lab): every error kind
produced for real, connection reuse counted at sshd, retries counted, ordered
plans reporting done / not done exactly, injection refused before connecting."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from failover import executor as ex
from failover import inventory as inv_mod
from failover.inventory import Cluster
from failover.lab.lab import Lab
from failover.lab.observer import snapshot
from failover.rules import Stage, State, Step

FAST_RETRY = ex.RetryPolicy(attempts=3, total_seconds=5, initial_backoff=0.05, max_backoff=0.2)


@pytest.fixture(scope="module")
def cluster(lab: Lab) -> Cluster:
    return inv_mod.load(lab.inventory_path).cluster("lab")


def with_ssh(cluster: Cluster, ipc: str, **changes: object) -> Cluster:
    ipcs = [
        i.model_copy(update={"ssh": i.ssh.model_copy(update=changes)}) if i.name == ipc else i for i in cluster.ipcs
    ]
    return cluster.model_copy(update={"ipcs": ipcs})


def with_service(cluster: Cluster, svc: str, **changes: object) -> Cluster:
    services = {**cluster.services, svc: cluster.services[svc].model_copy(update=changes)}
    return cluster.model_copy(update={"services": services})


@pytest.fixture
def restore_b(lab: Lab):  # type: ignore[no-untyped-def]
    yield
    lab.fault("ipc-b", "restore")
    with ex.Executor(inv_mod.load(lab.inventory_path).cluster("lab")) as e:
        for s in ("cti", "ivr", "kcxp-replica", "kcbp-replica"):
            e.stop("ipc-b", s)
        for s in ("driver", "fax", "kcxp", "kcbp"):
            e.start("ipc-b", s)


def test_run_and_result(cluster: Cluster) -> None:
    with ex.Executor(cluster) as e:
        r = e.run("ipc-a", "echo out; echo err >&2; exit 3", 10)
        assert (r.exit_code, r.stdout, r.stderr) == (3, "out\n", "err\n") and r.duration > 0
        with pytest.raises(ex.CommandFailed, match=r"ipc-a: run command: exit 3"):
            e.run("ipc-a", "exit 3", 10, check=True)


def test_connection_reused(lab: Lab, cluster: Cluster) -> None:
    sshd = lab.ipc("ipc-a").sshd(lab.client_key.with_suffix(".pub"))
    before = sshd.connections_accepted()
    with ex.Executor(cluster) as e:
        for _ in range(10):
            assert e.run("ipc-a", "true", 10).exit_code == 0
        assert e.connection("ipc-a").connects == 1
    time.sleep(0.2)
    assert sshd.connections_accepted() - before == 1  # counted by sshd itself


def test_unreachable_is_retried(lab: Lab, cluster: Cluster) -> None:
    lab.fault("ipc-b", "sshd-down")
    try:
        with ex.Executor(cluster, FAST_RETRY) as e:
            with pytest.raises(ex.Unreachable, match=r"^ipc-b: status of all services: cannot connect"):
                e.status_all("ipc-b")
            assert e.connection("ipc-b").connect_attempts == 3
    finally:
        lab.fault("ipc-b", "sshd-up")


def test_broken_connection_rebuilt(lab: Lab, cluster: Cluster) -> None:
    with ex.Executor(cluster, FAST_RETRY) as e:
        assert e.run("ipc-b", "true", 10).exit_code == 0
        lab.fault("ipc-b", "sshd-down")  # kills the listener and its sessions
        lab.fault("ipc-b", "sshd-up")
        time.sleep(0.3)
        assert e.run("ipc-b", "true", 10).exit_code == 0
        assert e.connection("ipc-b").connects == 2


def test_wrong_key_not_retried(lab: Lab, cluster: Cluster, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    c = with_ssh(cluster, "ipc-a", key=str(other))
    with ex.Executor(c, FAST_RETRY) as e:
        with pytest.raises(ex.AuthFailed, match=r"^ipc-a: run command: key .* refused for user"):
            e.run("ipc-a", "true", 10)
        assert e.connection("ipc-a").connect_attempts == 1


def test_unknown_host_key(cluster: Cluster, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    with ex.Executor(with_ssh(cluster, "ipc-a", known_hosts=str(kh)), FAST_RETRY) as e:
        with pytest.raises(ex.HostKeyUnknown, match=r"not in .* SHA256:.*failover hosts trust ipc-a"):
            e.run("ipc-a", "true", 10)
        assert e.connection("ipc-a").connect_attempts == 1


def test_changed_host_key(lab: Lab, cluster: Cluster, tmp_path: Path) -> None:
    a, b = lab.ipc("ipc-a"), lab.ipc("ipc-b")
    other = (Path(b.dir) / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{a.address}]:{a.ssh_port} {other[0]} {other[1]}\n")
    with ex.Executor(with_ssh(cluster, "ipc-a", known_hosts=str(kh)), FAST_RETRY) as e:
        with pytest.raises(ex.HostKeyChanged, match="HOST KEY CHANGED"):
            e.run("ipc-a", "true", 10)
        assert e.connection("ipc-a").connect_attempts == 1


def test_deadline_and_remote_kill(cluster: Cluster) -> None:
    with ex.Executor(cluster) as e:
        t0 = time.monotonic()
        with pytest.raises(ex.CommandTimedOut, match=r"ipc-a: run command: no answer within 0.5 s"):
            e.run("ipc-a", "sleep 7.125", 0.5)
        assert time.monotonic() - t0 < 5
        with pytest.raises(ex.CommandTimedOut, match="killed on the host"):
            e.run_shell("ipc-a", "sleep 7.375", 0.5, "smoke check")
    time.sleep(0.3)
    ps = subprocess.run(["pgrep", "-f", "sleep 7.375"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""  # killed on the host, not left running


def test_batched_status_is_one_round_trip(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    with ex.Executor(cluster) as e:
        sent: list[str] = []
        real_open = e.connection("ipc-a").open_channel

        def counting_open(action: str):  # type: ignore[no-untyped-def]
            sent.append(action)
            return real_open(action)

        monkeypatch.setattr(e.connection("ipc-a"), "open_channel", counting_open)
        st = e.status_all("ipc-a")
        assert sent == ["status of all services"]  # one SSH channel, one command
        assert st.states["cti"] is State.RUNNING and st.states["kcxp-replica"] is State.STOPPED
        assert st.line == "up" and len(st.states) == 8
        obs = e.observe("ipc-a")
        assert obs.healthy["cti"] is True and obs.healthy["kcxp-replica"] is None


def test_hung_service_fails_its_probe(lab: Lab, cluster: Cluster) -> None:
    lab.fault("ipc-a", "hang", "ivr")
    try:
        with ex.Executor(cluster) as e:
            obs = e.observe("ipc-a")
            assert obs.states["ivr"] is State.RUNNING and obs.healthy["ivr"] is False
    finally:
        lab.fault("ipc-a", "unhang", "ivr")


def test_start_stop_services(lab: Lab, cluster: Cluster, restore_b: None) -> None:
    with ex.Executor(cluster) as e:
        assert e.start("ipc-b", "kcxp-replica") == "kcxp-replica running"
        assert "kcxp-replica" in snapshot(lab.labid)["ipc-b"]
        assert e.start("ipc-b", "kcxp-replica") == "kcxp-replica running"  # idempotent
        assert e.stop("ipc-b", "kcxp-replica") == "kcxp-replica stopped"
        assert "kcxp-replica" not in snapshot(lab.labid)["ipc-b"]
        assert e.stop("ipc-b", "kcxp-replica") == "kcxp-replica stopped"


def test_start_failure_is_reported(lab: Lab, cluster: Cluster, restore_b: None) -> None:
    lab.fault("ipc-b", "fail-start", "cti")
    with ex.Executor(cluster) as e:
        with pytest.raises(ex.CommandFailed, match=r"ipc-b: start cti: exit 1: .*failed to start"):
            e.start("ipc-b", "cti")


def test_stop_that_never_completes(lab: Lab, cluster: Cluster, restore_b: None) -> None:
    lab.fault("ipc-b", "stop-fail", "kcbp")
    c = with_service(cluster, "kcbp", stop_timeout=1.0)
    with ex.Executor(c) as e, pytest.raises(ex.CommandFailed, match="ipc-b: stop kcbp"):
        e.stop("ipc-b", "kcbp")
    assert "kcbp" in snapshot(lab.labid)["ipc-b"]


def test_plan_stops_at_middle_failure(lab: Lab, cluster: Cluster, restore_b: None) -> None:
    lab.fault("ipc-b", "fail-start", "kcbp-replica")
    plan = (
        Stage(
            "one",
            (
                Step("ipc-b", "stop", "kcbp"),
                Step("ipc-b", "start", "kcxp-replica"),
                Step("ipc-b", "start", "kcbp-replica"),
                Step("ipc-b", "start", "cti"),
            ),
        ),
        Stage("two", (Step("ipc-b", "start", "ivr"),)),
    )
    lines: list[str] = []
    with ex.Executor(cluster) as e:
        rep = e.execute(plan, progress=lines.append)
    assert not rep.ok
    assert [r.status for r in rep.results] == ["done", "done", "failed", "not run", "not run"]
    assert "failed to start" in rep.results[2].detail
    assert "done: stop KCBP on ipc-b" in rep.summary() and "not run: start CTI on ipc-b" in rep.summary()
    assert any("start KCBP replica on ipc-b: failed" in x for x in lines)
    running = snapshot(lab.labid)["ipc-b"]
    assert "cti" not in running and "ivr" not in running and "kcbp" not in running


def test_fencing_gate_blocks_start(lab: Lab, cluster: Cluster, restore_b: None) -> None:
    # ipc-a still runs CTI/IVR: a stage gated on ipc-a being fenced must not run.
    plan = (Stage("promote", (Step("ipc-b", "start", "cti"),), requires_fenced="ipc-a"),)
    with ex.Executor(cluster) as e:
        rep = e.execute(plan)
    assert not rep.ok and "ipc-a not verified fenced" in rep.blocked
    assert rep.results[0].status == "not run"
    assert "cti" not in snapshot(lab.labid)["ipc-b"]


def test_parallel_hosts_in_a_stage(lab: Lab, cluster: Cluster, restore_b: None) -> None:
    plan = (Stage("both", (Step("ipc-a", "restart", "kcxp"), Step("ipc-b", "restart", "kcxp"))),)
    with ex.Executor(cluster) as e:
        rep = e.execute(plan)
    assert rep.ok, rep.summary()


def test_dry_run_connects_nowhere(lab: Lab, cluster: Cluster) -> None:
    sshd = lab.ipc("ipc-a").sshd(lab.client_key.with_suffix(".pub"))
    before = sshd.connections_accepted()
    plan = (Stage("x", (Step("ipc-a", "stop", "ivr"),)),)
    with ex.Executor(cluster) as e:
        lines = e.dry_run(plan)
        assert e.connection("ipc-a").connect_attempts == 0
    assert any(" stop ivr --timeout " in x for x in lines)
    assert sshd.connections_accepted() == before


def test_injection_in_service_name_refused_before_connecting(cluster: Cluster) -> None:
    # A Windows IPC whose inventory was altered after validation: the executor
    # still refuses to build the command, and nothing is contacted.
    ipcs = [
        i.model_copy(update={"platform": "windows", "lab": None, "address": "198.18.255.254"}) for i in cluster.ipcs
    ]
    bad = with_service(cluster.model_copy(update={"ipcs": ipcs}), "cti", service="CTI & del C:\\x")
    with ex.Executor(bad, FAST_RETRY) as e:
        with pytest.raises(ex.ConfigError, match=r"cannot be passed safely to cmd\.exe"):
            e.stop("ipc-a", "cti")
        assert e.connection("ipc-a").connect_attempts == 0


def test_smoke_checks_on_primary(cluster: Cluster) -> None:
    with ex.Executor(cluster) as e:
        for name, chk in cluster.smoke_checks.items():
            r = e.run_shell("ipc-a", chk.command, chk.timeout, f"smoke check {name}", check=True)
            assert r.exit_code == 0
        with pytest.raises(ex.CommandFailed, match="inbound call failed on ipc-b"):
            e.run_shell("ipc-b", "call inbound", 5, "smoke check inbound", check=True)


def test_trust_host_shows_fingerprint(lab: Lab, cluster: Cluster, tmp_path: Path) -> None:
    kh = tmp_path / "kh"
    kh.write_text("")
    ipc = with_ssh(cluster, "ipc-a", known_hosts=str(kh)).ipc("ipc-a")
    seen: list[str] = []
    assert "not trusted" in ex.trust_host(ipc, lambda fp: seen.append(fp) or False)
    assert kh.read_text() == "" and seen[0].split()[-1].startswith("SHA256:")
    assert "trusted" in ex.trust_host(ipc, lambda fp: True)
    assert "already trusted" in ex.trust_host(ipc, lambda fp: True)
    with ex.Executor(with_ssh(cluster, "ipc-a", known_hosts=str(kh))) as e:
        assert e.run("ipc-a", "true", 10).exit_code == 0


def test_status_session_matches_and_recovers(lab: Lab, cluster: Cluster) -> None:
    with ex.Executor(cluster) as e:
        assert e.status_fast("ipc-a").states == e.status_all("ipc-a").states
        sess = e._session("ipc-a")
        assert e.status_fast("ipc-a").states["cti"] is State.RUNNING
        assert e._session("ipc-a") is sess  # reused
        sess.chan.close()  # the session breaks: status falls back, then reopens
        assert e.status_fast("ipc-a").states["cti"] is State.RUNNING
        assert e.status_fast("ipc-a").states["cti"] is State.RUNNING
        assert e._session("ipc-a") is not sess


def test_independent_steps_of_a_stage_run_at_once(lab: Lab, cluster: Cluster, restore_b: None) -> None:
    """KCBP and fax are not ordered after each other: their stops overlap
    (1 s each, about 1 s together); KCXP is stopped after KCBP (it is ordered
    before KCBP), so it waits for it."""
    for s in ("kcbp", "fax"):
        lab.fault("ipc-b", "slow-stop", s, seconds=1.0)
    stage = Stage("stops", (Step("ipc-b", "stop", "kcbp"), Step("ipc-b", "stop", "fax"), Step("ipc-b", "stop", "kcxp")))
    with ex.Executor(cluster) as e:
        t0 = time.monotonic()
        rep = e.execute((stage,))
        took = time.monotonic() - t0
    assert rep.ok, rep.summary()
    assert took < 1.9, f"independent stops ran one after the other ({took:.2f} s)"
    dur = {r.step.service: r.duration for r in rep.results}
    assert dur["kcbp"] >= 1.0 and dur["fax"] >= 1.0
    assert set(snapshot(lab.labid)["ipc-b"]) == {"driver"}


def test_exec_request_has_a_deadline(lab: Lab, cluster: Cluster) -> None:
    """paramiko's exec_command waits for the server with no deadline: with the
    host's sshd session frozen after the channel opened, the request must give
    up at its deadline, not hang the caller."""
    import os
    import signal

    import paramiko

    from failover.lab.procs import descendants

    ipc = lab.ipc("ipc-a")
    with ex.Executor(cluster) as e:
        e.run("ipc-a", "true", 10)  # a live connection
        chan = e.connection("ipc-a").open_channel("test")
        frozen = descendants(ipc.sshd_pid or 0)
        assert frozen
        for p in frozen:
            os.kill(p, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(paramiko.SSHException):
                ex._exec_within(chan, "true", 1.0)
            assert time.monotonic() - t0 < 3.0
        finally:
            for p in frozen:
                os.kill(p, signal.SIGCONT)
