"""A hung ZooKeeper server under the primary's agent (lab, 3 nodes, 4 s
session): SIGSTOP the server the agent is connected to and time how long until
the agent's connection is on another server (read from the kernel's socket
table every 10 ms). Each trial also checks that nothing moved: same epoch, CTI
and IVR up on the primary in every observer sample. kazoo alone would stay on
the silent server until the session expired (docs/resilience.md)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.common import save, stats_ms
from tests.cluster import Harness, wait_for

TRIALS = int(os.environ.get("FAILOVER_BENCH_TRIALS", "20")) // 2


def trials(root: Path) -> dict:
    took: list[float] = []
    moved = dropped = 0
    with Harness(root) as h:
        h.steady()
        assert h.recorder is not None
        for _ in range(TRIALS):
            node = h.zk_server_of("ipc-a")
            assert node is not None
            t0 = time.monotonic()
            node.sigstop()
            try:
                wait_for(lambda n=node: h.zk_server_of("ipc-a") not in (None, n), 15, interval=0.01, what="reconnected")
                took.append(time.monotonic() - t0)
                time.sleep(4.0)  # past the session timeout on the silent server
            finally:
                node.sigcont()
            time.sleep(2.0)
            rec = h.record()
            moved += rec.get("epoch") != 1 or rec.get("primary") != "ipc-a"
            dropped += sum(
                1 for x in h.recorder.samples if x.t >= t0 and not {"cti", "ivr"} <= set(x.running.get("ipc-a", {}))
            )
        h.assert_never_both()
    return {
        "sigstop_to_session_on_another_server": stats_ms(took),
        "role_changes": moved,
        "samples_without_cti_ivr_on_primary": dropped,
    }


def main() -> dict:
    res = {
        "settings": {
            "session_timeout_s": 4.0,
            "drop_after_s": round(4.0 / 3, 2),
            "zookeeper_nodes": 3,
            "trials": TRIALS,
        },
        **trials(Path(tempfile.mkdtemp(prefix="bench-zkhang-"))),
    }
    save("zk_hang", res)
    s = res["sigstop_to_session_on_another_server"]
    print(
        f"hung ZooKeeper server -> session on another server: n={s['n']} p50 {s['p50_ms']:.0f} ms "
        f"p95 {s['p95_ms']:.0f} ms max {s['max_ms']:.0f} ms; role changes {res['role_changes']}, "
        f"samples without CTI/IVR on the primary {res['samples_without_cti_ivr_on_primary']}"
    )
    return res


if __name__ == "__main__":
    main()
