"""A simulated IPC's service manager (the lab's stand-in for the Windows SCM).

One per simulated IPC, started by the lab; it is the parent of every service
process (so it reaps them) and answers the `simctl` command over a Unix socket.
Every service is a real process; start returns when the process says it is up,
stop when it has exited; while changing, status shows START_PENDING or
STOP_PENDING, as `sc.exe query` would.

The `scm` operation is the Windows service control manager's own behaviour
(what `wincmd.py`'s sc.exe asks for): a control is answered at once with a
Win32 error code and the new state, the transition finishing in the background;
a hung service does not answer a control; a wedged stop stays STOP_PENDING
until the process is killed (`kill-pid`, taskkill's way in).

Faults (also reachable over SSH through simctl, so drills can use them):
  kill S          SIGKILL the process (a crash)
  hang S          SIGSTOP it (status still RUNNING, the probe stops answering)
  unhang S        SIGCONT it
  pause S         PAUSED, as a paused Windows service (SIGSTOPped: no probe answers)
  unpause S       back to RUNNING
  fail-start S    the next start of S fails
  slow-start S    the next starts take --seconds
  slow-stop S     the next stops take --seconds (STOP_PENDING meanwhile)
  stop-fail S     stops of S never complete (stop times out, it keeps running)
  auto-start S | demand-start S | disable S   the start type sc.exe shows (2 / 3 / 4)
  line-alarm      the board reports a line alarm (driver still running)
  line-clear      the alarm clears
  driver-crash    SIGKILL the board driver
  clear [S]       remove injected start/stop faults (of S, or all); start types back to sim.json's
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from failover.lab import calls as calls_mod

SVC_SCRIPT = str(Path(__file__).with_name("svc.py"))
MARKER = "failover-labsvc"

STOPPED, START_PENDING, RUNNING, STOP_PENDING = (
    "STOPPED",
    "START_PENDING",
    "RUNNING",
    "STOP_PENDING",
)
PAUSED, CONTINUE_PENDING = "PAUSED", "CONTINUE_PENDING"  # reachable only through `pause` and `scm continue`

# Win32 error codes the SCM answers with (sc.exe's exit codes).
NO_ERROR = 0
ERROR_INVALID_SERVICE_CONTROL = 1052
ERROR_SERVICE_REQUEST_TIMEOUT = 1053
ERROR_SERVICE_ALREADY_RUNNING = 1056
ERROR_SERVICE_DISABLED = 1058
ERROR_SERVICE_DOES_NOT_EXIST = 1060
ERROR_SERVICE_CANNOT_ACCEPT_CTRL = 1061
ERROR_SERVICE_NOT_ACTIVE = 1062
ERROR_PROCESS_ABORTED = 1067
ERROR_SERVICE_NEVER_STARTED = 1077
AUTO_START, DEMAND_START, DISABLED = 2, 3, 4
START_TYPE_FAULTS = {"auto-start": AUTO_START, "demand-start": DEMAND_START, "disable": DISABLED}
READY_TIMEOUT = 30.0  # how long an SCM start waits for the process's "ready" (Windows: its 30 s start timeout)
PENDING = (START_PENDING, STOP_PENDING, CONTINUE_PENDING)


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
    # What the SCM shows: 1077 "never started" until a first start, 0 after a
    # clean stop, 1067 "process terminated unexpectedly" after a crash or kill.
    win32_exit_code: int = ERROR_SERVICE_NEVER_STARTED
    start_type: int = DEMAND_START
    # Held for a whole transition (a blocking start/stop, or an scm control
    # until its background part is done): one change at a time per service.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None


@contextlib.contextmanager
def _held(lock: threading.Lock, timeout: float) -> Iterator[bool]:
    """The lock within timeout (yields False when another change holds it)."""
    got = lock.acquire(timeout=max(0.0, timeout))
    try:
        yield got
    finally:
        if got:
            lock.release()


class Manager:
    def __init__(self, cfg: dict) -> None:
        self.lab: str = cfg["lab"]
        self.ipc: str = cfg["ipc"]
        self.host: str = cfg["host"]
        self.python: str = cfg.get("python", sys.executable)
        self.services = {n: Service(n, s.get("port", 0)) for n, s in cfg["services"].items()}
        self.line_alarm = False
        self.stopping = threading.Event()
        # The SCM's timings (only the scm operation uses them).
        self.scm_start_delay = float(cfg.get("start_delay", 0.05))
        self.scm_stop_delay = float(cfg.get("stop_delay", 0.05))
        self.control_timeout = float(cfg.get("control_timeout", 1.0))
        self.start_types = _start_types(cfg)
        for n, s in self.services.items():
            s.start_type = self.start_types.get(n, DEMAND_START)
        self.calls = calls_mod.CallSim.of(cfg.get("calls", {}))

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
            "services": {n: self._svc_status(s) for n, s in self.services.items()},
        }

    @staticmethod
    def _svc_status(s: Service) -> dict:
        return {
            "state": s.state,
            "pid": s.pid,
            "last_exit": s.last_exit,
            "win32_exit_code": s.win32_exit_code,
            "start_type": s.start_type,
        }

    def reap(self) -> None:
        """Notice crashed services (the monitor thread calls this every 20 ms).
        A service in a transition is left to whoever holds its lock (never
        waited for: a wedged stop holds it for as long as it is wedged)."""
        for s in self.services.values():
            if s.state in (RUNNING, PAUSED) and s.proc is not None and s.proc.poll() is not None:
                if not s.lock.acquire(blocking=False):
                    continue
                try:
                    if s.proc is not None and s.proc.poll() is not None:
                        _mark_stopped(s, s.proc, ERROR_PROCESS_ABORTED)
                finally:
                    s.lock.release()

    # --- start / stop (blocking: the lab platform's simctl) -------------------
    def start(self, name: str, timeout: float) -> dict:
        s = self.services[name]
        with _held(s.lock, timeout) as got:
            if not got:
                return {"ok": False, "error": f"{name} is busy ({s.state}): not started within {timeout:g} s"}
            if s.state == RUNNING and s.proc and s.proc.poll() is None:
                return {"ok": True, "changed": False, "detail": f"{name} already running"}
            if s.state == PAUSED and s.proc and s.proc.poll() is None:
                # A paused service is still running: starting it means continuing it,
                # never a second process beside the paused one.
                _signal_wait(s.proc.pid, signal.SIGCONT, stopped=False)
                s.state = RUNNING
                return {"ok": True, "changed": True, "detail": f"{name} continued (pid {s.proc.pid})"}
            s.state = START_PENDING
            if s.start_delay:
                time.sleep(s.start_delay)
            fail, s.fail_next_start = s.fail_next_start, False
            proc = self._spawn(s, fail)
            ready, err = _wait_ready(proc, timeout)
            if not ready:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                s.last_exit, s.state, s.win32_exit_code = proc.returncode, STOPPED, ERROR_PROCESS_ABORTED
                return {"ok": False, "error": f"{name} failed to start: {err}"}
            s.proc = proc
            s.state = RUNNING
            s.win32_exit_code = NO_ERROR
            return {"ok": True, "changed": True, "detail": f"{name} started (pid {proc.pid})"}

    def _spawn(self, s: Service, fail: bool) -> subprocess.Popen:
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
            s.name,
            "--host",
            self.host,
            "--port",
            str(s.port),
        ]
        if fail:
            cmd.append("--fail")
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )

    def stop(self, name: str, timeout: float) -> dict:
        s = self.services[name]
        deadline = time.monotonic() + timeout
        with _held(s.lock, timeout) as got:
            if not got:
                return {"ok": False, "error": f"{name} is busy ({s.state}): not stopped within {timeout:g} s"}
            if s.proc is None or s.proc.poll() is not None:
                if s.proc is not None:
                    _mark_stopped(s, s.proc, ERROR_PROCESS_ABORTED)
                s.proc, s.state = None, STOPPED
                return {"ok": True, "changed": False, "detail": f"{name} not started"}
            before = s.state
            s.state = STOP_PENDING
            if s.stop_delay:
                time.sleep(min(s.stop_delay, max(0.0, deadline - time.monotonic())))
            if s.stop_fails:
                # A wedged service: the stop request goes unanswered, the manager
                # gives up at the timeout and the service stays up and healthy
                # (a paused one stays paused).
                time.sleep(max(0.0, deadline - time.monotonic()))
                s.state = PAUSED if before == PAUSED else RUNNING
                return {"ok": False, "error": f"{name} did not stop within {timeout:g} s"}
            _terminate(s.proc)
            try:
                s.proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return {"ok": False, "error": f"{name} did not stop within {timeout:g} s"}
            _mark_stopped(s, s.proc, NO_ERROR if s.proc.returncode == 0 else ERROR_PROCESS_ABORTED)
            return {"ok": True, "changed": True, "detail": f"{name} stopped"}

    # --- the Windows SCM (non-blocking controls: wincmd's sc.exe) -------------
    def scm(self, name: str, verb: str) -> dict:
        """One service control as the SCM answers it: at once, with the Win32
        code (0: accepted) and the resulting state; an accepted start, stop or
        continue completes in a background thread that holds the service's lock
        until the final state, so other controls meanwhile get 1061 / 1056."""
        s = self.services[name]
        if verb not in ("start", "stop", "continue", "pause"):
            return {"ok": False, "error": f"unknown control {verb!r}", "code": ERROR_INVALID_SERVICE_CONTROL}
        if not s.lock.acquire(blocking=False):
            busy = ERROR_SERVICE_CANNOT_ACCEPT_CTRL
            if verb == "start" and s.state != STOP_PENDING:
                busy = ERROR_SERVICE_ALREADY_RUNNING
            return self._scm_answer(s, busy)
        worker: Callable[[], None] | None = None
        try:
            code, worker = getattr(self, f"_scm_{verb}")(s)
            return self._scm_answer(s, code)
        finally:
            if worker is None:
                s.lock.release()
            else:
                threading.Thread(target=self._finish, args=(s, worker), daemon=True).start()

    @staticmethod
    def _finish(s: Service, worker: Callable[[], None]) -> None:
        try:
            worker()
        finally:
            s.lock.release()

    @staticmethod
    def _scm_answer(s: Service, code: int) -> dict:
        answer = {"ok": code == NO_ERROR, "code": code, "service": s.name, **Manager._svc_status(s)}
        if s.state == START_PENDING and s.proc is not None:
            answer["pid"] = s.proc.pid  # the new process's, even if it is already failing
        return answer

    def _scm_start(self, s: Service) -> tuple[int, Callable[[], None] | None]:
        if s.state == STOP_PENDING:
            return ERROR_SERVICE_CANNOT_ACCEPT_CTRL, None
        if s.state != STOPPED:
            return ERROR_SERVICE_ALREADY_RUNNING, None
        if s.start_type == DISABLED:
            return ERROR_SERVICE_DISABLED, None
        fail, s.fail_next_start = s.fail_next_start, False
        delay = self.scm_start_delay + s.start_delay
        t0 = time.monotonic()
        s.proc = proc = self._spawn(s, fail)
        s.state, s.win32_exit_code = START_PENDING, NO_ERROR
        return NO_ERROR, lambda: self._finish_start(s, proc, t0 + delay)

    def _finish_start(self, s: Service, proc: subprocess.Popen, until: float) -> None:
        ready, _err = _wait_ready(proc, READY_TIMEOUT)
        if ready:
            # START_PENDING for at least the SCM's start delay (plus any slow-start).
            _sleep_while_alive(proc, until - time.monotonic(), self.stopping)
        if ready and proc.poll() is None:
            s.state = RUNNING
            return
        if proc.poll() is None:  # never reported ready: the SCM gives up on it
            proc.kill()
        proc.wait()
        _mark_stopped(s, proc, ERROR_PROCESS_ABORTED if ready or proc.returncode else ERROR_SERVICE_REQUEST_TIMEOUT)

    def _scm_stop(self, s: Service) -> tuple[int, Callable[[], None] | None]:
        if s.state == STOPPED:
            return ERROR_SERVICE_NOT_ACTIVE, None
        if s.state in PENDING:
            return ERROR_SERVICE_CANNOT_ACCEPT_CTRL, None
        proc = s.proc
        if proc is None or proc.poll() is not None:
            if proc is not None:
                _mark_stopped(s, proc, ERROR_PROCESS_ABORTED)
            return ERROR_SERVICE_NOT_ACTIVE, None
        if s.state == RUNNING and not self._answers_control(proc):
            return ERROR_SERVICE_REQUEST_TIMEOUT, None  # hung: still RUNNING, as the SCM shows it
        s.state = STOP_PENDING
        delay = self.scm_stop_delay + s.stop_delay
        return NO_ERROR, lambda: self._finish_stop(s, proc, delay)

    def _answers_control(self, proc: subprocess.Popen) -> bool:
        """A SIGSTOPped (hung) service does not answer: the SCM waits its
        control timeout for it, as sc.exe does, before 1053."""
        deadline = time.monotonic() + self.control_timeout
        while _proc_stopped(proc.pid):
            if time.monotonic() >= deadline or proc.poll() is not None:
                return False
            time.sleep(0.02)
        return proc.poll() is None

    def _finish_stop(self, s: Service, proc: subprocess.Popen, delay: float) -> None:
        _sleep_while_alive(proc, delay, self.stopping)
        # stop-fail: the service acknowledged the stop but never exits; it keeps
        # serving (STOP_PENDING) until its process is killed or the fault cleared.
        while s.stop_fails and proc.poll() is None and not self.stopping.is_set():
            time.sleep(0.02)
        if proc.poll() is None:
            _terminate(proc)
            try:
                proc.wait(READY_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()  # the lab never leaves a process behind
                proc.wait()
        proc.wait()
        _mark_stopped(s, proc, NO_ERROR if proc.returncode == 0 else ERROR_PROCESS_ABORTED)

    def _scm_continue(self, s: Service) -> tuple[int, Callable[[], None] | None]:
        if s.state == STOPPED:
            return ERROR_SERVICE_NOT_ACTIVE, None
        if s.state in PENDING:
            return ERROR_SERVICE_CANNOT_ACCEPT_CTRL, None
        if s.state != PAUSED or s.proc is None:
            return ERROR_INVALID_SERVICE_CONTROL, None  # a running service is NOT_PAUSABLE
        s.state = CONTINUE_PENDING
        proc = s.proc
        return NO_ERROR, lambda: self._finish_continue(s, proc)

    def _finish_continue(self, s: Service, proc: subprocess.Popen) -> None:
        _signal_wait(proc.pid, signal.SIGCONT, stopped=False)
        _sleep_while_alive(proc, self.scm_start_delay, self.stopping)
        if proc.poll() is None:
            s.state = RUNNING
        else:
            _mark_stopped(s, proc, ERROR_PROCESS_ABORTED)

    def _scm_pause(self, s: Service) -> tuple[int, Callable[[], None] | None]:
        # The plan's services do not accept PAUSE (NOT_PAUSABLE); `pause` the fault is the way in.
        if s.state == STOPPED:
            return ERROR_SERVICE_NOT_ACTIVE, None
        if s.state in PENDING:
            return ERROR_SERVICE_CANNOT_ACCEPT_CTRL, None
        return ERROR_INVALID_SERVICE_CONTROL, None

    def kill_pid(self, pid: int) -> dict:
        """taskkill /F: SIGKILL one of this IPC's service processes, by PID
        (never anything else), and answer once the SCM shows it STOPPED."""
        for s in self.services.values():
            proc = s.proc
            if proc is None or proc.pid != pid or proc.poll() is not None:
                continue
            for sig in (signal.SIGKILL, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            proc.wait()
            deadline = time.monotonic() + 5
            while s.state != STOPPED and time.monotonic() < deadline:
                # A transition in progress notices the death itself; else mark it here.
                if s.lock.acquire(blocking=False):
                    try:
                        if s.proc is proc:
                            _mark_stopped(s, proc, ERROR_PROCESS_ABORTED)
                    finally:
                        s.lock.release()
                else:
                    time.sleep(0.01)
            return {"ok": True, "service": s.name, "pid": pid, "state": s.state}
        return {"ok": False, "code": 128, "error": f"no service process with pid {pid}"}

    # --- faults ---------------------------------------------------------------
    def fault(self, kind: str, name: str | None, seconds: float) -> dict:
        if kind in ("line-alarm", "line-clear"):
            self.line_alarm = kind == "line-alarm"
            return {"ok": True, "detail": f"line {'alarm' if self.line_alarm else 'clear'}"}
        if kind == "driver-crash":
            kind, name = "kill", "driver"
        if kind == "clear" and name is None:
            for s in self.services.values():
                self._clear(s)
            self.line_alarm = False
            return {"ok": True, "detail": "all faults cleared"}
        if name not in self.services:
            return {"ok": False, "error": f"unknown service {name!r}"}
        s = self.services[name]
        if kind in ("kill", "hang", "unhang"):
            if s.pid is None:
                return {"ok": False, "error": f"{name} is not running"}
            if s.state == PAUSED and kind != "kill":
                return {"ok": False, "error": f"{name} is PAUSED (unpause it)"}
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
        elif kind in ("pause", "unpause"):
            return self._pause(s, kind == "pause")
        elif kind == "fail-start":
            s.fail_next_start = True
        elif kind == "slow-start":
            s.start_delay = seconds
        elif kind == "slow-stop":
            s.stop_delay = seconds
        elif kind == "stop-fail":
            s.stop_fails = True
        elif kind in START_TYPE_FAULTS:
            s.start_type = START_TYPE_FAULTS[kind]
        elif kind == "clear":
            self._clear(s)
        else:
            return {"ok": False, "error": f"unknown fault {kind!r}"}
        return {"ok": True, "detail": f"{kind} {name}"}

    def _clear(self, s: Service) -> None:
        s.fail_next_start, s.start_delay, s.stop_delay, s.stop_fails = False, 0, 0, False
        s.start_type = self.start_types.get(s.name, DEMAND_START)

    def _pause(self, s: Service, pause: bool) -> dict:
        """PAUSED as a paused Windows service: still running (its PID stays),
        not serving (SIGSTOPped, so its probe gets no answer)."""
        want, now = (RUNNING, PAUSED) if pause else (PAUSED, RUNNING)
        if not s.lock.acquire(blocking=False):
            return {"ok": False, "error": f"{s.name} is changing state ({s.state})"}
        try:
            pid = s.pid
            if s.state != want or pid is None:
                return {"ok": False, "error": f"{s.name} is {s.state}, not {want}"}
            _signal_wait(pid, signal.SIGSTOP if pause else signal.SIGCONT, stopped=pause)
            s.state = now
            return {"ok": True, "detail": f"{'pause' if pause else 'unpause'} {s.name}"}
        finally:
            s.lock.release()

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        timeout = float(req.get("timeout", 30))
        name = req.get("service")
        if op == "status":
            return self.status()
        if op in ("start", "stop", "scm"):
            if name not in self.services:
                return {"ok": False, "error": f"unknown service {name!r}", "code": ERROR_SERVICE_DOES_NOT_EXIST}
            if op == "scm":
                return self.scm(name, str(req.get("verb")))
            return self.start(name, timeout) if op == "start" else self.stop(name, timeout)
        if op == "kill-pid":
            return self.kill_pid(int(req.get("pid", 0)))
        if op == "call":
            return self.call(str(req.get("kind", "inbound")))
        if op == "calls":
            return self.calls_op(req)
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

    # --- simulated calls (failover/lab/calls.py) --------------------------------
    def tick_calls(self) -> None:
        """Calls live while the driver, CTI and IVR run: the moment one of
        them stops (or starts stopping), the calls in progress are cut."""
        serving = all(self.services[n].state == RUNNING for n in ("driver", "cti", "ivr") if n in self.services)
        self.calls.tick(time.monotonic(), serving)

    def calls_op(self, req: dict) -> dict:
        return calls_mod.operation(self.calls, req, time.monotonic())

    def shutdown(self) -> None:
        self.stopping.set()
        for s in self.services.values():
            if s.proc and s.proc.poll() is None:
                for sig in (signal.SIGKILL, signal.SIGCONT):
                    with contextlib.suppress(ProcessLookupError):
                        s.proc.send_signal(sig)
                s.proc.wait()


def _start_types(cfg: dict) -> dict[str, int]:
    """sim.json's optional "start_types": {service: 2 | 3 | 4 | "AUTO_START" ...},
    a service named by its logical or its platform name."""
    names = {k.lower(): v for k, v in cfg.get("names", {}).items()}
    by_word = {"AUTO_START": AUTO_START, "DEMAND_START": DEMAND_START, "DISABLED": DISABLED}
    out = {}
    for svc, value in cfg.get("start_types", {}).items():
        out[names.get(svc.lower(), svc)] = by_word.get(str(value).upper()) or int(value)
    return out


def _mark_stopped(s: Service, proc: subprocess.Popen, code: int) -> None:
    """The service's process has exited: STOPPED, with the code the SCM shows."""
    if s.proc is proc or s.proc is None:
        s.last_exit = proc.returncode
        s.proc = None
        s.state = STOPPED
        s.win32_exit_code = code


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM a service process, continued first if hung or paused. Not TERM
    then CONT: a TERM sent while every thread is stopped is taken, once they
    run again, by whichever thread wakes first, and a probe thread taking it
    leaves the main thread asleep (Python runs handlers there only)."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)
        _wait_proc_state(proc.pid, stopped=False)
        proc.send_signal(signal.SIGTERM)


