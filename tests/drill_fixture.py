"""A recorded-like drill result, built without the lab: the samples, steps
and faults a Sunday drill's first two faults produce (line alarm on ipc-a,
then CTI killed on ipc-a and ipc-b serving), on a 40 s drill."""

from __future__ import annotations

from failover.drill_report import StepResult, build, fault_metrics
from failover.drill_timeline import Sample
from failover.records import HistoryEntry

T0 = 1_800_000_000.0
IPCS = ["ipc-a", "ipc-b"]
SERVICES = ["driver", "cti", "ivr", "kcxp", "kcbp"]
PRIMARY = {"driver": "RUNNING", "cti": "RUNNING", "ivr": "RUNNING", "kcxp": "RUNNING", "kcbp": "RUNNING"}
STANDBY = {**PRIMARY, "cti": "STOPPED", "ivr": "STOPPED"}
FENCED = dict.fromkeys(PRIMARY, "STOPPED")


def states_at(t: float) -> dict[str, dict[str, str]]:
    """ipc-a serves until the CTI kill at 20 s; nobody until 22 s; then ipc-b."""
    if t < 20.0:
        return {"ipc-a": PRIMARY, "ipc-b": STANDBY}
    if t < 22.0:
        return {"ipc-a": {**PRIMARY, "cti": "STOPPED"}, "ipc-b": STANDBY}
    return {"ipc-a": FENCED, "ipc-b": PRIMARY}


def samples() -> list[Sample]:
    out = []
    for k in range(0, 134):  # every 0.3 s for 40 s
        t = k * 0.3
        for ipc, st in states_at(t).items():
            out.append(Sample(T0 + t, ipc, dict(st)))
    return out


STEPS = [  # (title, action, start s, duration s)
    ("basic call tests before the drill", "check", 0.5, 1.0),
    ("primary line fault", "inject", 2.0, 0.2),
    ("rule 1 - driver stopped, no role change", "expect", 2.2, 1.5),
    ("line repaired", "inject", 4.0, 0.2),
    ("basic call tests (inbound, outbound, agent)", "check", 5.0, 1.0),
    ("primary CTI fault", "inject", 20.0, 0.2),
    ("rule 2 - the standby serves", "expect", 20.2, 2.3),
    ("basic call tests on the standby", "check", 22.6, 1.0),
    ("normal layout (CTI fault)", "expect", 30.0, 1.0),
]


def results() -> list[StepResult]:
    out = [
        StepResult(n, title, action, "ok", "ok", T0 + start, dur, label=str(n))
        for n, (title, action, start, dur) in enumerate(STEPS, 1)
    ]
    out.append(
        StepResult(-1, "cleanup 1: clear every injected fault", "restore", "ok", "", T0 + 38, 0.5, label="cleanup 1")
    )
    return out


FAULTS = [
    {"step": "primary line fault", "fault": "line-alarm", "service": None, "ipc": "ipc-a", "at": T0 + 2.0},
    {"step": "primary CTI fault", "fault": "kill", "service": "cti", "ipc": "ipc-a", "at": T0 + 20.0},
]
HISTORY = [
    HistoryEntry.from_json({"kind": "board-down", "when": T0 + 2.6, "detection_s": 0.5}),
    HistoryEntry.from_json({"kind": "failover", "when": T0 + 21.5, "detection_s": 0.5}),
]


def report() -> dict:
    rs = results()
    faults = fault_metrics(FAULTS, HISTORY, samples(), rs, lambda n: n == 9)
    rep = build(
        runbook="sunday-drill",
        path="runbooks/sunday-drill.yaml",
        cluster="lab",
        operator="tester",
        t0=T0,
        dry_run=False,
        results=rs,
        faults=faults,
    )
    rep["duration_s"] = 40.0  # as recorded (build() measures until now)
    return rep
