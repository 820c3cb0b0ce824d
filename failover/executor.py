"""SSH executors: the only way the orchestrator acts on an IPC.

- One paramiko Transport per host, reused (keepalive; rebuilt when broken;
  dropped when opening a channel times out on a live-looking transport).
- Strict host keys from the inventory's known_hosts (unknown and changed keys
  refused); key authentication only, never a password prompt.
- Typed errors naming host and action. Only transient connection-level errors
  are retried (tenacity: exponential backoff with jitter, bounded attempts and
  total time). A non-zero exit is never retried; a start/stop whose outcome is
  unknown is followed by a status check, never blindly repeated.
- Service operations per platform return only when the service is RUNNING
  (and its probe answers) or STOPPED, within the service's timeouts.
- Ordered plans: stages in order; in a stage, hosts in parallel and each
  host's steps in order; stop at the first failure and report what was done,
  what was not, and what is unknown. A stage that starts CTI/IVR on a new
  primary runs only once the old primary is verified fenced.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from failover import platforms
from failover.inventory import Cluster, Ipc
from failover.layouts import APP_SERVICES, LABELS
from failover.rules import Stage, State, Step

log = logging.getLogger("failover.executor")
KILL_GRACE = 5.0  # after the platform's kill, how long the service may take to show STOPPED
# How long a start/stop may hold the long-lived session (Windows) before its
# outcome counts as unknown and the session is replaced: sc.exe answers at once,
# except for a hung service (1053 only after the SCM's control timeout).
SESSION_CONTROL_WAIT = 3.0
SESSION_RETRY_AFTER = 30.0  # after a session failed to start, exec channels only for this long


class _Backoff:
    """Tight polling for state changes: most starts and stops finish within
    tens of milliseconds of the command, a few take seconds. Every `first`
    seconds for the first `tight` seconds (a poll through a long-lived session
    costs a few ms: doubling from the start cost up to 80 ms per step after a
    100 ms transition), then doubling up to `cap`."""

    def __init__(self, first: float = 0.02, cap: float = 0.25, tight: float = 0.5) -> None:
        self.delay, self.cap = first, cap
        self.until = time.monotonic() + tight

    def sleep(self) -> None:
        time.sleep(self.delay)
        if time.monotonic() >= self.until:
            self.delay = min(self.cap, self.delay * 2)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class ExecError(Exception):
    """Base: every error names the host and the action."""

    def __init__(self, host: str, action: str, detail: str) -> None:
        super().__init__(f"{host}: {action}: {detail}")
        self.host, self.action, self.detail = host, action, detail


class Unreachable(ExecError):
    """Could not connect (refused, timed out, connection dropped before the
    command was sent). Transient: retried."""


class AuthFailed(ExecError):
    pass


class HostKeyUnknown(ExecError):
    pass


class HostKeyChanged(ExecError):
    pass


class ConfigError(ExecError):
    """The inventory names something the host does not have (sc.exe 1060), or
    an argument that cannot be quoted safely."""


class AccessDenied(ExecError):
    pass


class CommandFailed(ExecError):
    def __init__(self, host: str, action: str, detail: str, result: Result | None = None) -> None:
        super().__init__(host, action, detail)
        self.result = result


class CommandTimedOut(ExecError):
    pass


class OutcomeUnknown(ExecError):
    """The connection broke after the command was sent: it may or may not have run."""


@dataclass(frozen=True)
class Result:
    host: str
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    total_seconds: float = 15.0
    initial_backoff: float = 0.2
    max_backoff: float = 2.0


# ---------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class Connection:
    """One SSH connection to one IPC, reused across commands."""

    def __init__(self, ipc: Ipc, retry: RetryPolicy) -> None:
        self.ipc = ipc
        self.retry = retry
        self.transport: paramiko.Transport | None = None
        self.lock = threading.Lock()
        self.connects = 0  # TCP connections opened (tests and metrics)
        self.connect_attempts = 0

    @property
    def name(self) -> str:
        return self.ipc.name

    def close(self) -> None:
        with self.lock:
            self._drop()

    def _drop(self) -> None:
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()
        self.transport = None

    def transport_for(self, action: str) -> paramiko.Transport:
        with self.lock:
            if self.transport is not None and self.transport.is_active():
                return self.transport
            self._drop()
            for attempt in Retrying(
                retry=retry_if_exception_type(Unreachable),
                stop=stop_after_attempt(self.retry.attempts) | stop_after_delay(self.retry.total_seconds),
                wait=wait_exponential_jitter(
                    multiplier=self.retry.initial_backoff,
                    max=self.retry.max_backoff,
                    jitter=self.retry.initial_backoff,
                ),
                reraise=True,
            ):
                with attempt:
                    self.transport = self._connect(action)
            assert self.transport is not None
            return self.transport

    def _connect(self, action: str) -> paramiko.Transport:
        ipc = self.ipc
        self.connect_attempts += 1
        try:
            sock = socket.create_connection((ipc.address, ipc.ssh.port), timeout=ipc.ssh.connect_timeout)
        except OSError as e:
            raise Unreachable(self.name, action, f"cannot connect to {ipc.address}:{ipc.ssh.port}: {e}") from None
        # Nagle + delayed ACK stall a pooled channel by ~40 ms per exchange.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = paramiko.Transport(sock)
        t.banner_timeout = t.auth_timeout = ipc.ssh.connect_timeout
        try:
            t.start_client(timeout=ipc.ssh.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            t.close()
            raise Unreachable(
                self.name, action, f"SSH handshake with {ipc.address}:{ipc.ssh.port} failed: {e}"
            ) from None
        self.connects += 1
        try:
            self._check_host_key(t, action)
            self._authenticate(t, action)
        except BaseException:
            t.close()
            raise
        t.set_keepalive(max(1, int(ipc.ssh.connect_timeout)))
        return t

    def _check_host_key(self, t: paramiko.Transport, action: str) -> None:
        ipc = self.ipc
        server_key = t.get_remote_server_key()
        name = known_hosts_name(ipc.address, ipc.ssh.port)
        try:
            known = paramiko.HostKeys(ipc.ssh.known_hosts)
        except (OSError, paramiko.SSHException) as e:
            raise HostKeyUnknown(self.name, action, f"cannot read known_hosts {ipc.ssh.known_hosts}: {e}") from None
        entry = known.lookup(name)
        if not entry:
            raise HostKeyUnknown(
                self.name,
                action,
                f"host key of {name} is not in {ipc.ssh.known_hosts} ({server_key.get_name()} "
                f"{fingerprint(server_key)}); verify it, then `failover hosts trust {self.name}`",
            )
        stored = entry.get(server_key.get_name())
        if stored is None or stored.asbytes() != server_key.asbytes():
            raise HostKeyChanged(
                self.name,
                action,
                f"HOST KEY CHANGED for {name}: it now presents {server_key.get_name()} "
                f"{fingerprint(server_key)}, not the key in {ipc.ssh.known_hosts}; refusing to connect "
                "(possible impersonation, or a reinstalled host)",
            )

    def _authenticate(self, t: paramiko.Transport, action: str) -> None:
        ipc = self.ipc
        try:
            key = paramiko.PKey.from_path(ipc.ssh.key)
        except (OSError, paramiko.SSHException, ValueError) as e:
            raise AuthFailed(self.name, action, f"cannot load private key {ipc.ssh.key}: {e}") from None
        try:
            t.auth_publickey(ipc.ssh.user, key)
        except paramiko.AuthenticationException:
            raise AuthFailed(self.name, action, f"key {ipc.ssh.key} refused for user {ipc.ssh.user}") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise Unreachable(self.name, action, f"connection lost during authentication: {e}") from None
        if not t.is_authenticated():
            raise AuthFailed(self.name, action, f"key {ipc.ssh.key} not accepted for {ipc.ssh.user}")

    def open_channel(self, action: str) -> paramiko.Channel:
        t = self.transport_for(action)
        try:
            return t.open_session(timeout=self.ipc.ssh.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            # A transport that looks alive but cannot open a channel (broken
            # network) is dropped; the command was not sent, so it is safe to
            # try once more on a fresh connection.
            with self.lock:
                if self.transport is t:
                    self._drop()
            log.info("dropped connection to %s: %s", self.name, e)
            t = self.transport_for(action)
            try:
                return t.open_session(timeout=self.ipc.ssh.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as e2:
                with self.lock:
                    self._drop()
                raise Unreachable(self.name, action, f"cannot open a channel: {e2}") from None


# ---------------------------------------------------------------------------
# Status, probes, results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HostStatus:
    host: str
    states: dict[str, State]
    line: str
    duration: float
    healthy: dict[str, bool | None] = field(default_factory=dict)  # probe results


@dataclass
class StepResult:
    step: Step
    status: str  # done | failed | unknown | not run
    detail: str = ""
    duration: float = 0.0

    def line(self) -> str:
        what = f"{self.step.op} {LABELS.get(self.step.service, self.step.service)} on {self.step.host}"
        dur = f" {self.duration:.1f} s" if self.status != "not run" else ""
        return f"{what}: {self.status}{dur}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class PlanReport:
    results: list[StepResult]
    blocked: str = ""  # why the plan stopped early, if it did

    @property
    def ok(self) -> bool:
        return all(r.status == "done" for r in self.results) and not self.blocked

    def by_status(self, status: str) -> list[StepResult]:
        return [r for r in self.results if r.status == status]

    def summary(self) -> str:
        if self.ok:
            return f"plan done: {len(self.results)} step(s)"
        parts = [
            f"{s}: " + "; ".join(r.line() for r in self.by_status(s))
            for s in ("done", "failed", "unknown", "not run")
            if self.by_status(s)
        ]
        return (f"plan stopped ({self.blocked}). " if self.blocked else "plan stopped. ") + " | ".join(parts)


Progress = Callable[[str], None]


# ---------------------------------------------------------------------------
# The executor
# ---------------------------------------------------------------------------


class Executor:
    """Runs commands and service operations on the IPCs of one cluster."""

    def __init__(self, cluster: Cluster, retry: RetryPolicy | None = None) -> None:
        self.cluster = cluster
        self.retry = retry or RetryPolicy()
        self.refs = platforms.refs(cluster.services)
        self._conns = {i.name: Connection(i, self.retry) for i in cluster.ipcs}
        self._platforms = platforms.for_cluster(cluster)
        self._sessions: dict[str, _Session] = {}
        # One lock per host around opening its session (steps poll in parallel
        # with the monitor); never one lock for every host: opening a session to
        # an unreachable peer must not hold up polls of our own IPC.
        self._session_locks = {i.name: threading.Lock() for i in cluster.ipcs}
        # A host whose session did not start is not asked to start one again
        # for a while (each try costs up to connect_timeout): exec channels meanwhile.
        self._no_session_until: dict[str, float] = {}

    def close(self) -> None:
        for h in list(self._sessions):
            self._close_session(h)
        for c in self._conns.values():
            c.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connection(self, host: str) -> Connection:
        return self._conns[host]

    def platform(self, host: str) -> platforms.Platform:
        return self._platforms[host]

    # ----- commands -----------------------------------------------------------
    def run(self, host: str, command: str, timeout: float, action: str = "run command", check: bool = False) -> Result:
        """Run one command with a deadline. A non-zero exit is returned (or
        raised as CommandFailed with check=True), never retried."""
        chan = self._conns[host].open_channel(action)
        start = time.monotonic()
        out, err = bytearray(), bytearray()
        try:
            chan.settimeout(0.0)
            _exec_within(chan, command, min(timeout, self.cluster.ipc(host).ssh.connect_timeout))
            deadline = start + timeout
            while True:
                self._drain(chan, out, err)
                if chan.exit_status_ready():
                    break
                if chan.closed or not chan.get_transport() or not chan.get_transport().is_active():  # type: ignore[union-attr]
                    raise OutcomeUnknown(
                        host,
                        action,
                        "connection lost while the command ran; it may or may not have taken effect",
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommandTimedOut(host, action, f"no answer within {timeout:g} s (`{_short(command)}`)")
                chan.status_event.wait(min(left, 0.05))
            code = chan.recv_exit_status()
            # Output can trail the exit status by a packet.
            end = time.monotonic() + 1.0
            while not (chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready()):
                self._drain(chan, out, err)
                if time.monotonic() > end:
                    break
                time.sleep(0.001)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._conns[host].close()
            raise OutcomeUnknown(host, action, f"connection lost after sending the command: {e}") from None
        finally:
            with contextlib.suppress(Exception):
                chan.close()
        res = Result(
            host,
            command,
            code,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
            time.monotonic() - start,
        )
        log.debug("%s: %s: exit %s in %.3f s", host, action, code, res.duration)
        if check and code != 0:
            raise CommandFailed(host, action, f"exit {code}: {_short(res.stderr or res.stdout)}", res)
        return res

    @staticmethod
    def _drain(chan: paramiko.Channel, out: bytearray, err: bytearray) -> None:
        while chan.recv_ready():
            out += chan.recv(65536)
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)

    def run_shell(
        self, host: str, command: str, timeout: float, action: str = "run command", check: bool = False
    ) -> Result:
        """An inventory command (smoke check, probe), wrapped per platform so a
        command over its deadline is killed on the host where possible."""
        plat = self.platform(host)
        res = self.run(host, plat.run_cmd(command, timeout), timeout + 10, action)
        if plat.killed_at_deadline(res.exit_code):
            raise CommandTimedOut(
                host, action, f"killed on the host at its deadline of {timeout:g} s (`{_short(command)}`)"
            )
        if check and res.exit_code != 0:
            raise CommandFailed(host, action, f"exit {res.exit_code}: {_short(res.stderr or res.stdout)}", res)
        return res

    # ----- status -------------------------------------------------------------
    def status_all(self, host: str) -> HostStatus:
        """Every service's state in ONE round trip (the monitor's hot path)."""
        plat = self.platform(host)
        refs = list(self.refs.values())
        res = self.run(host, plat.batch_status_cmd(refs), 15, "status of all services")
        try:
            states, line = plat.parse_batch(res.stdout, refs)
        except (ValueError, IndexError) as e:
            raise CommandFailed(
                host,
                "status of all services",
                f"unreadable status output ({e}): {_short(res.stdout or res.stderr)}",
                res,
            ) from None
        return HostStatus(host, states, line, res.duration)

    def status_fast(self, host: str) -> HostStatus:
        """Batched status through a long-lived remote session fed over stdin
        (no sshd session setup nor process start per call), where the platform
        has one; otherwise, and whenever the session breaks, status_all()."""
        plat = self.platform(host)
        if plat.session_cmd() is None:
            return self.status_all(host)
        refs = list(self.refs.values())
        t0 = time.monotonic()
        sess = None
        try:
            sess = self._session(host)
            out = sess.ask(plat.session_status_request(refs), plat.session_answer_done, 10)
            states, line = plat.parse_batch(out, refs)
        except (ExecError, ValueError, IndexError) as e:
            log.info("%s: status session failed (%s); using an exec channel", host, e)
            if sess is not None:
                self._close_session(host, sess)
            return self.status_all(host)
        return HostStatus(host, states, line, time.monotonic() - t0)

    def _session(self, host: str) -> _Session:
        with self._session_locks[host]:
            sess = self._sessions.get(host)
            if sess is not None and sess.alive():
                return sess
            if time.monotonic() < self._no_session_until.get(host, 0.0):
                raise Unreachable(host, "open status session", "the last one did not start; using exec channels")
            plat = self.platform(host)
            cmd = plat.session_cmd()
            assert cmd is not None
            chan = self._conns[host].open_channel("open status session")
            timeout = self.cluster.ipc(host).ssh.connect_timeout
            try:
                sess = _Session(host, chan, cmd, timeout)
                ready = plat.session_ready_request()
                if ready is not None:
                    sess.ask(ready, plat.session_answer_done, timeout)
            except (paramiko.SSHException, OSError, EOFError, ExecError) as e:
                with contextlib.suppress(Exception):
                    chan.close()
                self._no_session_until[host] = time.monotonic() + SESSION_RETRY_AFTER
                if not isinstance(e, ExecError):
                    self._conns[host].close()
                raise Unreachable(host, "open status session", f"the session did not start: {e}") from None
            self._sessions[host] = sess
            return sess

    def _close_session(self, host: str, sess: _Session | None = None) -> None:
        """Close the host's session (only `sess`, when given: another thread
        may already have replaced a broken one)."""
        with self._session_locks[host]:
            current = self._sessions.get(host)
            if current is None or (sess is not None and current is not sess):
                return
            del self._sessions[host]
        current.close()

    def observe(self, host: str) -> HostStatus:
        """Batched status (through the long-lived session when the platform has
        one) plus the application probes of the running services, in parallel:
        the monitor's hot path."""
        st = self.status_fast(host)
        running = [s for s, v in st.states.items() if v is State.RUNNING and self._probe_of(s)]
        healthy: dict[str, bool | None] = {s: None for s in st.states}
        if running:
            with ThreadPoolExecutor(max_workers=len(running)) as pool:
                for s, ok in zip(running, pool.map(lambda s: self.probe(host, s), running), strict=True):
                    healthy[s] = ok
        return HostStatus(host, st.states, st.line, st.duration, healthy)

    def _probe_of(self, service: str) -> platforms.ServiceRef | None:
        svc = self.cluster.services[service]
        return self.refs[service] if svc.probe is not None else None

    def probe(self, host: str, service: str) -> bool:
        """The service's application-level probe. TCP probes run from here
        against the IPC (a hung process accepts TCP but never answers)."""
        svc = self.cluster.services[service]
        if svc.probe is None:
            return True
        ipc = self.cluster.ipc(host)
        if svc.probe.tcp is not None:
            p = svc.probe.tcp
            port = ipc.probe_ports.get(service, p.port)  # type: ignore[call-overload]
            return tcp_probe(p.host or ipc.address, port, p.send, p.expect, p.timeout)
        assert svc.probe.command is not None
        try:
            return self.run_shell(host, svc.probe.command, svc.probe.timeout, f"probe {service}").exit_code == 0
        except (CommandTimedOut, OutcomeUnknown):
            return False

    def run_short(
        self,
        host: str,
        command: str,
        timeout: float,
        action: str,
        svc: platforms.ServiceRef | None = None,
        session_wait: float | None = None,
    ) -> Result:
        """A short service-control command (sc.exe start/stop/queryex of
        `svc`) through the host's long-lived session where the platform runs
        it there (Windows: no new Win32-OpenSSH session and cmd.exe per
        command), else an exec channel. No answer in time is OutcomeUnknown, as
        on a channel: the command may still run on the host; the session is
        closed (under its own lock, so nobody reads the late answer)."""
        plat = self.platform(host)
        request = plat.session_command_request(svc, command) if svc is not None else None
        if request is None:
            return self.run(host, command, timeout, action)
        try:
            sess = self._session(host)
        except ExecError as e:
            log.debug("%s: no status session (%s); %s through an exec channel", host, e, action)
            return self.run(host, command, timeout, action)
        t0 = time.monotonic()
        try:
            answer = sess.ask(request, plat.session_answer_done, min(timeout, session_wait or timeout))
        except ExecError as e:
            self._close_session(host, sess)
            raise OutcomeUnknown(host, action, f"no answer through the session ({e.detail})") from None
        code, out = platforms.session_command_result(answer)
        log.debug("%s: %s (session): exit %s in %.3f s", host, action, code, time.monotonic() - t0)
        if code is None:
            self._close_session(host, sess)
            raise OutcomeUnknown(host, action, f"unreadable session answer: {_short(out)}")
        return Result(host, command, code, out, "", time.monotonic() - t0)

    def service_state(self, host: str, service: str) -> State:
        """One service's state: a single short command where the platform has
        one (sc.exe queryex), else the batched status (the session on Linux)."""
        plat, ref = self.platform(host), self.refs[service]
        cmd = plat.single_status_cmd(ref)
        if cmd is None:
            return self.status_fast(host).states[service]
        try:
            res = self.run_short(host, cmd, 10, f"status of {service}", ref)
        except OutcomeUnknown as e:
            log.info("%s; asking through an exec channel", e)
            res = self.run(host, cmd, 10, f"status of {service}")
        return plat.parse_state(res.stdout + res.stderr, ref)

    # ----- service operations ---------------------------------------------------
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

    # ----- plans ------------------------------------------------------------------
    def fenced(self, host: str) -> tuple[bool, str]:
        """Verify over SSH that CTI and IVR are stopped on `host` (the same
        batched status, through the long-lived session where there is one)."""
        try:
            st = self.status_fast(host)
        except ExecError as e:
            return False, f"cannot verify: {e}"
        up = [s for s in sorted(APP_SERVICES) if st.states.get(s) is not State.STOPPED]
        if up:
            return False, f"{', '.join(up)} not stopped on {host}"
        return True, f"CTI and IVR verified stopped on {host}"

    def execute(
        self,
        plan: Sequence[Stage],
        progress: Progress | None = None,
        fence_check: Callable[[str], tuple[bool, str]] | None = None,
        guard: Callable[[Step], str] | None = None,
    ) -> PlanReport:
        """Run a plan. fence_check(old) decides whether a gated stage may start
        CTI/IVR (default: verify over SSH). guard(step), checked right before
        each step, returns a reason to refuse it ("" = go): the agent refuses
        CTI/IVR starts the moment it is no longer a confirmed primary."""
        say = progress or (lambda _m: None)
        check = fence_check or self.fenced
        results = [StepResult(s, "not run") for st in plan for s in st.steps]
        index = {id(r.step): r for r in results}
        blocked = ""
        for st in plan:
            if blocked:
                break
            if st.requires_fenced:
                ok, why = check(st.requires_fenced)
                say(f"fencing {st.requires_fenced}: {why}")
                if not ok:
                    blocked = f"{st.requires_fenced} not verified fenced: {why}; CTI/IVR not started"
                    break
            failed = self._run_stage(st, [index[id(s)] for s in st.steps], say, guard)
            if failed:
                blocked = failed
        return PlanReport(results, blocked)

    def _run_stage(
        self, st: Stage, results: list[StepResult], say: Progress, guard: Callable[[Step], str] | None = None
    ) -> str:
        """Hosts in parallel; on each host, a step waits only for the earlier
        steps it is ordered after (start order, reversed for stops; a stop
        before a start, a restart after everything before it), so independent
        steps run at once. The first failure stops new steps from starting."""
        hosts: dict[str, list[StepResult]] = {}
        for r in results:
            hosts.setdefault(r.step.host, []).append(r)
        abort = threading.Event()
        after = _closure(self.cluster.after())
        jobs = [(r, _deps(rs, k, after)) for rs in hosts.values() for k, r in enumerate(rs)]
        done = {id(r): threading.Event() for r, _ in jobs}

        def run_step(r: StepResult, deps: list[StepResult]) -> None:
            try:
                for d in deps:
                    done[id(d)].wait()
                if abort.is_set() or any(d.status != "done" for d in deps):
                    return
                self._run_step(r, say, guard)
                if r.status != "done":
                    abort.set()
            finally:
                done[id(r)].set()

        if len(jobs) == 1:
            run_step(*jobs[0])
        else:
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                list(pool.map(lambda j: run_step(*j), jobs))
        bad = [r for r in results if r.status in ("failed", "unknown")]
        return f"stage '{st.title}' failed at: {bad[0].line()}" if bad else ""

    def _run_step(self, r: StepResult, say: Progress, guard: Callable[[Step], str] | None) -> None:
        what = f"{LABELS.get(r.step.service, r.step.service)} on {r.step.host}"
        refused = guard(r.step) if guard else ""
        if refused:
            r.status, r.detail = "failed", f"refused: {refused}"
            say(f"{r.step.op} {r.step.service} on {r.step.host}: refused ({refused})")
            return
        say(f"{r.step.op}ing {what} …")
        t0 = time.monotonic()
        try:
            r.detail = self.do(r.step, guard)
            r.status = "done"
        except (OutcomeUnknown, CommandTimedOut) as e:
            r.status, r.detail = "unknown", e.detail
        except ExecError as e:
            r.status, r.detail = "failed", e.detail
        r.duration = time.monotonic() - t0
        log.debug("step %s %s on %s: %s in %.3f s", r.step.op, r.step.service, r.step.host, r.status, r.duration)
        say(f"{r.step.op} {what}: {r.status} {r.duration:.1f} s" + ("" if r.status == "done" else f" ({r.detail})"))

    def dry_run(self, plan: Sequence[Stage]) -> list[str]:
        """The exact commands a plan would run, per host, without connecting."""
        lines = []
        for n, st in enumerate(plan, 1):
            gate = f"  [only once {st.requires_fenced} is verified fenced]" if st.requires_fenced else ""
            lines.append(f"{n}. {st.title}{gate}")
            for s in st.steps:
                for cmd in platforms.step_commands(self.cluster, s.host, s.op, s.service, self.refs):
                    lines.append(f"   {s.host}: {cmd}")
        return lines


