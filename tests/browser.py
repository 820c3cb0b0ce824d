"""A real headless Chromium (Debian's chromium + chromium-driver) driven by
Selenium, for the status page's tests. Offline by construction: the driver is
named explicitly (Selenium Manager never runs, so it never reaches for the
network) and Chromium's own background traffic is switched off."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "desk"  # screenshots (git-ignored; docs/monitoring.md)
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PHONE = (390, 844)
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


@contextlib.contextmanager
def chromium(profile: Path, size: tuple[int, int] = (1200, 1000)) -> Iterator[WebDriver]:
    """One browser with a fresh profile; chromedriver and Chromium are always stopped."""
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={size[0]},{size[1]}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A session of its own (its leftovers go by process group) at a lower
    # priority: the lab's observer and agents sample and act on time beside it.
    service = Service(CHROMEDRIVER, popen_kw={"start_new_session": True, "preexec_fn": _lower_priority})
    driver = webdriver.Chrome(service=service, options=opts)
    try:
        yield driver
    finally:
        try:
            driver.quit()  # ends Chromium, then chromedriver
        finally:
            proc = getattr(service, "process", None)
            if proc is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # whatever quit left of that session
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)


def _lower_priority() -> None:
    os.nice(10)


def text(driver: WebDriver, element_id: str) -> str:
    try:
        return str(driver.find_element("id", element_id).text)
    except WebDriverException:
        return ""


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.025) -> Any:
    """The condition's value once true; fails with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def console_errors(driver: WebDriver) -> list[dict]:
    """SEVERE console entries since the last call (the log is drained)."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
