"""Weekend drills against the lab with agents running: the Sunday drill end to
end with real timings; a broken agent makes it fail clearly; dry run executes
nothing; bad runbooks are rejected with line numbers; an interrupted run resumes;
the data-source switch rolls back; the interlocks refuse."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import FAILOVER, Harness, wait_for

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]
SUNDAY = str(REPO / "runbooks" / "sunday-drill.yaml")


def drill(
    h: Harness, runbook: str, *args: str, reports: Path | None = None
) -> tuple[subprocess.CompletedProcess, dict]:
    out = reports or (h.root / "reports")
    r = subprocess.run(
        [
            FAILOVER,
            "drill",
            "run",
            runbook,
            "-i",
            str(h.lab.inventory_path),
            "--window",
            "00:00-23:59",
            "--reports",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    reps = sorted(out.glob("*.json")) if out.exists() else []
    return r, (json.loads(reps[-1].read_text()) if reps else {})


def test_sunday_drill_passes_with_real_timings(h: Harness) -> None:
    r, rep = drill(h, SUNDAY)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "drill sunday-drill: PASSED" in r.stdout
    assert rep["outcome"] == "passed" and all(s["status"] == "ok" for s in rep["steps"])
    faults = {(f["fault"], f.get("service")): f for f in rep["faults"]}
    assert set(faults) == {("line-alarm", None), ("kill", "cti"), ("hang", "ivr"), ("kill", "kcxp")}
    cti = faults[("kill", "cti")]
    assert cti["reaction"] == "failover" and 0 < cti["time_to_detect_s"] < 5
    assert 0 < cti["calls_served_again_s"] < 10 and cti["back_to_normal_s"] > cti["calls_served_again_s"]
    assert faults[("line-alarm", None)]["reaction"] == "board-down"
    assert faults[("kill", "kcxp")]["reaction"] == "standby-fault"
    audits = [a for s in rep["steps"] for a in s["audits"]]
    assert audits and all(a["ok"] for a in audits)
    files = rep["files"]
    svg = Path(files["svg"]).read_text()
    assert svg.startswith("<svg") and svg.count("<rect") > 50 and "ipc-a cti" in svg
    # the picture tells the status page's story: who answered calls, when
    assert 'class="lane calls"' in svg and 'class="lane services"' in svg and 'class="axis"' in svg
    checks = [s for s in rep["steps"] if s["action"] == "check"]
    assert svg.count('class="marker fault"') == len(rep["faults"]) == 4
    assert svg.count('class="marker check"') == len(checks) > 0
    who = re.findall(r'data-who="([^"]+)"', svg)
    assert who[0] == "ipc-a" and "ipc-b" in who and "two IPCs" not in who  # rule 2 moved the calls, twice
    artifacts = REPO / "test-artifacts" / "drills"  # the real drill's report, to look at (git-ignored)
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copy(files["html"], artifacts / "sunday-drill-lab.html")
    assert "PASSED" in Path(files["md"]).read_text() and "<svg" in Path(files["html"]).read_text()
    hist = subprocess.run([FAILOVER, "history", "-i", str(h.lab.inventory_path)], capture_output=True, text=True)
    assert "drill" in hist.stdout and "runbook sunday-drill" in hist.stdout


def test_broken_agent_fails_the_drill_clearly(tmp_path: Path) -> None:
    def no_failover(doc: dict) -> None:  # a "broken" agent: automatic failover disabled
        doc["clusters"][0]["policy"] = {"mode": "manual"}

    with Harness(tmp_path, edit=no_failover) as h:
        h.steady()
        r, rep = drill(h, SUNDAY)
        assert r.returncode == 1 and "drill sunday-drill: FAILED" in r.stdout
        failed = next(s for s in rep["steps"] if s["status"] == "failed")
        # manual mode: the agents propose, never act; the first reaction the drill
        # expects (rule 1) does not come, and the report says exactly that
        assert failed["title"] == "rule 1 - driver stopped, no role change"
        assert "expectation not met within 20 s: ipc-a's board is not down" in failed["detail"]
        assert f"--from {failed['n']}" in r.stdout
        assert any(s["title"].startswith("cleanup") and s["status"] == "ok" for s in rep["steps"])
        h.assert_never_both()


def test_dry_run_executes_nothing(h: Harness) -> None:
    from failover.lab.observer import snapshot

    before = {i: h.pids(i) for i in ("ipc-a", "ipc-b")}
    seen = snapshot(h.lab.labid)
    epoch = h.record()["epoch"]
    r, _ = drill(h, SUNDAY, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would run: ipc-a: fault line-alarm" in r.stdout and "would run: ipc-a: call inbound" in r.stdout
    time.sleep(1)
    assert {i: h.pids(i) for i in ("ipc-a", "ipc-b")} == before  # same service processes
    assert snapshot(h.lab.labid) == seen  # the independent observer: nothing changed
    assert h.record()["epoch"] == epoch and not (h.root / "reports").exists()
    assert not any(e.kind == "drill" for e in h.store.history())


BAD = [
    (
        "unknown key",
        "  - inject: {fault: kill, service: cti, ipc: primary}\n",
        "  - injekt: {fault: kill}\n",
        4,
        "unknown key 'injekt' (did you mean 'inject'?)",
    ),
    ("two actions", "  - wait: 1\n", "  - wait: 1\n    check: [inbound]\n", 5, "exactly one action"),
    ("unknown IPC", "ipc: primary}", "ipc: ipc-z}", 4, "unknown IPC 'ipc-z'"),
    ("bad fault", "fault: kill,", "fault: explode,", 4, "Input should be"),
    ("missing service", "fault: kill, service: cti,", "fault: kill,", 4, "needs a `service`"),
    ("unknown smoke check", "check: [inbound]", "check: [fax-test]", 6, "Input should be 'inbound'"),
]
GOOD = textwrap.dedent("""\
    version: 1
    name: tiny
    steps:
      - inject: {fault: kill, service: cti, ipc: primary}
      - wait: 1
      - check: [inbound]
    """)


@pytest.mark.parametrize(("desc", "old", "new", "line", "text"), BAD, ids=[b[0] for b in BAD])
def test_invalid_runbook_rejected_with_line(
    tmp_path: Path, desc: str, old: str, new: str, line: int, text: str
) -> None:
    from tests.test_inventory import GOOD as INV
    from tests.test_inventory import _write

    inv = _write(
        tmp_path, INV.replace("    services:", "    smoke_checks:\n      inbound: {command: x}\n    services:")
    )
    assert old in GOOD
    rb = tmp_path / "rb.yaml"
    rb.write_text(GOOD.replace(old, new, 1))
    r = subprocess.run(
        [FAILOVER, "drill", "run", str(rb), "-i", str(inv), "--dry-run"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert any(ln.startswith(f"{rb}:{line}:") and text in ln for ln in r.stderr.splitlines()), r.stderr
    assert "nothing was run" in r.stderr


def test_interrupted_run_resumes_from_failed_step(h: Harness) -> None:
    rb = h.root / "resume.yaml"
    rb.write_text(
        textwrap.dedent("""\
        version: 1
        name: resume-test
        steps:
          - pause: {reason: "forgotten pause"}
          - inject: {fault: kill, service: cti, ipc: home-primary}
          - name: the standby serves
            expect: {primary: home-standby, within: 5}
          - check: [inbound]
        """)
    )
    r, rep = drill(h, str(rb))
    assert r.returncode == 1 and rep["failed_step"] == 3 and "--from 3" in r.stdout
    assert subprocess.run([FAILOVER, "resume", "-i", str(h.lab.inventory_path)], capture_output=True).returncode == 0
    # The failover the drill set up happens now; the resumed run must accept
    # the state the earlier steps left (ipc-a fenced), not refuse it.
    wait_for(lambda: h.record().get("primary") == "ipc-b" and h.member("ipc-a").get("role") == "fenced", 20)
    r, rep = drill(h, str(rb), "--from", "3", reports=h.root / "reports2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert "resuming at step 3: the cluster is not in its normal state (standby ipc-a is not eligible)" in r.stdout
    assert [s["status"] for s in rep["steps"]] == ["skipped", "skipped", "ok", "ok"]


DATASOURCE = str(REPO / "runbooks" / "datasource-switch.yaml")
SHENZHEN = "database = shenzhen-db.cc.example:1521/CCDB\n"


@pytest.fixture(params=["lab", "windows"])
def ds(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """The data-source switch's lab: the lab's simulator, or the plan's Windows
    IPCs (every command through the cmd.exe + sc.exe stand-in)."""
    with Harness(tmp_path, zk_nodes=1, platform=request.param) as h:
        h.steady()
        yield h
        h.assert_never_both()


def _confs(h: Harness) -> dict[str, Path]:
    return {i: Path(h.lab.ipc(i).dir) / "datasource.conf" for i in ("ipc-a", "ipc-b")}


def test_datasource_switch_rolls_back_each_ipc_when_a_restart_fails(ds: Harness) -> None:
    confs = _confs(ds)
    assert all(c.read_text() == SHENZHEN for c in confs.values())
    ds.lab.fault("ipc-a", "fail-start", "kcbp")  # the restart after the edit fails
    r, rep = drill(ds, DATASOURCE)
    assert r.returncode == 1, r.stdout[-3000:]
    failed = next(s for s in rep["steps"] if s["status"] == "failed")
    assert failed["title"] == "restart the dependent service on the home primary - start"
    rollback = [s for s in rep["steps"] if s["label"].startswith("rollback")]
    assert [s["status"] for s in rollback] == ["ok"] * 4, rollback
    assert "restored from" in rollback[0]["detail"] and "restored from" in rollback[1]["detail"]
    for ipc, conf in confs.items():
        assert conf.read_text().replace("\r\n", "\n") == SHENZHEN, ipc  # each from its own backup
        assert len(list(conf.parent.glob("datasource.conf.*.bak"))) == 1, ipc
    wait_for(lambda: "kcbp" in ds.running("ipc-a"), 10, what="kcbp back")
    assert ds.store.pause() is None  # cleanup resumed automation


def test_datasource_switch_points_both_ipcs_at_shanghai(ds: Harness) -> None:
    confs = _confs(ds)
    r, rep = drill(ds, DATASOURCE)
    assert r.returncode == 0, r.stdout[-3000:]
    for ipc, conf in confs.items():
        assert conf.read_text().replace("\r\n", "\n") == "database = shanghai-db.cc.example:1521/CCDB\n", ipc
        (backup,) = conf.parent.glob("datasource.conf.*.bak")
        assert re.fullmatch(r"datasource\.conf\.\d{8}-\d{6}\.bak", backup.name)
        assert backup.read_text() == SHENZHEN
    commands = [c for s in rep["steps"] for c in s["commands"]]
    if ds.cluster.ipc("ipc-a").platform == "windows":  # what the plan's IPCs run
        assert 'ipc-a: copy /y "datasource.conf" "datasource.conf.' in commands[0]
        assert any(c.startswith("ipc-b: sc.exe stop") and "KCBP" in c for c in commands), commands
    assert ds.store.pause() is None


def test_interlocks(tmp_path: Path) -> None:
    def not_for_drills(doc: dict) -> None:
        doc["clusters"][0]["drills_allowed"] = False

    with Harness(tmp_path, edit=not_for_drills) as h:
        h.steady()
        r = subprocess.run(
            [FAILOVER, "drill", "run", SUNDAY, "-i", str(h.lab.inventory_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 3 and ("outside the drill window" in r.stderr or "not marked" in r.stderr)
        r, _ = drill(h, SUNDAY)
        assert r.returncode == 3 and "not marked for drills" in r.stderr
        h.lab.fault("ipc-b", "kill", "kcxp")
        wait_for(lambda: h.record()["roles"]["ipc-b"] == "fenced", 20)
        r, _ = drill(h, SUNDAY, "--yes")
        assert r.returncode == 3 and "standby ipc-b is not eligible" in r.stderr


def test_ctrl_c_aborts_and_cleans_up(h: Harness) -> None:
    rb = h.root / "long.yaml"
    rb.write_text(
        textwrap.dedent("""\
        version: 1
        name: long
        steps:
          - inject: {fault: line-alarm, ipc: home-standby}
          - wait: 60
        cleanup:
          - restore: {ipc: all}
        """)
    )
    p = subprocess.Popen(
        [
            FAILOVER,
            "drill",
            "run",
            str(rb),
            "-i",
            str(h.lab.inventory_path),
            "--window",
            "00:00-23:59",
            "--reports",
            str(h.root / "rep"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background (`make test &`)
        # ignores SIGINT, and children inherit an ignored signal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(5)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert "interrupted" in out and "cleanup 1" in out
    rep = json.loads(sorted((h.root / "rep").glob("*.json"))[-1].read_text())
    assert rep["outcome"] == "failed" and any(
        s["title"].startswith("cleanup") and s["status"] == "ok" for s in rep["steps"]
    )


def test_saturday_bringup_passes(h: Harness) -> None:
    r, rep = drill(h, str(REPO / "runbooks" / "saturday-bringup.yaml"), "--yes")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert [s["status"] for s in rep["steps"]] == ["ok"] * 5
    assert "confirmed (--yes)" in [s["detail"] for s in rep["steps"]]
