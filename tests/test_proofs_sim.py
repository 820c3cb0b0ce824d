"""Fencing with proof (issue: "Fencing you can prove"), one named test per
interleaving, on the real agent code in a deterministic world (tests/sim):
virtual clock, simulated ZooKeeper sessions, simulated Windows IPCs (the
plan's example inventory) and fence devices. Each test failed on the code
before proofs; the world's invariants (never CTI/IVR on two IPCs, no new epoch
without holding `leader`, no promotion without a proof) are checked after
every agent cycle."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover import agent as agent_mod
from tests.sim.world import RUNNING, STOPPED, World, bootstrap

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(tmp_path)
    with w.patched(monkeypatch):
        bootstrap(w)
        yield w
    w.assert_safe()


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """No fence devices."""
    w = World(tmp_path, devices=False)
    with w.patched(monkeypatch):
        bootstrap(w)
        yield w
    w.assert_safe()


def _last_takeover(w: World) -> dict:
    return [e for e in w.zk.history if e.get("kind") not in ("bootstrap", "stray-stopped")][-1]


# ----- a dead primary IPC, its agent alive ------------------------------------
def test_power_cut_primary_agent_alive_fences_through_device_and_hands_over(world: World) -> None:
    w = world
    w.hosts.hosts[w.a].power_off()
    w.run(8.0)
    rec = w.record()
    assert rec["primary"] == w.b and rec["epoch"] == 2, rec
    assert w.serving(w.b)
    assert w.devices[w.a].calls == ["off"]
    took = _last_takeover(w)
    assert took["proof"]["kind"] == "fence-device", took


def test_power_cut_without_device_holds_and_names_the_way_out(bare: World) -> None:
    w = bare
    w.hosts.hosts[w.a].power_off()
    w.run(8.0)
    assert w.record()["primary"] == w.a and not w.serving(w.b)
    way = w.member(w.a)["way_out"]
    assert f"failover failover --to {w.b} --confirm-dead {w.a}" in way, way
    assert "no fence device" in way
    # The operator checks the IPC is off and says so: the primary's agent (alive)
    # hands over on that word, the standby promotes.
    w.request({"kind": "failover", "to": w.b, "from": w.a, "confirm_dead": w.a, "operator": "li", "reason": "PSU"})
    w.run(4.0)
    rec = w.record()
    assert rec["primary"] == w.b and w.serving(w.b), rec
    took = _last_takeover(w)
    assert took["proof"]["kind"] == "operator" and "li" in took["proof"]["by"], took
    assert w.request_state()["state"] == "done"


def test_agent_and_ipc_lost_together_standby_fences_through_device(world: World) -> None:
    w = world
    w.zk.expire(w.agents[w.a].session_id or 0)
    del w.agents[w.a]  # the agent's host died too
    w.hosts.hosts[w.a].power_off()
    w.run(4.0)
    assert w.record()["primary"] == w.b and w.serving(w.b)
    assert _last_takeover(w)["proof"]["kind"] == "fence-device"


def test_agent_and_ipc_lost_without_device_never_promotes_on_time(bare: World) -> None:
    """Today's fence grace promoted after G seconds: time is no proof."""
    w = bare
    w.zk.expire(w.agents[w.a].session_id or 0)
    del w.agents[w.a]
    w.hosts.hosts[w.a].ssh = "refused"  # unreachable, but maybe still answering calls
    w.run(30.0)
    assert w.record()["primary"] == w.a and not w.serving(w.b)
    assert "--confirm-dead" in w.member(w.b)["way_out"]


# ----- the host is alive: an SSH error that is not "nothing answers" ----------------
@pytest.mark.parametrize("ssh", ["hung", "hostkey"])
def test_frozen_old_primary_whose_ssh_answers_wrongly_is_alive(bare: World, ssh: str) -> None:
    """The old primary's agent frozen (session expired) and its IPC answers
    SSH slowly or with a changed host key: CTI/IVR may run there. Before,
    every ExecError counted as unreachable and the standby promoted."""
    w = bare
    w.zk.expire(w.agents[w.a].session_id or 0)
    w.hosts.hosts[w.a].ssh = ssh
    w.run(20.0, frozen=(w.a,))
    assert not w.serving(w.b) and w.serving(w.a)
    way = w.member(w.b)["way_out"]
    assert "answers" in way, way


