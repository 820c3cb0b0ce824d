"""`make bench`: every benchmark (or the ones named); results in
bench/results.json, and the table in bench/results.md regenerated from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import (
    agent_bench,
    drain_bench,
    executor_bench,
    fence_bench,
    http_bench,
    shapes_bench,
    switchover_bench,
    zkhang_bench,
)
from bench.common import RESULTS

BENCHES = {
    "executor": executor_bench.main,
    "agent": agent_bench.main,
    "http": http_bench.main,
    "switchover": switchover_bench.main,
    "zk_hang": zkhang_bench.main,
    "shapes": shapes_bench.main,
    "fence": fence_bench.main,
    "drain": drain_bench.main,
}


def _table(title: str, cols: tuple[str, ...], rows: list[tuple], intro: tuple[str, ...] = ()) -> list[str]:
    """One markdown section: title, optional intro lines, the table, a blank line."""
    head = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return [title, "", *intro, *head, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


def _ms(s: dict) -> tuple[str, str, str]:
    return f"{s['p50_ms']:.0f}", f"{s['p95_ms']:.0f}", f"{s['max_ms']:.0f}"


MS3 = ("p50 ms", "p95 ms", "max ms")


def _http(h: dict) -> list[str]:
    """The health endpoint's section, with the status page's figures."""
    lines: list[str] = []
    lines += _table(
        "## Health endpoint (wrk, 64 connections, 10 s)",
        ("endpoint", "req/s", "p50 ms", "p99 ms"),
        [(p, h[p]["requests_per_s"], h[p]["p50_ms"], h[p]["p99_ms"]) for p in http_bench.PATHS if p in h],
    )
    if http_bench.BESIDE in h:
        b = h[http_bench.BESIDE]
        ok = "yes" if b["p99_ms"] <= b["limit_p99_ms"] else "NO"
        lines += [
            f"Status page: `/health` beside {b['streams']['count']} page update streams (/desk.json every "
            f"{b['streams']['period_s']:g} s each): {b['requests_per_s']} req/s, p50 {b['p50_ms']} ms, "
            f"p99 {b['p99_ms']} ms (limit {b['limit_p99_ms']:g} ms: met {ok}); the streams' p99 "
            f"{b['streams']['p99_ms']} ms, {b['streams']['errors']} errors.",
            "",
        ]
    if "desk_page_lag" in h:
        lines += _table(
            "### Status page in a browser after a failover (kill -9 of CTI; headless Chromium)",
            ("measurement", "n", *MS3),
            [(k, s["n"], *_ms(s)) for k, s in h["desk_page_lag"].items()],
        )
    return lines


def markdown(r: dict) -> str:
    lines = ["# Benchmark results (`make bench`; this 2-core machine)", ""]
    if "executor" in r:
        e = r["executor"]
        kinds = (
            "new connection + exec",
            "exec on pooled connection",
            "batched status (exec channel)",
            "batched status (long-lived session)",
        )
        lines += _table(
            "## SSH executor (loopback, real sshd, 60 runs each)",
            ("measurement", "p50 ms", "p95 ms"),
            [(k, e[k]["p50_ms"], e[k]["p95_ms"]) for k in kinds],
        )
        lines += [
            f"pooled exec {e['pooled_speedup_vs_new_p50']}x faster than a new connection; long-lived "
            f"session {e['session_speedup_vs_exec_status_p50']}x faster than an exec channel; batched "
            "status = 1 round trip.",
            "",
        ]
    if "agent" in r:
        a = r["agent"]
        scenarios = ("cti_fault_to_standby_serving", "primary_agent_and_ipc_lost_to_takeover")
        lines += _table(
            "## Failover (lab, 3-node ZooKeeper, agents as processes)",
            ("scenario", "phase", *MS3),
            [(sc, ph, *_ms(s)) for sc in scenarios for ph, s in a[sc].items()],
            intro=(f"settings: {a['settings']}", ""),
        )
    if "http" in r:
        lines += _http(r["http"])
    if "switchover" in r:
        s = r["switchover"]
        lines += _table(
            f"## Switchover end to end ({s['runs']} runs, real CLI process)",
            ("measurement", *MS3),
            [(k, *_ms(s[k])) for k in ("issued_to_serving", "issued_to_cli_exit")],
        )
    if "zk_hang" in r:
        z = r["zk_hang"]
        s = z["sigstop_to_session_on_another_server"]
        lines += _table(
            f"## Hung ZooKeeper server under the primary's agent ({s['n']} trials, SIGSTOP)",
            ("measurement", *MS3),
            [("SIGSTOP -> session on another server", *_ms(s))],
        )
        lines += [
            f"role changes: {z['role_changes']}; observer samples without CTI/IVR on the primary: "
            f"{z['samples_without_cti_ivr_on_primary']}.",
            "",
        ]
    if "shapes" in r:
        sh = r["shapes"]
        rows = []
        for p in shapes_bench.PROFILES:
            if p not in sh:
                continue
            for k, target in sh["targets_p50_ms"].items():
                s = sh[p][k]
                ok = "yes" if s["p50_ms"] <= target else "NO"
                rows.append((p, k, s["n"], *_ms(s), target, ok))
            if "switchover_agents_only" in sh[p]:
                rows.append(
                    (
                        p,
                        "switchover, agents only (no CLI start-up)",
                        sh[p]["switchover_agents_only"]["n"],
                        *_ms(sh[p]["switchover_agents_only"]),
                        "",
                        "",
                    )
                )
        lines += _table(
            "## Deployment shapes (agents on hosts of their own, default HTTP settings, 3-node ZooKeeper)",
            ("profile", "measurement", "n", *MS3, "target p50 ms", "met"),
            rows,
        )
    if "fence" in r:
        f = r["fence"]
        rows = []
        for k, target in f["targets_p50_ms"].items():
            if k not in f:
                continue
            s = f[k]["total"]
            ok = "yes" if s["p50_ms"] <= target else "NO"
            proofs = ", ".join(f"{kind} {n}" for kind, n in f[k].get("proofs", {}).items())
            rows.append((k, "total", s["n"], *_ms(s), target, ok, proofs))
            for ph, ps in f[k].items():
                if ph not in ("total", "proofs"):
                    rows.append((k, ph, ps["n"], *_ms(ps), "", "", ""))
        lines += _table(
            "## Power cut of the primary IPC (fence device; windows IPCs, agents on hosts of their own)",
            ("scenario", "phase", "n", *MS3, "target p50 ms", "met", "proofs"),
            rows,
            intro=(f"settings: {f['settings']}", ""),
        )
    if "drain" in r:
        d = r["drain"]
        zero = d["calls_zero_to_serving"]
        ok = "yes" if zero["p50_ms"] <= d["target_zero_to_serving_ms"] else "NO"
        lines += _table(
            f"## Drained switchover ({d['runs']} runs, real CLI process)",
            ("measurement", *MS3, "target p50 ms", "met"),
            [
                ("issued -> new primary serving (the drain)", *_ms(d["issued_to_serving"]), "", ""),
                ("calls = 0 -> new primary serving", *_ms(zero), f"{d['target_zero_to_serving_ms']:.0f}", ok),
                ("plain switchover, same lab: issued -> serving", *_ms(d["plain_issued_to_serving"]), "", ""),
            ],
            intro=(f"settings: {d['settings']}; calls cut per run: {d['calls_cut']}", ""),
        )
    soak = Path(__file__).with_name("soak.json")
    if soak.exists():
        so = json.loads(soak.read_text())
        lines += [
            f"## Soak (`make soak`, seed {so['seed']})",
            "",
            f"{so['faults']} faults in {so['seconds']:.0f} s, {so['failovers']} role changes, dual-primary "
            f"instants: {so['dual_primary_instants']}; calls back after p50 {so['recover_s']['p50']} s, max "
            f"{so['recover_s']['max']} s (per fault in bench/soak.json).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    for name in argv or list(BENCHES):
        print(f"== {name}", flush=True)
        BENCHES[name]()
    Path(__file__).with_name("results.md").write_text(markdown(json.loads(RESULTS.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
