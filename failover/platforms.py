"""Per-platform service commands and the parsing of their output (pure: builds
strings, parses strings; the executor runs them).

No inventory or user text reaches a shell unquoted: POSIX arguments go through
shlex.quote; cmd.exe has no reliable escaping, so arguments are wrapped in
double quotes only after checking they contain nothing cmd.exe interprets.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from failover.rules import State

SEP = "@@failover@@"


class UnsafeArgument(ValueError):
    pass


_CMD_SAFE = re.compile(r"^[A-Za-z0-9 _.+@#()\-:\\/]{1,255}$")


def quote_cmd(arg: str) -> str:
    """Quote one argument for cmd.exe, refusing what cannot be quoted safely
    (" % ^ & | < > ! and control characters)."""
    if not _CMD_SAFE.match(arg):
        raise UnsafeArgument(f"{arg!r} cannot be passed safely to cmd.exe")
    return f'"{arg}"'


def quote_posix(arg: str) -> str:
    if "\0" in arg or "\n" in arg:
        raise UnsafeArgument(f"{arg!r} contains a NUL or newline")
    return shlex.quote(arg)


# ---------------------------------------------------------------------------
# Windows: sc.exe
# ---------------------------------------------------------------------------

SC_STATES = {
    1: State.STOPPED,
    2: State.START_PENDING,
    3: State.STOP_PENDING,
    4: State.RUNNING,
    5: State.START_PENDING,
    6: State.STOP_PENDING,
    7: State.STOPPED,
}
# sc.exe codes 5: CONTINUE_PENDING, 6: PAUSE_PENDING, 7: PAUSED (not serving -> treated as stopped)

WIN32_ALREADY_RUNNING = 1056
WIN32_NOT_STARTED = 1062
WIN32_NO_SUCH_SERVICE = 1060
WIN32_ACCESS_DENIED = 5
WIN32_MESSAGES = {
    WIN32_ALREADY_RUNNING: "already running",
    WIN32_NOT_STARTED: "not started",
    WIN32_NO_SUCH_SERVICE: "no such service (configuration error)",
    WIN32_ACCESS_DENIED: "access denied",
    1053: "the service did not respond to the start or control request in a timely fashion",
    1061: "the service cannot accept control messages at this time",
}


@dataclass(frozen=True)
class ScResult:
    state: State | None  # parsed STATE, when the output has one
    error: int | None  # Win32 error code from "FAILED nnnn", if any


def parse_sc(output: str) -> ScResult:
    """Parse `sc.exe query|start|stop` output (CRLF, OEM code page)."""
    text = output.replace("\r\n", "\n").replace("\r", "\n")
    m = re.search(r"FAILED\s+(\d+)", text)
    err = int(m.group(1)) if m else None
    m = re.search(r"^\s*STATE\s*:\s*(\d+)", text, re.MULTILINE)
    state = SC_STATES.get(int(m.group(1)), State.UNKNOWN) if m else None
    return ScResult(state, err)


# ---------------------------------------------------------------------------
# Service control per platform
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceRef:
    """One logical service as the platform knows it."""

    logical: str
    name: str | None  # platform service name (None when explicit commands are used)
    start: str | None = None  # explicit commands
    stop: str | None = None
    status: str | None = None


class Platform:
    kind = "abstract"
    shell = "posix"

    def quote(self, arg: str) -> str:
        return quote_posix(arg)

    def status_cmd(self, svc: ServiceRef) -> str:
        raise NotImplementedError

    def start_cmd(self, svc: ServiceRef, timeout: float) -> str:
        raise NotImplementedError

    def stop_cmd(self, svc: ServiceRef, timeout: float) -> str:
        raise NotImplementedError

    def batch_status_cmd(self, services: Sequence[ServiceRef]) -> str:
        raise NotImplementedError

    def parse_batch(self, output: str, services: Sequence[ServiceRef]) -> tuple[dict[str, State], str]:
        """-> ({logical: state}, line status)."""
        raise NotImplementedError

    def run_cmd(self, command: str, timeout: float) -> str:
        """A free-form inventory command (smoke check, probe) with a deadline."""
        return command

    def describe(self, op: str, svc: ServiceRef, timeout: float) -> list[str]:
        """The exact commands an operation runs, for dry runs and `explain`."""
        if op == "stop":
            return [self.stop_cmd(svc, timeout)]
        if op == "start":
            return [self.start_cmd(svc, timeout)]
        return [self.stop_cmd(svc, timeout), self.start_cmd(svc, timeout)]


def _explicit_state(code: int) -> State:
    # LSB: 0 running, 3 stopped; Pacemaker: 7 cleanly stopped; anything else failed.
    return State.RUNNING if code == 0 else State.STOPPED if code in (3, 7) else State.UNKNOWN


def _explicit_from_block(text: str) -> State:
    m = re.search(rf"{SEP}rc (-?\d+)", text)
    return _explicit_state(int(m.group(1))) if m else State.UNKNOWN


class Posix(Platform):
    """Linux hosts: a command over its deadline is killed on the host too
    (a closed SSH channel alone leaves it running)."""

    def run_cmd(self, command: str, timeout: float) -> str:
        return f"timeout -k 5 {timeout:g} sh -c {quote_posix(command)}"

    def session_cmd(self) -> str | None:
        return "exec sh"

    def session_status_request(self, services: Sequence[ServiceRef]) -> str:
        return f"{self.batch_status_cmd(services)}; echo {SEP}end\n"

    def session_answer_done(self, buf: str) -> bool:
        return buf.endswith(f"{SEP}end\n")


class Windows(Platform):
    kind = "windows"
    shell = "cmd"

    def quote(self, arg: str) -> str:
        return quote_cmd(arg)

    def status_cmd(self, svc: ServiceRef) -> str:
        return svc.status if svc.name is None else f"sc.exe query {quote_cmd(svc.name)}"  # type: ignore[return-value]

    def start_cmd(self, svc: ServiceRef, timeout: float) -> str:
        return svc.start if svc.name is None else f"sc.exe start {quote_cmd(svc.name)}"  # type: ignore[return-value]

    def stop_cmd(self, svc: ServiceRef, timeout: float) -> str:
        return svc.stop if svc.name is None else f"sc.exe stop {quote_cmd(svc.name)}"  # type: ignore[return-value]

    def describe(self, op: str, svc: ServiceRef, timeout: float) -> list[str]:
        if svc.name is None:
            return super().describe(op, svc, timeout)
        poll = f"sc.exe query {quote_cmd(svc.name)}"
        stop = f"{self.stop_cmd(svc, timeout)}  (poll `{poll}` until STOPPED, {timeout:g} s)"
        start = f"{self.start_cmd(svc, timeout)}  (poll `{poll}` until RUNNING, {timeout:g} s)"
        return {"stop": [stop], "start": [start]}.get(op, [stop, start])

    def batch_status_cmd(self, services: Sequence[ServiceRef]) -> str:
        parts = []
        for s in services:
            parts.append(f"echo {SEP} {s.logical}")
            if s.name is not None:
                parts.append(f"sc.exe query {quote_cmd(s.name)}")
            else:
                # %^errorlevel% under `call` is expanded when the echo runs, not
                # when the whole line is parsed.
                parts += [f"({s.status})", f"call echo {SEP}rc %^errorlevel%"]
        return " & ".join(parts)

    def parse_batch(self, output: str, services: Sequence[ServiceRef]) -> tuple[dict[str, State], str]:
        blocks = _split_blocks(output)
        states: dict[str, State] = {}
        for s in services:
            text = blocks.get(s.logical, "")
            if s.name is None:
                states[s.logical] = _explicit_from_block(text)
            else:
                r = parse_sc(text)
                states[s.logical] = r.state or State.UNKNOWN
        return states, "unknown"


class Systemd(Posix):
    kind = "systemd"

    def status_cmd(self, svc: ServiceRef) -> str:
        if svc.name is None:
            return svc.status  # type: ignore[return-value]
        return f"systemctl show -p ActiveState --value {quote_posix(svc.name)}"

    def start_cmd(self, svc: ServiceRef, timeout: float) -> str:
        if svc.name is None:
            return self.run_cmd(svc.start, timeout)  # type: ignore[arg-type]
        return f"timeout -k 5 {timeout:g} systemctl start {quote_posix(svc.name)}"

    def stop_cmd(self, svc: ServiceRef, timeout: float) -> str:
        if svc.name is None:
            return self.run_cmd(svc.stop, timeout)  # type: ignore[arg-type]
        return f"timeout -k 5 {timeout:g} systemctl stop {quote_posix(svc.name)}"

    def batch_status_cmd(self, services: Sequence[ServiceRef]) -> str:
        parts = []
        for s in services:
            parts.append(f"echo {quote_posix(f'{SEP} {s.logical}')}")
            if s.name is not None:
                parts.append(f"systemctl show -p ActiveState --value {quote_posix(s.name)}")
            else:
                parts.append(f"( {s.status} ) >/dev/null 2>&1; echo {SEP}rc $?")
        return "; ".join(parts)

    def parse_batch(self, output: str, services: Sequence[ServiceRef]) -> tuple[dict[str, State], str]:
        blocks = _split_blocks(output)
        states: dict[str, State] = {}
        mapping = {
            "active": State.RUNNING,
            "reloading": State.RUNNING,
            "inactive": State.STOPPED,
            "failed": State.STOPPED,
            "activating": State.START_PENDING,
            "deactivating": State.STOP_PENDING,
        }
        for s in services:
            text = blocks.get(s.logical, "").strip()
            if s.name is None:
                states[s.logical] = _explicit_from_block(text)
            else:
                states[s.logical] = mapping.get(text.splitlines()[0] if text else "", State.UNKNOWN)
        return states, "unknown"


class Lab(Posix):
    """The lab's simulated IPC: services are driven by its simctl command.
    Inventory commands that begin with a simulator verb (call, fault, status)
    go to the IPC's own simulator; others run in a POSIX shell."""

    kind = "lab"
    SIM_VERBS = ("call", "fault", "status", "start", "stop")

    def __init__(self, control: Sequence[str]) -> None:
        self.control = list(control)

    def _cmd(self, *args: str) -> str:
        return " ".join(quote_posix(a) for a in (*self.control, *args))

    def status_cmd(self, svc: ServiceRef) -> str:
        return self._cmd("status")

    def start_cmd(self, svc: ServiceRef, timeout: float) -> str:
        return self._cmd("start", svc.name or svc.logical, "--timeout", f"{timeout:g}")

    def stop_cmd(self, svc: ServiceRef, timeout: float) -> str:
        return self._cmd("stop", svc.name or svc.logical, "--timeout", f"{timeout:g}")

    def run_cmd(self, command: str, timeout: float) -> str:
        words = shlex.split(command)
        if words and words[0] in self.SIM_VERBS:
            return self._cmd(*words, "--timeout", f"{timeout:g}")
        # Other commands run in the simulated IPC's own directory (its "disk").
        return f"cd {quote_posix(self.control[-1])} && " + super().run_cmd(command, timeout)

    def batch_status_cmd(self, services: Sequence[ServiceRef]) -> str:
        return self._cmd("status")  # one call returns every service

    def session_cmd(self) -> str | None:
        return self._cmd("serve")  # the simulator's own request loop

    def session_status_request(self, services: Sequence[ServiceRef]) -> str:
        return "status\n"

    def session_answer_done(self, buf: str) -> bool:
        return buf.endswith("\n")

    def parse_batch(self, output: str, services: Sequence[ServiceRef]) -> tuple[dict[str, State], str]:
        data = json.loads(output.strip().splitlines()[-1])
        by_name = data.get("services", {})
        states = {}
        for s in services:
            raw = by_name.get(s.name or s.logical, {}).get("state", "UNKNOWN")
            states[s.logical] = State(raw) if raw in State.__members__ else State.UNKNOWN
        return states, str(data.get("line", "unknown"))


def _split_blocks(output: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    current = None
    for line in output.replace("\r\n", "\n").split("\n"):
        if line.startswith(SEP + " "):
            current = line[len(SEP) + 1 :].strip()
            blocks[current] = ""
        elif current is not None:
            blocks[current] += line + "\n"
    return blocks


def for_ipc(ipc: object) -> Platform:
    from failover.inventory import Ipc

    assert isinstance(ipc, Ipc)
    if ipc.platform == "windows":
        return Windows()
    if ipc.platform == "systemd":
        return Systemd()
    assert ipc.lab is not None
    return Lab(ipc.lab.control)


def refs(services: Mapping[str, object]) -> dict[str, ServiceRef]:
    from failover.inventory import Service

    out = {}
    for logical, svc in services.items():
        assert isinstance(svc, Service)
        if svc.commands is not None:
            out[logical] = ServiceRef(logical, None, svc.commands.start, svc.commands.stop, svc.commands.status)
        else:
            out[logical] = ServiceRef(logical, svc.service)
    return out


def step_commands(
    cluster: object, host: str, op: str, service: str, service_refs: Mapping[str, ServiceRef] | None = None
) -> list[str]:
    """The exact commands one plan step runs (dry runs, `explain`, drills)."""
    from failover.inventory import Cluster

    assert isinstance(cluster, Cluster)
    svc = cluster.services[service]
    timeout = svc.stop_timeout if op == "stop" else svc.start_timeout
    ref = (service_refs or refs(cluster.services))[service]
    return for_ipc(cluster.ipc(host)).describe(op, ref, timeout)
