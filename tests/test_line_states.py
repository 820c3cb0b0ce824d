"""Line states end to end in the pure parts: a cluster without a `line_check`
on Windows/systemd IPCs reads "not monitored", which never blocks a
switchover, never warns, and is said by status, check and explain; an alarm
or a stopped board does block. Also the executor's step ordering (pure)."""

from __future__ import annotations

import time

import pytest

from failover import check, explain, oncall, plan_runner, status
from failover import executor as ex
from failover import inventory as inv_mod
from failover.records import ClusterRecord, LeaderRecord, MemberRecord
from failover.rules import Step
from tests.conftest import REPO

SERVICES = ("driver", "fax", "kcxp", "kcbp", "kcxp-replica", "kcbp-replica", "cti", "ivr")
PRIMARY = {"driver", "fax", "kcxp", "kcbp", "cti", "ivr"}
STANDBY = {"driver", "fax", "kcxp", "kcbp"}


def _member(ipc: str, role: str, running: set[str], line: str) -> dict:
    svcs = {s: {"state": "RUNNING" if s in running else "STOPPED", "healthy": True, "failures": 0} for s in SERVICES}
    return {
        "ipc": ipc,
        "role": role,
        "eligible": role == "standby",
        "updated": time.time(),
        "obs": {"reachable": True, "line": line, "services": svcs},
    }


def _view(line_b: str = "unmonitored") -> tuple[inv_mod.Cluster, dict]:
    c = inv_mod.load(REPO / "inventory" / "example-windows.yaml").cluster()
    c = c.model_copy(update={"line_check": None})
    members = {
        "ipc-new": _member("ipc-new", "primary", PRIMARY, "unmonitored"),
        "ipc-old": _member("ipc-old", "standby", STANDBY, line_b),
    }
    rec = {"primary": "ipc-new", "epoch": 3, "roles": {"ipc-new": "primary", "ipc-old": "standby"}, "board_down": []}
    typed = {n: MemberRecord.from_json(m) for n, m in members.items()}
    return c, status.view(
        c, ClusterRecord.from_json(rec), (LeaderRecord(ipc="ipc-new"), 1), dict(typed), None, None, []
    )


def test_unmonitored_line_never_blocks_nor_warns() -> None:
    c, v = _view()
    code, text = check.verdict(v)
    assert code == check.OK and "(line not monitored on ipc-new, ipc-old)" in text, text
    assert oncall.preflight_switchover(c, v, None, explicit=False) == ("ipc-new", "ipc-old")
    assert "not monitored" in status.render(v)
    assert v["capacity"]["max_ivr"] == 90  # both boards, CTI/IVR answering on the primary


@pytest.mark.parametrize("line", ["alarm", "down"])
def test_a_bad_line_blocks_a_switchover(line: str) -> None:
    c, v = _view(line)
    with pytest.raises(oncall.Fail, match=f"its board is not up \\(line {line}"):
        oncall.preflight_switchover(c, v, None, explicit=False)


def test_explain_says_the_line_is_not_monitored() -> None:
    c = inv_mod.load(REPO / "inventory" / "example-windows.yaml").cluster().model_copy(update={"line_check": None})
    obs = explain.hypothetical(c, explain.parse_faults(["line@ipc-new"], c))
    from failover.rules import Action, decide

    d = decide(obs)
    assert d.action is Action.NONE  # an unmonitored line's alarm is never seen
    assert any("not monitored on ipc-new" in n for n in explain.notes(c, ["line@ipc-new"], d))
    monitored = inv_mod.load(REPO / "inventory" / "example-windows.yaml").cluster()
    d2 = decide(explain.hypothetical(monitored, explain.parse_faults(["line@ipc-new"], monitored)))
    assert d2.action is Action.BOARD_DOWN  # rule 1, with the example's line_check


def _results(*steps: tuple[str, str]) -> list[ex.StepResult]:
    return [ex.StepResult(Step("h", op, s), "not run") for op, s in steps]


def test_step_dependencies_follow_the_start_order() -> None:
    after = plan_runner._closure(
        {
            "driver": (),
            "kcxp": ("driver",),
            "kcbp": ("driver", "kcxp"),
            "fax": ("driver",),
            "cti": ("kcbp",),
            "ivr": ("cti",),
        }
    )
    rs = _results(("stop", "ivr"), ("stop", "kcbp"), ("stop", "fax"), ("stop", "kcxp"), ("start", "cti"))
    deps = {r.step.service: {d.step.service for d in plan_runner._deps(rs, k, after)} for k, r in enumerate(rs)}
    assert deps["kcbp"] == {"ivr"}  # IVR is ordered after KCBP (through CTI): it stops first
    assert deps["fax"] == set()  # fax is independent of the others: it stops at once
    assert deps["kcxp"] == {"ivr", "kcbp"}  # what is ordered after KCXP must be down first
    assert deps["cti"] == {"ivr", "kcbp", "fax", "kcxp"}  # every stop before a start
