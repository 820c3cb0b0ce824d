"""Service operations over SSH, per platform: start (RUNNING and its probe
answers), stop (STOPPED, or killed after its stop timeout where the platform
can), restart, and one plan step under the agent's start guard. Each command
is sent once and never repeated blindly: when its outcome is unknown, the
service's state decides. Part of the Executor (executor.py)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from failover import platforms
from failover.exec_types import (
    AccessDenied,
    CommandFailed,
    CommandTimedOut,
    ConfigError,
    ExecError,
    OutcomeUnknown,
    _Backoff,
    _short,
)
from failover.rules import State, Step

log = logging.getLogger("failover.executor")
KILL_GRACE = 5.0  # after the platform's kill, how long the service may take to show STOPPED
# How long a start/stop may hold the long-lived session (Windows) before its
# outcome counts as unknown and the session is replaced: sc.exe answers at once,
# except for a hung service (1053 only after the SCM's control timeout).
SESSION_CONTROL_WAIT = 3.0


class ServiceOps:
    def start(self, host: str, service: str) -> str:
        """Start; return when RUNNING and the probe answers (within start_timeout)."""
        svc = self.cluster.services[service]
        action = f"start {service}"
        deadline = time.monotonic() + svc.start_timeout
        reading = self._service_command(host, service, "start", deadline)
        if (
            reading.outcome is platforms.Outcome.OK
            and svc.probe is not None
            and self.platform(host).control_waits(self.refs[service])
            and self.probe(host, service)
        ):
            return f"{service} running"  # the start job is done and the service answers its probe
        poll = _Backoff()
        while True:
            state = self._state_or_unknown(host, service)
            if state is State.RUNNING:
                break
            if state is State.STOPPED and reading.outcome is platforms.Outcome.BUSY:
                # It was stopping when we asked; now it can take the start.
                reading = self._service_command(host, service, "start", deadline)
            elif state is State.STOPPED and self._fails_fast(host, service):
                raise CommandFailed(host, action, f"{service} stopped again right after starting")
            if time.monotonic() > deadline:
                raise CommandFailed(host, action, f"{service} is {state.value}, not RUNNING, at the deadline")
            poll.sleep()
        while not self.probe(host, service):
            if time.monotonic() > deadline:
                raise CommandFailed(
                    host,
                    action,
                    f"{service} runs but its probe does not answer after {svc.start_timeout:g} s",
                )
            poll.sleep()
        return f"{service} running"

    def stop(self, host: str, service: str) -> str:
        """Stop; return when STOPPED. A service still not stopped at its
        stop_timeout is killed where the platform can (taskkill /F /PID on
        Windows, as operators do by hand), else the stop fails."""
        svc = self.cluster.services[service]
        deadline = time.monotonic() + svc.stop_timeout
        reading = self._service_command(host, service, "stop", deadline)
        if reading.outcome is platforms.Outcome.OK and self.platform(host).control_waits(self.refs[service]):
            return f"{service} stopped"  # the stop job is done: no state poll
        poll = _Backoff()
        while True:
            state = self._state_or_unknown(host, service)
            if state is State.STOPPED:
                return f"{service} stopped"
            if state in (State.RUNNING, State.PAUSED) and reading.outcome is platforms.Outcome.BUSY:
                # It was starting when we asked (1061): ask again now it has settled.
                reading = self._service_command(host, service, "stop", deadline)
            if time.monotonic() > deadline:
                return self._kill(host, service, state, reading)
            poll.sleep()

    def restart(self, host: str, service: str) -> str:
        self.stop(host, service)
        return self.start(host, service)

    def _fails_fast(self, host: str, service: str) -> bool:
        return self.refs[service].name is not None and self.platform(host).stopped_after_start_is_failure

    def _state_or_unknown(self, host: str, service: str) -> State:
        try:
            return self.service_state(host, service)
        except (OutcomeUnknown, CommandTimedOut):
            return State.UNKNOWN

    def _service_command(self, host: str, service: str, op: str, deadline: float) -> platforms.Reading:
        """Send start/stop once and read its result. Never repeated blindly:
        when the outcome is unknown the caller looks at the service's state."""
        plat, ref = self.platform(host), self.refs[service]
        action = f"{op} {service}"
        timeout = max(1.0, deadline - time.monotonic())
        try:
            cmd = plat.start_cmd(ref, timeout) if op == "start" else plat.stop_cmd(ref, timeout)
        except platforms.UnsafeArgument as e:
            raise ConfigError(host, action, str(e)) from None
        try:
            res = self.run_short(host, cmd, timeout + 5, action, ref, session_wait=SESSION_CONTROL_WAIT)
        except (OutcomeUnknown, CommandTimedOut) as e:
            log.warning("%s; checking %s's state before going on", e, service)
            return platforms.Reading(platforms.Outcome.NO_RESPONSE, e.detail)
        reading = plat.read_result(op, ref, res.exit_code, res.stdout + res.stderr)
        if reading.outcome is platforms.Outcome.CONFIG:
            raise ConfigError(host, action, reading.detail)
        if reading.outcome is platforms.Outcome.DENIED:
            raise AccessDenied(host, action, reading.detail)
        if reading.outcome is platforms.Outcome.FAILED and (op == "start" or plat.kill_cmd(ref, 1) is None):
            raise CommandFailed(host, action, reading.detail, res)
        if reading.outcome is not platforms.Outcome.OK:
            log.info("%s: %s: %s; watching its state", host, action, reading.detail)
        return reading

    def _kill(self, host: str, service: str, state: State, reading: platforms.Reading) -> str:
        """The stop timeout has passed and the service is still up: kill its
        process (the platform's escalation), or fail the stop."""
        plat, ref = self.platform(host), self.refs[service]
        svc = self.cluster.services[service]
        action = f"stop {service}"
        why = f"{service} is {state.value}, not STOPPED, after its stop timeout of {svc.stop_timeout:g} s"
        if reading.detail:
            why += f" ({reading.detail})"
        pid = None
        pid_cmd = plat.pid_cmd(ref)
        if pid_cmd is not None:
            with contextlib.suppress(ExecError):
                res = self.run_short(host, pid_cmd, 10, f"PID of {service}", ref)
                pid = plat.parse_pid(res.stdout)
        kill = plat.kill_cmd(ref, pid)
        if kill is None:
            raise CommandFailed(host, action, why)
        log.warning("%s: %s: %s; killing it: %s", host, action, why, kill)
        res = self.run(host, kill, 10, f"kill {service}")
        deadline = time.monotonic() + KILL_GRACE
        poll = _Backoff()
        while (state := self._state_or_unknown(host, service)) is not State.STOPPED:
            if time.monotonic() > deadline:
                out = _short(res.stdout + res.stderr)
                raise CommandFailed(host, action, f"{why}; `{kill}` did not stop it (exit {res.exit_code}: {out})")
            poll.sleep()
        return f"{service} killed (`{kill}`) after its stop timeout of {svc.stop_timeout:g} s"

    def do(self, step: Step, guard: Callable[[Step], str] | None = None) -> str:
        if step.op == "restart":
            self.stop(step.host, step.service)
            # The guard holds at the moment a start is sent: re-checked between
            # a restart's stop and its start (leadership may be gone meanwhile).
            refused = guard(step) if guard else ""
            if refused:
                raise CommandFailed(step.host, f"restart {step.service}", f"stopped; start refused: {refused}")
            return self.start(step.host, step.service)
        return {"start": self.start, "stop": self.stop}[step.op](step.host, step.service)