def test_sshd_hung_with_a_device_fences_first_then_promotes(world: World) -> None:
    w = world
    w.zk.expire(w.agents[w.a].session_id or 0)
    w.hosts.hosts[w.a].ssh = "hung"
    w.run(4.0, frozen=(w.a,))
    assert w.serving(w.b) and not w.hosts.hosts[w.a].powered


# ----- epochs, promises, leadership ------------------------------------------------
def test_handoff_from_an_earlier_epoch_is_not_honoured(bare: World) -> None:
    w = bare
    rec = w.zk.nodes["/failover/c/cluster"]
    rec.data["handoff"] = {"from": w.a, "to": w.b, "epoch": rec.data["epoch"] - 1, "kind": "failover"}
    rec.data["epoch"] += 0  # the current epoch is 1; the hand-over names 0
    w.zk.expire(w.agents[w.a].session_id or 0)
    del w.agents[w.a]
    w.hosts.hosts[w.a].ssh = "refused"
    w.run(10.0)
    assert not w.serving(w.b) and w.record()["primary"] == w.a


def test_manual_failover_honours_a_failsafe_promise_across_a_restart(world: World) -> None:
    """The standby promised the primary a lease; its agent restarts; a manual
    failover must still wait for the promise to end."""
    w = world
    b = w.agents[w.b]
    answer = b._grant({"from": w.a, "epoch": 1})  # connected, A's session alive: granted
    assert answer["granted"], answer
    w.start_agent(w.b, sid=b.session_id)  # restarted: a new process, the same state dir
    w.zk.expire(w.agents[w.a].session_id or 0)
    del w.agents[w.a]
    w.request({"kind": "failover", "to": w.b, "from": w.a, "operator": "li", "reason": "drill"})
    w.cycle(w.b)
    assert not w.serving(w.b), "promoted inside the promise"
    assert "promised" in w.agents[w.b].mem.sentence
    w.run(w.agents[w.b].t.lease + w.agents[w.b].t.hold_after + 2)
    assert w.serving(w.b)


def test_restart_in_the_middle_of_a_takeover_finishes_it(world: World) -> None:
    """B took `leader` (epoch not bumped yet) and restarted, resuming its
    session: before, it said "another agent took it first" forever."""
    w = world
    w.zk.expire(w.agents[w.a].session_id or 0)
    del w.agents[w.a]
    w.hosts.hosts[w.a].ssh = "refused"
    w.devices[w.a].broken = True  # no proof yet: B holds leader while trying...
    b = w.agents[w.b]
    w.zk.nodes["/failover/c/leader"] = __import__("tests.sim.world", fromlist=["Znode"]).Znode(
        {"ipc": w.b}, 0, b.session_id or 0
    )
    w.start_agent(w.b, sid=b.session_id)
    w.devices[w.a].broken = False
    w.agents[w.b].ex.world.hosts[w.a].ssh = "refused"
    w.run(2.0)
    assert w.record()["primary"] == w.b and w.serving(w.b)


def test_lost_race_then_no_promotion_without_holding_leader(world: World) -> None:
    w = world
    w.zk.expire(w.agents[w.a].session_id or 0)
    del w.agents[w.a]
    b = w.agents[w.b]
    store = w.store(w.b)

    def someone_else_writes() -> None:
        n = w.zk.nodes["/failover/c/cluster"]
        n.version += 1  # e.g. an operator's rejoin landed first

    store.before_cluster_write = someone_else_writes
    w.cycle(w.b)
    assert "Lost the race" in b.mem.sentence
    assert w.leader_owner() is None
    # Someone else holds leader now: B must not promote on its old claim.
    from tests.sim.world import Znode

    w.zk.nodes["/failover/c/leader"] = Znode({"ipc": w.a}, 0, w.zk.new_session())
    w.cycle(w.b)
    assert w.record()["primary"] == w.a and not w.serving(w.b)


