"""`failover check` output follows the Monitoring Plugins guidelines: one
line, '|' only before the perfdata, each item 'label'=value[UOM];[warn];[crit];
[min];[max] with thresholds in the range format (capacity *below* --warn is
"N:"), labels quoted when not plain."""

from __future__ import annotations

import re

import pytest

from failover import check

# value: [-0-9.] only; warn/crit: a range ([@][start:][end], ~ for -inf)
RANGE = r"@?(?:~|-?[0-9.]+)?:?(?:-?[0-9.]+)?"
ITEM = re.compile(
    rf"^(?:'[^'=]+'|[^'= ]+)=-?[0-9.]+(?:[a-zA-Z%]*)?(?:;{RANGE}(?:;{RANGE}(?:;-?[0-9.]*(?:;-?[0-9.]*)?)?)?)?$"
)

VIEW = {
    "cluster": "lab",
    "epoch": 2,
    "primary": "ipc-a",
    "leader": "ipc-a",
    "capacity": {"max_ivr": 30, "max_agent": 15, "fax": 4},
    "ipcs": {
        "ipc-a": {"role": "primary", "services": {"cti": {"state": "RUNNING"}, "ivr": {"state": "RUNNING"}}},
        "ipc-b": {"role": "standby", "eligible": True, "services": {}},
    },
}


def perf(line: str) -> list[str]:
    assert line.count("|") == 1, line
    return line.split("|", 1)[1].split()


def test_plain_output_items_follow_the_format() -> None:
    code, line = check.verdict(VIEW)
    assert code == check.OK
    assert perf(line) == ["epoch=2", "ivr_capacity=30;;;0", "agent_capacity=15;;;0", "fax_capacity=4;;;0"]
    assert all(ITEM.match(p) for p in perf(line)), perf(line)


@pytest.mark.parametrize(("warn", "crit", "code"), [(60, 20, check.WARNING), (60, 40, check.CRITICAL), (20, 10, 0)])
def test_thresholds_are_ranges_alerting_below(warn: int, crit: int, code: int) -> None:
    got, line = check.verdict(VIEW, warn, crit)
    assert got == code
    assert f"ivr_capacity=30;{warn}:;{crit}:;0" in perf(line)
    assert all(ITEM.match(p) for p in perf(line)), perf(line)


def test_a_pipe_anywhere_in_the_text_cannot_start_the_perfdata() -> None:
    view = {**VIEW, "paused": {"operator": "ops|night", "reason": "a|b"}}
    view["ipcs"] = {**VIEW["ipcs"], "ipc-b": {**VIEW["ipcs"]["ipc-b"], "way_out": "run `x | y`"}}
    code, line = check.verdict(view)
    assert code == check.CRITICAL and "ops/night" in line and "`x / y`" in line
    assert all(ITEM.match(p) for p in perf(line))


@pytest.mark.parametrize(
    ("label", "out"),
    [("epoch", "epoch=1"), ("ivr capacity", "'ivr capacity'=1"), ("a=b", "a_b=1"), ("it's", "its=1")],
)
def test_labels_quoted_when_needed(label: str, out: str) -> None:
    assert check.perfdata(label, 1) == out
    assert ITEM.match(out)


def test_units_and_empty_trailing_fields() -> None:
    assert check.perfdata("took", 1.5, uom="s") == "took=1.5s"
    assert check.perfdata("x", 3, warn="5:", min_=0) == "x=3;5:;;0"
