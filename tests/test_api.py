"""The agents' HTTP endpoints and `failover check`, against the lab with both
agents running: status codes for every role and state, Prometheus metrics
parsed with the official parser, answers within 1 s while ZooKeeper is down."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import FAILOVER, Harness, wait_for

pytestmark = pytest.mark.timeout(240)
TOKEN = "s3cr3t-token-for-tests"


def _auth(doc: dict) -> None:
    for ipc in doc["clusters"][0]["ipcs"]:
        ipc["http"]["auth"] = {"token_env": "FAILOVER_TEST_HTTP_TOKEN"}


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FAILOVER_TEST_HTTP_TOKEN", TOKEN)  # inherited by the agents
    with Harness(tmp_path, edit=_auth) as harness:
        harness.steady()
        yield harness
        harness.assert_never_both()


def url(h: Harness, ipc: str, path: str = "") -> str:
    i = h.lab.ipc(ipc)
    return f"http://{i.address}:{i.http_port}{path}"


def get(
    h: Harness, ipc: str, path: str, method: str = "GET", token: str | None = TOKEN, timeout: float = 1.0
) -> tuple[int, bytes, float]:
    req = urllib.request.Request(url(h, ipc, path), method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.monotonic() - t0


def codes(h: Harness, ipc: str) -> tuple[int, int, int]:
    return tuple(get(h, ipc, p)[0] for p in ("/health", "/primary", "/standby"))  # type: ignore[return-value]


def check(h: Harness, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FAILOVER, "check", *args], capture_output=True, text=True, timeout=60)


def test_codes_steady_paused_board_down(h: Harness) -> None:
    wait_for(lambda: codes(h, "ipc-a") == (200, 200, 503) and codes(h, "ipc-b") == (200, 503, 200), 10)
    # the standby's view of its peer is at most one cycle old
    r = wait_for(
        lambda: (c := check(h, "--url", url(h, "ipc-b"), "--token", TOKEN)) and c.returncode == 0 and c,
        10,
        what="OK from the standby's endpoint",
    )
    assert r.stdout.startswith("FAILOVER OK - cluster lab") and "ivr_capacity=90" in r.stdout
    r = check(h, "-i", str(h.lab.inventory_path), "--warn", "100")
    assert r.returncode == 1 and "capacity 90 IVR calls < 100" in r.stdout
    r = check(h, "-i", str(h.lab.inventory_path), "--crit", "95")
    assert r.returncode == 2
    # paused: WARNING; the roles' endpoints unchanged
    subprocess.run(
        [FAILOVER, "pause", "--reason", "test", "-i", str(h.lab.inventory_path)], check=True, capture_output=True
    )
    wait_for(lambda: b'"paused": {' in get(h, "ipc-a", "/health")[1], 10)
    r = check(h, "-i", str(h.lab.inventory_path))
    assert r.returncode == 1 and "paused by" in r.stdout
    subprocess.run([FAILOVER, "resume", "-i", str(h.lab.inventory_path)], check=True, capture_output=True)
    # board down on the primary: rule 1, driver stopped, still primary; WARNING
    h.lab.fault("ipc-a", "line-alarm")
    wait_for(lambda: h.record().get("board_down") == ["ipc-a"], 10)
    wait_for(lambda: codes(h, "ipc-a") == (200, 200, 503), 10)  # its layout matches its (board-down) role
    r = wait_for(
        lambda: (c := check(h, "-i", str(h.lab.inventory_path))) and "ivr_capacity=30" in c.stdout and c,
        10,
        what="capacity 30 published",
    )
    assert r.returncode == 1 and "board down on ipc-a" in r.stdout
    # protocol details
    assert get(h, "ipc-a", "/nope")[0] == 404
    assert get(h, "ipc-a", "/health", method="POST")[0] == 405
    assert get(h, "ipc-a", "/cluster", token=None)[0] == 401
    assert get(h, "ipc-a", "/history", token="wrong")[0] == 401
    basic = base64.b64encode(b"x:y").decode()
    req = urllib.request.Request(url(h, "ipc-a", "/cluster"), headers={"Authorization": f"Basic {basic}"})
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(req, timeout=1)
    assert get(h, "ipc-a", "/health", token=None)[0] == 200  # monitoring endpoints stay open
    st, body, _ = get(h, "ipc-a", "/health", method="HEAD")
    assert st == 200 and body == b""
    hist = json.loads(get(h, "ipc-a", "/history")[1])
    assert any(e["kind"] == "bootstrap" for e in hist)


def test_codes_ineligible_standby_and_after_failover(h: Harness) -> None:
    h.lab.fault("ipc-b", "kill", "kcxp")
    wait_for(lambda: h.record()["roles"]["ipc-b"] == "fenced", 15)
    wait_for(lambda: codes(h, "ipc-b")[2] == 503 and codes(h, "ipc-a") == (200, 200, 503), 10)
    r = check(h, "-i", str(h.lab.inventory_path))
    assert r.returncode == 1 and "standby ipc-b ineligible" in r.stdout
    subprocess.run([FAILOVER, "rejoin", "ipc-b", "-i", str(h.lab.inventory_path)], check=True, capture_output=True)
    wait_for(lambda: codes(h, "ipc-b") == (200, 503, 200), 20)
    h.lab.fault("ipc-a", "hang", "ivr")  # the primary's IVR hangs: CRITICAL until the failover is done
    wait_for(lambda: h.record().get("primary") == "ipc-b" and h.serving("ipc-b"), 20)
    wait_for(lambda: codes(h, "ipc-b") == (200, 200, 503) and codes(h, "ipc-a")[1:] == (503, 503), 10)
    r = check(h, "--url", url(h, "ipc-a"), "--token", TOKEN)
    assert r.returncode == 1 and "standby ipc-a ineligible (fenced)" in r.stdout
    fams = {f.name: f for f in text_string_to_metric_families(get(h, "ipc-b", "/metrics")[1].decode())}
    assert {
        "failover_role",
        "failover_epoch",
        "failover_service_up",
        "failover_failovers",
        "failover_last_failover_seconds",
        "failover_capacity_calls",
        "failover_zookeeper_connected",
        "failover_paused",
    } <= set(fams)
    role = {s.labels["role"]: s.value for s in fams["failover_role"].samples}
    assert role["primary"] == 1 and role["standby"] == 0
    assert next(s.value for s in fams["failover_epoch"].samples) == 2
    total = {s.labels["reason"]: s.value for s in fams["failover_failovers"].samples if s.name.endswith("_total")}
    assert total.get("failover") == 1
    up = {(s.labels["ipc"], s.labels["service"]): s.value for s in fams["failover_service_up"].samples}
    assert up[("ipc-b", "cti")] == 1 and up[("ipc-a", "cti")] == 0
    phases = {s.labels["phase"]: s.value for s in fams["failover_last_failover_seconds"].samples}
    assert 0 < phases["detection"] < 5 and 0 < phases["promotion"] < 5


def test_answers_within_1s_while_zookeeper_down(h: Harness) -> None:
    for n in h.lab.zk:
        n.stop()
    try:
        time.sleep(2.5)  # past SUSPENDED
        for ipc in ("ipc-a", "ipc-b"):
            for path in ("/health", "/primary", "/standby", "/cluster", "/history", "/metrics"):
                st, body, took = get(h, ipc, path, timeout=1.0)
                assert took < 1.0 and st in (200, 503), (ipc, path, st)
        # The whole ensemble is down: the primary serves on under a failsafe lease
        # from the standby (docs/resilience.md), and says ZooKeeper is down.
        st, body, _ = get(h, "ipc-a", "/primary")
        assert st == 200 and json.loads(body)["zookeeper"]["connected"] is False
        assert get(h, "ipc-b", "/primary")[0] == 503
        fams = {f.name: f for f in text_string_to_metric_families(get(h, "ipc-a", "/metrics")[1].decode())}
        assert next(s.value for s in fams["failover_zookeeper_connected"].samples) == 0
        r = check(h, "-i", str(h.lab.inventory_path), "--timeout", "2")
        assert r.returncode == 3 and r.stdout.startswith("FAILOVER UNKNOWN")
    finally:
        for n in h.lab.zk:
            n.start()
