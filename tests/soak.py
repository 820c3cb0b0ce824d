"""Seeded fault soak: a random sequence of real faults against the lab with
agents running; after each, the cluster is restored the way an operator would
(restore the fault, restart what died, rejoin what was fenced). Reports faults
injected, failovers, time until calls are served again per fault, and the
instants with CTI/IVR on two IPCs (must be 0).

  python -m tests.soak [--seed N] [--faults N] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from failover import ops
from tests.cluster import Harness, wait_for

FAULTS = (
    "cti-kill",
    "ivr-hang",
    "line-alarm",
    "standby-kcxp-kill",
    "primary-agent-kill9",
    "primary-agent-sigstop",
    "zk-leader-kill9",
    "zk-leader-sigstop",
    "standby-agent-kill9",
)


def _edit(doc: dict) -> None:
    doc["clusters"][0]["policy"] = {"max_failovers": 100}


def serving(h: Harness) -> str | None:
    for ipc in ("ipc-a", "ipc-b"):
        if h.serving(ipc):
            return ipc
    return None


def steady(h: Harness, timeout: float = 60) -> str:
    """Exactly one primary serving and an eligible standby; returns the primary."""

    def ok() -> str | None:
        p = h.record().get("primary")
        if p not in ("ipc-a", "ipc-b"):
            return None
        o = "ipc-b" if p == "ipc-a" else "ipc-a"
        mp, mo = h.member(p), h.member(o)
        good = (
            mp.get("leader")
            and mp.get("decision") == "none"
            and mo.get("eligible")
            and mo.get("decision") == "none"
            and h.serving(p)
        )
        return p if good else None

    return wait_for(ok, timeout, what="steady state")


def inject(h: Harness, kind: str, primary: str, rnd: random.Random) -> None:
    standby = "ipc-b" if primary == "ipc-a" else "ipc-a"
    if kind == "cti-kill":
        h.lab.fault(primary, "kill", "cti")
    elif kind == "ivr-hang":
        h.lab.fault(primary, "hang", "ivr")
    elif kind == "line-alarm":
        h.lab.fault(primary, "line-alarm")
    elif kind == "standby-kcxp-kill":
        h.lab.fault(standby, "kill", "kcxp")
    elif kind == "primary-agent-kill9":
        h.agents[primary].kill9()
        if rnd.random() < 0.5:  # within the grace: a supervised restart
            time.sleep(rnd.uniform(0.2, 2.0))
            h.agents[primary].start()
    elif kind == "primary-agent-sigstop":
        h.agents[primary].sigstop()
        time.sleep(rnd.uniform(1.0, 7.0))
        h.agents[primary].sigcont()
    elif kind == "standby-agent-kill9":
        h.agents[standby].kill9()
        time.sleep(rnd.uniform(0.2, 3.0))
        h.agents[standby].start()
    elif kind == "zk-leader-kill9":
        node = next((n for n in h.lab.zk if n.mode() == "leader"), h.lab.zk[0])
        node.kill9()
        time.sleep(rnd.uniform(1.0, 4.0))
        node.start()
    elif kind == "zk-leader-sigstop":
        node = next((n for n in h.lab.zk if n.mode() == "leader"), h.lab.zk[0])
        node.sigstop()
        time.sleep(rnd.uniform(1.0, 6.0))
        node.sigcont()


def restore(h: Harness, kind: str, primary: str) -> None:
    """What the on-call engineer does once the fault is understood."""
    time.sleep(2.0 if kind not in ("cti-kill", "ivr-hang") else 0.5)
    for ipc in ("ipc-a", "ipc-b"):
        h.lab.fault(ipc, "restore")
        a = h.agents[ipc]
        if a.proc is None or a.proc.poll() is not None:
            a.start()
    for n in h.lab.zk:
        if not n.running():
            n.start()
    if kind == "line-alarm":  # a board-down primary: switch over, then it rejoins
        standby = "ipc-b" if primary == "ipc-a" else "ipc-a"
        wait_for(lambda: h.member(standby).get("eligible"), 30, what="standby eligible")
        h.store.create_request(ops.new_request("switchover", standby, "soak", "board down", frm=primary))
        wait_for(lambda: h.record().get("primary") == standby, 30, what="switchover")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rec = h.record()
        fenced = [i for i, r in rec.get("roles", {}).items() if r == "fenced" or i in rec.get("board_down", [])]
        fenced = [i for i in fenced if i != rec.get("primary")]
        for i in fenced:
            try:
                ops.rejoin(h.store, i, "soak", "restored")
            except ops.Refused:
                pass
        try:
            steady(h, 5)
            return
        except AssertionError:
            continue
    steady(h, 5)


def run(seed: int, faults: int, budget: float, root: Path) -> dict:
    rnd = random.Random(seed)
    print(f"soak: seed {seed} (replay: python -m tests.soak --seed {seed} --faults {faults})", flush=True)
    results = []
    t_start = time.monotonic()
    with Harness(root, edit=_edit) as h:
        h.steady()
        primary = steady(h)
        for n in range(faults):
            if time.monotonic() - t_start > budget:
                break
            kind = rnd.choice(FAULTS)
            epoch = h.record()["epoch"]
            t0 = time.monotonic()
            inject(h, kind, primary, rnd)
            # time until calls are served again (0 if they never stopped)
            assert h.recorder is not None
            served_again = None
            while time.monotonic() - t0 < 60:
                if serving(h):
                    down = [
                        x
                        for x in h.recorder.samples
                        if x.t >= t0
                        and not any(
                            {"cti", "ivr"} <= set(x.running.get(i, {}))
                            and "T" not in (x.running[i].get("cti"), x.running[i].get("ivr"))
                            for i in ("ipc-a", "ipc-b")
                        )
                    ]
                    served_again = (max(x.t for x in down) - t0) if down else 0.0
                    if not down or time.monotonic() - max(x.t for x in down) > 1.0:
                        break
                time.sleep(0.05)
            restore(h, kind, primary)
            new_primary = steady(h)
            failover = h.record()["epoch"] > epoch
            results.append(
                {
                    "n": n + 1,
                    "fault": kind,
                    "failover": failover,
                    "from": primary,
                    "to": new_primary,
                    "recover_s": round(served_again, 3) if served_again is not None else None,
                }
            )
            print(
                f"  {n + 1:>3} {kind:<22} {'role change' if failover else 'no role change':<15} "
                f"calls back in {served_again if served_again is not None else float('nan'):.2f} s",
                flush=True,
            )
            primary = new_primary
        violations = h.violations()
        gaps = h.recorder.max_gap if h.recorder else None
    rec = [r["recover_s"] for r in results if r["recover_s"] is not None]
    report = {
        "seed": seed,
        "faults": len(results),
        "failovers": sum(r["failover"] for r in results),
        "by_kind": {k: sum(r["fault"] == k for r in results) for k in FAULTS},
        "recover_s": {
            "p50": round(statistics.median(rec), 3) if rec else None,
            "max": round(max(rec), 3) if rec else None,
        },
        "dual_primary_instants": len(violations),
        "max_observer_gap_s": round(gaps or 0, 3),
        "seconds": round(time.monotonic() - t_start, 1),
        "results": results,
    }
    return report


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--faults", type=int, default=200)
    p.add_argument("--budget", type=float, default=300.0, help="seconds")
    p.add_argument("--out", default="bench/soak.json")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 30)
    report = run(seed, a.faults, a.budget, Path(tempfile.mkdtemp(prefix="soak-")))
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1))
    return 0 if report["dual_primary_instants"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
