"""A drained switchover's pure parts: reading the inventory's `calls.active`
output, the drain decision every cycle (proceed / wait / the deadline by the
operator's choice), the CLI's durations, and the inventory's `calls` key."""

from __future__ import annotations

from pathlib import Path

import pytest

from failover import inventory as inv_mod
from failover.calls import ActiveCalls, Unreadable, from_record, parse_active
from failover.drain import DrainSpec, Step, drain_move, parse_duration
from tests.test_inventory import GOOD, _write


@pytest.mark.parametrize(
    ("out", "want"),
    [
        ("ivr=12 agent=5\n", ActiveCalls(17, 12, 5)),
        ("IVR = 0  Agent=3", ActiveCalls(3, 0, 3)),
        ("17\n", ActiveCalls(17)),
        ("CTI monitor v2.1\r\n\r\n4\r\n", ActiveCalls(4)),  # a banner first, CRLF (cmd.exe)
        ("0", ActiveCalls(0)),
    ],
)
def test_parse_active(out: str, want: ActiveCalls) -> None:
    assert parse_active(out) == want


@pytest.mark.parametrize("out", ["", "twelve", "ivr=1", "-3", "ivr=1 agent=x"])
def test_parse_active_refuses_what_is_not_the_contract(out: str) -> None:
    with pytest.raises(Unreadable, match="expected `N` or `ivr=N agent=M`"):
        parse_active(out)


def test_active_calls_round_trip_through_the_member_record() -> None:
    a = ActiveCalls(5, 2, 3)
    assert from_record(a.record()) == a
    assert from_record(None) is None and from_record({"active": None}) is None
    assert a.text() == "5 active (ivr 2, agent 3)" and ActiveCalls(4).text() == "4 active"


SPEC = DrainSpec(below=0, max_wait=60, on_deadline="ask")


@pytest.mark.parametrize(
    ("spec", "active", "now", "answer", "step"),
    [
        (SPEC, ActiveCalls(0, 0, 0), 10, "", Step.PROCEED),  # drained
        (DrainSpec(below=2), ActiveCalls(2), 10, "", Step.PROCEED),  # at most `below`
        (SPEC, ActiveCalls(3, 1, 2), 10, "", Step.WAIT),
        (SPEC, None, 10, "", Step.WAIT),  # unknown never counts as drained
        (SPEC, ActiveCalls(3), 60, "", Step.ASK),  # the deadline, ask
        (DrainSpec(max_wait=60, on_deadline="proceed"), ActiveCalls(3), 61, "", Step.PROCEED),
        (DrainSpec(max_wait=60, on_deadline="cancel"), ActiveCalls(3), 61, "", Step.CANCEL),
        (SPEC, ActiveCalls(3), 61, "proceed", Step.PROCEED),  # the operator's answer
        (SPEC, ActiveCalls(3), 61, "cancel", Step.CANCEL),
        (SPEC, ActiveCalls(3), 5, "cancel", Step.CANCEL),  # an answer wins even before the deadline
    ],
)
def test_drain_move(spec: DrainSpec, active: ActiveCalls | None, now: float, answer: str, step: Step) -> None:
    assert drain_move(spec, active, started=0.0, now=now, answer=answer).step is step


def test_drain_move_says_what_it_waits_for_and_what_it_would_cut() -> None:
    assert "3 active (ivr 1, agent 2)" in drain_move(SPEC, ActiveCalls(3, 1, 2), 0.0, 10).why
    assert "deadline" in drain_move(SPEC, ActiveCalls(3, 1, 2), 0.0, 10).why
    late = drain_move(DrainSpec(max_wait=60, on_deadline="proceed"), ActiveCalls(3), 0.0, 61).why
    assert "deadline" in late and "3 active" in late and "cut" in late


def test_drain_spec_round_trip_and_checks() -> None:
    spec = DrainSpec(below=1, max_wait=120, on_deadline="proceed")
    assert DrainSpec.of(spec.record()) == spec
    assert DrainSpec.of({}) is None and DrainSpec.of(None) is None
    assert spec.check() == ""
    assert "--below" in DrainSpec(below=-1).check()
    assert "--max-wait" in DrainSpec(max_wait=0).check()
    assert "one of ask, proceed, cancel" in DrainSpec(on_deadline="later").check()


