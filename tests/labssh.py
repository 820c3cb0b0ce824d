"""Plain paramiko access to lab IPCs for the foundation tests (the product's
executor has its own tests): strict host keys, key auth only."""

from __future__ import annotations

import json
import shlex

import paramiko

from failover.lab.lab import Lab, LabIpc


def client(lab: Lab, ipc: LabIpc, known_hosts: str | None = None) -> paramiko.SSHClient:
    c = paramiko.SSHClient()
    c.load_host_keys(known_hosts or str(lab.known_hosts))
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(
        ipc.address,
        port=ipc.ssh_port,
        username=_user(),
        key_filename=str(lab.client_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
    )
    return c


def run(c: paramiko.SSHClient, argv: list[str], timeout: float = 30) -> tuple[int, str, str]:
    return run_line(c, shlex.join(argv), timeout)


def run_line(c: paramiko.SSHClient, line: str, timeout: float = 30) -> tuple[int, str, str]:
    """Run a command line as it is (a cmd.exe line on a windows IPC: no POSIX quoting)."""
    _, out, err = c.exec_command(line, timeout=timeout)
    code = out.channel.recv_exit_status()
    return code, out.read().decode(), err.read().decode()


def simctl(c: paramiko.SSHClient, ipc: LabIpc, *args: str) -> tuple[int, dict, str]:
    code, out, err = run(c, [*ipc.control(), *args])
    return code, (json.loads(out) if out.strip() else {}), err


def _user() -> str:
    import getpass

    return getpass.getuser()
