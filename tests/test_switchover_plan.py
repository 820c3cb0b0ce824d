"""The switchover's plan and checks (failover/switchover.py), pure: the CLI's
preview and the agents run the same stages."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from failover import explain, inventory
from failover import switchover as sw
from failover.records import Request
from failover.rules import Role, Topology

EXAMPLE = Path(__file__).resolve().parents[1] / "inventory" / "example-windows.yaml"


@pytest.fixture(scope="module")
def cluster() -> inventory.Cluster:
    return inventory.load(EXAMPLE).clusters[0]


def test_the_preview_is_the_plan_the_agents_run(cluster: inventory.Cluster) -> None:
    topo = Topology.from_cluster(cluster)
    a, b = (i.name for i in cluster.ipcs)
    demote, promote = sw.plan(topo, a, b)
    # What the primary's agent runs (agent/switchover.py) and what the target's runs (agent/takeover.py):
    assert demote == sw.demote_stage(topo, a, sw.in_layout(topo, a, Role.PRIMARY), False)
    assert promote.steps == sw.promote_stage(topo, b, sw.in_layout(topo, b, Role.STANDBY)).steps
    assert promote.requires_fenced == a
    assert {s.service for s in demote.steps if s.op == "stop"} >= {"cti", "ivr"}
    assert all(s.host == a for s in demote.steps) and all(s.host == b for s in promote.steps)
    lines = explain.plan_lines(cluster, (demote, promote))
    assert lines[0].startswith(f"  1. demote {a} to the standby layout")
    assert f"only once {a} is fenced" in lines[len(demote.steps) + 1]


def test_a_board_down_primary_keeps_its_board_stopped(cluster: inventory.Cluster) -> None:
    topo = Topology.from_cluster(cluster)
    a, b = (i.name for i in cluster.ipcs)
    demote, _ = sw.plan(topo, a, b, frozenset({a}))
    assert not any(s.op in ("start", "restart") and s.service == "driver" for s in demote.steps)


def test_hand_back_why() -> None:
    assert sw.hand_back_why("cancelled by ops", True, (), "ipc-b") == "the switchover was cancelled by ops"
    assert sw.hand_back_why("", False, (), "ipc-b") == "ipc-b is unreachable over SSH"
    assert sw.hand_back_why("", True, ("cti@ipc-b",), "ipc-b") == "ipc-b cannot serve (cti@ipc-b)"
    assert sw.hand_back_why("", True, (), "ipc-b") == ""


def test_due(cluster: inventory.Cluster) -> None:
    a, b = (i.name for i in cluster.ipcs)
    obs = explain.hypothetical(cluster, [])
    req = Request(to=b)
    assert sw.due(req, obs, a, b, 100.0) == "go"
    assert sw.due(replace(req, at=200.0), obs, a, b, 100.0) == ""
    assert "not the standby" in sw.due(Request(to=a), obs, a, b, 100.0)
    paused = replace(obs, policy=replace(obs.policy, paused=True, pause_reason="drill"))
    assert "paused (drill)" in sw.due(req, paused, a, b, 100.0)
    assert sw.due(replace(req, allow_paused=True), paused, a, b, 100.0) == "go"
    down = replace(obs, ipcs={**obs.ipcs, b: replace(obs.ipcs[b], reachable=False)})
    assert "unreachable" in sw.due(req, down, a, b, 100.0)
