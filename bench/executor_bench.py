"""Executor latency over loopback against the lab's real sshd (issue: SSH executors).

- new connection + exec: TCP connect, key exchange, auth, one command;
- exec on the pooled connection: one channel per command;
- batched status: every service of one host in one round trip (exec channel);
- long-lived session: the same status through one remote session fed over
  stdin (no sshd session setup, no process start per command).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import save, stats_ms, table, timed
from failover import executor as ex
from failover import inventory as inv_mod
from failover.lab.lab import Lab

RUNS = 60


def main() -> dict:
    lab = Lab(root=Path(tempfile.mkdtemp(prefix="bench-exec-")) / "lab", zk_count=1)
    lab.up()
    try:
        cluster = inv_mod.load(lab.inventory_path).cluster("lab")

        def fresh() -> None:
            with ex.Executor(cluster) as e:
                e.run("ipc-a", "true", 10, check=True)

        with ex.Executor(cluster) as e:
            pooled = timed(lambda: e.run("ipc-a", "true", 10, check=True), RUNS)
            batched = timed(lambda: e.status_all("ipc-a"), RUNS)
            session = timed(lambda: e.status_fast("ipc-a"), RUNS)
        new = timed(fresh, RUNS)
    finally:
        lab.down()
    rows = [
        ("new connection + exec", stats_ms(new)),
        ("exec on pooled connection", stats_ms(pooled)),
        ("batched status (exec channel)", stats_ms(batched)),
        ("batched status (long-lived session)", stats_ms(session)),
    ]
    res = {name: s for name, s in rows}
    res["pooled_speedup_vs_new_p50"] = round(
        res["new connection + exec"]["p50_ms"] / res["exec on pooled connection"]["p50_ms"], 2
    )
    res["session_speedup_vs_exec_status_p50"] = round(
        res["batched status (exec channel)"]["p50_ms"] / res["batched status (long-lived session)"]["p50_ms"],
        2,
    )
    res["status_round_trips"] = 1
    save("executor", res)
    print(table(rows))
    print(
        f"pooled exec {res['pooled_speedup_vs_new_p50']}x faster than a new connection (p50); "
        f"long-lived session {res['session_speedup_vs_exec_status_p50']}x faster than an exec channel "
        "for batched status (p50)"
    )
    return res


if __name__ == "__main__":
    main()
