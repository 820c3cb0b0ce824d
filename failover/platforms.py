"""Per-platform service commands and the reading of their output (pure: builds
strings, parses strings; the executor runs them). "How a Windows command is
built" and "how its result is read" both live here, in `Windows`.

No inventory or user text reaches a shell unquoted: POSIX arguments go through
shlex.quote; cmd.exe has no reliable escaping, so arguments are wrapped in
double quotes only after checking they contain nothing cmd.exe interprets.
Free-form inventory commands (probes, smoke checks, the line check) are the
operator's own shell text and are run as written.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from failover.rules import State

SEP = "@@failover@@"
LINE = "line"  # the batched status block that carries the line check
LINE_UNMONITORED = "unmonitored"  # no line_check configured: never blocks anything
LINE_BY_EXIT = {0: "up", 1: "alarm", 3: "down"}  # the line_check contract; anything else: unknown


class UnsafeArgument(ValueError):
    pass


# What cmd.exe carries safely inside double quotes: it has no reliable escaping
# for " % ^ & | < > ! so those are refused outright. The one definition, for
# service names (`inventory check`, and again before every command) and for
# any other argument (paths add : \ /).
_CMD_CHARS = r"A-Za-z0-9 _.+@#()\-"
SAFE_NAMES: Mapping[str, re.Pattern[str]] = {
    "windows": re.compile(rf"^[A-Za-z0-9][{_CMD_CHARS}]{{0,255}}$"),
    "systemd": re.compile(r"^[A-Za-z0-9:_.@\\-]{1,255}$"),
    "lab": re.compile(r"^[a-z0-9-]{1,64}$"),
}
_CMD_SAFE = re.compile(rf"^[{_CMD_CHARS}:\\/]{{1,255}}$")


def safe_name(platform: str, name: str) -> bool:
    return bool(SAFE_NAMES[platform].match(name))


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
# What a start/stop command's result means
# ---------------------------------------------------------------------------


class Outcome(StrEnum):
    OK = "ok"  # accepted (or already in the wanted state): poll for the final state
    BUSY = "busy"  # the service is changing state and cannot take the request now: wait, ask again
    NO_RESPONSE = "no-response"  # the service did not answer the control (hung): poll, then escalate
    CONFIG = "config"  # the inventory names something the host does not have
    DENIED = "denied"  # the SSH user may not control services
    FAILED = "failed"


@dataclass(frozen=True)
class Reading:
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class LineCheck:
    command: str
    timeout: float


# ---------------------------------------------------------------------------
# Windows: sc.exe
# ---------------------------------------------------------------------------

SC_STATES = {
    1: State.STOPPED,
    2: State.START_PENDING,
    3: State.STOP_PENDING,
    4: State.RUNNING,
    5: State.START_PENDING,  # CONTINUE_PENDING: on its way back to RUNNING
    6: State.PAUSED,  # PAUSE_PENDING: not serving, not stopped
    7: State.PAUSED,
}

WIN32_ACCESS_DENIED = 5
WIN32_NO_TIMELY_RESPONSE = 1053
WIN32_ALREADY_RUNNING = 1056
WIN32_DISABLED = 1058
WIN32_NO_SUCH_SERVICE = 1060
WIN32_CANNOT_ACCEPT_CONTROL = 1061
WIN32_NOT_STARTED = 1062
WIN32_MESSAGES = {
    WIN32_ACCESS_DENIED: "access denied",
    1052: "the requested control is not valid for this service",
    WIN32_NO_TIMELY_RESPONSE: "the service did not respond to the start or control request in a timely fashion",
    WIN32_ALREADY_RUNNING: "already running",
    WIN32_DISABLED: "the service is disabled",
    WIN32_NO_SUCH_SERVICE: "no such service (configuration error)",
    WIN32_CANNOT_ACCEPT_CONTROL: "the service cannot accept control messages at this time",
    WIN32_NOT_STARTED: "not started",
    1067: "the process terminated unexpectedly",
}


@dataclass(frozen=True)
class ScResult:
    state: State | None  # parsed STATE, when the output has one
    error: int | None  # Win32 error code of an "[SC] ... nnnn:" line, if any
    pid: int | None = None  # queryex only
    exit_code: int | None = None  # WIN32_EXIT_CODE


def parse_sc(output: str) -> ScResult:
    """Parse `sc.exe query|queryex|start|stop` output (CRLF, OEM code page).
    Only the numbers are read: the words around them are localized on a
    non-English Windows ("FAILED" is "失败" on a Chinese one)."""
    text = output.replace("\r\n", "\n").replace("\r", "\n")
    m = re.search(r"^\[SC\][^\n]*?(\d+)\s*[:\uff1a]", text, re.MULTILINE)  # ASCII or full-width colon
    err = int(m.group(1)) if m else None
    m = re.search(r"^\s*STATE\s*:\s*(\d+)", text, re.MULTILINE)
    state = SC_STATES.get(int(m.group(1)), State.UNKNOWN) if m else None
    m = re.search(r"^\s*PID\s*:\s*(\d+)", text, re.MULTILINE)
    pid = int(m.group(1)) if m else None
    m = re.search(r"^\s*WIN32_EXIT_CODE\s*:\s*(\d+)", text, re.MULTILINE)
    code = int(m.group(1)) if m else None
    return ScResult(state, err, pid or None, code)


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
    # A service manager that answers start only once the service runs (the
    # lab's) or truthfully reports a failed start (sc.exe, systemd): STOPPED
    # right after an accepted start means the start failed. Explicit commands
    # are exempt (a start script may return before its daemon shows up).
    stopped_after_start_is_failure = True

    def __init__(self, line_check: LineCheck | None = None) -> None:
        self.line_check = line_check

    def control_waits(self, svc: ServiceRef) -> bool:
        """A successful start/stop command returns only once its job is done
        (`systemctl stop`: the unit is inactive or failed; `systemctl start`:
        it reached active), so a stop needs no state poll after it and a start
        is proven by its probe's answer alone. sc.exe returns at once (poll);
        explicit commands promise nothing."""
        return False

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

    def killed_at_deadline(self, exit_code: int) -> bool:
        """The host itself killed a run_cmd() command at its deadline."""
        return False

    # A long-lived remote session fed status requests over stdin (None: one
    # exec channel per status).
    def session_cmd(self) -> str | None:
        return None

    def session_status_request(self, services: Sequence[ServiceRef]) -> str:
        raise NotImplementedError

    def session_answer_done(self, buf: str) -> bool:
        raise NotImplementedError

    def session_ready_request(self) -> str | None:
        """Sent once when the session starts; everything up to its answer (a
        shell's banner) is discarded. None: nothing to wait for."""
        return None

    def session_command_request(self, svc: ServiceRef, command: str) -> str | None:
        """One short service-control command of `svc` as a session request,
        answered by its output and exit code (None: not through the session)."""
        return None

    def single_status_cmd(self, svc: ServiceRef) -> str | None:
        """One service's state in one short command, where that is cheaper
        than the batch (None: poll with the batched status)."""
        return None

    def parse_state(self, output: str, svc: ServiceRef) -> State:
        """The answer to single_status_cmd()."""
        raise NotImplementedError

    def read_result(self, op: str, svc: ServiceRef, exit_code: int, output: str) -> Reading:
        """What a start/stop command's exit code and output mean."""
        if exit_code == 0:
            return Reading(Outcome.OK)
        detail = output.strip().splitlines()
        return Reading(Outcome.FAILED, f"exit {exit_code}: {detail[-1] if detail else 'no output'}")

    # Escalation for a service that ignores its stop, as operators do by hand.
    def pid_cmd(self, svc: ServiceRef) -> str | None:
        return None

    def parse_pid(self, output: str) -> int | None:
        return None

    def kill_cmd(self, svc: ServiceRef, pid: int | None) -> str | None:
        return None

    def describe(self, op: str, svc: ServiceRef, timeout: float) -> list[str]:
        """The exact commands an operation runs, for dry runs and `explain`."""
        if op == "stop":
            return [self.stop_cmd(svc, timeout)]
        if op == "start":
            return [self.start_cmd(svc, timeout)]
        return [self.stop_cmd(svc, timeout), self.start_cmd(svc, timeout)]

    def _line_from(self, blocks: Mapping[str, str], fallback: str = LINE_UNMONITORED) -> str:
        if self.line_check is None:
            return fallback
        m = re.search(rf"{SEP}rc (-?\d+)", blocks.get(LINE, ""))
        return LINE_BY_EXIT.get(int(m.group(1)), "unknown") if m else "unknown"


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

    def killed_at_deadline(self, exit_code: int) -> bool:
        return exit_code == 124

    def session_cmd(self) -> str | None:
        return "exec sh"

    def session_status_request(self, services: Sequence[ServiceRef]) -> str:
        return f"{self.batch_status_cmd(services)}; echo {SEP}end\n"

    def session_answer_done(self, buf: str) -> bool:
        return buf.endswith(f"{SEP}end\n")

    def _line_part(self) -> list[str]:
        if self.line_check is None:
            return []
        lc = self.line_check
        return [
            f"echo {quote_posix(f'{SEP} {LINE}')}",
            f"{self.run_cmd(lc.command, lc.timeout)} >/dev/null 2>&1 </dev/null; echo {SEP}rc $?",
        ]


class Windows(Platform):
    """Win32-OpenSSH with cmd.exe as its shell: every command line runs as
    `cmd.exe /c LINE` and its exit status is the last command's exit code.
    sc.exe's exit code is the Win32 error code; its STATE is a number. Both
    are read as numbers because the words are localized."""

    kind = "windows"
    shell = "cmd"

    def quote(self, arg: str) -> str:
        return quote_cmd(arg)

    def status_cmd(self, svc: ServiceRef) -> str:
        if svc.name is None:
            return f"({svc.status}) & call echo {SEP}rc %^errorlevel%"
        return f"sc.exe queryex {quote_cmd(svc.name)}"

    def single_status_cmd(self, svc: ServiceRef) -> str | None:
        # The batch runs sc.exe once per service plus the line check: polling
        # one service while it starts or stops asks only for that one.
        return self.status_cmd(svc)

    # The long-lived session: one `cmd /d /q` (no AutoRun; echo off: no prompt,
    # no echoed lines) reading command lines from stdin. Each SSH exec otherwise
    # costs Win32-OpenSSH a new session and a cmd.exe; the status, the polls and
    # sc.exe start/stop/queryex of named services go through this one instead
    # (explicit commands never: they may read stdin, block or exit).
    def session_cmd(self) -> str | None:
        return "cmd /d /q"

    def session_ready_request(self) -> str | None:
        return f"echo {SEP}ready\r\n"

    def session_status_request(self, services: Sequence[ServiceRef]) -> str:
        return f"{self.batch_status_cmd(services)}\r\necho {SEP}end\r\n"

    def session_answer_done(self, buf: str) -> bool:
        # The marker must start a line: were echo on after all, the echoed
        # command (`C:\>echo @@failover@@end`) does not.
        return bool(_SESSION_DONE.search(buf))

    def session_command_request(self, svc: ServiceRef, command: str) -> str | None:
        if svc.name is None:
            return None
        # Each line is parsed on its own: %errorlevel% on the second line is
        # the first line's result (the whole Win32 code, not an exit status's 8 bits).
        return f"({command}) 2>&1\r\necho {SEP}rc %errorlevel%\r\necho {SEP}end\r\n"

    def start_cmd(self, svc: ServiceRef, timeout: float) -> str:
        return svc.start if svc.name is None else f"sc.exe start {quote_cmd(svc.name)}"  # type: ignore[return-value]

    def stop_cmd(self, svc: ServiceRef, timeout: float) -> str:
        return svc.stop if svc.name is None else f"sc.exe stop {quote_cmd(svc.name)}"  # type: ignore[return-value]

    def describe(self, op: str, svc: ServiceRef, timeout: float) -> list[str]:
        if svc.name is None:
            return super().describe(op, svc, timeout)
        poll = f"sc.exe queryex {quote_cmd(svc.name)}"
        stop = (
            f"{self.stop_cmd(svc, timeout)}  (poll `{poll}` until STOPPED, {timeout:g} s; then "
            "`taskkill /F /PID <its PID>`)"
        )
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
        if self.line_check is not None:
            parts += [
                f"echo {SEP} {LINE}",
                f"({self.line_check.command}) >nul 2>&1",
                f"call echo {SEP}rc %^errorlevel%",
            ]
        return " & ".join(parts)

    def parse_batch(self, output: str, services: Sequence[ServiceRef]) -> tuple[dict[str, State], str]:
        blocks = _split_blocks(output)
        states: dict[str, State] = {}
        for s in services:
            text = blocks.get(s.logical, "")
            if s.name is None:
                states[s.logical] = _explicit_from_block(text)
            else:
                states[s.logical] = parse_sc(text).state or State.UNKNOWN
        return states, self._line_from(blocks)

    def parse_state(self, output: str, svc: ServiceRef) -> State:
        if svc.name is None:
            return _explicit_from_block(output)
        # An answer about another service (or several) is no answer about this one.
        names = re.findall(r"^\s*SERVICE_NAME:\s*(.*?)\s*$", output.replace("\r", ""), re.MULTILINE)
        if names and [n.lower() for n in names] != [svc.name.lower()]:
            return State.UNKNOWN
        return parse_sc(output).state or State.UNKNOWN

    def read_result(self, op: str, svc: ServiceRef, exit_code: int, output: str) -> Reading:
        if svc.name is None:
            return super().read_result(op, svc, exit_code, output)
        # The Win32 error sc.exe prints ("[SC] ... FAILED 1056:") first: it is the
        # whole code, where an SSH server may carry only the exit status's low
        # 8 bits (OpenSSH on Linux: 1056 arrives as 32). The exit code otherwise.
        code = parse_sc(output).error or exit_code
        if code == 0:
            return Reading(Outcome.OK)
        msg = f"sc.exe error {code}: {WIN32_MESSAGES.get(code, 'failed')}"
        if (op, code) in (("start", WIN32_ALREADY_RUNNING), ("stop", WIN32_NOT_STARTED)):
            return Reading(Outcome.OK, msg)  # already where we want it: idempotent success
        if code == WIN32_CANNOT_ACCEPT_CONTROL:
            return Reading(Outcome.BUSY, msg)
        if code == WIN32_NO_TIMELY_RESPONSE:
            return Reading(Outcome.NO_RESPONSE, msg)
        if code == WIN32_NO_SUCH_SERVICE:
            return Reading(
                Outcome.CONFIG, f"no service named {svc.name!r} on this host (sc.exe 1060): check the inventory"
            )
        if code == WIN32_ACCESS_DENIED:
            return Reading(
                Outcome.DENIED, "access denied (Win32 error 5): the SSH user needs the right to start and stop services"
            )
        return Reading(Outcome.FAILED, msg)

    def pid_cmd(self, svc: ServiceRef) -> str | None:
        return None if svc.name is None else f"sc.exe queryex {quote_cmd(svc.name)}"

    def parse_pid(self, output: str) -> int | None:
        return parse_sc(output).pid

    def kill_cmd(self, svc: ServiceRef, pid: int | None) -> str | None:
        return None if svc.name is None or not pid else f"taskkill /F /PID {int(pid)}"


SYSTEMD_STATES = {
    "active": State.RUNNING,
    "reloading": State.RUNNING,
    "inactive": State.STOPPED,
    "failed": State.STOPPED,
    "activating": State.START_PENDING,
    "deactivating": State.STOP_PENDING,
}


UNITS = "units"  # the batched status block with every named unit's `systemctl show`


def _unit_states(text: str) -> list[State]:
    """`systemctl show -p LoadState -p ActiveState U1 U2 ...`: one block per
    unit, blank lines between them. A unit that is not loaded (a typo in the
    inventory: systemd shows it `inactive`) is UNKNOWN, never STOPPED."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        load = re.search(r"^LoadState=(\S*)", block, re.MULTILINE)
        m = re.search(r"^ActiveState=(\S*)", block, re.MULTILINE)
        ok = m is not None and load is not None and load.group(1) == "loaded"
        out.append(SYSTEMD_STATES.get(m.group(1), State.UNKNOWN) if ok and m else State.UNKNOWN)
    return out if text.strip() else []


class Systemd(Posix):
    kind = "systemd"

    def control_waits(self, svc: ServiceRef) -> bool:
        return svc.name is not None

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
        # Every unit in one `systemctl show` (one block per unit, in argument
        # order, separated by blank lines): one process instead of one per
        # service — 8 units cost 8 systemctl starts before.
        named = [s for s in services if s.name is not None]
        parts = []
        if named:
            units = " ".join(quote_posix(s.name) for s in named)  # type: ignore[arg-type]
            parts += [f"echo {quote_posix(f'{SEP} {UNITS}')}", f"systemctl show -p LoadState -p ActiveState {units}"]
        for s in services:
            if s.name is None:
                parts.append(f"echo {quote_posix(f'{SEP} {s.logical}')}")
                parts.append(f"( {s.status} ) >/dev/null 2>&1 </dev/null; echo {SEP}rc $?")
        return "; ".join(parts + self._line_part())

    def parse_batch(self, output: str, services: Sequence[ServiceRef]) -> tuple[dict[str, State], str]:
        blocks = _split_blocks(output)
        named = [s for s in services if s.name is not None]
        shown = _unit_states(blocks.get(UNITS, ""))
        if len(shown) != len(named):
            shown = [State.UNKNOWN] * len(named)  # cut short: read nothing rather than shift units
        states = {s.logical: st for s, st in zip(named, shown, strict=True)}
        for s in services:
            if s.name is None:
                states[s.logical] = _explicit_from_block(blocks.get(s.logical, ""))
        return {s.logical: states[s.logical] for s in services}, self._line_from(blocks)

    def read_result(self, op: str, svc: ServiceRef, exit_code: int, output: str) -> Reading:
        if exit_code == 124:
            # `timeout` ended a start/stop job that did not finish: look at the state.
            return Reading(Outcome.NO_RESPONSE, f"systemctl {op} did not finish in time")
        return super().read_result(op, svc, exit_code, output)

    def kill_cmd(self, svc: ServiceRef, pid: int | None) -> str | None:
        # systemd ends a unit that ignores its stop itself (TimeoutStopSec, then
        # SIGKILL); this is the same done at our deadline.
        return None if svc.name is None else f"systemctl kill -s KILL {quote_posix(svc.name)}"


class Lab(Posix):
    """The lab's simulated IPC: services are driven by its simctl command.
    Inventory commands that begin with a simulator verb (call, fault, status)
    go to the IPC's own simulator; others run in a POSIX shell."""

    kind = "lab"
    SIM_VERBS = ("call", "calls", "fault", "status", "start", "stop")

    def __init__(self, control: Sequence[str], line_check: LineCheck | None = None) -> None:
        super().__init__(line_check)
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
        # One call returns every service (and the simulated board's line).
        return "; ".join([self._cmd("status"), *self._line_part()])

    def session_cmd(self) -> str | None:
        # The simulator's own request loop answers status; a line check is a
        # shell command, so with one the status goes through an exec channel.
        return self._cmd("serve") if self.line_check is None else None

    def session_status_request(self, services: Sequence[ServiceRef]) -> str:
        return "status\n"

    def session_answer_done(self, buf: str) -> bool:
        return buf.endswith("\n")

    def parse_batch(self, output: str, services: Sequence[ServiceRef]) -> tuple[dict[str, State], str]:
        head, _, _ = output.partition(f"{SEP} {LINE}")
        data = json.loads(head.strip().splitlines()[-1])
        by_name = data.get("services", {})
        states = {}
        for s in services:
            raw = by_name.get(s.name or s.logical, {}).get("state", "UNKNOWN")
            states[s.logical] = State(raw) if raw in State.__members__ else State.UNKNOWN
        return states, self._line_from(_split_blocks(output), str(data.get("line", "unknown")))


_SESSION_DONE = re.compile(rf"(?:^|\n){SEP}(?:end|ready)\r?\n$")


def session_command_result(answer: str) -> tuple[int | None, str]:
    """(exit code, output) of a session_command_request()'s answer."""
    text = answer.replace("\r\n", "\n")
    m = re.search(rf"(?:^|\n){SEP}rc (-?\d+)\n", text)
    if not m:
        return None, text
    return int(m.group(1)), text[: m.start()]


def _split_blocks(output: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    current = None
    for line in output.replace("\r\n", "\n").split("\n"):
        if line.startswith(SEP + " "):
            current = line[len(SEP) + 1 :].strip()  # cmd.exe's echo keeps the space before `&`
            blocks[current] = ""
        elif current is not None:
            blocks[current] += line + "\n"
    return blocks


def for_ipc(ipc: object, line_check: object = None) -> Platform:
    from failover.inventory import Ipc
    from failover.inventory import LineCheck as InvLineCheck

    assert isinstance(ipc, Ipc)
    lc = LineCheck(line_check.command, line_check.timeout) if isinstance(line_check, InvLineCheck) else None
    if ipc.platform == "windows":
        return Windows(lc)
    if ipc.platform == "systemd":
        return Systemd(lc)
    assert ipc.lab is not None
    return Lab(ipc.lab.control, lc)


def for_cluster(cluster: object) -> dict[str, Platform]:
    from failover.inventory import Cluster

    assert isinstance(cluster, Cluster)
    return {i.name: for_ipc(i, cluster.line_check) for i in cluster.ipcs}


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
    return for_ipc(cluster.ipc(host), cluster.line_check).describe(op, ref, timeout)
