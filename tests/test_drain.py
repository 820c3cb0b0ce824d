"""A drained switchover against the lab (real ZooKeeper, real sshd, both
agents, the observer), with the simulated IPCs carrying simulated calls
(failover/lab/calls.py): the calls counted there, not what the agents say,
decide whether a call was cut.

One lab for the module (each start costs 10-20 s); the tests run in order and
each starts from whichever IPC is primary then. The simulated calls'
bookkeeping itself is tested first, without a lab."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover import ops, zkstore
from failover.drain import DrainSpec
from failover.lab import simctl
from failover.lab.calls import CallSim, Traffic, operation
from tests.cluster import FAILOVER, Harness, wait_for

pytestmark = pytest.mark.timeout(300)


# ----- the simulated calls, no lab ----------------------------------------------------
def test_simulated_calls_are_seeded_finish_and_are_cut_when_the_ipc_stops_serving() -> None:
    def run(seed: int) -> CallSim:
        sim = CallSim(Traffic(rate=2.0, min_s=1.0, max_s=3.0, agent_share=0.5), seed=seed)
        for k in range(101):  # 10 s in 0.1 s steps
            sim.tick(k * 0.1, serving=True)
        return sim

    a, b = run(7), run(7)
    assert a.stats() == b.stats()  # deterministic for a seed
    st = a.stats()
    assert st["arrived"] > 5 and st["completed"] > 0 and st["cut"] == 0
    assert st["active"] == st["ivr"] + st["agent"] == st["arrived"] - st["completed"]
    a.tick(10.2, serving=False)  # CTI stops under the calls
    assert a.stats()["cut"] == st["active"] and a.stats()["active"] == 0


def test_busy_out_turns_new_calls_away_and_lets_the_others_finish() -> None:
    sim = CallSim(Traffic(rate=5.0, min_s=1.0, max_s=2.0), seed=1)
    assert sim.load(0.0, 4, Traffic(rate=5.0, min_s=1.0, max_s=2.0)) == ""
    assert sim.set_busy_out(True) and not sim.set_busy_out(True)
    for k in range(31):
        sim.tick(k * 0.1, serving=True)
    st = sim.stats()
    assert st["active"] == 0 and st["completed"] == 4 and st["cut"] == 0 and st["turned_away"] > 0
    assert "need" in sim.load(0.0, 1, Traffic(min_s=5, max_s=1))


def test_the_simulators_calls_operation_answers_in_the_inventorys_words() -> None:
    sim = CallSim(seed=3)
    got = operation(sim, {"action": "load", "count": 4, "min": 5, "max": 9, "agent_share": 1.0}, 0.0)
    assert got["ok"] and got["text"] == "ivr=0 agent=4" and got["active"] == 4
    assert operation(sim, {"action": "busy-out"}, 0.0)["text"] == "busy-out: done"
    assert operation(sim, {"action": "busy-out"}, 0.0)["text"] == "busy-out: already"
    assert operation(sim, {"action": "release"}, 0.0)["changed"] is True
    assert "unknown calls action 'drop'" in operation(sim, {"action": "drop"}, 0.0)["error"]
    assert not operation(sim, {"action": "load", "rate": -1}, 0.0)["ok"]


# ----- the lab ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with Harness(tmp_path_factory.mktemp("drain")) as harness:
        harness.steady()
        yield harness
        harness.assert_never_both()


def sim(h: Harness, ipc: str, **req: object) -> dict:
    return simctl.request(h.lab.ipc(ipc).dir, {"op": "calls", **req}, timeout=5)


def roles(h: Harness) -> tuple[str, str]:
    p = h.record()["primary"]
    return p, "ipc-b" if p == "ipc-a" else "ipc-a"


def ready(h: Harness, standby: str) -> None:
    """The shared lab as each test needs it: no request left by an earlier
    test (one that failed midway must not fail the next ones too), an eligible standby."""
    with contextlib.suppress(ops.Refused):
        ops.cancel(h.store, "test", "a fresh test")
    wait_for(
        lambda: h.member(standby).get("eligible") is True and h.member(standby).get("decision") == "none",
        30,
        what=f"{standby} eligible standby",
    )


def drain(h: Harness, to: str, max_wait: float, on_deadline: str) -> str:
    spec = DrainSpec(0, max_wait, on_deadline).record()
    req = ops.new_request("switchover", to, "test", "drain test", frm=roles(h)[0], drain=spec)
    assert ops.submit(h.store, req) is None
    return str(req.id)


def final(h: Harness, rid: str, timeout: float = 30) -> dict:
    def done() -> dict | None:
        cur = h.store.request()
        assert cur is not None and cur.data.id == rid
        return cur.data.to_json() if cur.data.state in zkstore.FINAL_STATES else None

    return wait_for(done, timeout, what=f"request {rid} final")


def busied_out(h: Harness, ipc: str) -> None:
    wait_for(lambda: sim(h, ipc, action="stats")["busy_out"], 15, what=f"{ipc} busied out")
    assert h.store.busy_out(ipc) is not None


def released(h: Harness, ipc: str) -> None:
    wait_for(lambda: not sim(h, ipc, action="stats")["busy_out"], 15, what=f"{ipc} released")
    wait_for(lambda: h.store.busy_out(ipc) is None, 5, what="busy-out marker removed")


def switchover_entry(h: Harness, to: str) -> dict:
    got = wait_for(lambda: [e for e in h.store.history() if e.kind == "switchover" and e.to == to], 10, what="history")
    return got[-1].to_json()


def test_drained_switchover_cuts_no_call(h: Harness) -> None:
    p, s = roles(h)
    ready(h, s)
    sim(h, p, action="load", count=6, min=1.0, max=3.0, rate=3.0)  # arrivals go on until the busy-out
    wait_for(lambda: (h.member(p).get("calls") or {}).get("active"), 10, what="active calls published")
    r = subprocess.run(
        [
            FAILOVER,
            "switchover",
            "--drain",
            "--max-wait",
            "60s",
            "--yes",
            "--operator",
            "t",
            "-i",
            str(h.lab.inventory_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0. drain: busy out" in r.stdout and "busied out (no new calls)" in r.stdout and "drained:" in r.stdout
    st = sim(h, p, action="stats")
    assert st["cut"] == 0 and st["active"] == 0 and st["turned_away"] >= 0, st
    released(h, p)
    calls = switchover_entry(h, s)["calls"]
    assert calls["cut"] == 0 and calls["at_handover"] == 0 and calls["at_start"] >= 1, calls
    sim(h, p, action="load", count=0, rate=0.0)


def test_deadline_reports_what_it_would_cut_and_does_as_chosen(h: Harness) -> None:
    p, s = roles(h)
    ready(h, s)
    sim(h, p, action="load", count=4, min=60.0, max=90.0, rate=0.0)  # outlast every deadline here
    cut0 = sim(h, p, action="stats")["cut"]
    # Cancel at the deadline: the busy-out is released, the primary stays, no call is cut.
    got = final(h, drain(h, s, 1.5, "cancel"))
    assert got["state"] == "cancelled" and "deadline" in got["result"]["why"] and "4 active" in got["result"]["why"]
    released(h, p)
    assert h.record()["primary"] == p and sim(h, p, action="stats")["cut"] == cut0
    # Ask at the deadline: the question says what would be cut; the operator proceeds.
    rid = drain(h, s, 1.0, "ask")
    q = wait_for(lambda: h.store.request().data.question or "", 15, what="the deadline's question")
    assert "4 active" in q and "proceed" in q
    ops.answer(h.store, "proceed", "t")
    assert final(h, rid)["state"] == "done"
    assert switchover_entry(h, s)["calls"]["cut"] == 4
    assert sim(h, p, action="stats")["cut"] == cut0 + 4  # what it reported is what was cut
    released(h, p)


def test_ctrl_c_and_cancel_release_the_busy_out(h: Harness) -> None:
    p, s = roles(h)
    ready(h, s)
    sim(h, p, action="load", count=3, min=60.0, max=90.0, rate=0.0)
    bg = subprocess.Popen(
        [FAILOVER, "switchover", "--drain", "--yes", "--operator", "t", "-i", str(h.lab.inventory_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As at a terminal: a test run started in the background (`make test &`)
        # ignores SIGINT, and its children would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        busied_out(h, p)
        bg.send_signal(signal.SIGINT)
        out, err = bg.communicate(timeout=30)
    finally:
        if bg.poll() is None:
            bg.kill()
            bg.wait()
    assert bg.returncode != 0 and "Ctrl-C" in err, out + err
    released(h, p)
    # And `switchover --cancel` from another terminal.
    rid = drain(h, s, 60, "ask")
    busied_out(h, p)
    ops.cancel(h.store, "t", "changed my mind")
    assert final(h, rid)["state"] == "cancelled"
    released(h, p)
    assert h.record()["primary"] == p and sim(h, p, action="stats")["active"] >= 3  # nothing cut


def test_busy_out_never_outlives_the_switchover_across_an_agent_restart(h: Harness) -> None:
    p, s = roles(h)
    ready(h, s)
    rid = drain(h, s, 60, "ask")
    busied_out(h, p)
    since = h.store.busy_out(p).since
    h.kill9_and_restart_agent(p, down=0.5)  # mid-drain: it carries on, no second busy-out
    wait_for(lambda: h.member(p).get("calls") is not None, 10, what="calls observed again")
    assert h.store.request().data.state == "running" and h.store.busy_out(p).since == since
    h.agents[p].kill9()  # the switchover ends while the agent is down ...
    ops.cancel(h.store, "t", "while the agent was down")
    assert sim(h, p, action="stats")["busy_out"]
    h.agents[p].start()  # ... and the restarted agent releases the busy-out
    released(h, p)
    assert final(h, rid)["state"] == "cancelled" and h.record()["primary"] == p


def test_cti_fault_during_a_drain_fails_over_at_once(h: Harness) -> None:
    p, s = roles(h)
    ready(h, s)
    epoch = h.record()["epoch"]
    rid = drain(h, s, 120, "ask")
    busied_out(h, p)
    h.lab.fault(p, "kill", "cti")
    got = final(h, rid)
    assert got["state"] == "failed" and "a fault beats the plan" in got["result"]["why"], got
    wait_for(lambda: h.record()["primary"] == s and h.serving(s), 20, what=f"{s} serving after the fault")
    assert h.record()["epoch"] == epoch + 1
    released(h, p)
    entry = [e for e in h.store.history() if e.to == s][-1]
    assert entry.kind != "switchover", entry  # the rules' failover, not the plan


def test_drain_refused_without_calls_in_the_inventory(tmp_path: Path) -> None:
    """No lab needed: the CLI refuses before connecting (exit 2, nothing done)."""
    from tests.test_inventory import GOOD, _write

    inv = _write(tmp_path, GOOD)
    r = subprocess.run([FAILOVER, "switchover", "--drain", "-i", str(inv)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "has no `calls` in the inventory" in r.stderr, r.stderr


def test_drained_switchover_on_windows_ipcs_with_agents_apart(tmp_path: Path) -> None:
    """The plan's shape: `labcalls.exe` through the cmd.exe stand-in over
    Win32-OpenSSH, agents on hosts of their own; no call cut."""
    with Harness(tmp_path, platform="windows", apart=True) as w:
        w.steady()
        ready(w, "ipc-b")
        sim(w, "ipc-a", action="load", count=5, min=1.0, max=2.5, rate=2.0)
        got = final(w, drain(w, "ipc-b", 60, "cancel"))
        assert got["state"] == "done" and any("busied out (no new calls)" in x for x in got["progress"]), got
        assert sim(w, "ipc-a", action="stats")["cut"] == 0
        released(w, "ipc-a")
        assert switchover_entry(w, "ipc-b")["calls"]["cut"] == 0
        w.assert_never_both()
