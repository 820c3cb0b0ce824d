"""Process and port helpers for the lab: we stop what we start, by PID, and check
/proc before trusting a PID (PIDs are reused)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def spawn(cmd: list[str], log: Path, netns: str | None = None, cwd: str | None = None) -> int:
    """Start a lab daemon detached (its own session, so it outlives the
    command that started it), output appended to `log`, optionally inside a
    network namespace (`ip netns exec` keeps the PID). Returns the PID."""
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd=cwd,
        )
    return proc.pid


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free right now, chosen *below* the kernel's ephemeral range: a port
    from that range can be taken as the source port of some outgoing connection
    between our choice and the server binding it. Every socket is held until all
    ports are chosen, so one call never hands out the same port twice."""
    import random

    lo, _ = _ephemeral_range()
    low = 10000 if lo > 12000 else 1024
    candidates = random.sample(range(low, max(low + count * 4, lo)), k=min(count * 20, max(lo - low, count)))
    socks: list[socket.socket] = []
    try:
        for port in candidates:
            if len(socks) == count:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < count:  # fallback: let the kernel choose
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...),
    or None when the PID is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    return stat.rsplit(")", 1)[1].split()


def proc_state(pid: int) -> str | None:
    """Kernel state letter (R, S, T, Z, ...) or None when the PID is gone."""
    fields = _stat(pid)
    return fields[0] if fields else None


def ancestors(pid: int) -> set[int]:
    """pid's parent, its parent, ... up to (not including) init."""
    out: set[int] = set()
    fields = _stat(pid)
    while fields and int(fields[1]) > 1 and int(fields[1]) not in out:
        out.add(int(fields[1]))
        fields = _stat(fields[1])
    return out


def pids_where(match: Callable[[list[bytes]], bool]) -> list[int]:
    """Every process whose argument list (as bytes) satisfies `match`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if match(argv):
            out.append(int(entry))
    return out


def alive(pid: int, marker: str | None = None) -> bool:
    """A live (non-zombie) process, optionally whose command line contains marker."""
    state = proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    return marker is None or marker in cmdline(pid)


def kill_and_wait(pid: int, marker: str | None = None, timeout: float = 5.0) -> bool:
    """Stop one process by PID: SIGTERM (+SIGCONT, a stopped process ignores TERM
    until continued), then SIGKILL after the timeout. Returns True when it is gone."""
    if not alive(pid, marker):
        return True
    for sig in (signal.SIGTERM, signal.SIGCONT):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return True
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (children first found, then theirs)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if fields:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _reap(pid: int) -> None:
    # Reap it if it is our child; otherwise PID 1 will (slowly) and a zombie
    # already counts as gone.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
