"""The agents' health endpoint under load (issue: monitoring): 64 concurrent
connections for 10 s over loopback against /health, /cluster and the status
page's /desk.json, load from a separate process (wrk, Debian's package):
requests/s, p50, p99. Then the status page's case (issue 15): /health under
wrk while 20 pages' update streams poll /desk.json (bench/desk_pollers.py,
another process), and how long after a failover a real browser shows it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import save, stats_ms
from failover import desk_page
from tests.cluster import Harness

DURATION, CONNECTIONS, THREADS = 10, 64, 2
STREAMS = 20  # browsers watching the page
HEALTH_P99_LIMIT_MS = 10.0  # the bound for /health beside the streams
LAG_RUNS = 3  # failovers watched in a browser (a fresh lab each)
PATHS = ("/health", "/cluster", "/desk.json")
BESIDE = "/health beside 20 desk streams"


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]


def wrk(url: str) -> dict:
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=DURATION + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "requests_per_s": round(rps),
        "p50_ms": round(_ms(lat["50"]), 3),
        "p99_ms": round(_ms(lat["99"]), 3),
        "requests": int(total.group(1)) if total else None,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def beside_streams(address: str, port: int) -> dict:
    """wrk on /health while STREAMS pollers fetch /desk.json at the page's pace."""
    period = desk_page.POLL_MS / 1000
    cmd = [sys.executable, "-m", "bench.desk_pollers", address, str(port), str(STREAMS), str(period)]
    pollers = subprocess.Popen([*cmd, str(DURATION + 4)], stdout=subprocess.PIPE, text=True)
    try:
        out = wrk(f"http://{address}:{port}/health")
        streams = json.loads(pollers.communicate(timeout=DURATION + 30)[0])
    finally:
        if pollers.poll() is None:
            pollers.kill()
            pollers.wait()
    return {**out, "streams": {"count": STREAMS, "period_s": period, **streams}, "limit_p99_ms": HEALTH_P99_LIMIT_MS}


def page_lag(runs: int) -> dict:
    """A real headless Chromium on ipc-a's page, kill -9 of CTI on ipc-a: seconds
    from the record (ZooKeeper) / the observer (/proc) to the page showing it."""
    from tests.browser import chromium  # selenium: the test extra
    from tests.deskwatch import TOKEN, TOKEN_ENV, desk_url, failover_seen, with_auth

    os.environ[TOKEN_ENV] = TOKEN  # inherited by the agents
    got: dict[str, list[float]] = {}
    for _ in range(runs):
        root = Path(tempfile.mkdtemp(prefix="bench-desk-"))
        with Harness(root, zk_nodes=1, edit=with_auth(root / "basic")) as h, chromium(root / "profile") as b:
            h.steady()
            b.get(desk_url(h, "ipc-a"))
            for k, v in failover_seen(h, b).items():
                got.setdefault(k, []).append(v)
    return {k: stats_ms(v) for k, v in got.items()}


def main() -> dict:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (make bench installs it)")
    res: dict = {"settings": {"connections": CONNECTIONS, "wrk_threads": THREADS, "seconds": DURATION}}
    with Harness(Path(tempfile.mkdtemp(prefix="bench-http-")), zk_nodes=1) as h:
        h.steady()
        i = h.lab.ipc("ipc-a")
        # /health alone, then at once beside the streams: the pair compares
        # like with like on a machine whose load from elsewhere varies.
        res["/health"] = wrk(f"http://{i.address}:{i.http_port}/health")
        res[BESIDE] = beside_streams(i.address, i.http_port)
        for path in PATHS[1:]:
            res[path] = wrk(f"http://{i.address}:{i.http_port}{path}")
    res["desk_page_lag"] = page_lag(LAG_RUNS)
    save("http", res)
    _print(res)
    return res


def _print(res: dict) -> None:
    for path in (*PATHS, BESIDE):
        r = res[path]
        print(
            f"{path:<9} {r['requests_per_s']:>7} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
            f"({r['requests']} requests, {r['non_2xx']} non-2xx)"
        )
    s = res[BESIDE]["streams"]
    print(f"  beside: {s['requests']} /desk.json polls, p99 {s['p99_ms']} ms, {s['errors']} errors")
    for k, v in res["desk_page_lag"].items():
        print(f"page lag {k}: p50 {v['p50_ms']:.0f} ms, max {v['max_ms']:.0f} ms ({v['n']} failovers)")


if __name__ == "__main__":
    main()
