"""20 browsers' worth of status-page update streams, in a process of its own
(beside wrk): N keep-alive clients, each fetching /desk.json every PERIOD s as
the page does. Prints {"requests", "errors", "p50_ms", "p99_ms"} as JSON.

    python -m bench.desk_pollers HOST PORT N PERIOD SECONDS
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time

from bench.common import pct


def _poll(host: str, port: int, period: float, until: float, lat: list[float], errors: list[int]) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    nxt = time.monotonic()
    while nxt < until:
        t0 = time.monotonic()
        try:
            conn.request("GET", "/desk.json")
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                errors.append(r.status)
            lat.append(time.monotonic() - t0)
        except (OSError, http.client.HTTPException):
            errors.append(0)
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=5)
        nxt += period  # the page's pace: one poll per period, whatever the latency
        time.sleep(max(0.0, nxt - time.monotonic()))
    conn.close()


def main(host: str, port: int, n: int, period: float, seconds: float) -> dict:
    lat: list[float] = []
    errors: list[int] = []
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=_poll, args=(host, port, period, until, lat, errors)) for _ in range(n)]
    for t in threads:
        t.start()
        time.sleep(period / n)  # spread over the period, as independent browsers are
    for t in threads:
        t.join()
    ms = [x * 1000 for x in lat] or [float("nan")]
    return {
        "requests": len(lat),
        "errors": len(errors),
        "p50_ms": round(pct(ms, 50), 3),
        "p99_ms": round(pct(ms, 99), 3),
    }


if __name__ == "__main__":
    a = sys.argv[1:]
    print(json.dumps(main(a[0], int(a[1]), int(a[2]), float(a[3]), float(a[4]))))
