"""Drained switchover (issue 16): 30 simulated calls of 20-60 s on the
primary, `failover switchover --drain --yes` (a real process), and three
numbers per run: the time from the command to the new primary serving (the
drain's length, set by the longest call), the calls cut (the simulator's
count: the target is 0), and the time from "calls = 0" (the simulator's own
count, polled every 10 ms) to the new primary serving, CTI and IVR answering
(target <= 1.2 s, as a plain switchover). Each drained run (ipc-a -> ipc-b)
is followed by a plain switchover back, measured the same way: the baseline
under the machine's load of the moment. Lab: 3-node ZooKeeper, 0.5 s monitor
interval."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.agent_bench import _probe_ok
from bench.common import save, stats_ms
from failover.lab import simctl
from tests.cluster import FAILOVER, Harness, wait_for

RUNS = int(os.environ.get("FAILOVER_BENCH_DRAIN_TRIALS", "3"))
CALLS, MIN_S, MAX_S = 30, 20.0, 60.0
TARGET_ZERO_TO_SERVING_S = 1.2


def _calls(h: Harness, ipc: str, **req: object) -> dict:
    return simctl.request(h.lab.ipc(ipc).dir, {"op": "calls", **req}, timeout=5)


def one_run(h: Harness, primary: str, target: str) -> tuple[float, float, int]:
    """(issued -> serving, calls = 0 -> serving, calls cut)."""
    wait_for(
        lambda: h.member(target).get("eligible") is True and h.member(target).get("decision") == "none",
        30,
        what="eligible standby",
    )
    _calls(h, primary, action="load", count=CALLS, min=MIN_S, max=MAX_S, rate=0.0)
    cut0 = _calls(h, primary, action="stats")["cut"]
    t0 = time.monotonic()
    p = subprocess.Popen(
        [FAILOVER, "switchover", "--drain", "--max-wait", "5m", "--yes", "-i", str(h.lab.inventory_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        t_zero = wait_for(
            lambda: _calls(h, primary, action="stats")["active"] == 0 and time.monotonic(),
            MAX_S + 30,
            interval=0.01,
            what="calls = 0",
        )
        wait_for(lambda: h.serving(target) and _probe_ok(h, target), 30, interval=0.01, what="new primary serving")
        t_serving = time.monotonic()
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    cut = _calls(h, primary, action="stats")["cut"] - cut0
    return t_serving - t0, t_serving - t_zero, cut


def plain_run(h: Harness, target: str) -> float:
    """A plain switchover in the same lab, same moment: issued -> serving (the
    baseline "as a plain switchover"; this 2-core machine's load varies)."""
    wait_for(lambda: h.member(target).get("eligible") is True, 30, what="eligible standby")
    t0 = time.monotonic()
    p = subprocess.run(
        [FAILOVER, "switchover", "--yes", "-i", str(h.lab.inventory_path)], capture_output=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    wait_for(lambda: h.serving(target) and _probe_ok(h, target), 30, interval=0.01, what="new primary serving")
    return time.monotonic() - t0


def main() -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    handover, zero_to_serving, cut, plain = [], [], [], []
    with Harness(root) as h:
        h.steady()
        primary = "ipc-a"
        for _ in range(RUNS):
            target = "ipc-b" if primary == "ipc-a" else "ipc-a"
            a, b, c = one_run(h, primary, target)
            handover.append(a)
            zero_to_serving.append(b)
            cut.append(c)
            plain.append(plain_run(h, primary))  # and back, plain
        h.assert_never_both()
    res = {
        "issued_to_serving": stats_ms(handover),
        "calls_zero_to_serving": stats_ms(zero_to_serving),
        "calls_cut": cut,
        "plain_issued_to_serving": stats_ms(plain),
        "target_zero_to_serving_ms": TARGET_ZERO_TO_SERVING_S * 1000,
        "runs": RUNS,
        "settings": f"{CALLS} calls of {MIN_S:g}-{MAX_S:g} s on the primary, --max-wait 5m, monitor 0.5 s",
    }
    save("drain", res)
    for k in ("issued_to_serving", "calls_zero_to_serving", "plain_issued_to_serving"):
        s = res[k]
        print(f"{k:<22} n={s['n']} p50 {s['p50_ms']:.0f} ms  p95 {s['p95_ms']:.0f} ms  max {s['max_ms']:.0f} ms")
    print(f"calls cut per run: {cut}")
    return res


if __name__ == "__main__":
    main()
