"""Simulated calls on a simulated IPC (the lab's stand-in for the call
traffic the Dialogic boards carry), so that a drained switchover is visible
and testable: how many calls are in progress, in the IVR or with an agent,
how many the IPC turned away while busied out, and how many were CUT because
CTI, IVR or the board driver stopped under them.

A seeded arrival process (Poisson, `rate` calls a second) brings calls while
the IPC serves and is not busied out; each call lasts a uniform `min_s`..
`max_s` seconds and is an agent call with probability `agent_share`, else an
IVR call. Nothing arrives by default (rate 0): `failover lab calls` or the
simulator's `calls load` op starts traffic, so the other tests are untouched.

Pure bookkeeping over a clock the caller passes in (the simulator's monitor
thread ticks it every 20 ms); thread-safe, the SSH commands read it."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Call:
    kind: str  # "ivr" | "agent"
    ends: float  # on the caller's clock


@dataclass
class Traffic:
    """What the arrival process draws from."""

    rate: float = 0.0  # calls a second; 0: no arrivals
    min_s: float = 20.0
    max_s: float = 60.0
    agent_share: float = 0.4

    def check(self) -> str:
        """'' or why these numbers are not a traffic."""
        if self.rate < 0 or not 0 < self.min_s <= self.max_s or not 0 <= self.agent_share <= 1:
            return "need rate >= 0, 0 < min <= max and 0 <= agent_share <= 1"
        return ""


@dataclass
class CallSim:
    traffic: Traffic = field(default_factory=Traffic)
    seed: int = 0
    busy_out: bool = False
    calls: list[Call] = field(default_factory=list)
    arrived: int = 0
    completed: int = 0
    cut: int = 0
    turned_away: int = 0  # arrivals while busied out: the PBX routed them elsewhere
    _next: float | None = None  # next arrival, on the caller's clock
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @classmethod
    def of(cls, cfg: dict) -> CallSim:
        """sim.json's optional "calls": {rate, min, max, agent_share, seed}."""
        t = Traffic(
            float(cfg.get("rate", 0.0)),
            float(cfg.get("min", 20.0)),
            float(cfg.get("max", 60.0)),
            float(cfg.get("agent_share", 0.4)),
        )
        return cls(t, int(cfg.get("seed", 0)))

    # --- the clock ----------------------------------------------------------
    def tick(self, now: float, serving: bool) -> None:
        """Advance to `now`. Not serving (CTI, IVR or the driver stopped):
        every call in progress is cut, and nothing arrives."""
        with self._lock:
            if not serving:
                self.cut += len(self.calls)
                self.calls = []
                self._next = None
                return
            done = [c for c in self.calls if c.ends <= now]
            self.completed += len(done)
            self.calls = [c for c in self.calls if c.ends > now]
            self._arrivals(now)

    def _arrivals(self, now: float) -> None:
        if self.traffic.rate <= 0:
            self._next = None
            return
        if self._next is None:
            self._next = now + self._rng.expovariate(self.traffic.rate)
        while self._next <= now:
            if self.busy_out:
                self.turned_away += 1
            else:
                self._add(self._next)
            self._next += self._rng.expovariate(self.traffic.rate)

    def _add(self, start: float) -> None:
        t = self.traffic
        kind = "agent" if self._rng.random() < t.agent_share else "ivr"
        self.calls.append(Call(kind, start + self._rng.uniform(t.min_s, t.max_s)))
        self.arrived += 1

    # --- operations (the simulator's `calls` op) ------------------------------
    def load(self, now: float, count: int, traffic: Traffic) -> str:
        """`count` calls in progress now, and `traffic` from now on ('' or
        why refused). Calls start only where the IPC could take them."""
        why = traffic.check() or ("" if count >= 0 else "need count >= 0")
        if why:
            return why
        with self._lock:
            self.traffic, self._next = traffic, None
            if not self.busy_out:
                for _ in range(count):
                    self._add(now)
        return ""

    def set_busy_out(self, on: bool) -> bool:
        """Busy out (True) or release; returns whether it changed."""
        with self._lock:
            changed, self.busy_out = self.busy_out != on, on
            return changed

    def active(self) -> tuple[int, int]:
        """(IVR calls, agent calls) in progress."""
        with self._lock:
            agent = sum(1 for c in self.calls if c.kind == "agent")
            return len(self.calls) - agent, agent

    def stats(self) -> dict:
        ivr, agent = self.active()
        with self._lock:
            return {
                "ivr": ivr,
                "agent": agent,
                "active": ivr + agent,
                "busy_out": self.busy_out,
                "arrived": self.arrived,
                "completed": self.completed,
                "cut": self.cut,
                "turned_away": self.turned_away,
                "rate": self.traffic.rate,
            }


def operation(sim: CallSim, req: dict, now: float) -> dict:
    """The simulator's `calls` op: active | busy-out | release | stats |
    load (count, min, max, rate, agent_share); the answer carries `text`,
    what the IPC's command prints."""
    action = str(req.get("action", "stats"))
    if action in ("busy-out", "release"):
        changed = sim.set_busy_out(action == "busy-out")
        return {"ok": True, "changed": changed, "text": f"{action}: {'done' if changed else 'already'}"}
    if action == "load":
        t = sim.traffic
        traffic = Traffic(
            float(req.get("rate", t.rate)),
            float(req.get("min", t.min_s)),
            float(req.get("max", t.max_s)),
            float(req.get("agent_share", t.agent_share)),
        )
        why = sim.load(now, int(req.get("count", 0)), traffic)
        if why:
            return {"ok": False, "error": why}
    elif action not in ("active", "stats"):
        return {"ok": False, "error": f"unknown calls action {action!r} (active, busy-out, release, stats, load)"}
    st = sim.stats()
    return {"ok": True, **st, "text": text(st)}


def text(stats: dict) -> str:
    """The `active` command's output, the inventory contract's richer form."""
    return f"ivr={stats['ivr']} agent={stats['agent']}"


__all__ = ["Call", "CallSim", "Traffic", "operation", "text"]
