"""An observer independent of the orchestrator: which lab services run on which
simulated IPC, read straight from /proc (not from the service manager, not over
SSH, not from ZooKeeper). Safety tests sample it every <= 50 ms."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from failover.lab.sim import MARKER


def _parse(cmd: list[str]) -> tuple[str, str, str] | None:
    try:
        i = cmd.index(MARKER)
    except ValueError:
        return None
    args = dict(zip(cmd[i + 1 :: 2], cmd[i + 2 :: 2], strict=False))
    try:
        return args["--lab"], args["--ipc"], args["--service"]
    except KeyError:
        return None


def snapshot(labid: str) -> dict[str, dict[str, str]]:
    """{ipc: {service: kernel state letter}} for live (non-zombie) service
    processes of this lab. 'T' (stopped, i.e. hung) still counts as present:
    a hung CTI can resume and answer calls."""
    out: dict[str, dict[str, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                raw = f.read()
            if MARKER.encode() not in raw:
                continue
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state in ("Z", "X"):
            continue
        parsed = _parse(raw.decode(errors="replace").split("\0"))
        if parsed and parsed[0] == labid:
            out.setdefault(parsed[1], {})[parsed[2]] = state
    return out


def line_status(ipc_dir: str) -> str:
    """The simulated board's line status, asked of the IPC's service manager
    directly (the IPC itself, not the orchestrator): up, alarm, down or unknown."""
    from failover.lab import simctl

    try:
        return str(simctl.request(ipc_dir, {"op": "status"}, timeout=1).get("line", "unknown"))
    except (OSError, ValueError):
        return "unknown"


@dataclass
class Sample:
    t: float
    running: dict[str, dict[str, str]]


@dataclass
class Recorder:
    """Samples in a background thread; `violations()` lists instants when a
    service in `exclusive` ran on two IPCs of the same cluster at once."""

    labid: str
    clusters: list[list[str]]
    interval: float = 0.025
    exclusive: tuple[str, ...] = ("cti", "ivr")
    samples: list[Sample] = field(default_factory=list)
    max_gap: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Recorder:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _run(self) -> None:
        # Sample on time even when the machine is busy (JVMs starting on 2 cores):
        # raise this thread's priority when we may (root).
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -15)
        except OSError:
            pass
        last = None
        while not self._stop.is_set():
            now = time.monotonic()
            self.samples.append(Sample(now, snapshot(self.labid)))
            if last is not None:
                self.max_gap = max(self.max_gap, now - last)
            last = now
            self._stop.wait(self.interval)

    def violations(self) -> list[tuple[float, str, list[str]]]:
        bad = []
        for s in self.samples:
            for ipcs in self.clusters:
                for svc in self.exclusive:
                    on = [i for i in ipcs if svc in s.running.get(i, {})]
                    if len(on) > 1:
                        bad.append((s.t, svc, on))
        return bad
