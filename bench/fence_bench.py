"""Fencing you can prove (issue: fence devices): failover timing when the
primary IPC loses its power, in the plan's shape (Windows IPCs, every agent on
a host of its own, real 3-node ZooKeeper, real sshd), each IPC with the lab's
fence device in the inventory (failover/lab/fence.py, run by the agents):

- power cut -> standby serving: the primary IPC powered off (every process of
  it SIGKILLed: SSH refused, probes fail) with both agents alive, until CTI
  and IVR run on the standby and answer their probes; detection / stop /
  fencing / promotion and the proof's kind from the new primary's history
  entry;
- agent killed + power cut -> standby serving: kill -9 of the primary's agent
  and its IPC powered off at the same moment.

Between trials the old primary is powered on (the driver alone starts at
boot), its agent started again if it was killed, rejoined as standby; trials
alternate direction. >= 20 trials each (FAILOVER_BENCH_TRIALS).
Targets: power cut p50 <= 3.5 s; agent killed + power cut p50 <= 5 s."""

from __future__ import annotations

import collections
import os
import tempfile
import time
from pathlib import Path

from bench.agent_bench import _edit, _history_for, _serving, _steady
from bench.common import save, stats_ms
from failover import ops
from failover.lab.lab import PlatformName
from tests.cluster import Harness, wait_for

TRIALS = int(os.environ.get("FAILOVER_BENCH_TRIALS", "20"))
PLATFORM: PlatformName = "windows"  # the plan's IPCs
POWER_CUT = "power_cut_to_standby_serving"
AGENT_AND_POWER = "agent_killed_and_power_cut_to_standby_serving"
TARGETS_MS = {POWER_CUT: 3500, AGENT_AND_POWER: 5000}
PHASES = (("detection", "detection_s"), ("stop_old", "stop_s"), ("fencing", "fencing_s"), ("promotion", "promotion_s"))


def _other(ipc: str) -> str:
    return "ipc-b" if ipc == "ipc-a" else "ipc-a"


def _summary(total: list[float], entries: list[dict], t0s: list[float], wall_detection: bool) -> dict:
    """p50/p95/max of the total and of each phase the history entries carry
    (a phase no entry has is left out), and how each takeover was proven."""
    out: dict = {"total": stats_ms(total)}
    for name, key in PHASES:
        if wall_detection and name == "detection":
            # The agent died with its IPC: detection is the loss until the
            # standby could act (ZooKeeper session expiry), from the wall clock.
            vals = [
                e["when"] - e.get("promotion_s", 0) - e.get("fencing_s", 0) - t0
                for e, t0 in zip(entries, t0s, strict=True)
                if isinstance(e.get("when"), int | float)
            ]
        else:
            vals = [float(e[key]) for e in entries if isinstance(e.get(key), int | float)]
        if vals:
            out[name] = stats_ms(vals)
    kinds = collections.Counter(str((e.get("proof") or {}).get("kind", "none")) for e in entries)
    out["proofs"] = dict(kinds)
    return out


def _power_back(h: Harness, ipc: str, restart_agent: bool) -> None:
    """Power the old primary on (the driver alone at boot), its agent back
    if it was killed, and rejoin it as standby."""
    h.power_on(ipc)
    if restart_agent:
        h.agents[ipc].start()
        wait_for(
            lambda: h.member(ipc).get("agent", {}).get("pid") == h.agents[ipc].pid, 20, what="restarted agent reporting"
        )
    ops.rejoin(h.store, ipc, "bench", "powered on again: next trial")


def power_cut_trials(root: Path, kill_agent: bool = False, platform: PlatformName = PLATFORM) -> dict:
    """The primary IPC powered off (and, with kill_agent, its agent kill -9ed
    at the same moment) until the standby serves; TRIALS trials."""
    total: list[float] = []
    entries: list[dict] = []
    t0s: list[float] = []
    with Harness(root, edit=_edit, platform=platform, apart=True) as h:
        assert all(i.fence is not None for i in h.cluster.ipcs), "the lab inventory has no fence device"
        h.steady()
        primary = "ipc-a"
        for _ in range(TRIALS):
            standby = _other(primary)
            epoch = h.record()["epoch"]
            t0 = time.time()
            if kill_agent:
                h.agents[primary].kill9()
            h.power_off(primary)
            wait_for(lambda s=standby: _serving(h, s), 60 if kill_agent else 30, interval=0.01, what="standby serving")
            total.append(time.time() - t0)
            t0s.append(t0)
            entries.append(_history_for(h, epoch + 1))
            _power_back(h, primary, restart_agent=kill_agent)
            _steady(h, standby)
            primary = standby
        h.assert_never_both()
    return _summary(total, entries, t0s, wall_detection=kill_agent)


def main() -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-fence-"))
    res: dict = {
        "settings": {
            "platform": PLATFORM,
            "agents": "on hosts of their own",
            "fence_device": "the lab's (failover/lab/fence.py), timeout 5 s",
            "monitor_interval_s": 0.5,
            "failures_before_fault": 2,
            "session_timeout_s": 4.0,
            "zookeeper_nodes": 3,
            "trials": TRIALS,
        },
        "targets_p50_ms": TARGETS_MS,
        POWER_CUT: power_cut_trials(root / "power-cut"),
        AGENT_AND_POWER: power_cut_trials(root / "agent-and-power", kill_agent=True),
    }
    save("fence", res)
    for name, target in TARGETS_MS.items():
        print(f"{name} (target p50 <= {target} ms), proofs {res[name]['proofs']}")
        for part, s in res[name].items():
            if part == "proofs":
                continue
            print(
                f"  {part:<10} n={s['n']:<3} p50 {s['p50_ms']:>8.0f} ms  p95 {s['p95_ms']:>8.0f} ms  "
                f"max {s['max_ms']:>8.0f} ms"
            )
    return res


if __name__ == "__main__":
    main()
