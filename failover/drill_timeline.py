"""What the drill saw while it ran: every service's state on each IPC, sampled
over SSH in the background (`Timeline`), and what a supervisor reads from it —
which IPC answered calls over which interval (`answering_intervals`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from failover import executor as exe
from failover.inventory import Cluster
from failover.layouts import APP_SERVICES

NOBODY = "nobody"
BOTH = "two IPCs"  # the one thing that must never happen; drawn so nobody can miss it


@dataclass
class Sample:
    t: float
    ipc: str
    states: dict[str, str]


@dataclass(frozen=True)
class Interval:
    start: float
    end: float
    who: str  # an IPC's name, NOBODY or BOTH


class Timeline:
    """Every service's state on each IPC, sampled over SSH during the drill."""

    def __init__(self, cluster: Cluster, interval: float = 0.3) -> None:
        self.cluster = cluster
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ex = exe.Executor(cluster, exe.RetryPolicy(attempts=1, total_seconds=1))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="drill-timeline")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self._ex.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for i in self.cluster.ipcs:
                try:
                    st = self._ex.status_fast(i.name)
                    states = {s: v.value for s, v in st.states.items()}
                except exe.ExecError:
                    states = {s: "UNKNOWN" for s in self.cluster.services}
                self.samples.append(Sample(time.time(), i.name, states))
            self._stop.wait(self.interval)


def answers_calls(states: dict[str, str]) -> bool:
    """An IPC answers calls when CTI and IVR both run there (the plan's serving
    layout; a standby never runs them)."""
    return all(states.get(s) == "RUNNING" for s in APP_SERVICES)


def answering_intervals(samples: list[Sample], ipcs: list[str], end: float) -> list[Interval]:
    """Who answered calls from the first sample to `end`, merged into
    intervals: an IPC's name, NOBODY, or BOTH. Each IPC's latest sample
    stands until its next one; before an IPC's first sample it counts as not
    answering (the drill has not seen it yet)."""
    latest: dict[str, bool] = dict.fromkeys(ipcs, False)
    out: list[Interval] = []
    for s in sorted(samples, key=lambda x: x.t):
        if s.ipc not in latest:
            continue
        latest[s.ipc] = answers_calls(s.states)
        who = _who(latest)
        if out and out[-1].who == who:
            continue
        if out:
            out[-1] = Interval(out[-1].start, s.t, out[-1].who)
        out.append(Interval(s.t, end, who))
    if out:
        out[-1] = Interval(out[-1].start, max(end, out[-1].start), out[-1].who)
    return out


def _who(latest: dict[str, bool]) -> str:
    up = [name for name, yes in latest.items() if yes]
    if not up:
        return NOBODY
    return up[0] if len(up) == 1 else BOTH
