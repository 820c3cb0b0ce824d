"""Fencing: the proof a promotion names (docs/agent.md, "Fencing").

CTI and IVR start on a new primary only with a proof that they are not running
on the old one. There are three, tried in this order:

1. **verified**: stopped and seen STOPPED over SSH (by either agent);
2. **fence-device**: the IPC's fence device (inventory `fence`) powered it off
   and reports it off (fence-agents' contract: `status` 0 on, 2 off);
3. **operator**: a person confirmed it powered off
   (`failover failover --to B --confirm-dead A`), recorded with who and why.

Time alone is never proof: an IPC that cannot be reached may still answer
calls. Without a proof the agent holds and says exactly what a person can do
(`way_out`). An SSH error that is not "nothing answers" (a handshake that
stalls, a refused key, a changed host key, a command that fails) means the host
is alive: only its fence device or a person can settle it.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from failover import executor as exe
from failover.inventory import Fence
from failover.layouts import APP_SERVICES, stop_order
from failover.platforms import State
from failover.rules import Stage, Step

log = logging.getLogger("failover.fencing")

ProofKind = Literal["verified", "fence-device", "operator"]
POWERED_ON, POWERED_OFF = 0, 2  # fence-agents' exit codes of `status`
QUICK_CONNECT = 1.0  # s: a TCP connect to the SSH port, before fencing a host whose agent is gone


@dataclass(frozen=True)
class Proof:
    """Why the IPC `host` is not running CTI/IVR, and who established it."""

    kind: ProofKind
    host: str
    detail: str
    by: str  # the agent (IPC name) or the operator that established it

    def record(self) -> dict:
        return {"kind": self.kind, "host": self.host, "detail": self.detail, "by": self.by}

    @classmethod
    def from_record(cls, rec: object) -> Proof | None:
        if not isinstance(rec, dict) or rec.get("kind") not in ("verified", "fence-device", "operator"):
            return None
        return cls(rec["kind"], str(rec.get("host", "?")), str(rec.get("detail", "")), str(rec.get("by", "?")))

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class Attempt:
    """The outcome of trying to prove one IPC down: a proof, or why not."""

    proof: Proof | None
    why: str  # what was tried and what it showed (for the sentence and the way out)
    alive: bool = False  # something answered: the host is up (SSH handshake, a command, a probe)


def answered(e: exe.ExecError) -> bool:
    """True when the SSH error shows the host is up: only "could not connect"
    (refused, no route, connect timeout) may be a dead host."""
    if isinstance(e, exe.Unreachable):
        return not e.detail.startswith("cannot connect")
    return True


class FenceDevice:
    """The inventory's fence commands for one IPC, run on this (the agent's) host."""

    def __init__(self, ipc: str, conf: Fence) -> None:
        self.ipc = ipc
        self.conf = conf

    def _run(self, which: str, deadline: float) -> tuple[int | None, str]:
        command = getattr(self.conf, which)
        argv = shlex.split(command)
        env = dict(os.environ)
        try:
            secret = self.conf.secret()
        except OSError as e:
            return None, f"cannot read the fence device's secret_file: {e.strerror or e}"
        if secret is not None:
            env["FAILOVER_FENCE_SECRET"] = secret  # the child's environment only; never logged
        try:
            p = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=max(0.1, deadline - time.monotonic()),
                env=env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, f"`{argv[0]} … {which}` gave no answer within {self.conf.timeout:g} s"
        except OSError as e:
            return None, f"cannot run `{argv[0]}`: {e.strerror or e}"
        out = " ".join((p.stdout + " " + p.stderr).split())
        if secret:
            out = out.replace(secret, "***")
        return p.returncode, out[:200]

    def status(self) -> tuple[str, str]:
        """('on' | 'off' | 'error', detail)."""
        rc, out = self._run("status", time.monotonic() + self.conf.timeout)
        if rc == POWERED_ON:
            return "on", "powered on"
        if rc == POWERED_OFF:
            return "off", "powered off"
        return "error", out if rc is None else f"status exit {rc}: {out or 'no output'}"

    def power_off(self) -> Attempt:
        """`off`: exit 0 is the proof. fence-agents' `off` returns success
        only once the device reports the power off (they poll it themselves,
        and Pacemaker relies on exactly that); a second `status` would only
        add a process start to every fencing. Any other exit: `status` is
        asked once (it may have been off already)."""
        t0 = time.monotonic()
        deadline = t0 + self.conf.timeout
        rc, out = self._run("off", deadline)
        if rc == 0:
            return Attempt(Proof("fence-device", self.ipc, self._done(t0, "`off` exit 0"), ""), "")
        why = out if rc is None else f"exit {rc}: {out or 'no output'}"
        state, _ = self.status()  # it may have been off already
        if state == "off":
            return Attempt(
                Proof("fence-device", self.ipc, self._done(t0, f"`off` failed ({why}); status: off"), ""), ""
            )
        return Attempt(None, f"its fence device failed to power it off ({why})")

    def _done(self, t0: float, how: str) -> str:
        return f"powered off by its fence device in {time.monotonic() - t0:.1f} s ({how})"


class Fencer:
    """Establishes proofs for the IPCs of one cluster, as agent `me`."""

    def __init__(
        self,
        ex: exe.Executor,
        me: str,
        services: frozenset[str],
        after: dict,
        devices: dict,
        ssh_ports: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self.ex = ex
        self.me = me
        self.services = services
        self.after = after
        self.devices: dict[str, FenceDevice] = devices
        self.ssh_ports = ssh_ports or {}
        self.tcp_answers: Callable[[str], bool] = self._tcp_answers  # the simulator replaces it

    @classmethod
    def of(cls, ex: exe.Executor, cluster: object, me: str, services: frozenset[str], after: dict) -> Fencer:
        ipcs = cluster.ipcs  # type: ignore[attr-defined]
        devices = {i.name: FenceDevice(i.name, i.fence) for i in ipcs if i.fence is not None}
        return cls(ex, me, services, after, devices, {i.name: (i.address, i.ssh.port) for i in ipcs})

    def _tcp_answers(self, host: str) -> bool:
        """Does anything accept a TCP connection on the host's SSH port within
        QUICK_CONNECT? A powered-off host does not answer at all (no RST): the
        full SSH connect timeout, retried, would delay its fencing by seconds."""
        if host not in self.ssh_ports:
            return True
        try:
            socket.create_connection(self.ssh_ports[host], timeout=QUICK_CONNECT).close()
            return True
        except OSError:
            return False

    def has_device(self, host: str) -> bool:
        return host in self.devices

    def verify(self, host: str) -> Attempt:
        """CTI and IVR seen STOPPED over SSH; nothing is stopped."""
        try:
            st = self.ex.status_fast(host)
        except exe.ExecError as e:
            return Attempt(None, f"cannot verify {host} over SSH ({e.detail})", alive=answered(e))
        up = sorted(s for s in APP_SERVICES & self.services if st.states.get(s) is not State.STOPPED)
        if up:
            return Attempt(None, f"{', '.join(up)} not stopped on {host}", alive=True)
        return Attempt(Proof("verified", host, f"CTI and IVR verified stopped on {host} over SSH", self.me), "")

    def stop_and_verify(self, host: str) -> Attempt:
        """Stop every service on `host` over SSH (CTI and IVR first), then verify."""
        if not self.tcp_answers(host):
            return Attempt(None, f"{host} does not answer on its SSH port within {QUICK_CONNECT:g} s")
        try:
            st = self.ex.status_all(host)
        except exe.ExecError as e:
            return Attempt(None, f"{host} not reachable over SSH ({e.detail})", alive=answered(e))
        up = {s for s, v in st.states.items() if v is not State.STOPPED}
        steps = tuple(Step(host, "stop", s) for s in stop_order(up, self.after))
        if steps:
            rep = self.ex.execute((Stage(f"stop all services on {host}", steps),))
            if not rep.ok:
                return Attempt(None, f"stopping services on {host} failed ({rep.summary()})", alive=True)
        return self.verify(host)

    def power_off(self, host: str) -> Attempt:
        dev = self.devices.get(host)
        if dev is None:
            return Attempt(None, f"{host} has no fence device (inventory `fence`)")
        got = dev.power_off()
        if got.proof is None:
            return got
        return Attempt(Proof("fence-device", host, got.proof.detail, self.me), "")

    def prove_down(self, host: str, confirmed_by: str = "", stop: bool = True) -> Attempt:
        """The strongest proof available for `host`: SSH (stop and verify, or
        only verify), else its fence device, else an operator's word."""
        ssh = self.stop_and_verify(host) if stop else self.verify(host)
        if ssh.proof is not None:
            return ssh
        tried = [ssh.why]
        if self.has_device(host):
            dev = self.power_off(host)
            if dev.proof is not None:
                return Attempt(Proof("fence-device", host, f"{ssh.why}; {dev.proof.detail}", self.me), "")
            tried.append(dev.why)
        if confirmed_by:
            return Attempt(Proof("operator", host, f"{host} confirmed powered off by {confirmed_by}", confirmed_by), "")
        return Attempt(None, "; ".join(tried), alive=ssh.alive)


def way_out(host: str, to: str, attempt: Attempt, has_device: bool) -> str:
    """The sentence for a state no automatic action will leave: no proof that
    `host`'s CTI/IVR are stopped, so `to` is not promoted."""
    if attempt.alive:
        return (
            f"No automatic action: {host} answers but its CTI/IVR cannot be stopped or verified ({attempt.why}). "
            f"Stop CTI and IVR on {host} by hand (the agents verify and go on by themselves), or power {host} "
            f"off and run `failover failover --to {to} --confirm-dead {host} --reason '...'`."
        )
    device = "its fence device failed" if has_device else "it has no fence device"
    return (
        f"No automatic action: {host} cannot be reached and {device}, so nothing proves its CTI/IVR are "
        f"stopped ({attempt.why}). Check that {host} is powered off, then run "
        f"`failover failover --to {to} --confirm-dead {host} --reason '...'`."
    )


__all__ = ["Attempt", "FenceDevice", "Fencer", "Proof", "answered", "way_out"]
