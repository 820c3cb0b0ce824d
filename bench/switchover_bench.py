"""Switchover end to end (issue: the on-call CLI): from the moment the command
is issued (`failover switchover --yes`, a real process) until the new primary
serves — CTI and IVR running and answering their probes — over >= 20 runs,
alternating direction. Lab: 3-node ZooKeeper, 0.5 s monitor interval."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.agent_bench import _probe_ok
from bench.common import save, stats_ms
from failover.lab.lab import PlatformName
from tests.cluster import FAILOVER, Harness, wait_for

RUNS = int(os.environ.get("FAILOVER_BENCH_TRIALS", "20"))


def trials(root: Path, platform: PlatformName = "lab", apart: bool = False) -> dict:
    """Switchovers alternating direction: issued -> new primary serving, and -> the CLI's exit."""
    total, cli_total, agents = [], [], []
    with Harness(root, platform=platform, apart=apart) as h:
        h.steady()
        primary = "ipc-a"
        for _ in range(RUNS):
            target = "ipc-b" if primary == "ipc-a" else "ipc-a"
            wait_for(
                lambda t=target: h.member(t).get("eligible") is True and h.member(t).get("decision") == "none",
                30,
                what="eligible standby",
            )
            t0 = time.monotonic()
            p = subprocess.Popen(
                [FAILOVER, "switchover", "--yes", "-i", str(h.lab.inventory_path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for(lambda t=target: h.serving(t) and _probe_ok(h, t), 30, interval=0.01, what="new primary serving")
            total.append(time.monotonic() - t0)
            p.wait(60)
            cli_total.append(time.monotonic() - t0)
            # The agents' own part: from the old primary acting on the request to
            # CTI/IVR answering on the new one (without the CLI's start-up).
            epoch = h.record()["epoch"]
            entry = wait_for(
                lambda e=epoch: next((x for x in h.store.history(50) if x.epoch == e and x.kind == "switchover"), None),
                10,
                what="switchover history",
            )
            agents.append(float(entry.get("duration_s")))
            primary = target
        h.assert_never_both()
    return {
        "issued_to_serving": stats_ms(total),
        "issued_to_cli_exit": stats_ms(cli_total),
        "agents_request_to_serving": stats_ms(agents),
        "runs": RUNS,
    }


def main() -> dict:
    res = trials(Path(tempfile.mkdtemp(prefix="bench-switchover-")))
    save("switchover", res)
    for k in ("issued_to_serving", "issued_to_cli_exit", "agents_request_to_serving"):
        s = res[k]
        print(f"{k:<20} n={s['n']} p50 {s['p50_ms']:.0f} ms  p95 {s['p95_ms']:.0f} ms  max {s['max_ms']:.0f} ms")
    return res


if __name__ == "__main__":
    main()
