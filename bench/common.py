"""Shared helpers for `make bench`: timing statistics and the results file."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def stats_ms(samples: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in samples]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 2),
        "p95_ms": round(pct(ms, 95), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def timed(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def save(section: str, data: dict) -> None:
    try:
        allres = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        allres = {}
    allres[section] = {
        **data,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    RESULTS.write_text(json.dumps(allres, indent=2) + "\n")


def table(rows: list[tuple[str, dict[str, float]]]) -> str:
    w = max(len(r[0]) for r in rows)
    lines = [f"{'measurement':<{w}}  {'n':>4}  {'p50 ms':>8}  {'p95 ms':>8}  {'max ms':>8}"]
    for name, s in rows:
        lines.append(f"{name:<{w}}  {s['n']:>4}  {s['p50_ms']:>8.2f}  {s['p95_ms']:>8.2f}  {s['max_ms']:>8.2f}")
    return "\n".join(lines)