@pytest.mark.parametrize(("text", "s"), [("15m", 900), ("90s", 90), ("1h", 3600), ("600", 600), ("2.5m", 150)])
def test_parse_duration(text: str, s: float) -> None:
    assert parse_duration(text) == s


@pytest.mark.parametrize("text", ["", "m", "15 minutes", "-5s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"use e\.g\. 15m"):
        parse_duration(text)


CALLS = "    calls: {active: cti-calls --count, busy_out: cti-calls --busy, release: cti-calls --open, timeout: 5}\n"


def test_inventory_calls_key(tmp_path: Path) -> None:
    inv = inv_mod.load(_write(tmp_path, GOOD + CALLS))
    c = inv.cluster()
    assert c.calls is not None and c.calls.busy_out == "cti-calls --busy" and c.calls.timeout == 5
    assert "active calls: `cti-calls --count`" in inv_mod.summary(inv, "inv.yaml")


def test_inventory_calls_errors_name_file_line_and_field(tmp_path: Path) -> None:
    bad = CALLS.replace("release: cti-calls --open, ", "").replace("timeout: 5", "timeout: -1")
    p = _write(tmp_path, GOOD + bad)
    inv, problems = inv_mod.check(p)
    assert inv is None
    msgs = [str(x) for x in problems]
    line = GOOD.lstrip("\n").count("\n") + 1
    assert any(m.startswith(f"{p}:{line}:") and "release" in m for m in msgs), msgs
    assert any("timeout" in m for m in msgs), msgs


RUNBOOK = """
version: 1
name: drained
steps:
  - name: calls to the standby, none cut
    switchover: {to: home-standby, drain: {max_wait: 600, on_deadline: proceed}}
"""


def test_runbook_drained_switchover_step(tmp_path: Path) -> None:
    from failover import runbook

    rb = tmp_path / "rb.yaml"
    rb.write_text(RUNBOOK)
    step = runbook.load(rb).steps[0]
    assert step.switchover is not None and step.switchover.drain is not None
    assert step.switchover.drain.model_dump() == {"below": 0, "max_wait": 600.0, "on_deadline": "proceed"}
    rb.write_text(RUNBOOK.replace("proceed", "ask"))
    with pytest.raises(Exception, match="on_deadline"):  # a drill never asks: nobody would answer
        runbook.load(rb)


def _drain_view(calls: dict | None, busy: dict | None = None) -> dict:
    """The example pair as status sees it, the primary's agent reporting `calls`."""
    import time as _time

    from failover import status
    from tests.conftest import REPO
    from tests.test_line_states import PRIMARY, STANDBY, _member

    c = inv_mod.load(REPO / "inventory" / "example-windows.yaml").cluster()
    members = {
        "ipc-new": {**_member("ipc-new", "primary", PRIMARY, "up"), "calls": calls, "busy_out": busy},
        "ipc-old": _member("ipc-old", "standby", STANDBY, "up"),
    }
    rec = {"primary": "ipc-new", "epoch": 3, "roles": {"ipc-new": "primary", "ipc-old": "standby"}, "board_down": []}
    request = {
        "id": "r1",
        "kind": "switchover",
        "to": "ipc-old",
        "operator": "t",
        "state": "running",
        "drain": DrainSpec(0, 600, "ask").record(),
        "draining": {"started": _time.time(), "at_start": 17, "calls": calls},
        "question": "the drain reached its deadline (600 s) with 17 active: proceed (cutting them) or cancel?",
    }
    from failover.records import ClusterRecord, LeaderRecord, MemberRecord, Request

    typed = {n: MemberRecord.from_json(m) for n, m in members.items()}
    return status.view(
        c,
        ClusterRecord.from_json(rec),
        (LeaderRecord(ipc="ipc-new"), 1),
        dict(typed),
        None,
        Request.from_json(request),
        [],
    )


def test_active_calls_in_status_check_and_metrics_with_the_x_plus_2y_headroom() -> None:
    from failover import api, check, status

    v = _drain_view(ActiveCalls(17, 12, 5).record(), {"ipc": "ipc-new", "request": "r1", "since": 1.0})
    calls = v["calls"]
    lines = sum(v["capacity"]["lines"].values())
    assert calls["active"] == 17 and calls["channels_used"] == 12 + 2 * 5
    assert calls["channels_free"] == lines - 22
    text = status.render(v)
    assert "calls: 17 active on ipc-new (ivr 12, agent 5), 22 line channels in use" in text
    assert "BUSIED OUT" in text and "drain: hand-over at 0 or fewer calls" in text and "QUESTION" in text
    _code, out = check.verdict(v)
    assert "17 calls active, BUSIED OUT" in out and "active_calls=17" in out and f"channels_free={lines - 22}" in out
    state = {"cluster": "cc", "ipc": "ipc-new", "role": "primary", "zookeeper": {"connected": True}, "healthy": True}
    m = api.metrics({**state, "view": v})
    assert 'failover_active_calls{cluster="cc"} 17' in m and 'failover_busy_out{cluster="cc"} 1' in m
    assert 'failover_active_calls_by_kind{cluster="cc",kind="agent"} 5' in m


def test_unsplit_calls_count_as_agent_calls_and_no_calls_show_nothing() -> None:
    from failover import check, status

    v = _drain_view(ActiveCalls(10).record())
    assert v["calls"]["channels_used"] == 20  # never overstate the headroom
    assert "calls:" in status.render(v) and "BUSIED OUT" not in status.render(v)
    v = _drain_view(None)
    assert v["calls"] is None and "active_calls" not in check.verdict(v)[1]


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--max-wait", "soon"], "--max-wait 'soon': use e.g. 15m"),
        (["--below", "-1"], "--below -1: must be 0 or more"),
        (["--max-wait", "0"], "--max-wait 0 s: must be more than 0"),
    ],
)
def test_drain_options_refused_before_anything_is_done(tmp_path: Path, args: list[str], text: str) -> None:
    """Checked before ZooKeeper is even contacted (the inventory's is unreachable here)."""
    from click.testing import CliRunner

    from failover.cli import main

    inv = _write(tmp_path, GOOD + CALLS)
    r = CliRunner().invoke(main, ["switchover", "--drain", *args, "-i", str(inv)])
    assert r.exit_code == 2, r.output
    assert text in r.output and "nothing was done" in r.output, r.output


