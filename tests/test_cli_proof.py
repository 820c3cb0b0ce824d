"""Fencing you can prove, the CLI side: `failover failover --confirm-dead`, the
cancel of a running request, the agents' `way_out` in status and check, the
takeover's proof in the history. The real CLI (a process) against a real
ZooKeeper (a 1-node lab); the agents' records are written straight into
ZooKeeper to set each state up, no agent runs."""

from __future__ import annotations

import ast
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from failover import check, ops, zkstore
from failover import inventory as inv_mod
from failover import status as st
from failover.exits import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from failover.lab.lab import Lab
from failover.records import ClusterRecord, HistoryEntry, LeaderRecord, MemberRecord, Request
from tests.cluster import FAILOVER, wait_for

pytestmark = pytest.mark.timeout(120)

WAY_OUT = (
    "No automatic action: ipc-a is unreachable and has no fence device, so nothing proves its CTI/IVR are "
    "stopped. Check that ipc-a is powered off, then run "
    "`failover failover --to ipc-b --confirm-dead ipc-a --reason '...'`."
)
CONFIRMED = ("failover", "--to", "ipc-b", "--confirm-dead", "ipc-a", "--reason", "PDU off", "--yes")
SERVING = {"driver": "RUNNING", "kcxp": "RUNNING", "kcbp": "RUNNING", "cti": "RUNNING", "ivr": "RUNNING"}
STANDBY = {"driver": "RUNNING", "kcxp": "RUNNING", "kcbp": "RUNNING", "cti": "STOPPED", "ivr": "STOPPED"}


