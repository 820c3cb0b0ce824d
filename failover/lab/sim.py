"""A simulated IPC's service manager (the lab's stand-in for the Windows SCM).

One per simulated IPC, started by the lab; it is the parent of every service
process (so it reaps them) and answers the `simctl` command over a Unix socket.
Every service is a real process; start returns when the process says it is up,
stop when it has exited; while changing, status shows START_PENDING or
STOP_PENDING, as `sc.exe query` would.

Faults (also reachable over SSH through simctl, so drills can use them):
  kill S          SIGKILL the process (a crash)
  hang S          SIGSTOP it (status still RUNNING, the probe stops answering)
  unhang S        SIGCONT it
  fail-start S    the next start of S fails
  slow-start S    the next starts take --seconds
  slow-stop S     the next stops take --seconds (STOP_PENDING meanwhile)
  stop-fail S     stops of S never complete (stop times out, it keeps running)
  line-alarm      the board reports a line alarm (driver still running)
  line-clear      the alarm clears
  driver-crash    SIGKILL the board driver
  clear [S]       remove injected start/stop faults (of S, or all)
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SVC_SCRIPT = str(Path(__file__).with_name("svc.py"))
MARKER = "failover-labsvc"

STOPPED, START_PENDING, RUNNING, STOP_PENDING = (
    "STOPPED",
    "START_PENDING",
    "RUNNING",
    "STOP_PENDING",
)


@dataclass
class Service:
    name: str
    port: int = 0
    state: str = STOPPED
    proc: subprocess.Popen | None = None
    last_exit: int | None = None
    fail_next_start: bool = False
    start_delay: float = 0.0
    stop_delay: float = 0.0
    stop_fails: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None


class Manager:
    def __init__(self, cfg: dict) -> None:
        self.lab: str = cfg["lab"]
        self.ipc: str = cfg["ipc"]
        self.host: str = cfg["host"]
        self.python: str = cfg.get("python", sys.executable)
        self.services = {n: Service(n, s.get("port", 0)) for n, s in cfg["services"].items()}
        self.line_alarm = False
        self.stopping = threading.Event()

    # --- status -----------------------------------------------------------
    def line_status(self) -> str:
        drv = self.services.get("driver")
        if drv is None or drv.state != RUNNING:
            return "down"
        return "alarm" if self.line_alarm else "up"

    def status(self) -> dict:
        return {
            "ok": True,
            "ipc": self.ipc,
            "line": self.line_status(),
            "services": {
                n: {"state": s.state, "pid": s.pid, "last_exit": s.last_exit} for n, s in self.services.items()
            },
        }

    def reap(self) -> None:
        """Notice crashed services (the monitor thread calls this every 20 ms)."""
        for s in self.services.values():
            if s.state == RUNNING and s.proc is not None and s.proc.poll() is not None:
                with s.lock:
                    if s.proc is not None and s.proc.poll() is not None:
                        s.last_exit = s.proc.returncode
                        s.proc = None
                        s.state = STOPPED

    # --- start / stop -------------------------------------------------------
    def start(self, name: str, timeout: float) -> dict:
        s = self.services[name]
        with s.lock:
            if s.state == RUNNING and s.proc and s.proc.poll() is None:
                return {"ok": True, "changed": False, "detail": f"{name} already running"}
            s.state = START_PENDING
            if s.start_delay:
                time.sleep(s.start_delay)
            fail, s.fail_next_start = s.fail_next_start, False
            cmd = [
                self.python,
                "-I",
                SVC_SCRIPT,
                MARKER,
                "--lab",
                self.lab,
                "--ipc",
                self.ipc,
                "--service",
                name,
                "--host",
                self.host,
                "--port",
                str(s.port),
            ]
            if fail:
                cmd.append("--fail")
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
            )
            ready, err = _wait_ready(proc, timeout)
            if not ready:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                s.last_exit = proc.returncode
                s.state = STOPPED
                return {"ok": False, "error": f"{name} failed to start: {err}"}
            s.proc = proc
            s.state = RUNNING
            return {"ok": True, "changed": True, "detail": f"{name} started (pid {proc.pid})"}

    def stop(self, name: str, timeout: float) -> dict:
        s = self.services[name]
        with s.lock:
            if s.proc is None or s.proc.poll() is not None:
                s.proc, s.state = None, STOPPED
                return {"ok": True, "changed": False, "detail": f"{name} not started"}
            s.state = STOP_PENDING
            deadline = time.monotonic() + timeout
            if s.stop_delay:
                time.sleep(min(s.stop_delay, timeout))
            if s.stop_fails:
                # A wedged service: the stop request goes unanswered, the manager
                # gives up at the timeout and the service stays up and healthy.
                time.sleep(max(0.0, deadline - time.monotonic()))
                s.state = RUNNING
                return {"ok": False, "error": f"{name} did not stop within {timeout:g} s"}
            for sig in (signal.SIGTERM, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError):
                    s.proc.send_signal(sig)
            try:
                s.proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return {"ok": False, "error": f"{name} did not stop within {timeout:g} s"}
            s.last_exit = s.proc.returncode
            s.proc, s.state = None, STOPPED
            return {"ok": True, "changed": True, "detail": f"{name} stopped"}

    # --- faults ---------------------------------------------------------------
    def fault(self, kind: str, name: str | None, seconds: float) -> dict:
        if kind in ("line-alarm", "line-clear"):
            self.line_alarm = kind == "line-alarm"
            return {"ok": True, "detail": f"line {'alarm' if self.line_alarm else 'clear'}"}
        if kind == "driver-crash":
            kind, name = "kill", "driver"
        if kind == "clear" and name is None:
            for s in self.services.values():
                s.fail_next_start, s.start_delay, s.stop_delay, s.stop_fails = False, 0, 0, False
            self.line_alarm = False
            return {"ok": True, "detail": "all faults cleared"}
        if name not in self.services:
            return {"ok": False, "error": f"unknown service {name!r}"}
        s = self.services[name]
        if kind in ("kill", "hang", "unhang"):
            if s.pid is None:
                return {"ok": False, "error": f"{name} is not running"}
            sig = {"kill": signal.SIGKILL, "hang": signal.SIGSTOP, "unhang": signal.SIGCONT}[kind]
            pid = s.pid
            os.kill(pid, sig)
            if kind == "kill":
                s.proc.wait()  # type: ignore[union-attr]
                self.reap()
            else:
                # Signals are asynchronous: answer only once the kernel shows the
                # process stopped (or running again), so observers agree.
                _wait_proc_state(pid, stopped=kind == "hang")
        elif kind == "fail-start":
            s.fail_next_start = True
        elif kind == "slow-start":
            s.start_delay = seconds
        elif kind == "slow-stop":
            s.stop_delay = seconds
        elif kind == "stop-fail":
            s.stop_fails = True
        elif kind == "clear":
            s.fail_next_start, s.start_delay, s.stop_delay, s.stop_fails = False, 0, 0, False
        else:
            return {"ok": False, "error": f"unknown fault {kind!r}"}
        return {"ok": True, "detail": f"{kind} {name}"}

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        timeout = float(req.get("timeout", 30))
        name = req.get("service")
        if op == "status":
            return self.status()
        if op in ("start", "stop"):
            if name not in self.services:
                return {"ok": False, "error": f"unknown service {name!r}", "code": 1060}
            return self.start(name, timeout) if op == "start" else self.stop(name, timeout)
        if op == "call":
            return self.call(str(req.get("kind", "inbound")))
        if op == "fault":
            return self.fault(str(req.get("kind")), name, float(req.get("seconds", 5)))
        return {"ok": False, "error": f"unknown operation {op!r}"}

    def call(self, kind: str) -> dict:
        """The lab's smoke check: a simulated basic call. Inbound and outbound need
        the line up and CTI + IVR answering their probe; agent answering also needs
        a KCXP/KCBP pair (own or replica) running."""
        need = ["driver", "cti", "ivr"]
        problems = [f"{n} not running" for n in need if self.services[n].state != RUNNING]
        if self.line_status() != "up":
            problems.append(f"line {self.line_status()}")
        for n in ("cti", "ivr"):
            if self.services[n].state == RUNNING and not _probe(self.host, self.services[n].port):
                problems.append(f"{n} not answering")
        if kind == "agent":
            pairs = [("kcxp", "kcbp"), ("kcxp-replica", "kcbp-replica")]
            if not any(all(self.services[x].state == RUNNING for x in p) for p in pairs):
                problems.append("no KCXP/KCBP pair running")
        if problems:
            return {
                "ok": False,
                "error": f"{kind} call failed on {self.ipc}: " + ", ".join(problems),
            }
        return {"ok": True, "detail": f"{kind} call answered on {self.ipc}"}

    def shutdown(self) -> None:
        self.stopping.set()
        for s in self.services.values():
            if s.proc and s.proc.poll() is None:
                for sig in (signal.SIGKILL, signal.SIGCONT):
                    with contextlib.suppress(ProcessLookupError):
                        s.proc.send_signal(sig)
                s.proc.wait()


def _wait_proc_state(pid: int, stopped: bool, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if (state in ("T", "t")) == stopped:
            return
        time.sleep(0.002)


def _probe(host: str, port: int, timeout: float = 0.5) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as c:
            c.settimeout(timeout)
            c.sendall(b"PING\n")
            return c.recv(64).startswith(b"PONG")
    except OSError:
        return False


def _wait_ready(proc: subprocess.Popen, timeout: float) -> tuple[bool, str]:
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if r:
            line = proc.stdout.readline()
            if line.strip() == b"ready":
                proc.stdout.close()
                proc.stderr.close()
                return True, ""
            if not line:  # EOF: the process died
                proc.wait()
                err = proc.stderr.read().decode(errors="replace").strip()
                return False, f"exit {proc.returncode}" + (f": {err}" if err else "")
    return False, f"not up after {timeout:g} s"


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        try:
            resp = self.server.manager.handle(json.loads(line))  # type: ignore[attr-defined]
        except Exception as e:  # the manager must survive any bad request
            resp = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        self.wfile.write(json.dumps(resp).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main(ipc_dir: str) -> int:
    cfg = json.loads(Path(ipc_dir, "sim.json").read_text())
    mgr = Manager(cfg)
    sock_path = Path(ipc_dir, "sim.sock")
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    server = _Server(str(sock_path), _Handler)
    server.manager = mgr  # type: ignore[attr-defined]

    def on_term(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def monitor() -> None:
        while not mgr.stopping.is_set():
            mgr.reap()
            time.sleep(0.02)

    threading.Thread(target=monitor, daemon=True).start()
    # Initial layout: the lab asks for services to be started via simctl; the
    # manager itself starts nothing (like a machine after boot with manual services).
    for name in cfg.get("autostart", []):
        mgr.start(name, 10)
    Path(ipc_dir, "sim.ready").write_text(str(os.getpid()))
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        mgr.shutdown()
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
