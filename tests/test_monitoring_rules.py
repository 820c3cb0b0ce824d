"""The shipped Prometheus alerting rules and the metrics' text, checked by the
real tool (Debian's promtool): `check rules`, `test rules` (what fires when),
and `check metrics` on the exposition of a busy agent state. The lab agent's
real /metrics text is checked in tests/test_monitoring_lab.py."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from failover import api
from tests.conftest import REPO

RULES = REPO / "docs" / "deploy" / "prometheus"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool missing (Debian package prometheus): run `make install`")
    return subprocess.run([tool, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=RULES)


def test_rules_pass_promtool_check_rules() -> None:
    r = promtool("check", "rules", "failover-rules.yml")
    assert r.returncode == 0 and "SUCCESS: 12 rules found" in r.stdout, r.stdout + r.stderr


def test_rules_fire_as_documented_promtool_test_rules() -> None:
    r = promtool("test", "rules", "failover-rules.test.yml")
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


BUSY = {
    "cluster": "lab",
    "ipc": "ipc-b",
    "role": "primary",
    "leader": True,
    "epoch": 3,
    "zookeeper": {"connected": True},
    "healthy": True,
    "paused": {"operator": "ops"},
    "failsafe_path": {"ok": False},
    "failovers_total": {"failover": 2, "switchover": 1},
    "last_failover": {"detection_s": 1.2, "stop_s": 0.4, "fencing_s": 0.1, "promotion_s": 2.0, "duration_s": 3.7},
    "view": {
        "ipcs": {
            ipc: {"services": {s: {"state": "RUNNING", "probe": True} for s in ("driver", "cti", "ivr", "kcxp")}}
            for ipc in ("ipc-a", "ipc-b")
        },
        "capacity": {"max_ivr": 30, "max_agent": 15, "fax": 4},
    },
}


def test_metrics_text_passes_promtool_check_metrics() -> None:
    r = promtool("check", "metrics", stdin=api.metrics(BUSY))
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