@pytest.fixture(scope="module")
def zk_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A 1-node ZooKeeper (and the lab's IPCs, unused: no agent runs)."""
    from tests.conftest import _need_lab_tools

    _need_lab_tools()
    lab = Lab(root=tmp_path_factory.mktemp("proof") / "lab", zk_count=1)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


class Records:
    """Writes the records the agents would publish, from a ZooKeeper session
    of its own (which also holds the leader znode, as the primary's agent would)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.c = inv_mod.load(str(lab.inventory_path)).cluster(None)
        self.zk = zkstore.connect(self.c, timeout=10.0)
        self.zk.start(timeout=10)
        if self.zk.exists(self.c.zookeeper.path):  # nothing from the previous test
            self.zk.delete(self.c.zookeeper.path, recursive=True)
        self.store = zkstore.Store(self.zk, self.c.zookeeper.path)
        self.store.ensure_layout()

    def close(self) -> None:
        self.zk.stop()
        self.zk.close()

    def cluster(self, primary: str = "ipc-a", epoch: int = 1) -> None:
        roles = {"ipc-a": "standby", "ipc-b": "standby", primary: "primary"}
        self.store.create_cluster(
            ClusterRecord.from_json({"epoch": epoch, "primary": primary, "roles": roles, "board_down": []})
        )

    def leader(self, ipc: str, epoch: int = 1) -> None:
        assert self.store.take_leader(LeaderRecord(ipc=ipc, epoch=epoch, since=time.time()))

    def member(
        self, ipc: str, role: str, services: dict[str, str], reachable: bool = True, way_out: str = "", **extra: object
    ) -> None:
        rec = {
            "ipc": ipc,
            "cluster": self.c.name,
            "role": role,
            "leader": False,
            "epoch": 1,
            "eligible": role == "standby" and reachable,
            "obs": {
                "role": role,
                "reachable": reachable,
                "line": "up",
                "board_down": False,
                "services": {s: {"state": v, "healthy": v == "RUNNING" or None} for s, v in services.items()},
            },
            "sentence": f"{ipc} says hello",
            "decision": "none",
            "alerts": [],
            "updated": time.time(),
            "way_out": way_out,
            **extra,
        }
        self.store.publish_member(ipc, MemberRecord.from_json(rec))

    def dead_primary_held(self) -> None:
        """ipc-a dead (its agent, on a host of its own, reports it unreachable)
        but its agent holds the role; ipc-b an eligible standby."""
        self.cluster("ipc-a")
        self.leader("ipc-a")
        self.member("ipc-a", "primary", {s: "UNKNOWN" for s in SERVING}, reachable=False, way_out=WAY_OUT)
        self.member("ipc-b", "standby", STANDBY, way_out=WAY_OUT)

    def request(self) -> dict | None:
        r = self.store.request()
        return None if r is None else r.data.to_json()


@pytest.fixture
def rec(zk_lab: Lab) -> Iterator[Records]:
    r = Records(zk_lab)
    try:
        yield r
    finally:
        r.close()


def cli(lab: Lab, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FAILOVER, *args, "-i", str(lab.inventory_path)], capture_output=True, text=True, input=input, timeout=timeout
    )


def cli_bg(lab: Lab, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [FAILOVER, *args, "-i", str(lab.inventory_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


# ----- failover --confirm-dead ----------------------------------------------------------
@pytest.mark.parametrize("named", ["ipc-b", "ipc-z"])
def test_confirm_dead_must_name_the_other_ipc(rec: Records, named: str) -> None:
    rec.dead_primary_held()
    r = cli(rec.lab, "failover", "--to", "ipc-b", "--confirm-dead", named, "--reason", "PDU off", "--yes")
    assert r.returncode == EXIT_USAGE, r.stdout + r.stderr
    assert "must name the other IPC" in r.stderr and "--confirm-dead ipc-a" in r.stderr and "Traceback" not in r.stderr
    assert rec.request() is None


@pytest.mark.parametrize("reason", [None, "   "])
def test_confirm_dead_needs_a_reason(rec: Records, reason: str | None) -> None:
    rec.dead_primary_held()
    extra = [] if reason is None else ["--reason", reason]
    r = cli(rec.lab, "failover", "--to", "ipc-b", "--confirm-dead", "ipc-a", "--yes", *extra)
    assert r.returncode == EXIT_USAGE, r.stdout + r.stderr
    assert "--confirm-dead needs --reason" in r.stderr
    assert rec.request() is None


def test_without_confirm_dead_a_held_role_is_refused_with_the_way_out(rec: Records) -> None:
    rec.dead_primary_held()
    r = cli(rec.lab, "failover", "--to", "ipc-b", "--yes")
    assert r.returncode == EXIT_REFUSED, r.stdout + r.stderr
    assert "use `failover switchover`" in r.stderr  # a live primary
    assert "its agent reports ipc-a UNREACHABLE" in r.stderr and "powered off" in r.stderr
    assert "failover failover --to ipc-b --confirm-dead ipc-a --reason" in r.stderr
    assert rec.request() is None


def test_confirm_dead_refused_when_the_target_already_holds_the_role(rec: Records) -> None:
    rec.cluster("ipc-b")
    rec.leader("ipc-b")
    rec.member("ipc-a", "standby", STANDBY, reachable=False)
    rec.member("ipc-b", "primary", SERVING)
    r = cli(rec.lab, "failover", "--to", "ipc-b", "--confirm-dead", "ipc-a", "--reason", "PDU off", "--yes")
    assert r.returncode == EXIT_REFUSED and "ipc-b already holds the primary role" in r.stderr, r.stderr
    assert rec.request() is None


def test_confirm_dead_refused_when_the_targets_agent_is_gone(rec: Records) -> None:
    rec.cluster("ipc-a")
    rec.leader("ipc-a")
    rec.member("ipc-a", "primary", SERVING, reachable=False)
    r = cli(rec.lab, "failover", "--to", "ipc-b", "--confirm-dead", "ipc-a", "--reason", "PDU off", "--yes")
    assert r.returncode == EXIT_REFUSED and "ipc-b's agent is absent" in r.stderr, r.stderr
    assert rec.request() is None


def test_confirm_dead_prompt_says_what_is_asserted_and_defaults_to_no(rec: Records) -> None:
    rec.dead_primary_held()
    r = cli(rec.lab, "failover", "--to", "ipc-b", "--confirm-dead", "ipc-a", "--reason", "PDU off", input="\n")
    assert r.returncode == EXIT_REFUSED, r.stdout + r.stderr
    assert "You assert that ipc-a is POWERED OFF, checked by a person" in r.stdout
    assert "console" in r.stdout and "PDU" in r.stdout
    assert "if ipc-a is in fact running, TWO IPCs MAY ANSWER CALLS" in r.stdout
    assert "ipc-a's agent holds the role: it hands the role to ipc-b" in r.stdout
    assert "Do you confirm that ipc-a is powered off, and make ipc-b primary? [y/N]" in r.stdout
    assert "not confirmed: nothing was done" in r.stderr
    assert rec.request() is None


def test_confirm_dead_allowed_while_the_old_primary_holds_the_role(rec: Records) -> None:
    """The request carries confirm_dead; the CLI follows it to the end (the
    test plays the agents' part: running, a progress line, done)."""
    rec.dead_primary_held()
    p = cli_bg(
        rec.lab,
        "failover",
        "--to",
        "ipc-b",
        "--confirm-dead",
        "ipc-a",
        "--reason",
        "checked at the PDU: outlet 7 off",
        "--operator",
        "alice",
        "--yes",
        "--timeout",
        "30",
    )
    try:
        req = wait_for(lambda: rec.store.request(), 20, what="the request")
        d = req.data.to_json()
        assert d["kind"] == "failover" and d["to"] == "ipc-b" and d["from"] == "ipc-a"
        assert d["confirm_dead"] == "ipc-a" and d["operator"] == "alice" and d["force"] is False
        assert d["reason"] == "checked at the PDU: outlet 7 off" and d["state"] == "pending"
        v = rec.store.update_request(
            req.version,
            Request.from_json({**d, "state": "running", "progress": ["ipc-a: role handed to ipc-b (operator's word)"]}),
        )
        d2 = {
            **d,
            "state": "done",
            "progress": [*rec.request()["progress"], "done: ipc-b is primary, epoch 2, in 0.4 s"],
            "result": {"state": "done", "why": "ipc-b is primary, epoch 2, in 0.4 s", "primary": "ipc-b", "epoch": 2},
        }
        rec.store.update_request(v, Request.from_json(d2))
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == EXIT_OK, out + err
    assert "ipc-a (confirmed powered off by alice) -> ipc-b" in out
    assert "You assert that ipc-a is POWERED OFF" in out  # said even with --yes
    assert "role handed to ipc-b (operator's word)" in out and "failover done: ipc-b is primary, epoch 2" in out


def test_confirm_dead_nobody_picks_it_up_is_withdrawn(rec: Records) -> None:
    rec.dead_primary_held()
    r = cli(rec.lab, *CONFIRMED, "--timeout", "1")
    assert r.returncode == EXIT_FAILED, r.stdout + r.stderr
    assert "failover FAILED: no agent picked the request up within 1 s; it was withdrawn" in r.stderr
    assert rec.request() is None


def test_confirm_dead_with_no_leader_is_carried_out_by_the_target(rec: Records) -> None:
    rec.cluster("ipc-a")
    rec.member("ipc-b", "standby", STANDBY)
    r = cli(rec.lab, *CONFIRMED, "--timeout", "1")
    assert r.returncode == EXIT_FAILED, r.stdout + r.stderr  # no agent runs here
    assert "No agent holds the role: ipc-b's agent takes it and promotes." in r.stdout


# ----- switchover --cancel ---------------------------------------------------------------
def test_cancel_a_running_request(rec: Records) -> None:
    rec.cluster("ipc-a")
    rec.leader("ipc-a")
    req = ops.new_request("switchover", "ipc-b", "carol", "monthly test", frm="ipc-a")
    req = replace(req, state="running", progress=("ipc-a: switchover to ipc-b started (epoch 1)",))
    assert rec.store.create_request(req) is None
    r = cli(rec.lab, "switchover", "--cancel", "--operator", "bob", "--reason", "ipc-b cannot start CTI")
    assert r.returncode == EXIT_OK, r.stdout + r.stderr
    assert "the switchover to ipc-b requested by carol, which was running" in r.stdout
    assert "the agents keep the role where it is now or hand it back" in r.stdout
    d = rec.request()
    assert d is not None and d["id"] == req.id and d["state"] == "cancelled"
    assert d["result"] == {"state": "cancelled", "why": "cancelled by bob: ipc-b cannot start CTI"}
    h = rec.store.history(5)[-1]
    assert h.kind == "switchover-cancelled" and h.who == "bob" and h.outcome == "cancelled"
    assert "cancelled the running switchover to ipc-b requested by carol" in h.why
    assert "switchover to ipc-b" not in cli(rec.lab, "status").stdout  # no longer shown as pending
    again = cli(rec.lab, "switchover", "--cancel")
    assert again.returncode == EXIT_REFUSED
    assert "no pending, scheduled or running switchover or failover to cancel" in again.stderr
    assert "is cancelled" in again.stderr


def test_nothing_to_cancel(rec: Records) -> None:
    rec.cluster("ipc-a")
    r = cli(rec.lab, "switchover", "--cancel")
    assert r.returncode == EXIT_REFUSED and "refused: no pending, scheduled or running" in r.stderr, r.stderr


def test_a_following_cli_says_cancelled(rec: Records) -> None:
    rec.dead_primary_held()
    p = cli_bg(rec.lab, *CONFIRMED, "--timeout", "30")
    try:
        req = wait_for(lambda: rec.store.request(), 20, what="the request")
        rec.store.update_request(req.version, replace(req.data, state="running"))
        r = cli(rec.lab, "switchover", "--cancel", "--operator", "dan")
        assert r.returncode == EXIT_OK and "the failover to ipc-b" in r.stdout, r.stdout + r.stderr
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == EXIT_FAILED, out + err
    assert "failover CANCELLED: cancelled by dan; the agents keep the role where it is now or hand it back" in err


def test_cancel_retries_a_lost_conditional_write() -> None:
    """An agent writing a progress line between our read and our write: the
    write loses, we read again and cancel the fresh record."""

    class FakeStore:
        def __init__(self) -> None:
            self.data = {"id": "r1", "kind": "switchover", "to": "ipc-b", "operator": "x", "state": "running"}
            self.version, self.writes, self.history = 0, [], []

        def request(self) -> zkstore.Versioned[Request]:
            return zkstore.Versioned(Request.from_json(self.data), self.version)

        def update_request(self, version: int, req: Request) -> int:
            if not self.writes:  # the agent's progress line lands first
                self.writes.append("agent")
                self.data = {**self.data, "progress": ["agent line"]}
                self.version += 1
            if version != self.version:
                raise zkstore.Conflict("changed")
            self.writes.append("cli")
            self.data, self.version = req.to_json(), self.version + 1
            return self.version

        def add_history(self, entry: HistoryEntry) -> None:
            self.history.append(entry.to_json())

    s = FakeStore()
    ops.cancel(s, "bob")  # type: ignore[arg-type]
    assert s.writes == ["agent", "cli"]
    assert s.data["state"] == "cancelled" and s.data["result"] == {"state": "cancelled", "why": "cancelled by bob"}
    assert s.data["progress"] == ["agent line", "cancelled by bob"]  # the agent's line kept


# ----- way_out: status and check ---------------------------------------------------------
def test_status_and_check_show_the_way_out(rec: Records) -> None:
    rec.dead_primary_held()
    r = cli(rec.lab, "status")
    assert r.returncode == EXIT_OK, r.stderr
    for ipc in ("ipc-a", "ipc-b"):
        assert f"{ipc}: ACTION NEEDED: {WAY_OUT}" in r.stdout
    first = r.stdout.splitlines()
    assert first[1].startswith("ipc-a: ACTION NEEDED")  # right under the cluster line
    v = json.loads(cli(rec.lab, "status", "--json", "-c", "lab").stdout)
    assert v["ipcs"]["ipc-a"]["way_out"] == WAY_OUT and v["ipcs"]["ipc-b"]["way_out"] == WAY_OUT
    c = cli(rec.lab, "check")
    assert c.returncode == check.CRITICAL, c.stdout
    assert c.stdout.startswith("FAILOVER CRITICAL - cluster lab:")
    assert f"ACTION NEEDED (reported by ipc-a and ipc-b): {WAY_OUT}" in c.stdout
    assert c.stdout.count("|") == 1  # the perfdata separator only


def test_status_watch_shows_the_way_out(rec: Records) -> None:
    rec.dead_primary_held()
    p = cli_bg(rec.lab, "status", "--watch")
    try:
        time.sleep(3)
    finally:
        p.terminate()
        out, _ = p.communicate(timeout=10)
    assert f"ipc-b: ACTION NEEDED: {WAY_OUT}" in out


def test_no_way_out_no_action_line(rec: Records) -> None:
    rec.cluster("ipc-a")
    rec.leader("ipc-a")
    rec.member("ipc-a", "primary", SERVING)
    rec.member("ipc-b", "standby", STANDBY)
    r = cli(rec.lab, "status")
    assert "ACTION NEEDED" not in r.stdout
    c = cli(rec.lab, "check")
    assert c.returncode == check.OK and "ACTION NEEDED" not in c.stdout, c.stdout


def test_check_from_the_agents_endpoint_reads_the_way_out(rec: Records) -> None:
    """`check --url` reads the view an agent publishes at /cluster: status.view
    over the member records, the way_out included."""
    import http.server

    members = {
        "ipc-a": None,
        "ipc-b": {"eligible": True, "updated": time.time(), "obs": {"reachable": True}, "way_out": "stuck | run x"},
    }
    rec_ = {"epoch": 3, "primary": "ipc-a", "roles": {"ipc-a": "primary", "ipc-b": "standby"}}
    typed = {n: None if m is None else MemberRecord.from_json(m) for n, m in members.items()}
    view = st.view(rec.c, ClusterRecord.from_json(rec_), (LeaderRecord(ipc="ipc-a"), 1), typed, None, None, [])
    assert view["ipcs"]["ipc-b"]["way_out"] == "stuck | run x" and view["ipcs"]["ipc-a"]["way_out"] == ""
    body = json.dumps({**view, "zookeeper": {"connected": True}}).encode()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        r = subprocess.run(
            [FAILOVER, "check", "--url", f"http://127.0.0.1:{srv.server_address[1]}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.returncode == check.CRITICAL, r.stdout + r.stderr
    assert "ACTION NEEDED (reported by ipc-b): stuck / run x" in r.stdout and r.stdout.count("|") == 1


# ----- history: the proof of each takeover ---------------------------------------------
def test_history_and_status_show_the_proof(rec: Records) -> None:
    rec.cluster("ipc-b", epoch=2)
    detail = "ipc-a confirmed powered off by alice: checked at the PDU"
    rec.store.add_history(
        HistoryEntry.from_json(
            {
                "kind": "manual-failover",
                "from": "ipc-a",
                "to": "ipc-b",
                "epoch": 2,
                "why": "manual failover by alice: checked at the PDU",
                "who": "alice",
                "fencing": detail,
                "proof": {"kind": "operator", "detail": detail},
                "outcome": "done",
                "duration_s": 1.2,
            }
        )
    )
    rec.store.add_history(HistoryEntry.of("pause", "bob", "night"))
    out = cli(rec.lab, "history").stdout
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if "manual-failover" in line)
    assert lines[i + 1].strip() == f"proof operator: {detail}"
    assert sum("proof" in line for line in lines) == 1  # only the takeover has one
    hj = json.loads(cli(rec.lab, "history", "--json").stdout)
    assert hj[0]["proof"] == {"kind": "operator", "detail": detail}
    assert f"[proof: operator: {detail}]" in cli(rec.lab, "status").stdout  # the last change


# ----- module boundaries ----------------------------------------------------------------
def test_only_the_cli_imports_the_cli() -> None:
    pkg = Path(__file__).resolve().parents[1] / "failover"
    offenders = []
    for f in pkg.rglob("*.py"):
        if f.name in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "failover.cli":
                offenders.append(str(f))
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "failover"
                and any(a.name == "cli" for a in node.names)
            ):
                offenders.append(str(f))
            if isinstance(node, ast.Import) and any(a.name == "failover.cli" for a in node.names):
                offenders.append(str(f))
    assert offenders == []
    from failover import cli, exits, oncall

    assert cli.Fail is exits.Fail is oncall.Fail and cli.EXIT_USAGE == exits.EXIT_USAGE == 2
