"""The notifier against a real ZooKeeper (a one-node lab): the outbox in
`P/notified` is capped (full, nothing new is claimed and nothing is lost),
a delivery thread survives a dead-letter file it cannot write, and while a
delivery thread is not running nothing is claimed."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failover import inventory as inv_mod
from failover import zkstore
from failover.inventory import Cluster
from failover.lab.lab import Lab
from failover.notify import ledger
from failover.notify.events import Event
from failover.notify.notifier import Notifier
from failover.records import ClusterRecord, HistoryEntry, MemberRecord
from tests.receiver import Receiver, wait_until

ME = {"ipc": "ipc-a", "host": socket.gethostname(), "pid": os.getpid()}


@pytest.fixture(scope="module")
def zk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Any]]:
    lab = Lab(root=tmp_path_factory.mktemp("notify") / "lab", zk_count=1)
    lab.up()
    try:
        cluster = inv_mod.load(lab.inventory_path).cluster()
        client = zkstore.connect(cluster, timeout=10)
        client.start(timeout=15)
        try:
            yield cluster, client
        finally:
            client.stop()
            client.close()
    finally:
        lab.down()


def setup(zk: tuple[Cluster, Any], path: str, hooks: list[dict]) -> tuple[zkstore.Store, Cluster]:
    """A private path where this test process is ipc-a's agent (so ipc-a sends)."""
    doc = zk[0].model_dump()
    doc["zookeeper"]["path"] = path
    doc["notify"] = {"webhooks": hooks, "poll_interval": 0.1}
    c = Cluster.model_validate(doc)
    store = zkstore.Store(zk[1], path)
    store.ensure_layout()
    store.create_cluster(
        ClusterRecord.from_json({"epoch": 1, "primary": None, "roles": {"ipc-a": "standby", "ipc-b": "fenced"}})
    )
    store.publish_member("ipc-a", MemberRecord.from_json({"agent": {"host": ME["host"], "pid": ME["pid"]}}))
    return store, c


def add(store: zkstore.Store, n: int) -> None:
    for k in range(n):
        store.add_history(
            HistoryEntry.from_json({"kind": "failover", "from": "ipc-a", "to": "ipc-b", "epoch": k, "outcome": "done"})
        )


def filler(n: int) -> list[Event]:
    return [Event(f"x/{k}", "fault", "warning", "x", "ipc-b", "filler", 1.0) for k in range(n)]


def test_a_full_outbox_claims_nothing_new_and_loses_nothing(zk: tuple[Cluster, Any], tmp_path: Path) -> None:
    store, c = setup(zk, "/notify-test/cap", [{"name": "r", "url": "http://127.0.0.1:9/hook"}])
    me = Notifier(c, "ipc-a", store, tmp_path, threading.Event())
    me.poll()  # creates the cursor
    first = ledger.read(store)
    assert first is not None and ledger.claim(store, first, first.seen, filler(ledger.MAX_ENTRIES), ME)
    add(store, 3)
    assert me.poll() == [] and me.poll() == []  # full: the cursor does not move
    full = ledger.read(store)
    assert full is not None and full.seen.history == first.seen.history and len(full.outbox) == ledger.MAX_ENTRIES
    for k in range(4):  # four delivered: room for two history entries (each may make two events)
        assert ledger.finish(store, f"x/{k}")
    assert [e.id for e in me.poll()] == [f"{c.name}/{h}" for h in store.history_names()[:2]]
    assert len(me.poll()) == 1  # the third, in order: nothing lost
    assert len(ledger.read(store).outbox) == ledger.MAX_ENTRIES - 1  # type: ignore[union-attr]


