"""`make demo`: the main job on the built-in lab.

Brings up 3 ZooKeeper nodes and two simulated IPCs behind real sshd, starts an
agent per IPC, shows `failover status`, kills CTI on the primary and shows the
plan's rule 2 carried out (the standby serving, epoch + 1), rejoins the old
primary, switches back with `failover switchover`, runs the Sunday disaster
drill (runbooks/sunday-drill.yaml) and prints its report, then stops
everything it started (`--keep` leaves the lab and agents running).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from failover import inventory, zkstore
from failover.lab.lab import Lab
from failover.lab.procs import kill_and_wait

FAILOVER = str(Path(sys.executable).with_name("failover"))


def run(*args: str, env: dict) -> None:
    print(f"\n$ failover {' '.join(args)}", flush=True)
    subprocess.run([FAILOVER, *args], env=env, check=False)


def wait(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def main() -> int:
    keep = "--keep" in sys.argv
    root = Path(tempfile.mkdtemp(prefix="failover-demo-"))
    lab = Lab(root=root / "lab")
    print(
        f"Bringing up the lab in {lab.root}: 3 ZooKeeper nodes, ipc-a (primary) and ipc-b (standby) "
        "behind their own sshd ...",
        flush=True,
    )
    t0 = time.monotonic()
    lab.up()
    print(f"lab {lab.labid} up in {time.monotonic() - t0:.2f} s", flush=True)
    env = {**os.environ, "FAILOVER_INVENTORY": str(lab.inventory_path), "FAILOVER_LAB_DIR": str(lab.root)}
    agents = []
    try:
        for ipc in ("ipc-a", "ipc-b"):
            log = (root / f"agent-{ipc}.log").open("w")
            agents.append(
                subprocess.Popen(
                    [FAILOVER, "agent", "--ipc", ipc, "--state-dir", str(root / "state")],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        c = inventory.load(lab.inventory_path).cluster()
        zk = zkstore.connect(c)
        zk.start(timeout=15)
        store = zkstore.Store(zk, c.zookeeper.path)

        def primary() -> str | None:
            v = store.cluster()
            return v.data.primary if v else None

        def settled(want: str) -> bool:
            other = "ipc-b" if want == "ipc-a" else "ipc-a"
            m = store.member(other)
            return primary() == want and m is not None and m.decision == "none"

        def eligible(ipc: str) -> bool:
            m = store.member(ipc)
            return m is not None and m.eligible

        wait(lambda: settled("ipc-a") and eligible("ipc-b"), 30, "the agents")
        run("status", env=env)
        print("\n# The plan's rule 2: CTI dies on the primary ...", flush=True)
        run("lab", "fault", "ipc-a", "kill", "cti", env=env)

        def promoted() -> bool:
            m = store.member("ipc-b")
            if m is None:
                return False
            cti = ((m.obs or {}).get("services") or {}).get("cti", {}).get("state")
            return m.role == "primary" and m.decision == "none" and cti == "RUNNING"

        wait(lambda: primary() == "ipc-b" and promoted(), 30, "the failover")
        time.sleep(0.6)  # one more cycle: both agents' sentences describe the new state
        run("status", env=env)
        print("\n# ipc-a is repaired: it rejoins as standby; then a planned switchover back ...", flush=True)
        run("rejoin", "ipc-a", "--reason", "demo: CTI repaired", env=env)
        run("switchover", "--yes", "--reason", "demo: back to the preferred primary", env=env)
        print(
            "\n# The weekend drill, rehearsed in the lab: line fault, CTI fault, IVR hang, standby fault ...",
            flush=True,
        )
        runbook = Path(__file__).resolve().parents[1] / "runbooks" / "sunday-drill.yaml"
        reports = root / "drill-reports"
        run("drill", "run", str(runbook), "--window", "00:00-23:59", "--reports", str(reports), "--yes", env=env)
        run("status", env=env)
        run("history", "-n", "8", env=env)
        for f in sorted(reports.glob("*.md")):
            print(
                f"\ndrill report: {f} (and {f.with_suffix('.html').name}, {f.with_suffix('.svg').name}: "
                "the timeline picture)"
            )
        zk.stop()
        zk.close()
    finally:
        if keep:
            print(
                f"\nkept running: FAILOVER_INVENTORY={lab.inventory_path} failover status; "
                f"agent PIDs {[a.pid for a in agents]}; failover lab down --dir {lab.root}"
            )
        else:
            for a in agents:
                kill_and_wait(a.pid)
                a.wait(timeout=5)
            stuck = lab.down()
            print(f"\nagents and lab stopped: {'no process left' if not stuck else f'STUCK PIDs {stuck}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
