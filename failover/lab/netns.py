"""Network namespaces for the lab (root only): one namespace per simulated IPC,
per agent host and per ZooKeeper node, joined to a bridge in the root
namespace, addresses in 198.18.0.0/15 (reserved for benchmarking; never any
other range), so tests can cut a host off for real with iptables inside its
namespace."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def available() -> bool:
    return os.geteuid() == 0 and subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0


def pick_subnet() -> int:
    """A third octet x such that 198.18.x.0/24 is not configured on this host."""
    used = _ip("-4", "addr", "show").stdout
    free = [x for x in range(1, 255) if f"198.18.{x}." not in used]
    if not free:
        raise RuntimeError("no free 198.18.x.0/24 subnet for the lab")
    return random.choice(free)


@dataclass
class LabNet:
    labid: str
    subnet: int

    @property
    def bridge(self) -> str:
        return f"fob{self.labid}"

    @property
    def gateway(self) -> str:
        return f"198.18.{self.subnet}.1"

    def ns(self, index: int) -> str:
        return f"fo{self.labid}-{index}"

    def address(self, index: int) -> str:
        return f"198.18.{self.subnet}.{10 + index}"

    def create_bridge(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def create_host(self, index: int) -> str:
        ns = self.ns(index)
        outer, inner = f"fv{self.labid}{index}", f"fi{self.labid}{index}"
        _ip("netns", "add", ns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        _ip("-n", ns, "addr", "add", f"{self.address(index)}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "via", self.gateway)
        return ns

    def destroy(self, indices: Iterable[int]) -> None:
        for i in indices:
            _ip("netns", "del", self.ns(i), check=False)
            _ip("link", "del", f"fv{self.labid}{i}", check=False)
        _ip("link", "del", self.bridge, check=False)


def iptables(ns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "iptables", "-w", *args], check=True, capture_output=True)


def isolate(ns: str) -> None:
    """Cut the namespace off: drop everything but loopback."""
    for chain in ("INPUT", "OUTPUT"):
        flag = "-i" if chain == "INPUT" else "-o"
        iptables(ns, "-I", chain, "1", flag, "lo", "-j", "ACCEPT")
        iptables(ns, "-A", chain, "-j", "DROP")


def heal(ns: str) -> None:
    iptables(ns, "-F", "INPUT")
    iptables(ns, "-F", "OUTPUT")


def _zk_rules(addr: str, ports: list[int]) -> list[list[str]]:
    plist = ",".join(str(p) for p in ports)
    return [
        ["OUTPUT", "-d", addr, "-p", "tcp", "-m", "multiport", "--dports", plist, "-j", "DROP"],
        ["INPUT", "-s", addr, "-p", "tcp", "-m", "multiport", "--sports", plist, "-j", "DROP"],
    ]


def cut_from(ns: str, addr: str, ports: list[int]) -> None:
    """Drop this namespace's traffic to and from addr:ports (e.g. ZooKeeper only)."""
    for rule in _zk_rules(addr, ports):
        iptables(ns, "-I", *rule)


def uncut_from(ns: str, addr: str, ports: list[int]) -> None:
    for rule in _zk_rules(addr, ports):
        subprocess.run(["ip", "netns", "exec", ns, "iptables", "-w", "-D", *rule], capture_output=True)


def _iptables_ok(ns: str, *args: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "iptables", "-w", *args], capture_output=True).returncode == 0


def cut(ns: str, name: str, allow: Iterable[str] = ()) -> None:
    """Drop the namespace's traffic except loopback and traffic with the `allow`
    addresses, through two chains of its own (`name`-in, `name`-out) jumped to
    first: allowed traffic RETURNs to the other rules (a zk-cut still holds) and
    uncut() removes exactly this cut. Cutting again replaces it."""
    uncut(ns, name)
    allow = list(allow)
    for chain, hook, lo, peer in ((f"{name}-in", "INPUT", "-i", "-s"), (f"{name}-out", "OUTPUT", "-o", "-d")):
        iptables(ns, "-N", chain)
        iptables(ns, "-A", chain, lo, "lo", "-j", "RETURN")
        for addr in allow:
            iptables(ns, "-A", chain, peer, addr, "-j", "RETURN")
        iptables(ns, "-A", chain, "-j", "DROP")
        iptables(ns, "-I", hook, "1", "-j", chain)


def uncut(ns: str, name: str) -> None:
    """Undo cut(ns, name); nothing to undo is fine (heal() may have flushed the jumps)."""
    for chain, hook in ((f"{name}-in", "INPUT"), (f"{name}-out", "OUTPUT")):
        while _iptables_ok(ns, "-D", hook, "-j", chain):
            pass
        if _iptables_ok(ns, "-F", chain):
            _iptables_ok(ns, "-X", chain)
