"""The notifications' pure parts: which events a change of the cluster makes
(with stable ids), which agent sends, which outbox entries are orphans, and
the inventory's `notify` section (errors with file:line and field, secrets by
reference only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover import inventory as inv_mod
from failover.notify.events import Seen, Snapshot, compute
from failover.notify.sender import orphans, sender_of
from tests.test_inventory import GOOD, _write

FAILOVER = {
    "id": "h-0000000003",
    "kind": "failover",
    "from": "ipc-a",
    "to": "ipc-b",
    "epoch": 2,
    "why": "CTI stopped on primary ipc-a",
    "outcome": "done",
    "when": 100.0,
}
STEADY = {"ipc-a": {"alerts": [], "faults": [], "way_out": ""}, "ipc-b": {"alerts": [], "faults": []}}


def snap(history: list[dict] | None = None, members: dict | None = None, now: float = 200.0) -> Snapshot:
    return Snapshot("lab", history or [], STEADY if members is None else members, now)


def test_a_failover_in_the_history_is_one_role_change() -> None:
    events, seen = compute(Seen("h-0000000002"), snap([FAILOVER, {"id": "h-0000000001", "kind": "failover"}]), 7)
    assert [(e.id, e.type, e.severity, e.ipc) for e in events] == [
        ("lab/h-0000000003", "role-change", "critical", "ipc-b")
    ]
    assert "ipc-a -> ipc-b (epoch 2)" in events[0].summary and events[0].at == 100.0
    assert seen.history == "h-0000000003"
    assert compute(seen, snap([FAILOVER]), 8)[0] == []  # claimed once: never again


def test_failed_promotion_is_also_a_failed_step_and_planned_moves_are_warnings() -> None:
    failed = {**FAILOVER, "outcome": "failed", "failed": "start ivr on ipc-b: timeout"}
    sw = {**FAILOVER, "id": "h-0000000004", "kind": "switchover"}
    pause = {"id": "h-0000000005", "kind": "pause", "outcome": "done"}
    events, _ = compute(Seen(), snap([failed, sw, pause]), 1)
    assert [(e.id, e.type, e.severity) for e in events] == [
        ("lab/h-0000000003", "role-change", "critical"),
        ("lab/h-0000000003/failed", "failed-step", "critical"),
        ("lab/h-0000000004", "role-change", "warning"),
    ]
    assert "start ivr on ipc-b: timeout" in events[1].summary


def test_hold_raised_once_then_recovered() -> None:
    way_out = "No automatic action: ipc-a cannot be reached. Run `failover failover --to ipc-b --confirm-dead ipc-a`."
    held = {**STEADY, "ipc-b": {"alerts": [way_out], "faults": [], "way_out": way_out}}
    events, seen = compute(Seen(), snap(members=held), 5)
    [hold] = events
    assert hold.type == "hold" and hold.severity == "critical" and hold.ipc == "ipc-b"
    assert hold.summary.startswith("ipc-b: ACTION NEEDED: No automatic action") and hold.id.endswith("/5")
    assert compute(seen, snap(members=held), 6) == ([], seen)  # still held: nothing new
    events, seen = compute(seen, snap(members=STEADY), 7)
    [rec] = events
    assert rec.type == "recovery" and rec.id == f"{hold.id}/recovered" and rec.detail["recovers"] == hold.id
    assert seen.active == {}


def test_failsafe_path_faults_and_alerts() -> None:
    broken = {
        "ipc-a": {
            "alerts": ["failsafe path broken: timed out; during a ZooKeeper outage ...", "board down on ipc-a"],
            "faults": ["line alarm on ipc-a"],
            "failsafe_path": {"ok": False, "why": "timed out"},
        },
        "ipc-b": STEADY["ipc-b"],
    }
    events, seen = compute(Seen(), snap(members=broken, now=200.0), 1)
    assert sorted(e.type for e in events) == ["alert", "fault"]
    assert compute(seen, snap(members=broken, now=229.0), 2) == ([], seen)  # one test of the path failed
    # why the path fails may change while it stays broken: the same condition
    broken["ipc-a"] = {**broken["ipc-a"], "failsafe_path": {"ok": False, "why": "connection refused"}}
    events, seen = compute(seen, snap(members=broken, now=230.0), 3)
    [path] = events
    assert path.type == "failsafe-path" and "connection refused" in path.summary and path.id.endswith("/3")
    assert seen.active["failsafe-path/ipc-a"]["since"] == 200.0


def test_a_condition_gone_before_it_settled_is_never_notified() -> None:
    held = {**STEADY, "ipc-a": {"way_out": "No automatic action: x", "alerts": [], "faults": []}}
    events, seen = compute(Seen(), snap(members=held, now=10.0), 1, settle=5.0)
    assert events == [] and len(seen.pending) == 1
    events, seen = compute(seen, snap(members=STEADY, now=12.0), 2, settle=5.0)
    assert events == [] and seen == Seen()
    _, seen = compute(seen, snap(members=held, now=20.0), 3, settle=5.0)
    [hold] = compute(seen, snap(members=held, now=25.0), 4, settle=5.0)[0]
    assert hold.type == "hold" and hold.id.endswith("/4")


def test_an_agent_gone_clears_nothing() -> None:
    held = {**STEADY, "ipc-a": {"way_out": "No automatic action: x", "alerts": [], "faults": []}}
    _, seen = compute(Seen(), snap(members=held), 1)
    assert compute(seen, snap(members={"ipc-a": None, "ipc-b": STEADY["ipc-b"]}), 2) == ([], seen)


def test_two_agents_from_the_same_cursor_compute_the_same_ids() -> None:
    held = {**STEADY, "ipc-a": {"way_out": "No automatic action: x", "alerts": [], "faults": []}}
    a, _ = compute(Seen("h-0000000001"), snap([FAILOVER], held, now=1.0), 4)
    b, _ = compute(Seen("h-0000000001"), snap([FAILOVER], held, now=2.0), 4)
    assert [e.id for e in a] == [e.id for e in b] and len(a) == 2


# ----- which agent sends ------------------------------------------------------------
def m(ipc: str, session: int, pid: int = 1) -> tuple[dict, int]:
    return {"ipc": ipc, "agent": {"host": "h", "pid": pid}}, session


ROLES = {"ipc-a": "primary", "ipc-b": "standby"}


def test_the_leader_sends_while_its_agent_runs() -> None:
    assert sender_of(({"ipc": "ipc-a"}, 11), {"ipc-a": m("ipc-a", 11), "ipc-b": m("ipc-b", 22)}, ROLES) == "ipc-a"


@pytest.mark.parametrize(
    ("leader", "members", "roles", "who"),
    [
        (None, {"ipc-a": m("ipc-a", 11), "ipc-b": m("ipc-b", 22)}, ROLES, "ipc-b"),  # nobody holds the role
        (({"ipc": "ipc-a"}, 11), {"ipc-a": None, "ipc-b": m("ipc-b", 22)}, ROLES, "ipc-b"),  # its agent is gone
        (({"ipc": "ipc-a"}, 11), {"ipc-a": m("ipc-a", 99), "ipc-b": m("ipc-b", 22)}, ROLES, "ipc-b"),  # stale
        (None, {"ipc-a": m("ipc-a", 11), "ipc-b": None}, {"ipc-a": "fenced", "ipc-b": "fenced"}, "ipc-a"),
        (None, {"ipc-a": None, "ipc-b": None}, ROLES, None),
    ],
)
def test_otherwise_the_standby_sends(leader: object, members: dict, roles: dict, who: str | None) -> None:
    assert sender_of(leader, members, roles) == who  # type: ignore[arg-type]


def test_orphans_are_entries_whose_owner_process_is_gone() -> None:
    def entry(i: str, ipc: str, pid: int) -> dict:
        return {"event": {"id": i}, "owner": {"ipc": ipc, "host": "h", "pid": pid}}

    box = [entry("e1", "ipc-a", 1), entry("e2", "ipc-a", 2), entry("e3", "ipc-b", 3)]
    assert orphans(box, {"ipc-a": m("ipc-a", 11, pid=1), "ipc-b": None}) == ["e2", "e3"]


# ----- the inventory -------------------------------------------------------------------
HOOK = """
    notify:
      webhooks:
        - name: oncall
          url: {url}
          {extra}
