"""The failsafe lease path: the answer must come from the peer's agent, and
the path is tested (without asking for a lease) so that a broken one is an
alert before a ZooKeeper outage needs it. Real HTTP servers."""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path

import pytest

from failover import api, failsafe
from failover.lab.procs import free_ports
from tests.cluster import Harness, wait_for


def _grantor(ipc: str) -> api.HttpServer:
    port = free_ports(1, "127.0.0.1")[0]
    answer = {"ipc": ipc, "granted": True, "lease_s": 5.0, "why": "test grant"}
    srv = api.HttpServer("127.0.0.1", port, failsafe=lambda req: answer if not req.get("probe") else {"ipc": ipc})
    srv.start()
    return srv


def test_answer_from_another_agent_is_refused() -> None:
    """An endpoint address that reaches the primary's own agent (a loopback
    default on its own host) must never keep calls up."""
    srv = _grantor("ipc-a")  # the primary itself answers
    try:
        url = f"http://127.0.0.1:{srv.port}"
        ok, why = failsafe.probe_path(url, "ipc-a", "ipc-b", None, 1.0)
        assert not ok and "not ipc-b's agent" in why
        lease = failsafe.Lease()
        assert not lease.renew(url, "ipc-a", 1, None, 1.0, grantor="ipc-b")
        assert not lease.valid() and "lease refused" in lease.last_answer
    finally:
        srv.stop()


def test_answer_from_the_peer_is_a_lease() -> None:
    srv = _grantor("ipc-b")
    try:
        url = f"http://127.0.0.1:{srv.port}"
        assert failsafe.probe_path(url, "ipc-a", "ipc-b", None, 1.0)[0]
        lease = failsafe.Lease()
        assert lease.renew(url, "ipc-a", 1, None, 1.0, grantor="ipc-b") and lease.valid()
    finally:
        srv.stop()


def test_the_lease_path_takes_the_token_never_the_status_pages_password(tmp_path: Path) -> None:
    """An endpoint opened to browsers for the status page has basic auth
    beside its token: whoever has the page's password must not make the
    standby promise to hold back; the agents use the token."""
    from failover.inventory import HttpAuth

    (tmp_path / "token").write_text("s3cret-token\n")
    (tmp_path / "basic").write_text("desk:pa ss")
    auth = HttpAuth(token_file=str(tmp_path / "token"), basic_file=str(tmp_path / "basic"))
    port = free_ports(1, "127.0.0.1")[0]
    answer = {"ipc": "ipc-b", "granted": True, "lease_s": 5.0, "why": "test grant"}
    srv = api.HttpServer(
        "127.0.0.1",
        port,
        auth=api.Auth(*auth.secrets()),
        failsafe=lambda req: answer if not req.get("probe") else {"ipc": "ipc-b"},
    )
    srv.start()
    try:
        url = f"http://127.0.0.1:{port}"
        basic = "Basic " + base64.b64encode(b"desk:pa ss").decode()
        assert not failsafe.probe_path(url, "ipc-a", "ipc-b", None, 1.0)[0]
        assert not failsafe.probe_path(url, "ipc-a", "ipc-b", basic, 1.0)[0]  # the page's password: refused
        assert not failsafe.Lease().renew(url, "ipc-a", 1, basic, 1.0, grantor="ipc-b")
        header = failsafe.authorization(auth)
        assert header == "Bearer s3cret-token"
        assert failsafe.probe_path(url, "ipc-a", "ipc-b", header, 1.0)[0]
        lease = failsafe.Lease()
        assert lease.renew(url, "ipc-a", 1, header, 1.0, grantor="ipc-b") and lease.valid()
    finally:
        srv.stop()


def test_nothing_listening_is_a_broken_path() -> None:
    port = free_ports(1, "127.0.0.1")[0]
    ok, why = failsafe.probe_path(f"http://127.0.0.1:{port}", "ipc-a", "ipc-b", None, 0.5)
    assert not ok and "cannot be reached" in why


@pytest.mark.timeout(120)
def test_agent_alerts_on_a_broken_path(tmp_path: Path) -> None:
    """The standby's endpoint is off: the primary's agent says at once that
    its failsafe cannot work (status alert, check WARNING, metric 0)."""

    def no_http_on_b(doc: dict) -> None:
        doc["clusters"][0]["ipcs"][1]["http"] = {"enabled": False}

    with Harness(tmp_path, edit=no_http_on_b) as h:
        h.steady()
        alerts = wait_for(
            lambda: [a for a in h.member("ipc-a").get("alerts", []) if "failsafe path broken" in a], 15, what="alert"
        )
        assert "ipc-b's agent has no HTTP endpoint" in alerts[0]
        assert h.member("ipc-a")["failsafe_path"]["ok"] is False
        i = h.lab.ipc("ipc-a")
        with urllib.request.urlopen(f"http://{i.address}:{i.http_port}/metrics", timeout=2) as r:
            metrics = r.read().decode()
        assert 'failover_failsafe_path_ok{cluster="lab",ipc="ipc-a"} 0' in metrics
        from failover import check, status
        from failover.records import ClusterRecord

        v = status.view(
            h.cluster,
            ClusterRecord.from_json(h.record()),
            h.store.leader(),
            {n: h.store.member(n) for n in ("ipc-a", "ipc-b")},
            h.store.pause(),
            None,
            [],
        )
        code, text = check.verdict(v)
        assert code == check.WARNING and "failsafe path from ipc-a broken" in text, text
        with urllib.request.urlopen(f"http://{i.address}:{i.http_port}/health", timeout=2) as r:
            assert json.loads(r.read())["alerts"]
        h.assert_never_both()
