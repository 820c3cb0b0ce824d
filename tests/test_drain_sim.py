"""A drained switchover (issue 16) in the deterministic world (tests/sim):
the real agent code, simulated calls on the simulated IPCs (they grow while
an IPC serves, end one per tick once it is busied out, and are cut when CTI
or IVR stops). The explorer (`make sim`) runs drains among its faults too and
checks after healing that no busy-out outlived its switchover."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sim.world import STOPPED, World, bootstrap

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(tmp_path, calls=True)
    with w.patched(monkeypatch):
        bootstrap(w)
        w.run(3.0)  # calls arrive on the primary
        yield w
    w.assert_safe()


def _drain(w: World, max_wait: float = 30.0, on_deadline: str = "cancel") -> None:
    w.request(
        {"kind": "switchover", "to": w.b, "operator": "li", "reason": "maintenance", "id": "d1"}
        | {"drain": {"below": 0, "max_wait": max_wait, "on_deadline": on_deadline}}
    )


def test_a_drained_switchover_cuts_no_call_and_releases_the_busy_out(world: World) -> None:
    w = world
    a = w.hosts.hosts[w.a]
    assert a.calls > 0
    _drain(w)
    w.run(1.0)
    assert a.busied and w.record()["primary"] == w.a  # busied out, calls still finishing
    w.run(10.0)
    assert w.record()["primary"] == w.b and w.serving(w.b)
    assert a.cut == 0 and not a.busied, (a.cut, a.busied)
    assert w.request_state()["state"] == "done"
    entry = [e for e in w.zk.history if e.get("kind") == "switchover"][-1]
    assert entry["calls"]["cut"] == 0 and entry["calls"]["at_start"] > 0, entry
    assert not [k for k in w.zk.nodes if "/busy-out-" in k]


def test_the_primary_agent_crashing_mid_drain_leaves_no_busy_out(world: World) -> None:
    w = world
    _drain(w)
    w.run(1.0)
    assert w.hosts.hosts[w.a].busied
    sid = w.agents.pop(w.a).session_id  # kill -9 mid-drain; its session lives on
    w.run(2.0)
    n = w.zk.nodes[f"{w.store_path}/switchover"]  # the operator cancels while it is down
    n.data.update(state="cancelled", result={"state": "cancelled", "why": "cancelled by li"})
    n.version += 1
    w.start_agent(w.a, sid=sid)  # restarted: it resumes its session
    w.run(3.0)
    assert not w.hosts.hosts[w.a].busied and not [k for k in w.zk.nodes if "/busy-out-" in k]
    assert w.record()["primary"] == w.a and w.serving(w.a)


def test_a_fault_during_a_drain_fails_over_at_once_and_the_busy_out_goes(world: World) -> None:
    w = world
    _drain(w, max_wait=60.0)
    w.run(1.0)
    w.hosts.hosts[w.a].services["cti"] = STOPPED  # CTI dies
    w.run(6.0)
    assert w.record()["primary"] == w.b and w.serving(w.b)
    assert w.request_state()["state"] == "failed" and "fault beats the plan" in w.request_state()["result"]["why"]
    w.run(3.0)
    assert not w.hosts.hosts[w.a].busied and not [k for k in w.zk.nodes if "/busy-out-" in k]