# ----- stops that fail, writes that lose --------------------------------------------
def test_driver_stop_failure_after_cti_and_ivr_stopped_still_hands_over(world: World) -> None:
    w = world
    host = w.hosts.hosts[w.a]
    host.stop_fails = {"driver"}
    host.services["cti"] = __import__("failover.platforms", fromlist=["State"]).State.STOPPED  # CTI died
    w.run(6.0)
    assert w.record()["primary"] == w.b and w.serving(w.b)
    said = w.agents[w.a].out.getvalue()  # type: ignore[attr-defined]
    assert "the role handed to" in said and "Stopping the rest FAILED" in said, said


def test_handoff_write_losing_to_the_standby_rule3_write_keeps_calls_on_the_primary(world: World) -> None:
    """Before, the primary retried the hand-over next cycle and handed the
    role to a fenced standby: nobody acted. Now it keeps the role and, its
    CTI/IVR stopped by its own plan, starts them again."""
    w = world
    ha, hb = w.hosts.hosts[w.a], w.hosts.hosts[w.b]
    from failover.platforms import State

    ha.services["cti"] = State.STOPPED  # rule 2 on A

    def standby_fenced_meanwhile() -> None:
        n = w.zk.nodes["/failover/c/cluster"]
        n.data["roles"][w.b] = "fenced"
        n.version += 1
        hb.services["kcxp"] = State.STOPPED

    w.store(w.a).before_cluster_write = standby_fenced_meanwhile
    w.run(6.0, order=(w.a,))
    assert w.record()["primary"] == w.a
    assert not w.record().get("handoff"), w.record()
    said = w.agents[w.a].out.getvalue()  # type: ignore[attr-defined]
    assert "cannot take the role: holding" in said, said
    assert w.serving(w.a)


def test_switchover_whose_target_cannot_serve_gives_the_role_back(world: World) -> None:
    w = world
    w.request({"kind": "switchover", "to": w.b, "operator": "li", "reason": "drill"})
    w.hosts.hosts[w.b].start_fails = set()
    w.cycle(w.a)  # A demotes itself and hands over
    assert w.record()["handoff"]["kind"] == "switchover"
    w.hosts.hosts[w.b].ssh = "refused"  # B's IPC drops off the network right then
    w.run(6.0, order=(w.b, w.a))
    rec = w.record()
    assert rec["primary"] == w.a and w.serving(w.a), rec
    assert rec["epoch"] == 2, rec  # handed back: B never held the role
    assert [e["kind"] for e in w.zk.history if e.get("epoch") == 2 and e.get("proof")] == ["switch-back"]
    assert w.request_state()["state"] == "failed", w.request_state()


def test_cancel_of_a_running_switchover_gives_the_role_back(world: World) -> None:
    w = world
    w.request({"kind": "switchover", "to": w.b, "operator": "li", "reason": "drill"})
    w.cycle(w.a)
    req = w.zk.nodes["/failover/c/switchover"]
    req.data.update(state="cancelled", result={"state": "cancelled", "why": "cancelled by wang"})
    w.run(4.0, order=(w.b, w.a))
    assert w.record()["primary"] == w.a and w.serving(w.a)


# ----- continuous fencing and self-fencing -------------------------------------------
def test_continuous_fencing_stops_cti_auto_started_on_the_old_primary(world: World) -> None:
    w = world
    w.hosts.hosts[w.a].autostart = {"driver", "cti", "ivr"}  # Windows services set to Automatic
    w.hosts.hosts[w.a].power_off()
    w.run(8.0)
    assert w.record()["primary"] == w.b
    w.agents[w.a].stop_event.set()
    del w.agents[w.a]  # its agent is not back yet
    w.hosts.hosts[w.a].power_on(w.clock.now)  # the reboot itself starts them: what counts is that they go at once
    note = w.agents[w.b]._keep_peer_fenced()  # the next tick of B's continuous-fencing thread (1 s)
    assert not ({"cti", "ivr"} & w.hosts.hosts[w.a].running()), note
    assert "found running on" in note
    assert any(e["kind"] == "stray-stopped" for e in w.zk.history)