def _sleep_while_alive(proc: subprocess.Popen, seconds: float, stopping: threading.Event) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None and not stopping.is_set():
        time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))


def _proc_stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def _signal_wait(pid: int, sig: int, stopped: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    _wait_proc_state(pid, stopped)


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


def main(ipc_dir: str, boot: list[str] | None = None) -> int:
    """boot: a power-on (the lab's fence device): only these services start,
    marked AUTO_START (sc qc shows it); None: `lab up`'s initial layout
    (sim.json's "autostart")."""
    cfg = json.loads(Path(ipc_dir, "sim.json").read_text())
    mgr = Manager(cfg)
    if boot is not None:
        for name in boot:
            if name in mgr.services:
                mgr.start_types[name] = mgr.services[name].start_type = AUTO_START
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
            mgr.tick_calls()
            time.sleep(0.02)

    threading.Thread(target=monitor, daemon=True).start()
    # Initial layout: the lab asks for services to be started via simctl; the
    # manager itself starts nothing (like a machine after boot with manual services).
    # After a power-on: the boot services, in the order given.
    for name in cfg.get("autostart", []) if boot is None else boot:
        if name in mgr.services:
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
    # sim.py IPC_DIR [--boot S1,S2]
    args = sys.argv[1:]
    boot = [s for s in args[2].split(",") if s] if len(args) >= 3 and args[1] == "--boot" else None
    sys.exit(main(args[0], boot))