def test_a_deadline_question_nobody_answers_cancels_the_drain() -> None:
    """The only serving IPC must not refuse new calls until someone looks."""
    from failover.drain import QUESTION_WAIT, DrainSpec, Step, drain_move

    spec = DrainSpec(0, 60.0, "ask")
    left = ActiveCalls(3, None, None)
    assert drain_move(spec, left, 0.0, 61.0).step is Step.ASK
    assert drain_move(spec, left, 0.0, 60.0 + QUESTION_WAIT - 1).step is Step.ASK
    late = drain_move(spec, left, 0.0, 60.0 + QUESTION_WAIT)
    assert late.step is Step.CANCEL and "nobody answered" in late.why
    assert drain_move(spec, left, 0.0, 60.0 + QUESTION_WAIT, "proceed").step is Step.PROCEED  # an answer wins


def test_an_answer_before_the_question_or_to_another_request_is_refused() -> None:
    """`--answer proceed` before the deadline would cut calls nobody was told
    about; the CLI's own answer goes only to the request it follows."""
    from dataclasses import replace

    from failover import ops
    from tests.sim.world import Clock, FakeStore, ZkServer, Znode

    server = ZkServer(Clock(), 10.0)
    server.sessions[1] = 0.0
    store = FakeStore(server, 1)
    req = ops.new_request("switchover", "ipc-b", "li", "planned", frm="ipc-a", drain=DrainSpec(0, 60.0, "ask").record())
    server.nodes[f"{store.path}/switchover"] = Znode(req.to_json())
    with pytest.raises(ops.Refused, match="not reached its deadline"):
        ops.answer(store, "proceed", "li")
    cur = store.request()
    assert cur is not None
    store.update_request(cur.version, replace(cur.data, question="3 calls active: proceed or cancel?"))
    with pytest.raises(ops.Refused, match="replaced"):
        ops.answer(store, "proceed", "li", req_id="another")
    assert ops.answer(store, "proceed", "li", req_id=req.id).answer == "proceed"
    with pytest.raises(ops.Refused, match="already answered"):
        ops.answer(store, "cancel", "li")