def test_a_start_landing_after_the_self_fence_is_stopped_again(world: World) -> None:
    w = world
    a = w.agents[w.a]
    w.store(w.a).up = False  # A loses ZooKeeper
    w.cut_agents.add(w.a)  # and the standby's agent: no lease
    for _ in range(int(a.t.self_fence_after / 0.2) + 2):
        w.clock.advance(0.2)
        w.watchdog(w.a)
    assert a.tenure.self_fenced and not w.serving(w.a)
    w.hosts.hosts[w.a].services["cti"] = RUNNING  # a start that was in flight lands now
    w.cycle(w.a)
    assert "cti" not in w.hosts.hosts[w.a].running(), a.mem.sentence


def test_a_second_agent_for_the_same_ipc_refuses_to_run(world: World) -> None:
    w = world
    first = w.agents[w.a]
    dup = w.start_agent(w.a)  # a new session: another process
    w.agents["first"] = first  # still running: its session keeps being heard from
    with pytest.raises(agent_mod.DuplicateAgent):
        dup.cycle()
    del w.agents["first"]
    w.agents[w.a] = first
    w.run(2.0)
    assert w.serving(w.a) and w.record()["epoch"] == 1


# ----- bugs the schedule explorer found (tests/sim/explore.py) ---------------------
def test_restart_in_place_is_not_blocked_by_an_unreachable_fenced_standby(world: World) -> None:
    """Rule 4 (no standby to fail over to): CTI is restarted in place. Before,
    the start waited for proof that the *standby* was fenced; unreachable, it
    never was, the restarts were used up and calls stayed down."""
    w = world
    w.hosts.hosts[w.b].ssh = "refused"
    w.run(4.0)  # B's own agent: unreachable standby -> fenced (rule 3)
    assert w.record()["roles"][w.b] == "fenced", w.record()
    w.hosts.hosts[w.a].services["cti"] = STOPPED
    w.run(6.0)
    assert w.serving(w.a), w.agents[w.a].mem.sentence


def test_rule1_with_the_board_driver_already_stopped_still_brings_calls_back(world: World) -> None:
    """The primary came back from a reboot with only its driver set to start
    and failing: rule 1 had nothing to run, so its layout was never recorded
    and it said "stopping the board driver only" for ever with CTI/IVR down."""
    w = world
    w.hosts.hosts[w.b].ssh = "refused"
    w.run(4.0)  # nobody to fail over to
    host = w.hosts.hosts[w.a]
    host.autostart = set()  # the driver does not come up after the reboot
    host.start_fails = {"driver"}
    host.power_off()
    host.power_on()
    w.run(10.0)
    assert w.record()["board_down"] == [w.a], w.record()
    assert w.serving(w.a), w.agents[w.a].mem.sentence


def test_confirm_dead_seen_first_by_the_standby_is_left_to_the_holder(bare: World) -> None:
    """The standby's agent sees the operator's request before the primary's:
    it must not refuse it ("the primary's agent is alive") when the request
    confirms that primary dead; the holder hands over on that word."""
    w = bare
    w.hosts.hosts[w.a].power_off()
    w.run(6.0)
    w.request({"kind": "failover", "to": w.b, "from": w.a, "confirm_dead": w.a, "operator": "li", "reason": "PSU"})
    w.run(4.0, order=(w.b, w.a))
    assert w.record()["primary"] == w.b and w.serving(w.b), w.request_state()
    assert w.request_state()["state"] == "done", w.request_state()


def test_a_start_is_refused_the_moment_leadership_is_gone(world: World) -> None:
    """The guard is checked when a CTI start is sent: B is promoting when it
    loses ZooKeeper (its session may expire any moment): the start is refused."""
    w = world
    b = w.agents[w.b]

    def cut_off_now() -> None:
        w.store(w.b).up = False
        w.clock.advance(b.t.self_fence_after / 2 + 0.1)  # no contact for longer than the guard allows

    w.executor.before[(w.b, "start", "kcbp-replica")] = cut_off_now  # the step before CTI's start
    w.request({"kind": "switchover", "to": w.b, "operator": "li", "reason": "drill"})
    w.cycle(w.a)  # A demotes itself and hands over
    w.cycle(w.b)  # B takes the role; its CTI start comes after it lost contact
    assert not ({"cti", "ivr"} & w.hosts.hosts[w.b].running()), b.mem.sentence


