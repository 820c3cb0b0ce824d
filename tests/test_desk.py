"""The status page without the lab: what it says (desk.py, pure), how the
agent's real HTTP server serves it (auth, index), and the page itself in a
real headless Chromium fed by a real HttpServer with states built by
status.view: the headline, every banner case, escaping of ZooKeeper strings,
the hung- and dead-agent warnings, no console errors. The lab test is test_desk_lab.py."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from failover import api, desk, desk_page
from failover import inventory as inv_mod
from failover import status as st
from failover.lab.procs import free_ports
from tests.browser import chromium, console_errors, screenshot, text, wait_until

REPO = Path(__file__).resolve().parents[1]
CLUSTER = inv_mod.load(REPO / "inventory" / "example-windows.yaml").cluster()
PRIMARY_SET = {"driver": "RUNNING", "cti": "RUNNING", "ivr": "RUNNING", "kcxp": "RUNNING", "kcbp": "RUNNING"}
STANDBY_SET = {"driver": "RUNNING", "kcxp": "RUNNING", "kcbp": "RUNNING"}
HOSTILE = '<img src=x onerror="window.pwned=1">'


def member(ipc: str, running: dict[str, str], sentence: str, **extra: object) -> dict:
    services = {s: {"state": running.get(s, "STOPPED"), "healthy": True} for s in CLUSTER.services}
    obs = {"services": services, "line": "ok", "reachable": True}
    return {"ipc": ipc, "obs": obs, "sentence": sentence, "updated": time.time(), "eligible": True, **extra}


def state(primary: str = "ipc-new", serving: bool = True, **over: object) -> dict:
    """An agent's API state (publishing._api_state's shape) with a view from status.view."""
    peer = "ipc-old" if primary == "ipc-new" else "ipc-new"
    members = {
        primary: member(primary, PRIMARY_SET if serving else STANDBY_SET, f"{primary} serves.", eligible=False),
        peer: member(peer, STANDBY_SET, f"{peer} stands by."),
        **over.pop("members", {}),  # type: ignore[dict-item]
    }
    rec = {"primary": primary, "epoch": 7, "roles": {primary: "primary", peer: "standby"}}
    history = [
        {"when": 1000.0, "kind": "bootstrap", "to": "ipc-new", "epoch": 1, "who": "agent", "why": "first start"},
        {"when": 2000.0, "kind": "failover", "from": peer, "to": primary, "epoch": 7, "why": "CTI died on " + peer},
    ]
    v = st.view(CLUSTER, rec, ({"ipc": primary}, 1), members, over.pop("pause", None), over.pop("req", None), history)
    s = {
        "cluster": CLUSTER.name,
        "ipc": "ipc-new",
        "role": "primary",
        "healthy": True,
        "zookeeper": {"connected": True, "last_contact_s": 0.1},
        "view": v,
        "history": history,
        "failsafe": {},
        "desks": desk_page.links([CLUSTER], CLUSTER.name),
    }
    s.update(over)
    return s


def payload(s: dict) -> dict:
    return json.loads(api.render(s)["/desk.json"][1])


# ----- what the page says (pure) --------------------------------------------------
def test_headline_names_the_ipc_answering_calls_and_why() -> None:
    p = payload(state())
    assert p["headline"]["text"] == "Calls answered by ipc-new" and p["headline"]["level"] == "ok"
    assert p["headline"]["why"] == "failover ipc-old -> ipc-new (epoch 7): CTI died on ipc-old"
    assert p["attention"] == [] and [h["kind"] for h in p["history"]] == ["failover", "bootstrap"]
    assert p["cluster"] == json.loads(api.render(state())["/cluster"][1])  # the very /cluster body


def test_change_not_yet_in_history_the_agent_says_why() -> None:
    s = state()
    s["view"]["last_change"] = {"kind": "bootstrap", "to": "ipc-old", "when": 1.0}  # not the serving IPC
    assert desk.headline(s["view"]) == {
        "level": "ok",
        "text": "Calls answered by ipc-new",
        "why": "ipc-new serves.",
        "since": None,
    }


def test_nobody_answering_says_the_way_out() -> None:
    way = "No automatic action: ipc-old cannot be reached; `failover failover --to ipc-old --confirm-dead ipc-new`"
    s = state(serving=False, members={"ipc-old": member("ipc-old", STANDBY_SET, "holding", way_out=way)})
    p = payload(s)
    assert p["headline"] == {"level": "crit", "text": "NOBODY is answering calls", "why": way, "since": None}
    assert any(a["level"] == "crit" and way in a["text"] for a in p["attention"])


def test_every_banner_case() -> None:
    now = time.time()
    req = {"kind": "switchover", "to": "ipc-old", "operator": "ana", "state": "failed", "requested_at": now - 60}
    req["result"] = {"state": "failed", "why": "starting CTI on ipc-old failed"}
    s = state(
        pause={"operator": "ana", "reason": "board swap", "since": now},
        req=req,
        zookeeper={"connected": False, "last_contact_s": 12.5},
        failsafe={"serving_on_lease": True, "why": "the standby has no ZooKeeper either"},
        members={"ipc-old": member("ipc-old", STANDBY_SET, "faulted", eligible=False, alerts=["kcxp keeps failing"])},
    )
    texts = {a["level"] + ": " + a["text"] for a in payload(s)["attention"]}
    want = [
        "crit: ZooKeeper unreachable from ipc-new's agent (last contact 12.5 s ago)",
        "crit: switchover to ipc-old requested by ana FAILED: starting CTI on ipc-old failed",
        "warn: paused by ana: board swap",
        "warn: standby ipc-old ineligible (standby)",
        "warn: failsafe active: ipc-new keeps CTI and IVR running without ZooKeeper",
        "warn: ipc-old: kcxp keeps failing",
    ]
    for w in want:
        assert any(t.startswith(w) for t in texts), (w, texts)
    old = {**req, "requested_at": now - desk.FAILED_SHOWN_S - 1}
    assert not any("FAILED" in a["text"] for a in payload(state(req=old))["attention"])


# ----- served by the agent's real HTTP server -------------------------------------------
@pytest.fixture
def server() -> Iterator[api.HttpServer]:
    srv = api.HttpServer("127.0.0.1", free_ports(1)[0], api.Auth(basic="desk:pa55"))
    srv.start()
    srv.publish(api.render(state()))
    try:
        yield srv
    finally:
        srv.stop()


def fetch(srv: api.HttpServer, path: str, auth: str | None = None) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}{path}")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_served_on_the_same_auth_as_cluster(server: api.HttpServer) -> None:
    for path in ("/desk", "/desk.json", "/desks", "/cluster"):
        code, headers, _ = fetch(server, path)
        assert code == 401 and any('Basic realm="failover"' in h for h in headers.get_all("WWW-Authenticate")), path
        assert fetch(server, path, "desk:wrong")[0] == 401
    code, headers, body = fetch(server, "/desk", "desk:pa55")
    assert code == 200 and headers["Content-Type"].startswith("text/html") and b"desk.json" in body
    assert (
        b"innerHTML" not in body and b"http://" not in body and b"https://" not in body
    )  # nothing fetched from outside
    assert fetch(server, "/health")[0] == 200  # monitoring stays open


def test_token_only_endpoint_says_the_page_needs_basic_auth() -> None:
    srv = api.HttpServer("127.0.0.1", free_ports(1)[0], api.Auth(token="t0ken"))
    srv.start()
    try:
        srv.publish(api.render(state()))
        code, _, body = fetch(srv, "/desk")
        assert code == 401 and json.loads(body)["hint"] == api.DESK_NEEDS_BASIC
        assert "hint" not in json.loads(fetch(srv, "/cluster")[2])
    finally:
        srv.stop()


def test_index_lists_the_inventory_clusters_escaped() -> None:
    other = CLUSTER.model_copy(update={"name": "<b>gz</b>"})
    body = desk_page.index(desk_page.links([CLUSTER, other], CLUSTER.name)).decode()
    assert "http://10.20.2.11:8008/desk" in body and "shenzhen-cc</b> (this agent's cluster)" in body
    assert "&lt;b&gt;gz&lt;/b&gt;" in body and "<b><b>" not in body


# ----- in a real browser ----------------------------------------------------------------------------
def test_page_in_chromium_banners_escaping_stale(server: api.HttpServer, tmp_path: Path) -> None:
    url = f"http://desk:pa55@127.0.0.1:{server.port}/desk"
    with chromium(tmp_path / "profile") as b:
        b.get(url)
        wait_until(lambda: text(b, "headline") == "Calls answered by ipc-new", 10, "the headline")
        assert "Nothing needs a human." in text(b, "attention")
        assert console_errors(b) == []
        hostile = member("ipc-old", STANDBY_SET, HOSTILE, eligible=False)
        server.publish(api.render(state(serving=False, members={"ipc-old": hostile}, pause={"operator": HOSTILE})))
        wait_until(lambda: text(b, "headline") == "NOBODY is answering calls", 5, "NOBODY")
        color = b.find_element("id", "headline").value_of_css_property("color")
        assert color == "rgba(192, 0, 24, 1)", color  # red
        assert HOSTILE in b.find_element("id", "tiles").text  # shown as text, never markup
        assert f"paused by {HOSTILE}" in text(b, "attention")
        assert b.execute_script("return window.pwned === undefined && !document.querySelector('#tiles img')")
        screenshot(b, "banners")
        assert server._loop is not None  # the agent hangs (as SIGSTOPped): its connections stay open, silent
        release = threading.Event()
        server._loop.call_soon_threadsafe(release.wait, 30)  # blocked until the page has noticed
        try:
            wait_until(lambda: "NO ANSWER from this agent" in text(b, "link"), 20, "the hung agent noticed")
        finally:
            release.set()
        wait_until(lambda: text(b, "link").startswith("live"), 10, "live again")
        server.stop()  # the agent dies: the page must say its data is old
        wait_until(lambda: "NO ANSWER from this agent" in text(b, "link"), 5, "the stale warning")
        assert "open ipc-old's agent" in text(b, "link")
        errors = [e for e in console_errors(b) if "desk.json" not in e.get("message", "")]
        assert errors == []  # only the failing polls of the stopped server