def test_the_outbox_is_capped_in_bytes_too(zk: tuple[Cluster, Any]) -> None:
    store, _ = setup(zk, "/notify-test/bytes", [{"name": "r", "url": "http://127.0.0.1:9/hook"}])
    ledger.create(store, ledger.Seen(""))
    old = ledger.read(store)
    assert old is not None
    # An event quoting a long output is stored slim: it fits an empty outbox.
    big = Event("x/big", "fault", "warning", "x", "ipc-b", "y" * ledger.MAX_BYTES, 1.0, {"out": "z" * 50_000})
    [entry] = ledger.entries([big], ME)
    assert entry["event"]["truncated"] and len(zkstore.dumps(entry)) < 2 * ledger.MAX_EVENT_BYTES
    assert entry["event"]["detail"]["out"].startswith("zzz") and entry["event"]["id"] == "x/big"
    # Many events just under the slim limit: refused past MAX_BYTES, nothing written.
    medium = [
        Event(f"x/{k}", "fault", "warning", "x", "ipc-b", "m", 1.0, {"out": ["y" * 900] * 8})
        for k in range(ledger.MAX_BYTES // (7 * 1024) + 1)
    ]
    assert not any("truncated" in e["event"] for e in ledger.entries(medium, ME))
    assert not ledger.claim(store, old, old.seen, medium, ME)
    assert ledger.read(store) == old
    assert ledger.claim(store, old, old.seen, medium[:10], ME)


def test_delivery_goes_on_when_the_dead_letter_file_cannot_be_written(zk: tuple[Cluster, Any], tmp_path: Path) -> None:
    """One receiver refuses every event (400: dead-lettered at once), and the
    dead-letter path is a directory: the write fails. The other receiver
    still gets every event, and the outbox empties."""
    refuses, takes = Receiver(status=400).up(), Receiver().up()
    stop = threading.Event()
    try:
        hooks = [{"name": "refuses", "url": refuses.url}, {"name": "takes", "url": takes.url}]
        store, c = setup(zk, "/notify-test/deadletter", hooks)
        (tmp_path / f"{c.name}-ipc-a.notify-dead-letter.jsonl").mkdir()
        me = Notifier(c, "ipc-a", store, tmp_path, stop)
        me.poll()
        me.start()
        add(store, 3)
        wait_until(lambda: len(takes.ids()) == 3, 30, what="three events at the receiver that takes them")
        wait_until(lambda: ledger.read(store).outbox == [], 30, what="the outbox emptied")  # type: ignore[union-attr]
        assert all(t.is_alive() for t in threading.enumerate() if t.name.startswith("notify-"))
        assert len(refuses.requests) == 3
    finally:
        stop.set()
        refuses.down()
        takes.down()


def test_nothing_is_claimed_while_a_delivery_thread_is_not_running(zk: tuple[Cluster, Any], tmp_path: Path) -> None:
    store, c = setup(zk, "/notify-test/nodeliverer", [{"name": "r", "url": "http://127.0.0.1:9/hook"}])
    stop = threading.Event()
    me = Notifier(c, "ipc-a", store, tmp_path, stop)
    me.poll()
    stop.set()  # the delivery threads end at once; the poller with them
    me.start()
    wait_until(lambda: not any(t.name == "notify-r" for t in threading.enumerate()), 10, what="the lane ended")
    add(store, 1)
    before = ledger.read(store)
    assert me.poll() == [] and ledger.read(store) == before


def test_a_black_holed_receiver_delays_only_its_own_notifications(zk: tuple[Cluster, Any], tmp_path: Path) -> None:
    """One receiver accepts connections and never answers (each attempt
    waits for its 60 s timeout); the other gets every event meanwhile."""
    hole = socket.create_server(("127.0.0.1", 0))  # listening, never accepting: the kernel completes connects
    takes, stop = Receiver().up(), threading.Event()
    try:
        hooks = [
            {"name": "hole", "url": f"http://127.0.0.1:{hole.getsockname()[1]}/hook", "timeout": 60, "attempts": 1},
            {"name": "takes", "url": takes.url},
        ]
        store, c = setup(zk, "/notify-test/blackhole", hooks)
        me = Notifier(c, "ipc-a", store, tmp_path, stop)
        me.poll()
        me.start()
        add(store, 3)
        wait_until(lambda: len(takes.ids()) == 3, 30, what="three events past the black-holed receiver")
        assert len(ledger.read(store).outbox) == 3  # type: ignore[union-attr]  # the hole has not had them
    finally:
        stop.set()
        hole.close()  # resets the waiting connection: the lane ends
        takes.down()


def test_an_agent_restarted_within_its_session_does_not_adopt_its_own_claims(
    zk: tuple[Cluster, Any], tmp_path: Path
) -> None:
    """Its member record still names the old process (until its first
    publish): its fresh claims are its own, not orphans, and queued once."""
    store, c = setup(zk, "/notify-test/restarted", [{"name": "r", "url": "http://127.0.0.1:9/hook"}])
    store.publish_member("ipc-a", MemberRecord.from_json({"agent": {"host": ME["host"], "pid": ME["pid"] + 1}}))
    me = Notifier(c, "ipc-a", store, tmp_path, threading.Event())
    me.poll()
    add(store, 1)
    assert len(me.poll()) == 1
    assert me.poll() == [] and me.poll() == []  # not adopted, not queued again
    assert [lane.queue.qsize() for lane in me.lanes] == [1]
    assert [e["owner"] for e in ledger.read(store).outbox] == [ME]  # type: ignore[union-attr]
