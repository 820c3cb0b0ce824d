"""Failover timing in the lab (issue: the agent), real 3-node ZooKeeper, agents
as real processes, 0.5 s monitor interval, 2 failed checks to declare a fault,
4 s ZooKeeper session.

- CTI fault -> standby serving: `kill cti` on the primary until the observer
  sees CTI and IVR running on the standby and both answer their probes;
  detection / fencing / promotion from the new primary's history entry.
- primary agent + IPC lost -> takeover: kill -9 of the primary's agent, its
  sshd and every service process at once (a power cut), until the standby
  serves; ZooKeeper session expiry + fence grace dominate.

Trials alternate direction (the old primary rejoins between trials).
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

from bench.common import save, stats_ms
from failover import ops
from failover.executor import tcp_probe
from failover.lab.lab import PlatformName
from failover.lab.observer import snapshot
from tests.cluster import Harness, wait_for

TRIALS = int(os.environ.get("FAILOVER_BENCH_TRIALS", "20"))


def _edit(doc: dict) -> None:
    doc["clusters"][0]["policy"] = {"max_failovers": 100}


def _probe_ok(h: Harness, ipc: str) -> bool:
    lab_ipc = h.lab.ipc(ipc)
    return all(tcp_probe(lab_ipc.address, lab_ipc.ports[s], "PING\n", "PONG", 0.3) for s in ("cti", "ivr"))


def _serving(h: Harness, ipc: str) -> bool:
    run = snapshot(h.lab.labid).get(ipc, {})
    return all(run.get(s) in ("S", "R") for s in ("cti", "ivr")) and _probe_ok(h, ipc)


def _steady(h: Harness, primary: str) -> None:
    standby = "ipc-b" if primary == "ipc-a" else "ipc-a"
    wait_for(
        lambda: (
            h.record().get("primary") == primary
            and h.member(standby).get("eligible") is True
            and h.member(standby).get("decision") == "none"
            and h.member(primary).get("decision") == "none"
        ),
        30,
        what="steady state",
    )


def _history_for(h: Harness, epoch: int) -> dict:
    return wait_for(
        lambda: next(
            (e.to_json() for e in h.store.history(200) if e.epoch == epoch and e.kind in ("failover", "takeover")),
            None,
        ),
        10,
        what="history",
    )


def cti_fault_trials(root: Path, platform: PlatformName = "lab", apart: bool = False) -> dict:
    total, det, stop, fen, pro = [], [], [], [], []
    with Harness(root, edit=_edit, platform=platform, apart=apart) as h:
        h.steady()
        primary = "ipc-a"
        for _ in range(TRIALS):
            standby = "ipc-b" if primary == "ipc-a" else "ipc-a"
            epoch = h.record()["epoch"]
            t0 = time.time()
            h.lab.fault(primary, "kill", "cti")
            wait_for(lambda s=standby: _serving(h, s), 30, interval=0.01, what="standby serving")
            total.append(time.time() - t0)
            e = _history_for(h, epoch + 1)
            det.append(e["detection_s"])
            stop.append(e["stop_s"])
            fen.append(e["fencing_s"])
            pro.append(e["promotion_s"])
            ops.rejoin(h.store, primary, "bench", "next trial")
            _steady(h, standby)
            primary = standby
        h.assert_never_both()
    return {
        "total": stats_ms(total),
        "detection": stats_ms(det),
        "stop_old": stats_ms(stop),
        "fencing": stats_ms(fen),
        "promotion": stats_ms(pro),
    }


def primary_loss_trials(root: Path) -> dict:
    total, det, fen, pro = [], [], [], []
    with Harness(root, edit=_edit) as h:
        h.steady()
        primary = "ipc-a"
        for _ in range(TRIALS):
            standby = "ipc-b" if primary == "ipc-a" else "ipc-a"
            epoch = h.record()["epoch"]
            pids = [p for p in h.pids(primary).values() if p]
            t0 = time.time()
            h.agents[primary].kill9()
            h.lab.fault(primary, "sshd-down")
            for p in pids:
                os.kill(p, signal.SIGKILL)
            wait_for(lambda s=standby: _serving(h, s), 60, interval=0.01, what="standby serving")
            total.append(time.time() - t0)
            e = _history_for(h, epoch + 1)
            # detection here: the loss until the standby could take P/leader
            # (the old session's expiry), from the wall clock.
            det.append(e["when"] - e["promotion_s"] - e["fencing_s"] - t0)
            fen.append(e["fencing_s"])
            pro.append(e["promotion_s"])
            h.lab.fault(primary, "sshd-up")
            h.agents[primary].start()
            ops.rejoin(h.store, primary, "bench", "next trial")
            _steady(h, standby)
            primary = standby
        h.assert_never_both()
    return {"total": stats_ms(total), "detection": stats_ms(det), "fencing": stats_ms(fen), "promotion": stats_ms(pro)}


def main() -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    res = {
        "settings": {
            "monitor_interval_s": 0.5,
            "failures_before_fault": 2,
            "session_timeout_s": 4.0,
            "zookeeper_nodes": 3,
            "trials": TRIALS,
        },
        "cti_fault_to_standby_serving": cti_fault_trials(root / "cti"),
        "primary_agent_and_ipc_lost_to_takeover": primary_loss_trials(root / "loss"),
    }
    save("agent", res)
    for name in ("cti_fault_to_standby_serving", "primary_agent_and_ipc_lost_to_takeover"):
        print(name)
        for part, s in res[name].items():
            print(
                f"  {part:<12} n={s['n']:<3} p50 {s['p50_ms']:>8.0f} ms  p95 {s['p95_ms']:>8.0f} ms  "
                f"max {s['max_ms']:>8.0f} ms"
            )
    return res


if __name__ == "__main__":
    main()
