"""Watching the status page through a lab failover: how long after ZooKeeper
records the new primary (and after /proc shows it serving) a real browser
shows it. Shared by tests/test_desk_lab.py (a generous deadline) and
bench/http_bench.py (the number)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from selenium.webdriver.remote.webdriver import WebDriver

from failover import zkstore
from tests.browser import wait_until
from tests.cluster import Harness

TOKEN_ENV, TOKEN = "FAILOVER_TEST_HTTP_TOKEN", "desk-test-token"
BASIC = ("desk", "pa55-desk")


def with_auth(basic_file: Path):  # type: ignore[no-untyped-def]
    """A Harness `edit`: both agents' endpoints behind a bearer token (agent to
    agent: the failsafe lease) and basic auth (what a browser signs in with)."""
    basic_file.write_text(":".join(BASIC) + "\n")

    def edit(doc: dict) -> None:
        for ipc in doc["clusters"][0]["ipcs"]:
            ipc.setdefault("http", {})["auth"] = {"token_env": TOKEN_ENV, "basic_file": str(basic_file)}

    return edit


def desk_url(h: Harness, ipc: str) -> str:
    """The page on `ipc`'s agent, signed in (user:password@: a browser's own way)."""
    return h.url(ipc, "/desk").replace("http://", f"http://{BASIC[0]}:{BASIC[1]}@", 1)


def _watch_record(h: Harness, new: str, out: dict[str, float]) -> None:
    """The monotonic time ZooKeeper records `new` as primary: a data watch,
    not a polling loop (this process also runs the observer, which must sample
    on time)."""

    def seen(data: bytes | None, *_: Any) -> bool:
        if data and zkstore.loads(data).get("primary") == new:
            out.setdefault("recorded", time.monotonic())
            return False  # done watching
        return True

    assert h.zk is not None
    h.zk.DataWatch(h.store.cluster_path, seen)


def _first_serving(h: Harness, ipc: str, after: float) -> float | None:
    """The observer's first sample (after `after`) with CTI and IVR running on `ipc`."""
    assert h.recorder is not None
    for smp in list(h.recorder.samples):
        run = smp.running.get(ipc, {})
        if smp.t >= after and all(s in run and run[s] != "T" for s in ("cti", "ivr")):
            return smp.t
    return None


# Installed in the page by the test (not part of the product): notes, on the
# browser's wall clock, when the ipc-b tile first reads PRIMARY and when the
# headline first names ipc-b, so the test reads it now and then instead of
# hammering the browser while the agents fail over.
SPY = """
window.__seen = {};
const tileRole = (name) => {
  for (const t of document.querySelectorAll('.tile'))
    if (t.querySelector('h2').firstChild.textContent.trim() === name) return t.querySelector('.role').textContent;
  return '';
};
const look = () => {
  if (!window.__seen.role && tileRole(arguments[0]) === 'PRIMARY') window.__seen.role = Date.now();
  if (!window.__seen.head && document.getElementById('headline').textContent === arguments[1])
    window.__seen.head = Date.now();
};
new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
look();
"""


def failover_seen(h: Harness, b: WebDriver, timeout: float = 30.0) -> dict[str, float]:
    """kill -9 CTI on ipc-a (the plan's rule 2) while `b` shows the page; seconds
    from the record naming ipc-b to the ipc-b tile reading PRIMARY, and from
    ipc-b serving (observer) to the headline naming it."""
    times: dict[str, float] = {}
    b.execute_script(SPY, "ipc-b", "Calls answered by ipc-b")
    _watch_record(h, "ipc-b", times)
    t0 = time.monotonic()
    wall = time.time() - t0  # monotonic -> the browser's wall clock (one machine)
    h.lab.fault("ipc-a", "kill", "cti")
    seen = wait_until(
        lambda: b.execute_script("const s = window.__seen; return s.role && s.head ? s : null;"),
        timeout,
        "ipc-b PRIMARY and the headline on the page",
        interval=0.2,
    )
    wait_until(lambda: "recorded" in times, timeout, "the record")
    serving = wait_until(lambda: _first_serving(h, "ipc-b", t0), timeout, "the observer")
    return {
        "record_to_page_role_s": round(max(0.0, seen["role"] / 1000 - wall - times["recorded"]), 3),
        "serving_to_page_headline_s": round(max(0.0, seen["head"] / 1000 - wall - serving), 3),
    }