"""


def inventory(tmp_path: Path, url: str = "https://hooks.example.com/failover", extra: str = "") -> Path:
    return _write(tmp_path, GOOD + HOOK.format(url=url, extra=extra or "timeout: 5"))


def test_webhook_receivers_load_with_a_token_by_reference(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("x")
    c = inv_mod.load(inventory(tmp_path, extra="token_file: tok")).cluster()
    assert c.notify is not None and c.notify.webhooks[0].name == "oncall"
    assert c.notify.webhooks[0].token_file == str(tmp_path / "tok")  # relative to the inventory
    assert c.notify.webhooks[0].attempts == 20 and c.notify.poll_interval == 1.0


@pytest.mark.parametrize(
    ("url", "extra", "field", "text"),
    [
        ("https://bob:hunter2@hooks.example.com/x", "", "url", "user:password in the URL"),
        ("ftp://hooks.example.com/x", "", "url", "expected http://host[:port]/path"),
        ("https://hooks.example.com/x", "token_env: lower", "token_env", "should match pattern"),
        ("https://hooks.example.com/x", "token_file: missing", "token_file", "file not found"),
        ("https://hooks.example.com/x", "tokn_env: X", "tokn_env", "did you mean 'token_env'"),
        ("https://hooks.example.com/x", "attempts: 0", "attempts", "greater than or equal to 1"),
        ("http://hooks.example.com/x", "token_env: HOOK_TOKEN", "url", "token over plain http://"),
    ],
)
def test_bad_webhooks_say_file_line_and_field(tmp_path: Path, url: str, extra: str, field: str, text: str) -> None:
    p = inventory(tmp_path, url, extra)
    inv, problems = inv_mod.check(p)
    assert inv is None
    hit = [str(x) for x in problems if text in str(x)]
    assert hit, [str(x) for x in problems]
    line = 32 if field == "url" else 33  # the url line; the line of `extra`
    assert hit[0].startswith(f"{p}:{line}:") and f"clusters[0].notify.webhooks[0].{field}" in hit[0], hit
    assert "hunter2" not in "\n".join(str(x) for x in problems)  # the refused secret is never echoed


def test_this_process_own_entries_are_never_orphans() -> None:
    """Restarted within its session timeout, an agent's member record still
    names its old process until its first publish: its fresh claims (owned by
    this very process) must not be adopted as orphans and queued twice."""
    box = [{"event": {"id": "e1"}, "owner": {"ipc": "ipc-a", "host": "h", "pid": 2}}]
    stale = {"ipc-a": m("ipc-a", 11, pid=1), "ipc-b": None}
    assert orphans(box, stale) == ["e1"]
    assert orphans(box, stale, {"ipc": "ipc-a", "host": "h", "pid": 2}) == []
    assert orphans(box, stale, {"ipc": "ipc-a", "host": "h", "pid": 3}) == ["e1"]


def unreachable(n: int) -> dict:
    """ipc-b's record while ipc-a stays unreachable: every poll the count, the
    seconds and the quoted fencing attempt change; the conditions do not."""
    hold = f"No automatic action: ipc-a unreachable for {n} checks ({n * 1.5:.1f} s); fencing attempt {n} failed."
    return {
        **STEADY,
        "ipc-b": {
            "way_out": hold,
            "faults": [f"host unreachable for {n} checks"],
            "alerts": [hold, f"no failover possible: ipc-a silent for {n * 2} s"],
        },
    }


def test_conditions_whose_numbers_change_every_poll_are_raised_once() -> None:
    seen, raised = Seen(), []
    for k in range(10):  # one poll a second, settle 5 s
        events, seen = compute(seen, snap(members=unreachable(k + 3), now=100.0 + k), 10 + k, settle=5.0)
        raised += events
    assert sorted(e.type for e in raised) == ["alert", "fault", "hold"]  # no recovery: nothing cleared
    hold = next(e for e in raised if e.type == "hold")
    assert hold.id == "lab/hold/ipc-b/15" and "unreachable for 8 checks" in hold.summary  # the latest text
    assert all(e.at == 105.0 for e in raised)


def test_a_recovery_waits_for_the_settle_time_too() -> None:
    seen = Seen()
    for k in range(6):
        _, seen = compute(seen, snap(members=unreachable(k), now=100.0 + k), k, settle=5.0)
    assert len(seen.active) == 3
    events, seen = compute(seen, snap(members=STEADY, now=106.0), 6, settle=5.0)
    assert events == [] and len(seen.active) == 3  # gone for one poll: not over yet
    events, seen = compute(seen, snap(members=unreachable(9), now=108.0), 7, settle=5.0)
    assert events == [] and seen.clearing == {}  # back: it was never over
    _, seen = compute(seen, snap(members=STEADY, now=109.0), 8, settle=5.0)
    events, seen = compute(seen, snap(members=STEADY, now=114.0), 9, settle=5.0)
    assert sorted(e.type for e in events) == ["recovery"] * 3 and seen == Seen()


def test_names_with_numbers_stay_apart() -> None:
    two = {**STEADY, "ipc-b": {"faults": [], "alerts": ["peer ipc-1 silent", "peer ipc-2 silent"]}}
    events, _ = compute(Seen(), snap(members=two), 1)
    assert len(events) == 2


def test_a_token_over_plain_http_is_allowed_to_this_host_only(tmp_path: Path) -> None:
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "https://hooks.example.com/x"):
        assert inv_mod.check(inventory(tmp_path, url, "token_env: HOOK_TOKEN"))[0] is not None, url
    assert inv_mod.check(inventory(tmp_path, "http://hooks.example.com/x"))[0] is not None  # no token: allowed
