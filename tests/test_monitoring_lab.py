"""Monitoring as an operator wires it, against one lab (real ZooKeeper, sshd,
two agents) started once for the module: promtool on the agents' real
/metrics, check_http and check_curl on /health, /primary and /standby with
the command lines of docs/monitoring.md, the shared notification cursor
against the real ZooKeeper (claimed once under a race, adopted after a
crash), and, last, a CTI killed on the primary, then the new primary's agent
killed: exactly one role-change notification for each arrives at a real
local webhook receiver (the second sent by the standby)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from failover import ops, zkstore
from failover.notify import ledger
from failover.notify.events import Event, Seen
from failover.notify.notifier import Notifier
from tests.cluster import Harness, wait_for
from tests.receiver import Receiver

pytestmark = pytest.mark.timeout(240)
PLUGINS = Path("/usr/lib/nagios/plugins")
TOKEN = "hook-token-for-tests"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().up()
    try:
        yield r
    finally:
        r.down()


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Harness]:
    def notify(doc: dict) -> None:
        hook = {"name": "test", "url": receiver.url, "token_env": "FAILOVER_TEST_HOOK_TOKEN", "backoff": 0.2}
        doc["clusters"][0]["notify"] = {"webhooks": [hook], "poll_interval": 0.5}

    os.environ["FAILOVER_TEST_HOOK_TOKEN"] = TOKEN  # inherited by the agents
    try:
        with Harness(tmp_path_factory.mktemp("monitoring"), edit=notify) as harness:
            harness.steady()
            yield harness
            # Safety only: the harness's observer-cadence gates (p99 gap
            # <= 0.1 s) are about the machine's load, not about notifications.
            bad = harness.violations()
            assert not bad, f"CTI/IVR on both IPCs at {len(bad)} instants, first: {bad[:3]}"
    finally:
        os.environ.pop("FAILOVER_TEST_HOOK_TOKEN", None)


def tool(name: str) -> str:
    path = PLUGINS / name if name.startswith("check_") else shutil.which(name)
    if path is None or not Path(path).exists():
        pytest.fail(f"{name} missing: run `make install` (Debian's prometheus / monitoring-plugins)")
    return str(path)


def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)


# ----- Prometheus -------------------------------------------------------------------------
def test_promtool_check_metrics_on_the_agents_real_metrics(h: Harness) -> None:
    for ipc in ("ipc-a", "ipc-b"):
        with urllib.request.urlopen(h.url(ipc, "/metrics"), timeout=5) as r:
            text = r.read().decode()
        assert "failover_leader{" in text
        got = run(tool("promtool"), "check", "metrics", stdin=text)
        assert got.returncode == 0 and got.stdout == got.stderr == "", f"{ipc}: {got.stdout}{got.stderr}"


# ----- check_http / check_curl: the command lines of docs/monitoring.md ----------------------
ENDPOINTS = {
    # endpoint: (options after -H host -p port, expected exit on ipc-a (primary), on ipc-b (standby))
    "/health": (["-u", "/health", "-e", "200", "-s", '"layout_matches_role": true'], 0, 0),
    "/primary": (["-u", "/primary", "-e", "200", "-s", '"primary": true'], 0, 2),
    "/standby": (["-u", "/standby", "-e", "200", "-s", '"eligible": true'], 2, 0),
}


@pytest.mark.parametrize("plugin", ["check_http", "check_curl"])
def test_plugins_on_health_primary_standby(h: Harness, plugin: str) -> None:
    for endpoint, (opts, on_a, on_b) in ENDPOINTS.items():
        for ipc, want in (("ipc-a", on_a), ("ipc-b", on_b)):
            u = urlsplit(h.url(ipc))
            got = run(tool(plugin), "-H", str(u.hostname), "-p", str(u.port), *opts)
            assert got.returncode == want, f"{plugin} {endpoint} on {ipc}: {got.returncode} {got.stdout}"
            assert got.stdout.startswith(("HTTP OK", "HTTP CRITICAL")), got.stdout


# ----- the shared cursor on the real ZooKeeper ------------------------------------------------
def notifiers(h: Harness, path: str, receiver: Receiver, n: int) -> tuple[zkstore.Store, list[Notifier]]:
    """`n` notifiers of ipc-a on a private path of the lab's ZooKeeper, where
    this test process publishes ipc-a's member record (so ipc-a sends)."""
    doc = h.cluster.model_dump()
    doc["zookeeper"]["path"] = path
    doc["notify"] = {"webhooks": [{"name": "test", "url": receiver.url, "backoff": 0.2}]}
    c = type(h.cluster).model_validate(doc)
    store = zkstore.Store(h.zk, path)
    store.ensure_layout()
    store.create_cluster({"epoch": 1, "primary": None, "roles": {"ipc-a": "standby", "ipc-b": "fenced"}})
    store.publish_member("ipc-a", {"agent": {"host": socket.gethostname(), "pid": os.getpid()}})
    return store, [Notifier(c, "ipc-a", store, h.root, threading.Event()) for _ in range(n)]


