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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
from failover.exec_types import (  # re-exported: the executor's public types
    AccessDenied,
    AuthFailed,
    CommandFailed,
    CommandTimedOut,
    ConfigError,
    ExecError,
    HostKeyChanged,
    HostKeyUnknown,
    HostStatus,
    OutcomeUnknown,
    PlanReport,
    Progress,
    Result,
    RetryPolicy,
    StepResult,
    Unreachable,
    _short,
)
from failover.inventory import Cluster, Ipc
from failover.plan_runner import PlanRunner
from failover.rules import State
from failover.service_ops import ServiceOps

log = logging.getLogger("failover.executor")
SESSION_RETRY_AFTER = 30.0  # after a session failed to start, exec channels only for this long


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


class Executor(ServiceOps, PlanRunner):
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
        self,
        host: str,
        command: str,
        timeout: float,
        action: str = "run command",
        check: bool = False,
        grace: float = 10.0,
    ) -> Result:
        """An inventory command (smoke check, probe), wrapped per platform so a
        command over its deadline is killed on the host where possible.
        `grace`: how much longer than `timeout` the answer is waited for (the
        host-side kill may take that; where there is none, this is the bound)."""
        plat = self.platform(host)
        res = self.run(host, plat.run_cmd(command, timeout), timeout + grace, action)
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


__all__ = [
    "AccessDenied",
    "AuthFailed",
    "CommandFailed",
    "CommandTimedOut",
    "ConfigError",
    "Connection",
    "ExecError",
    "Executor",
    "HostKeyChanged",
    "HostKeyUnknown",
    "HostStatus",
    "OutcomeUnknown",
    "PlanReport",
    "Progress",
    "Result",
    "RetryPolicy",
    "StepResult",
    "Unreachable",
    "tcp_probe",
    "trust_host",
]
