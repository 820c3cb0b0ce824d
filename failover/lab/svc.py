"""One simulated IPC service: a real process. Stdlib only, started as
`python -I svc.py ...` so it starts fast.

CTI and IVR listen on TCP and answer an application-level probe
("PING\\n" -> "PONG <service> <ipc>\\n"): a SIGSTOPped process still completes
TCP handshakes (the kernel does that) but never answers, so a hung service is
seen as hung, not healthy.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time


def serve_probe(sock: socket.socket, service: str, ipc: str) -> None:
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_answer, args=(conn, service, ipc), daemon=True).start()


def _answer(conn: socket.socket, service: str, ipc: str) -> None:
    with conn:
        conn.settimeout(5)
        buf = b""
        try:
            while True:
                data = conn.recv(256)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip() == b"PING":
                        conn.sendall(f"PONG {service} {ipc}\n".encode())
                    else:
                        conn.sendall(b"ERR unknown request\n")
        except OSError:
            return


def main() -> int:
    # The first argument is a fixed marker the lab observer looks for in /proc.
    p = argparse.ArgumentParser()
    p.add_argument("marker")
    p.add_argument("--lab", required=True)
    p.add_argument("--ipc", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fail", action="store_true", help="fail at start (fault injection)")
    p.add_argument("--ignore-term", action="store_true", help="never stop on SIGTERM")
    args = p.parse_args()

    if args.fail:
        print(f"{args.service}: start failed (injected fault)", file=sys.stderr, flush=True)
        return 1
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        # SIGTERM is blocked in every thread (the probe threads inherit the
        # mask) and taken by the main thread with sigwait. A handler is not
        # enough: the kernel may give the signal to a probe thread, and Python
        # then runs the handler only when the main thread wakes from its sleep
        # (an hour later): a stop that timed out now and then, mostly right
        # after a SIGCONT (a paused or hung service being stopped).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    if args.port:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        sock.listen(64)
        threading.Thread(target=serve_probe, args=(sock, args.service, args.ipc), daemon=True).start()
    # Tell the service manager we are up (it waits for this line).
    print("ready", flush=True)
    if args.ignore_term:
        while True:
            time.sleep(3600)
    signal.sigwait({signal.SIGTERM})
    return 0


if __name__ == "__main__":
    sys.exit(main())