def test_stray_cti_on_a_peer_without_ssh_is_seen_by_its_probes_and_powered_off(world: World) -> None:
    """Found by the explorer: the old primary reboots with CTI/IVR set to
    Automatic and its SSH does not answer. Continuous fencing sees them by
    their probes, cannot stop them over SSH, and powers the IPC off."""
    w = world
    w.hosts.hosts[w.a].power_off()
    w.run(8.0)
    assert w.record()["primary"] == w.b
    del w.agents[w.a]
    host = w.hosts.hosts[w.a]
    host.autostart = {"driver", "cti", "ivr"}
    host.power_on(w.clock.now)
    host.ssh = "hung"  # sshd wedged (or the management NIC down) after the reboot
    note = w.agents[w.b]._keep_peer_fenced()
    assert not host.powered and "powered off by its fence device" in note, note


def test_stray_cti_that_nothing_can_stop_is_an_alert_naming_it(bare: World) -> None:
    w = bare
    w.hosts.hosts[w.a].power_off()
    w.request({"kind": "failover", "to": w.b, "from": w.a, "confirm_dead": w.a, "operator": "li", "reason": "PSU"})
    w.run(8.0)
    assert w.record()["primary"] == w.b
    del w.agents[w.a]
    host = w.hosts.hosts[w.a]
    host.autostart = {"driver", "cti", "ivr"}
    host.power_on(w.clock.now)
    host.ssh = "hung"
    w.agents[w.b]._keep_peer_fenced()
    w.cycle(w.b)
    way = w.member(w.b)["way_out"]
    assert f"run on {w.a}" in way and "by hand" in way, way


def test_a_non_primary_agent_cut_from_zookeeper_stops_strays_on_its_own_ipc(world: World) -> None:
    """Found by the explorer: the new primary's agent is down, the old one's
    agent has no ZooKeeper, and its IPC reboots with CTI/IVR set to Automatic:
    only that agent can act, and it was not the primary when it last knew."""
    w = world
    w.hosts.hosts[w.a].power_off()
    w.run(8.0)
    assert w.record()["primary"] == w.b
    del w.agents[w.b]  # the new primary's agent crashed
    w.store(w.a).up = False
    host = w.hosts.hosts[w.a]
    host.autostart = {"driver", "cti", "ivr"}
    host.power_on(w.clock.now)
    w.cycle(w.a)
    assert not ({"cti", "ivr"} & host.running()), w.agents[w.a].mem.sentence


def test_the_old_primary_does_not_take_back_a_switchover_it_just_handed_over(world: World) -> None:
    """Found by the real-process suite (test_cli): right after handing the
    role over, the old primary's next cycle came before the target's and took
    the role back (it was still the recorded primary): the switchover failed."""
    w = world
    w.request({"kind": "switchover", "to": w.b, "operator": "li", "reason": "drill"})
    w.cycle(w.a)  # hands over
    w.cycle(w.a)  # its next cycle comes first
    assert w.leader_owner() is None and w.record()["primary"] == w.a
    assert "waiting for its agent to take it" in w.agents[w.a].mem.sentence
    w.cycle(w.b)
    assert w.record()["primary"] == w.b and w.serving(w.b)
    assert w.request_state()["state"] == "done"


# ----- found by the adversarial review ---------------------------------------------
def test_a_primary_agent_restarted_during_a_zookeeper_outage_leaves_calls_alone(world: World) -> None:
    """A freshly started agent has not read the record: it must not take the
    serving primary's CTI/IVR for strays."""
    w = world
    old_sid = w.agents[w.a].session_id
    w.start_agent(w.a)  # restarted, could not resume (a new session)
    w.store(w.a).up = False  # and ZooKeeper is out of reach
    w.zk.expire(old_sid or 0)
    w.cut_agents.add(w.a)
    w.cycle(w.a)
    assert w.serving(w.a), w.agents[w.a].mem.sentence


def test_confirm_dead_onto_a_fenced_standby_is_refused_before_stopping_anything(bare: World) -> None:
    w = bare
    w.zk.nodes["/failover/c/cluster"].data["roles"][w.b] = "fenced"
    w.request({"kind": "failover", "to": w.b, "from": w.a, "confirm_dead": w.a, "operator": "li", "reason": "x"})
    w.cycle(w.a)
    assert w.request_state()["state"] == "refused", w.request_state()
    assert w.serving(w.a)