def test_two_racing_senders_claim_each_event_once(h: Harness, receiver: Receiver) -> None:
    store, (one, two) = notifiers(h, "/failover-test/race", receiver, 2)
    one.poll()  # creates the cursor: from now on
    for k in range(12):
        store.add_history({"kind": "failover", "from": "ipc-a", "to": "ipc-b", "epoch": k, "outcome": "done"})
    claimed: list[list[Event]] = [[], []]

    deadline = time.monotonic() + 60

    def race(k: int, who: Notifier) -> None:
        while len(claimed[0]) + len(claimed[1]) < 12 and time.monotonic() < deadline:
            claimed[k] += who.poll()

    threads = [threading.Thread(target=race, args=(k, n), daemon=True) for k, n in enumerate((one, two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [e.id for e in claimed[0] + claimed[1]]
    assert len(ids) == len(set(ids)) == 12, ids
    # The interleaving that matters, made certain: both read the same cursor,
    # the second claim (over a version that is no longer current) is refused.
    store.add_history({"kind": "takeover", "from": "ipc-a", "to": "ipc-b", "epoch": 99, "outcome": "done"})
    seen_by_both = ledger.read(store)
    assert seen_by_both is not None
    new = Seen("h-9999999999", seen_by_both.seen.active)
    assert ledger.claim(store, seen_by_both, new, [], one.owner)
    assert not ledger.claim(store, seen_by_both, new, [], two.owner)
    assert len(ledger.read(store).outbox) == 12  # type: ignore[union-attr]  # claimed, not yet sent (no deliverer)


def test_an_event_claimed_by_a_crashed_agent_is_sent_again_with_its_id(h: Harness, receiver: Receiver) -> None:
    store, (me,) = notifiers(h, "/failover-test/adopt", receiver, 1)
    me.poll()
    lost = Event("test/h-0000000042", "fault", "warning", "test", "ipc-b", "standby-fault on ipc-b", 1.0)
    dead = {"ipc": "ipc-b", "host": socket.gethostname(), "pid": 0}  # its member record is gone
    assert ledger.claim(store, ledger.read(store), ledger.read(store).seen, [lost], dead)  # type: ignore[arg-type]
    me.start()
    try:
        wait_for(lambda: lost.id in receiver.ids(), 20, what="the orphan delivered")
        wait_for(lambda: ledger.read(store).outbox == [], 20, what="the outbox emptied")  # type: ignore[union-attr]
    finally:
        me.stop.set()
    assert receiver.ids().count(lost.id) == 1


# ----- last: a failover, then a takeover from a dead agent: one notification each ---------------
def one_role_change(h: Harness, receiver: Receiver, kind: str) -> dict:
    """The notification of the one `kind` history entry, once no agent can
    send it again (the cursor past it, nothing waiting in the outbox): only
    then is "exactly once" counted."""
    [entry] = wait_for(lambda: [e for e in h.store.history() if e["kind"] == kind], 10, what=f"{kind} in history")
    event_id = f"lab/{entry['id']}"
    wait_for(lambda: event_id in receiver.ids("role-change"), 30, what=f"the {kind} notification")
    wait_for(
        lambda: (r := ledger.read(h.store)) and r.seen.history >= entry["id"] and not r.outbox,
        30,
        what="the cursor past it and the outbox empty",
    )
    assert receiver.ids().count(event_id) == 1
    [req] = [r for r in receiver.accepted if r.body["id"] == event_id]
    assert req.headers["idempotency-key"] == event_id and req.headers["authorization"] == f"Bearer {TOKEN}"
    return req.body


def test_cti_killed_failover_sends_exactly_one_role_change(h: Harness, receiver: Receiver) -> None:
    h.lab.fault("ipc-a", "kill", "cti")
    wait_for(lambda: h.record().get("primary") == "ipc-b" and h.serving("ipc-b"), 30, what="ipc-b serving")
    body = one_role_change(h, receiver, "failover")
    assert receiver.ids("role-change") == [body["id"]]
    assert body["detail"]["from"] == "ipc-a" and body["detail"]["to"] == "ipc-b"
    assert body["ipc"] == "ipc-b" and "epoch 2" in body["summary"] and body["severity"] == "critical"


def test_primary_agent_killed_the_standby_sends_the_takeover(h: Harness, receiver: Receiver) -> None:
    """The primary's agent (the sender) dies: the standby's agent takes the
    role and sends the notification itself, once."""
    ops.rejoin(h.store, "ipc-a", "test", "repaired")
    wait_for(lambda: ops.rejoined(h.store, "ipc-a"), 30, what="ipc-a back as standby")
    h.agents["ipc-b"].kill9()
    wait_for(lambda: h.record().get("primary") == "ipc-a" and h.serving("ipc-a"), 40, what="ipc-a took over")
    body = one_role_change(h, receiver, "takeover")
    assert body["detail"]["from"] == "ipc-b" and body["detail"]["to"] == "ipc-a" and body["ipc"] == "ipc-a"
    assert len(receiver.ids("role-change")) == 2
