"""A real ZooKeeper ensemble from Debian's jars, 1 or 3 nodes on free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from failover.lab.procs import alive, kill_and_wait, spawn

JARS = Path("/usr/share/java")
# zookeeper.jar's manifest pulls in jute, netty, jackson...; a logging backend is
# needed, and netty-codec when the Netty connection factory is used.
CLASSPATH = ":".join(str(JARS / j) for j in ("zookeeper.jar", "slf4j-log4j12.jar", "log4j-1.2.jar", "netty-codec.jar"))
JVM_OPTS = ["-Xms32m", "-Xmx64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
TICK_MS = 500


def four_letter(host: str, port: int, word: str, timeout: float = 1.0) -> str:
    """Send a ZooKeeper four-letter command; '' when the node does not answer."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(word.encode())
            chunks = []
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


def node_mode(host: str, port: int, timeout: float = 1.0) -> str | None:
    """'leader', 'follower' or 'standalone' when the node serves, else None.
    `ruok` says imok even without quorum, so `srvr`'s Mode line is the test."""
    for line in four_letter(host, port, "srvr", timeout).splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


@dataclass
class ZkNode:
    myid: int
    host: str
    client_port: int
    quorum_port: int
    election_port: int
    dir: Path
    pid: int | None = None
    netns: str | None = None

    @property
    def marker(self) -> str:
        return str(self.dir / "zoo.cfg")

    def write_config(self, peers: list[ZkNode]) -> None:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            f"tickTime={TICK_MS}",
            "initLimit=10",
            "syncLimit=5",
            f"dataDir={data}",
            f"clientPort={self.client_port}",
            f"clientPortAddress={self.host}",
            "4lw.commands.whitelist=*",
            "admin.enableServer=false",
            "minSessionTimeout=1000",
            "maxSessionTimeout=30000",
            "maxClientCnxns=0",
        ]
        if len(peers) > 1:
            lines += [f"server.{p.myid}={p.host}:{p.quorum_port}:{p.election_port}" for p in peers]
            (data / "myid").write_text(f"{self.myid}\n")
        (self.dir / "zoo.cfg").write_text("\n".join(lines) + "\n")
        (self.dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, F\n"
            "log4j.appender.F=org.apache.log4j.FileAppender\n"
            f"log4j.appender.F.File={self.dir / 'zookeeper.log'}\n"
            "log4j.appender.F.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.F.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1} - %m%n\n"
        )

    def command(self) -> list[str]:
        cmd = [
            "java",
            *JVM_OPTS,
            f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
            f"-Dzookeeper.log.dir={self.dir}",
            "-cp",
            CLASSPATH,
            MAIN,
            str(self.dir / "zoo.cfg"),
        ]
        return cmd

    def start(self) -> None:
        if self.pid and alive(self.pid, self.marker):
            return
        self.pid = spawn(self.command(), self.dir / "stdout.log", self.netns)

    def stop(self) -> None:
        if self.pid:
            kill_and_wait(self.pid, self.marker)

    def kill9(self) -> None:
        if self.pid and alive(self.pid, self.marker):
            os.kill(self.pid, signal.SIGKILL)
            kill_and_wait(self.pid, self.marker, timeout=2)

    def sigstop(self) -> None:
        if self.pid and alive(self.pid, self.marker):
            os.kill(self.pid, signal.SIGSTOP)

    def sigcont(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)

    def running(self) -> bool:
        return bool(self.pid and alive(self.pid, self.marker))

    def mode(self) -> str | None:
        return node_mode(self.host, self.client_port)


class ZkStartError(RuntimeError):
    pass


def wait_serving(nodes: list[ZkNode], timeout: float = 30.0) -> None:
    """Return when every node answers `srvr` with a Mode line; raise with the log
    tail of a node that died (e.g. BindException on a port clash)."""
    deadline = time.monotonic() + timeout
    pending = list(nodes)
    while pending:
        for n in list(pending):
            if n.mode() is not None:
                pending.remove(n)
            elif not (n.pid and alive(n.pid)):
                # The PID alone, not running(): right after a (re)start the process
                # is still exec'ing (`ip netns exec` -> java) and /proc shows its
                # command line empty for an instant (seen: a restarted node
                # reported as exited before it had logged a line). The PID was
                # ours a moment ago; a node that dies is a zombie of ours.
                tail = _tail(n.dir / "stdout.log") or _tail(n.dir / "zookeeper.log")
                raise ZkStartError(f"ZooKeeper node {n.myid} exited during start-up:\n{tail}")
        if pending and time.monotonic() > deadline:
            ids = ", ".join(str(n.myid) for n in pending)
            raise ZkStartError(f"ZooKeeper node(s) {ids} not serving after {timeout:.0f} s")
        if pending:
            time.sleep(0.05)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
