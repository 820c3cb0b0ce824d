"""One contract, two ZooKeepers: the simulator's (tests/sim/world.py) and the
real one (a lab ZooKeeper through failover.zkstore.Store and kazoo). What the
agent relies on must hold for both: ephemeral owners, a session's own
`leader`, versions on the cluster record, ephemerals gone when a session ends
or expires, a member znode owned by its agent's session."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from failover import zkstore
from failover.lab.lab import Lab
from failover.records import ClusterRecord, HistoryEntry, LeaderRecord, MemberRecord
from tests.sim.world import Clock, FakeStore, FakeZkClient, ZkServer

pytestmark = pytest.mark.timeout(120)


@dataclass
class Side:
    """Two clients (sessions) of one ZooKeeper, and how to end one."""

    one: object
    two: object
    sid_one: int
    sid_two: int
    end_one: Callable[[], None]  # the first session ends (expires, or its client closes)
    new_one: Callable[[], object]  # a new session for the first client


def _fake() -> Iterator[Side]:
    server = ZkServer(Clock(), 6.0)
    s1, s2 = server.new_session(), server.new_session()
    a, b = FakeStore(server, s1), FakeStore(server, s2)
    a.client, b.client = FakeZkClient(s1), FakeZkClient(s2)

    def new_one() -> FakeStore:
        st = FakeStore(server, server.new_session())
        st.client = FakeZkClient(st.sid)
        return st

    yield Side(a, b, s1, s2, lambda: server.expire(s1), new_one)


def _real(root: Path) -> Iterator[Side]:
    lab = Lab(root=root / "lab", zk_count=1)
    lab.up()
    clients: list[KazooClient] = []

    def client() -> zkstore.Store:
        zk = KazooClient(hosts=lab.zk_hosts(), timeout=4.0)
        zk.start(timeout=20)
        clients.append(zk)
        st = zkstore.Store(zk, "/failover/contract")
        st.ensure_layout()
        return st

    try:
        a, b = client(), client()
        yield Side(a, b, a.zk.client_id[0], b.zk.client_id[0], lambda: a.zk.stop(), client)
    finally:
        for zk in clients:
            zk.stop()
            zk.close()
        lab.down()


@pytest.fixture(params=["fake", "real"])
def side(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Side]:
    gen = _fake() if request.param == "fake" else _real(tmp_path)
    yield next(gen)
    for _ in gen:
        pass


def _wait(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_leader_is_ephemeral_owned_and_exclusive(side: Side) -> None:
    a, b = side.one, side.two
    assert a.take_leader(LeaderRecord(ipc="a"))  # type: ignore[attr-defined]
    assert not b.take_leader(LeaderRecord(ipc="b"))  # type: ignore[attr-defined]
    data, owner = b.leader()  # type: ignore[attr-defined]
    assert data.ipc == "a" and owner == side.sid_one
    # A session's own leader is its own (an agent that resumed its session).
    assert a.take_leader(LeaderRecord(ipc="a"), owner=side.sid_one)  # type: ignore[attr-defined]
    assert not b.take_leader(LeaderRecord(ipc="b"), owner=side.sid_two)  # type: ignore[attr-defined]
    # Releasing someone else's leader does nothing.
    b.release_leader(side.sid_two)  # type: ignore[attr-defined]
    assert b.leader() is not None  # type: ignore[attr-defined]
    a.release_leader(side.sid_one)  # type: ignore[attr-defined]
    assert b.leader() is None  # type: ignore[attr-defined]


def test_ephemerals_go_with_their_session(side: Side) -> None:
    a, b = side.one, side.two
    assert a.take_leader(LeaderRecord(ipc="a"))  # type: ignore[attr-defined]
    a.publish_member("ipc-a", MemberRecord(ipc="ipc-a"))  # type: ignore[attr-defined]
    got = b.member_owner("ipc-a")  # type: ignore[attr-defined]
    assert got is not None and got[1] == side.sid_one
    side.end_one()
    assert _wait(lambda: b.leader() is None and b.member("ipc-a") is None)  # type: ignore[attr-defined]
    # A new session (kazoo after LOST, or a new agent) owns what it creates.
    c = side.new_one()
    assert c.take_leader(LeaderRecord(ipc="a"))  # type: ignore[attr-defined]
    assert b.leader()[1] != side.sid_one  # type: ignore[attr-defined,index]


def test_cluster_record_writes_are_conditional(side: Side) -> None:
    a, b = side.one, side.two
    assert a.create_cluster(ClusterRecord(epoch=1, primary="ipc-a"))  # type: ignore[attr-defined]
    assert not b.create_cluster(ClusterRecord(epoch=1, primary="ipc-b"))  # type: ignore[attr-defined]
    v = a.cluster()  # type: ignore[attr-defined]
    w = b.cluster()  # type: ignore[attr-defined]
    a.update_cluster(v.version, replace(v.data, epoch=2))  # type: ignore[attr-defined]
    with pytest.raises(zkstore.Conflict):
        b.update_cluster(w.version, replace(w.data, epoch=2, primary="ipc-b"))  # type: ignore[attr-defined]
    assert b.cluster().data.epoch == 2 and b.cluster().data.primary == "ipc-a"  # type: ignore[attr-defined]


def test_records_read_back_as_written(side: Side) -> None:
    """Both stores give back the typed record another session wrote (the Store
    stamps `updated` on the cluster record and `when` on history entries)."""
    a, b = side.one, side.two
    rec = ClusterRecord.from_json(
        {
            "epoch": 3,
            "primary": "ipc-b",
            "roles": {"ipc-a": "fenced", "ipc-b": "primary"},
            "board_down": ["ipc-a"],
            "failovers": [1.5],
            "handoff": None,
            "counts": {"failover": 1},
        }
    )
    assert a.create_cluster(rec)  # type: ignore[attr-defined]
    assert replace(b.cluster().data, updated=None) == rec  # type: ignore[attr-defined]
    member = MemberRecord(ipc="ipc-a", role="standby", eligible=True, alerts=("x",), obs={"line": "up"}, updated=2.0)
    a.publish_member("ipc-a", member)  # type: ignore[attr-defined]
    assert b.member("ipc-a") == member  # type: ignore[attr-defined]
    entry = HistoryEntry.of("rejoin", "alice", "repaired", frm="ipc-a", to="ipc-a", epoch=3)
    a.add_history(entry)  # type: ignore[attr-defined]
    got = b.history(1)[-1]  # type: ignore[attr-defined]
    assert (got.kind, got.who, got.why, got.outcome, got.frm, got.to, got.epoch) == (
        "rejoin",
        "alice",
        "repaired",
        "done",
        "ipc-a",
        "ipc-a",
        3,
    )
