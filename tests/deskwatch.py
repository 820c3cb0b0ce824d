"""Watching the status page through a lab failover: how long after ZooKeeper
records the new primary (and after /proc shows it serving) a real browser
shows it. Shared by tests/test_desk_lab.py (a generous deadline) and
bench/http_bench.py (the number)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import text, wait_until
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


def _first_times(h: Harness, new: str, stop: threading.Event, out: dict[str, float]) -> None:
    """Monotonic times the record names `new` primary, and /proc shows it serving."""
    while not stop.is_set() and len(out) < 2:
        now = time.monotonic()
        if "recorded" not in out and h.record().get("primary") == new:
            out["recorded"] = now
        if "serving" not in out and h.serving(new):
            out["serving"] = now
        time.sleep(0.01)


def failover_seen(h: Harness, b: WebDriver, timeout: float = 30.0) -> dict[str, float]:
    """kill -9 CTI on ipc-a (the plan's rule 2) while `b` shows the page; seconds
    from the record naming ipc-b to the ipc-b tile reading PRIMARY, and from
    ipc-b serving (observer) to the headline naming it."""
    times: dict[str, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_first_times, args=(h, "ipc-b", stop, times), daemon=True)
    watcher.start()
    try:
        h.lab.fault("ipc-a", "kill", "cti")
        role = wait_until(lambda: _tile_role(b, "ipc-b") == "PRIMARY" and time.monotonic(), timeout, "ipc-b PRIMARY")
        head = wait_until(
            lambda: text(b, "headline") == "Calls answered by ipc-b" and time.monotonic(), timeout, "the headline"
        )
        wait_until(lambda: len(times) == 2, timeout, "the record and the observer")
    finally:
        stop.set()
        watcher.join(5)
    return {
        "record_to_page_role_s": round(max(0.0, role - times["recorded"]), 3),
        "serving_to_page_headline_s": round(max(0.0, head - times["serving"]), 3),
    }


def _tile_role(b: WebDriver, ipc: str) -> str:
    script = (
        "for (const t of document.querySelectorAll('.tile')) {"
        "  if (t.querySelector('h2').firstChild.textContent.trim() === arguments[0])"
        "    return t.querySelector('.role').textContent; }"
        "return '';"
    )
    return str(b.execute_script(script, ipc) or "")
