"""The plan's deployment shapes (issue: real deployment shapes): for each IPC
platform profile (`lab`, `systemd`, `windows`), with every agent on a host of
its own (network namespace) and the inventory's default HTTP settings:

- CTI fault -> standby serving (`kill cti` on the primary until CTI and IVR
  run on the standby and answer their probes), alternating direction, the old
  primary rejoined between trials;
- switchover -> new primary serving (`failover switchover --yes` as a real
  process), alternating direction.

Real 3-node ZooKeeper, real sshd per IPC, >= 20 trials each (FAILOVER_BENCH_TRIALS).
Targets: CTI fault p50 <= 2.0 s, switchover p50 <= 1.2 s on every profile."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench import agent_bench, switchover_bench
from bench.common import save

PROFILES = ("lab", "systemd", "windows")
TARGETS_MS = {"cti_fault_to_standby_serving": 2000, "switchover_to_new_primary_serving": 1200}


def main() -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-shapes-"))
    res: dict = {"agents": "on hosts of their own (default HTTP bind and port)", "targets_p50_ms": TARGETS_MS}
    for p in PROFILES:
        cti = agent_bench.cti_fault_trials(root / f"{p}-cti", platform=p, apart=True)
        sw = switchover_bench.trials(root / f"{p}-switchover", platform=p, apart=True)
        res[p] = {
            "cti_fault_to_standby_serving": cti["total"],
            "cti_fault_phases": {k: v for k, v in cti.items() if k != "total"},
            "switchover_to_new_primary_serving": sw["issued_to_serving"],
            "switchover_to_cli_exit": sw["issued_to_cli_exit"],
            "switchover_agents_only": sw["agents_request_to_serving"],
        }
        for k in TARGETS_MS:
            s = res[p][k]
            print(f"{p:<8} {k:<36} n={s['n']} p50 {s['p50_ms']:.0f} ms  p95 {s['p95_ms']:.0f} ms", end="")
            print(f"  max {s['max_ms']:.0f} ms")
    save("shapes", res)
    return res


if __name__ == "__main__":
    main()