class _Session:
    """One long-lived remote command fed requests over stdin. Any error or
    timeout closes it while its lock is still held: a request that was
    waiting can never read the late answer to the one before it."""

    def __init__(self, host: str, chan: paramiko.Channel, command: str, timeout: float) -> None:
        self.host, self.chan = host, chan
        self.lock = threading.Lock()
        _exec_within(chan, command, timeout)

    def alive(self) -> bool:
        t = self.chan.get_transport()
        return not self.chan.closed and not self.chan.exit_status_ready() and bool(t and t.is_active())

    def ask(self, request: str, done: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        # The wait for another request counts against this one's deadline.
        if not self.lock.acquire(timeout=max(0.0, timeout)):
            raise CommandTimedOut(self.host, "status session", f"busy for {timeout:g} s")
        try:
            if self.chan.closed:
                raise OutcomeUnknown(self.host, "status session", "the session was closed")
            self.chan.settimeout(max(0.01, deadline - time.monotonic()))  # a full window must not block forever
            self.chan.sendall(request.encode())
            buf = b""
            while not done(buf.decode(errors="replace")):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommandTimedOut(self.host, "status session", f"no answer within {timeout:g} s")
                while self.chan.recv_stderr_ready():  # unread stderr would fill the window
                    self.chan.recv_stderr(65536)
                self.chan.settimeout(min(left, 0.5))
                try:
                    data = self.chan.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    raise OutcomeUnknown(self.host, "status session", "the session ended")
                buf += data
            return buf.decode(errors="replace")
        except (OSError, paramiko.SSHException, EOFError) as e:
            self.close()
            raise OutcomeUnknown(self.host, "status session", str(e)) from None
        except ExecError:
            self.close()
            raise
        finally:
            self.lock.release()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.chan.close()


def _exec_within(chan: paramiko.Channel, command: str, timeout: float) -> None:
    """paramiko's exec_command waits for the server's answer with no deadline:
    on a black-holed link it would block forever. Closing the channel at the
    deadline wakes it (it then raises SSHException, read as a lost connection)."""
    timer = threading.Timer(timeout, chan.close)
    timer.daemon = True
    timer.start()
    try:
        chan.exec_command(command)
    finally:
        timer.cancel()


def _closure(after: dict[str, tuple[str, ...]]) -> dict[str, set[str]]:
    """Every service each one is ordered after, directly or through others."""
    out: dict[str, set[str]] = {}

    def visit(s: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if s not in out:
            direct = set(after.get(s, ())) - seen - {s}
            out[s] = set(direct)
            for d in direct:
                out[s] |= visit(d, seen | {s})
        return out[s]

    for s in after:
        visit(s)
    return out


def _deps(steps: list[StepResult], k: int, after: dict[str, set[str]]) -> list[StepResult]:
    """The earlier steps of one host that step k must wait for."""
    me = steps[k].step
    deps = []
    for r in steps[:k]:
        other = r.step
        if "restart" in (me.op, other.op) or me.op != other.op or me.service == other.service:
            deps.append(r)  # a stop before a start; a restart is a barrier
        elif me.op == "start" and other.service in after.get(me.service, set()):
            deps.append(r)  # started after what it is ordered after
        elif me.op == "stop" and me.service in after.get(other.service, set()):
            deps.append(r)  # stopped after what is ordered after it
    return deps


def tcp_probe(host: str, port: int, send: str, expect: str, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(send.encode())
            buf = b""
            deadline = time.monotonic() + timeout
            while len(buf) < len(expect) and time.monotonic() < deadline:
                data = s.recv(256)
                if not data:
                    break
                buf += data
            return buf.decode(errors="replace").startswith(expect)
    except OSError:
        return False


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def trust_host(ipc: Ipc, accept: Callable[[str], bool]) -> str:
    """First contact with a host key: show its fingerprint, add it to the
    inventory's known_hosts only if `accept(fingerprint_text)` says so."""
    name = known_hosts_name(ipc.address, ipc.ssh.port)
    try:
        sock = socket.create_connection((ipc.address, ipc.ssh.port), timeout=ipc.ssh.connect_timeout)
    except OSError as e:
        raise Unreachable(ipc.name, "trust host key", f"cannot connect to {ipc.address}:{ipc.ssh.port}: {e}") from None
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=ipc.ssh.connect_timeout)
        key = t.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise Unreachable(ipc.name, "trust host key", f"SSH handshake failed: {e}") from None
    finally:
        t.close()
    path = Path(ipc.ssh.known_hosts)
    known = paramiko.HostKeys(str(path)) if path.exists() else paramiko.HostKeys()
    entry = known.lookup(name)
    text = f"{name} {key.get_name()} {fingerprint(key)}"
    if entry and key.get_name() in entry:
        if entry[key.get_name()].asbytes() == key.asbytes():
            return f"{ipc.name}: already trusted: {text}"
        raise HostKeyChanged(
            ipc.name,
            "trust host key",
            f"{name} presents {fingerprint(key)}, which differs from the key in {path}; "
            "remove the old line by hand after checking why it changed",
        )
    if not accept(text):
        return f"{ipc.name}: not trusted (nothing written)"
    with path.open("a") as f:
        f.write(f"{name} {key.get_name()} {key.get_base64()}\n")
    return f"{ipc.name}: trusted {text} (added to {path})"
