"""The typed ZooKeeper records give back exactly the dicts (and so the
bytes) today's writers produce: examples copied from the writers and from a
running lab, then hypothesis over generated records."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover import records as r
from failover import zkstore

PROOF = {"kind": "verified", "host": "ipc-a", "detail": "CTI and IVR stopped on ipc-a by its agent", "by": "ipc-a"}
HANDOFF_FAILOVER = {
    "from": "ipc-a",
    "to": "ipc-b",
    "reason": "CTI down on primary ipc-a (rule 2).",
    "fault_seen_at": 1764770000.25,
    "decided_at": 1764770001.5,
    "stopped_at": 1764770002.75,
    "epoch": 3,
    "kind": "failover",
    "proof": PROOF,
}
HANDOFF_MANUAL = {**HANDOFF_FAILOVER, "kind": "manual-failover", "who": "alice", "request": "a1b2c3d4"}
HANDOFF_SWITCHOVER = {
    "from": "ipc-a",
    "to": "ipc-b",
    "kind": "switchover",
    "who": "alice",
    "reason": "switchover requested by alice: patching",
    "request": "a1b2c3d4",
    "fault_seen_at": 1764770000.0,
    "decided_at": 1764770001.0,
    "stopped_at": 1764770003.0,
    "epoch": 4,
    "proof": PROOF,
}
HANDOFF_BACK = {
    "from": "ipc-b",
    "to": "ipc-a",
    "kind": "switch-back",
    "who": "agent ipc-b",
    "reason": "switchover to ipc-b not done: ipc-b is unreachable over SSH",
    "decided_at": 1764770001.0,
    "stopped_at": 1764770001.0,
    "epoch": 4,
    "proof": {**PROOF, "host": "ipc-b", "by": "ipc-b", "detail": "ipc-b is a standby: CTI/IVR not started"},
}
CLUSTER_BOOTSTRAP = {
    "epoch": 1,
    "primary": "ipc-a",
    "roles": {"ipc-a": "primary", "ipc-b": "standby"},
    "board_down": [],
    "failovers": [],
    "handoff": None,
    "updated": 1764770000.125,
}
CLUSTER_LATER = {
    "epoch": 5,
    "primary": "ipc-b",
    "roles": {"ipc-a": "fenced", "ipc-b": "primary"},
    "board_down": ["ipc-a"],
    "failovers": [1764770010.5, 1764770020.25],
    "handoff": HANDOFF_BACK,
    "counts": {"takeover": 1, "failover": 2, "switchover": 1},
    "rejoin": {"ipc-a": {"by": "alice", "at": 1764770030.0}},
    "updated": 1764770031.0,
}
LEADER = {"ipc": "ipc-a", "epoch": 2, "since": 1764770000.5, "host": "lab-host", "pid": 4242}
MEMBER = {
    "ipc": "ipc-b",
    "cluster": "lab",
    "role": "standby",
    "leader": False,
    "epoch": 2,
    "eligible": True,
    "obs": {
        "role": "standby",
        "reachable": True,
        "unreachable_count": 0,
        "line": "up",
        "line_failures": 0,
        "board_down": False,
        "services": {"cti": {"state": "STOPPED", "healthy": None, "failures": 0}},
    },
    "sentence": "ipc-b is standby (epoch 2): all services match.",
    "decision": "none",
    "alerts": ["failsafe path broken: x"],
    "way_out": "",
    "failsafe_path": {"ok": True, "why": "ipc-a answers"},
    "faults": [],
    "paused": False,
    "self_fenced": False,
    "updated": 1764770000.0,
    "agent": {"host": "lab-host", "pid": 4243},
}
REQUEST_NEW = {
    "id": "a1b2c3d4",
    "kind": "switchover",
    "to": "ipc-b",
    "from": None,
    "operator": "alice",
    "reason": "patching",
    "at": None,
    "allow_paused": False,
    "force": False,
    "confirm_dead": None,
    "requested_at": 1764770000.0,
    "state": "pending",
    "progress": [],
}
REQUEST_DONE = {
    **REQUEST_NEW,
    "kind": "failover",
    "from": "ipc-a",
    "confirm_dead": "ipc-a",
    "at": 1764770100.0,
    "state": "done",
    "progress": ["ipc-b: taking the role", "done: ipc-b is primary"],
    "result": {"state": "done", "why": "ipc-b is primary, epoch 3", "primary": "ipc-b", "epoch": 3},
}
REQUEST_CANCELLED = {
    **REQUEST_NEW,
    "state": "cancelled",
    "result": {"state": "cancelled", "why": "cancelled by bob"},
    "cancelled": {"by": "bob", "at": 1764770001.0, "reason": "", "was": "pending"},
}
PAUSE = {"reason": "maintenance", "operator": "alice", "since": 1764770000.0}
TAKEOVER = {
    "kind": "failover",
    "from": "ipc-a",
    "to": "ipc-b",
    "epoch": 3,
    "why": "CTI down on primary ipc-a (rule 2).",
    "who": "agent ipc-b",
    "fencing": "verified: CTI and IVR stopped on ipc-a by its agent",
    "proof": PROOF,
    "outcome": "done",
    "detection_s": 2.0,
    "stop_s": 1.0,
    "fencing_s": 0.5,
    "promotion_s": 3.25,
    "duration_s": 6.75,
    "when": 1764770005.0,
}
HISTORY = [
    {
        "kind": "bootstrap",
        "from": None,
        "to": "ipc-a",
        "epoch": 1,
        "why": "first start of the cluster",
        "who": "agent ipc-a",
        "outcome": "done",
        "when": 1764770000.0,
    },
    {"kind": "pause", "who": "alice", "why": "no reason given", "outcome": "done", "when": 1.0},
    {"kind": "resume", "who": "alice", "why": "x", "outcome": "was not paused", "when": 2.0, "id": "h-0000000004"},
    {
        "kind": "switchover-cancelled",
        "from": None,
        "to": "ipc-b",
        "request": "a1b2",
        "who": "bob",
        "why": "cancelled the pending switchover to ipc-b requested by alice",
        "outcome": "cancelled",
        "when": 3.0,
    },
    {"kind": "drill", "who": "alice", "why": "runbook r", "outcome": "passed", "report": None, "epoch": 2},
    TAKEOVER,
    {**TAKEOVER, "outcome": "failed", "failed": "start cti on ipc-b: failed"},
]
EXAMPLES: list[tuple[type[r.Record], dict]] = [
    (r.Handoff, HANDOFF_FAILOVER),
    (r.Handoff, HANDOFF_MANUAL),
    (r.Handoff, HANDOFF_SWITCHOVER),
    (r.Handoff, HANDOFF_BACK),
    (r.ClusterRecord, CLUSTER_BOOTSTRAP),
    (r.ClusterRecord, {**CLUSTER_BOOTSTRAP, "handoff": HANDOFF_MANUAL}),
    (r.ClusterRecord, CLUSTER_LATER),
    (r.LeaderRecord, LEADER),
    (r.MemberRecord, MEMBER),
    (r.Request, REQUEST_NEW),
    (r.Request, REQUEST_DONE),
    (r.Request, REQUEST_CANCELLED),
    (r.Pause, PAUSE),
    *((r.HistoryEntry, h) for h in HISTORY),
]


@pytest.mark.parametrize(("cls", "d"), EXAMPLES, ids=lambda x: getattr(x, "__name__", ""))
def test_writers_dicts_round_trip_to_the_same_bytes(cls: type[r.Record], d: dict) -> None:
    before = copy.deepcopy(d)
    rec = cls.from_json(d)
    assert rec.to_json() == d
    assert zkstore.dumps(rec.to_json()) == zkstore.dumps(d)
    assert d == before  # reading never changes the caller's dict


def test_a_minimal_record_is_written_back_as_it_was() -> None:
    """A request as the simulator writes it (few keys): the agent's changes
    are written, the keys nobody set are not added."""
    import dataclasses

    minimal = {"state": "pending", "id": "r1", "kind": "switchover", "to": "ipc-b"}
    req = dataclasses.replace(r.Request.from_json(minimal), state="running", progress=("started",))
    assert req.to_json() == {**minimal, "state": "running", "progress": ["started"]}
    small = {"epoch": 1, "primary": "ipc-a", "roles": {"ipc-a": "primary"}}
    assert dataclasses.replace(r.ClusterRecord.from_json(small), epoch=2).to_json() == {**small, "epoch": 2}


def test_unknown_keys_survive_a_rewrite() -> None:
    newer = {**CLUSTER_LATER, "witness": {"host": "w1"}, "handoff": {**HANDOFF_FAILOVER, "lease_s": 3}}
    rec = r.ClusterRecord.from_json(newer)
    assert rec.extra == {"witness": {"host": "w1"}}
    assert rec.handoff is not None and rec.handoff.extra == {"lease_s": 3}
    assert rec.to_json() == newer


def test_missing_keys_take_defaults() -> None:
    rec = r.ClusterRecord.from_json({})
    assert (rec.epoch, rec.primary, rec.roles, rec.board_down, rec.handoff) == (0, None, {}, (), None)
    assert r.Request.from_json(None).state == "pending"
    assert r.MemberRecord.from_json({"ipc": "ipc-a"}).alerts == ()


def test_typed_fields() -> None:
    rec = r.ClusterRecord.from_json(CLUSTER_LATER)
    assert rec.roles["ipc-b"] is r.Role.PRIMARY
    assert rec.handoff is not None and rec.handoff.frm == "ipc-b" and rec.handoff.kind == "switch-back"
    h = r.HistoryEntry.from_json(TAKEOVER)
    assert (h.kind, h.frm, h.to, h.epoch, h.get("duration_s")) == ("failover", "ipc-a", "ipc-b", 3, 6.75)


def test_history_entry_of_writes_what_the_call_sites_wrote() -> None:
    e = r.HistoryEntry.of("bootstrap", "agent ipc-a", "first start of the cluster", frm=None, to="ipc-a", epoch=1)
    assert e.to_json() == {k: v for k, v in HISTORY[0].items() if k != "when"}
    p = r.HistoryEntry.of("pause", "alice", "no reason given")
    assert p.to_json() == {"kind": "pause", "who": "alice", "why": "no reason given", "outcome": "done"}


def test_kind_lists_are_one_family() -> None:
    assert set(r.PROMOTION_KINDS) < set(r.PRIMARY_CHANGE_KINDS)
    assert set(r.PROMOTION_KINDS) < set(r.ROLE_CHANGE_KINDS)


# ----- hypothesis: any record a writer could produce comes back unchanged -------------
text = st.text(max_size=12)
num = st.floats(allow_nan=False, allow_infinity=False, width=64)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), num, text)
json_value = st.recursive(
    scalar, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)), max_leaves=8
)
ipc = st.sampled_from(["ipc-a", "ipc-b", "ipc-c"])
unknown_key = text.map(lambda s: "x-" + s)


def _maybe(d: dict[str, Any], optional: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    """Any of the keys a writer writes (all of them, as today's writers do, or
    some: an older or minimal writer), plus unknown keys."""
    full = st.fixed_dictionaries(d, optional=optional)
    some = st.fixed_dictionaries({}, optional={**d, **optional})
    extra = st.dictionaries(unknown_key, json_value, max_size=2)
    return st.builds(lambda a, c: {**a, **c}, st.one_of(full, some), extra)


handoffs = _maybe(
    {
        "from": ipc,
        "to": ipc,
        "kind": text,
        "reason": text,
        "epoch": st.integers(0, 10**6),
        "decided_at": num,
        "stopped_at": num,
    },
    {"fault_seen_at": num, "who": text, "request": text, "proof": st.dictionaries(text, text, max_size=3)},
)
clusters = _maybe(
    {
        "epoch": st.integers(0, 10**6),
        "primary": st.one_of(st.none(), ipc),
        "roles": st.dictionaries(ipc, st.sampled_from(["primary", "standby", "fenced"])),
        "board_down": st.lists(ipc, max_size=2),
        "failovers": st.lists(num, max_size=3),
        "handoff": st.one_of(st.none(), handoffs),
    },
    {
        "counts": st.dictionaries(text, st.integers(0, 100), max_size=3),
        "rejoin": st.dictionaries(ipc, st.fixed_dictionaries({"by": text, "at": num})),
        "updated": num,
    },
)
leaders = _maybe(
    {"ipc": ipc, "epoch": st.integers(0, 99), "since": num, "host": text, "pid": st.integers(1, 2**22)}, {}
)
members = _maybe(
    {
        "ipc": ipc,
        "cluster": text,
        "role": text,
        "leader": st.booleans(),
        "epoch": st.integers(0, 99),
        "eligible": st.booleans(),
        "obs": st.dictionaries(text, json_value, max_size=3),
        "sentence": text,
        "decision": text,
        "alerts": st.lists(text, max_size=3),
        "way_out": text,
        "failsafe_path": st.fixed_dictionaries({"ok": st.one_of(st.none(), st.booleans()), "why": text}),
        "faults": st.lists(text, max_size=3),
        "paused": st.booleans(),
        "self_fenced": st.booleans(),
        "updated": num,
        "agent": st.fixed_dictionaries({"host": text, "pid": st.integers(1, 99)}),
    },
    {},
)
requests = _maybe(
    {
        "id": text,
        "kind": text,
        "to": ipc,
        "from": st.one_of(st.none(), ipc),
        "operator": text,
        "reason": text,
        "at": st.one_of(st.none(), num),
        "allow_paused": st.booleans(),
        "force": st.booleans(),
        "confirm_dead": st.one_of(st.none(), ipc),
        "requested_at": num,
        "state": text,
        "progress": st.lists(text, max_size=3),
    },
    {
        "result": st.dictionaries(text, json_value, max_size=3),
        "cancelled": st.dictionaries(text, json_value, max_size=3),
    },
)
pauses = _maybe({"reason": text, "operator": text, "since": num}, {})
history = _maybe(
    {"kind": text, "who": text, "why": text, "outcome": text},
    {
        "when": num,
        "id": text,
        "from": st.one_of(st.none(), ipc),
        "to": ipc,
        "epoch": st.integers(0, 99),
        "proof": st.dictionaries(text, text, max_size=2),
        "duration_s": num,
    },
)


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.tuples(st.just(r.Handoff), handoffs),
        st.tuples(st.just(r.ClusterRecord), clusters),
        st.tuples(st.just(r.LeaderRecord), leaders),
        st.tuples(st.just(r.MemberRecord), members),
        st.tuples(st.just(r.Request), requests),
        st.tuples(st.just(r.Pause), pauses),
        st.tuples(st.just(r.HistoryEntry), history),
    )
)
def test_round_trip_property(case: tuple[type[r.Record], dict]) -> None:
    cls, d = case
    assert zkstore.dumps(cls.from_json(d).to_json()) == zkstore.dumps(d)


# ----- what the real agent code writes (in the simulator) round-trips too --------------
ZNODES: dict[str, type[r.Record]] = {"cluster": r.ClusterRecord, "leader": r.LeaderRecord, "switchover": r.Request}


def test_what_the_agents_write_round_trips(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agents (real code, simulated ZooKeeper and IPCs) bootstrap, fail over
    on a power cut with a hand-over, then a switchover is requested: every
    znode and history entry they wrote reads back to the same JSON."""
    from tests.sim.world import World, bootstrap

    w = World(tmp_path)
    with w.patched(monkeypatch):
        bootstrap(w)
        w.hosts.hosts[w.a].power_off()
        w.run(8.0)
        w.request({"kind": "switchover", "to": w.a, "operator": "sim", "reason": "planned"})
        w.run(3.0)
        seen = set()
        for name, cls in {**ZNODES, f"members/{w.a}": r.MemberRecord, f"members/{w.b}": r.MemberRecord}.items():
            n = w.zk.nodes.get(f"{w.store_path}/{name}")
            if n is not None:
                seen.add(name)
                assert zkstore.dumps(cls.from_json(n.data).to_json()) == zkstore.dumps(n.data), name
        for e in w.zk.history:
            assert r.HistoryEntry.from_json(e).to_json() == e
    assert {"cluster", "leader", f"members/{w.b}", "switchover"} <= seen
    assert {e["kind"] for e in w.zk.history} >= {"bootstrap", "failover"}
