"""A throwaway OpenSSH server per simulated IPC: own host key, own port,
key authentication only."""

from __future__ import annotations

import getpass
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from failover.lab.procs import alive, descendants, kill_and_wait, spawn

SSHD = "/usr/sbin/sshd"  # sshd refuses to run unless started by absolute path


def keygen(path: Path, comment: str) -> None:
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
        )


def known_hosts_line(host: str, port: int, pubkey_file: Path) -> str:
    keytype, key = pubkey_file.read_text().split()[:2]
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {keytype} {key}\n"


@dataclass
class SshdHost:
    name: str
    host: str
    port: int
    dir: Path
    client_pubkey: Path
    pid: int | None = None
    netns: str | None = None
    # Extra environment for every session (merged into the one SetEnv line:
    # sshd honours only the first SetEnv directive it reads).
    setenv: dict[str, str] = field(default_factory=dict)
    # Every session runs this instead of the client's command (which sshd
    # passes in SSH_ORIGINAL_COMMAND): how a lab IPC gets a cmd.exe stand-in.
    force_command: str | None = None

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def marker(self) -> str:
        return str(self.config)

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        keygen(self.host_key, f"lab-host-{self.name}")
        (self.dir / "authorized_keys").write_text(self.client_pubkey.read_text())
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    f"AllowUsers {getpass.getuser()}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",  # keys live under /tmp
                    "PermitRootLogin prohibit-password",
                    "MaxSessions 64",
                    "MaxStartups 64:30:128",
                    "LogLevel VERBOSE",  # connection counts are read from the log in tests
                    # bash reads ~/.bashrc for sshd commands only when SHLVL < 2;
                    # root's .bashrc here costs ~100 ms a command (pyenv init).
                    self._setenv_line(),
                    *([f"ForceCommand {self.force_command}"] if self.force_command else []),
                    # The post-quantum default key exchange adds ~70 ms per connection.
                    "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
                    "UseDNS no",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir

    def _setenv_line(self) -> str:
        env = {"SHLVL": "1", **self.setenv}
        for k, v in env.items():
            if not k.isidentifier() or any(c in v for c in '"\n'):
                raise ValueError(f"cannot pass {k}={v!r} through sshd's SetEnv")
        # Double quotes keep a value with spaces one word for sshd's parser.
        return "SetEnv " + " ".join(f'"{k}={v}"' for k, v in env.items())

    def start(self) -> None:
        if self.pid and alive(self.pid, self.marker):
            return
        self.pid = spawn([SSHD, "-D", "-e", "-f", str(self.config)], self.dir / "sshd.log", self.netns)

    def wait_listening(self, timeout: float = 10.0) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Not running(): while sshd rewrites its process title, /proc shows
            # its command line empty for an instant (seen here: a live sshd
            # reported as exited). The PID was ours a moment ago.
            if not (self.pid and alive(self.pid)):
                raise RuntimeError(f"sshd for {self.name} exited: {self._log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    s.settimeout(1)
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.03)
        raise RuntimeError(f"sshd for {self.name} not listening on {self.host}:{self.port}")

    def stop(self) -> None:
        """The whole sshd: the listener and every session it forked (killing
        only the listener leaves established connections working)."""
        if self.pid and alive(self.pid, self.marker):
            children = descendants(self.pid)
            kill_and_wait(self.pid, self.marker)
            for child in children:
                kill_and_wait(child, timeout=2)

    def running(self) -> bool:
        return bool(self.pid and alive(self.pid, self.marker))

    def connections_accepted(self) -> int:
        """Accepted TCP connections so far, from sshd's own log (LogLevel VERBOSE)."""
        try:
            text = (self.dir / "sshd.log").read_text(errors="replace")
        except OSError:
            return 0
        return text.count("Connection from ")

    def _log_tail(self) -> str:
        try:
            return (self.dir / "sshd.log").read_text(errors="replace")[-800:]
        except OSError:
            return ""
