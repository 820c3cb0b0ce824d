"""The agents' health endpoint under load (issue: monitoring): 64 concurrent
connections for 10 s over loopback against /health and /cluster, load from a
separate process (wrk, Debian's package): requests/s, p50, p99."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import save
from tests.cluster import Harness

DURATION, CONNECTIONS, THREADS = 10, 64, 2


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


def main() -> dict:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (make bench installs it)")
    res: dict = {"settings": {"connections": CONNECTIONS, "wrk_threads": THREADS, "seconds": DURATION}}
    with Harness(Path(tempfile.mkdtemp(prefix="bench-http-")), zk_nodes=1) as h:
        h.steady()
        i = h.lab.ipc("ipc-a")
        for path in ("/health", "/cluster"):
            res[path] = wrk(f"http://{i.address}:{i.http_port}{path}")
    save("http", res)
    for path in ("/health", "/cluster"):
        r = res[path]
        print(
            f"{path:<9} {r['requests_per_s']:>7} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
            f"({r['requests']} requests, {r['non_2xx']} non-2xx)"
        )
    return res


if __name__ == "__main__":
    main()
