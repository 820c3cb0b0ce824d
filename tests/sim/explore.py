"""Seeded fault schedules against the real agent code in the simulated world.

A schedule is a seed: it draws faults (power cuts, SSH that refuses, stalls or
shows a changed host key, agent crashes, restarts and freezes, ZooKeeper cut
from one agent, stops that fail, broken fence devices, CTI crashes,
switchovers, cancels, an operator's truthful `--confirm-dead`, rejoins) at
random moments, runs both agents cycle by cycle on the virtual clock, then
heals everything and lets the pair settle. Invariants, checked after every
agent step (World.check): never CTI/IVR on two IPCs, no new epoch without
holding `leader`, no promotion without a proof. At the end: calls are served
somewhere, or some agent publishes the way out (a command for a person).

    python -m tests.sim.explore --seeds 5000          # what `make test` runs
    python -m tests.sim.explore --seed 1234 --verbose # replay one, with its schedule
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from failover import ops
from failover.records import ClusterRecord, HistoryEntry
from tests.sim.world import RUNNING, STOPPED, Host, World, bootstrap

ACTION_SECONDS = 24  # virtual seconds of faults
SETTLE_SECONDS = 35  # virtual seconds after healing everything (a failed busy-out release is retried after 30)


@dataclass
class Outcome:
    seed: int
    steps: int = 0
    violations: list[str] = field(default_factory=list)
    schedule: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    log: dict[str, str] = field(default_factory=dict)  # each agent's JSON lines (its sentences)
    record: dict = field(default_factory=dict)


def _faults(w: World, rng: random.Random) -> list[tuple[str, Callable[[], None]]]:
    """The faults one moment may bring, each a (description, action)."""
    x = rng.choice([w.a, w.b])
    y = w.b if x == w.a else w.a
    h = w.hosts.hosts[x]
    svc = rng.choice(["cti", "ivr", "kcxp", "driver"])
    frozen_for = rng.choice([3, 8, 15])

    def crash_agent() -> None:
        ag = w.agents.pop(x, None)
        if ag is not None:
            w.crashed[x] = ag.session_id

    def restart_agent() -> None:
        if x not in w.agents:
            w.start_agent(x, sid=w.crashed.pop(x, None) if rng.random() < 0.5 else None)

    def freeze() -> None:
        w.frozen[x] = w.clock.now + frozen_for

    def zk_cut() -> None:
        if x in w.agents:
            w.store(x).up = False

    def zk_heal() -> None:
        if x in w.agents:
            w.store(x).up = True

    def switchover() -> None:
        w.request({"kind": "switchover", "to": y, "operator": "sim", "reason": "planned", "id": f"s{rng.random()}"})

    def drained_switchover() -> None:
        drain = {
            "below": 0,
            "max_wait": rng.choice([2.0, 8.0]),
            "on_deadline": rng.choice(["proceed", "cancel", "ask"]),
        }
        w.request({"kind": "switchover", "to": y, "operator": "sim", "reason": "drained", "id": f"d{rng.random()}"}
                  | {"drain": drain})  # fmt: skip

    def answer() -> None:
        n = w.zk.nodes.get(f"{w.store_path}/switchover")
        if n is not None and n.data.get("question") and not n.data.get("answer"):
            n.data["answer"] = rng.choice(["proceed", "cancel"])
            n.version += 1

    def cancel() -> None:
        n = w.zk.nodes.get(f"{w.store_path}/switchover")
        if n is not None and n.data.get("state") in ("pending", "running"):
            n.data.update(state="cancelled", result={"state": "cancelled", "why": "cancelled by sim"})
            n.version += 1

    def confirm_dead() -> None:
        if not h.powered:  # the operator tells the truth: they checked it is off
            w.request(
                {"kind": "failover", "to": y, "from": x, "confirm_dead": x, "operator": "sim", "reason": "off"}
                | {"id": f"f{rng.random()}"}
            )

    def rejoin() -> None:
        with contextlib.suppress(Exception):
            ops.rejoin(_store_for_ops(w), x, "sim", "repaired")

    return [
        (f"power-off {x}", h.power_off),
        (f"power-on {x}", lambda: h.power_on(w.clock.now) if not h.powered else None),
        (f"power-on {x}, CTI/IVR set to Automatic", lambda: _boot_with_app(w, h)),
        (f"ssh {x} refused", lambda: setattr(h, "ssh", "refused")),
        (f"ssh {x} hung", lambda: setattr(h, "ssh", "hung")),
        (f"ssh {x} host key changed", lambda: setattr(h, "ssh", "hostkey")),
        (f"ssh {x} up", lambda: setattr(h, "ssh", "up")),
        (f"crash {svc} on {x}", lambda: h.services.__setitem__(svc, STOPPED) if h.powered else None),
        (f"stop of {svc} fails on {x}", lambda: h.stop_fails.add(svc)),
        (f"start of {svc} fails on {x}", lambda: h.start_fails.add(svc)),
        (f"agent {x} crashes", crash_agent),
        (f"agent {x} restarts", restart_agent),
        (f"agent {x} frozen {frozen_for} s", freeze),
        (f"agent {x} cut from ZooKeeper", zk_cut),
        (f"agent {x} back on ZooKeeper", zk_heal),
        (f"fence device of {x} broken", lambda: _set_broken(w, x, True)),
        (f"switchover to {y}", switchover),
        ("cancel the request", cancel),
        (f"operator: --confirm-dead {x} (if it is off)", confirm_dead),
        (f"rejoin {x}", rejoin),
    ] + (
        [(f"drained switchover to {y}", drained_switchover), ("operator answers the drain's question", answer)]
        if w.cluster.calls is not None
        else []
    )


def _boot_with_app(w: World, h: Host) -> None:
    if not h.powered:
        h.autostart = {"driver", "cti", "ivr"}
        h.power_on(w.clock.now)
        h.autostart = {"driver"}


def _set_broken(w: World, x: str, broken: bool) -> None:
    if x in w.devices:
        w.devices[x].broken = broken


class _OpsStore:
    """ops.rejoin's view of the simulated ZooKeeper (no session of its own)."""

    def __init__(self, w: World) -> None:
        self.w = w

    def cluster(self):
        from failover import zkstore

        n = self.w.zk.nodes.get(f"{self.w.store_path}/cluster")
        return None if n is None else zkstore.Versioned(ClusterRecord.from_json(n.data), n.version)

    def update_cluster(self, version: int, rec: ClusterRecord) -> int:
        from failover import zkstore

        n = self.w.zk.nodes[f"{self.w.store_path}/cluster"]
        if n.version != version:
            raise zkstore.Conflict("changed")
        n.data, n.version = rec.to_json(), n.version + 1
        return n.version

    def add_history(self, entry: HistoryEntry) -> None:
        self.w.zk.history.append(entry.to_json())


def _store_for_ops(w: World) -> _OpsStore:
    return _OpsStore(w)


def heal(w: World) -> None:
    """Everything repaired: the way the pair must settle from."""
    for name, h in w.hosts.hosts.items():
        h.ssh, h.stop_fails, h.start_fails = "up", set(), set()
        if not h.powered:
            h.power_on(w.clock.now)
        _set_broken(w, name, False)
    w.frozen.clear()
    for x in (w.a, w.b):
        if x in w.agents:
            w.store(x).up = True
        else:
            w.start_agent(x, sid=w.crashed.pop(x, None))


def run_one(seed: int, tmp: Path, verbose: bool = False) -> Outcome:
    rng = random.Random(seed)
    out = Outcome(seed)
    w = World(tmp, devices=rng.random() < 0.6, calls=rng.random() < 0.5)
    mp = pytest.MonkeyPatch()
    try:
        with w.patched(mp):
            bootstrap(w)
            moments = sorted(rng.uniform(0, ACTION_SECONDS) for _ in range(rng.randint(1, 5)))
            step = w.cluster.timings.monitor_interval
            t_end = w.clock.now + ACTION_SECONDS
            t0 = w.clock.now
            while w.clock.now < t_end:
                while moments and t0 + moments[0] <= w.clock.now:
                    moments.pop(0)
                    what, act = rng.choice(_faults(w, rng))
                    out.schedule.append(f"t+{w.clock.now - t0:5.1f} s  {what}")
                    act()
                out.steps += _one_step(w, rng)
                w.clock.advance(step)
            out.schedule.append(f"t+{w.clock.now - t0:5.1f} s  heal everything")
            heal(w)
            for _ in range(int(SETTLE_SECONDS / step)):
                out.steps += _one_step(w, rng)
                w.clock.advance(step)
            _settled(w, out)
            out.violations = list(w.violations)
            out.said = [f"{x}: {ag.mem.sentence}" for x, ag in w.agents.items()]
            out.log = {x: ag.out.getvalue() for x, ag in w.agents.items()}  # type: ignore[attr-defined]
            out.record = w.record()
    finally:
        mp.undo()
    return out


def _one_step(w: World, rng: random.Random) -> int:
    """Both agents (in a random order) do a cycle, a watchdog tick and a
    continuous-fencing tick, unless crashed or frozen."""
    n = 0
    for x in rng.sample([w.a, w.b], 2):
        ag = w.agents.get(x)
        if ag is None or w.frozen.get(x, 0) > w.clock.now:
            continue
        w.watchdog(x)
        w.cycle(x)
        ag._keep_peer_fenced()
        w.check()
        n += 1
    return n


def _settled(w: World, out: Outcome) -> None:
    """Liveness after healing: someone serves, or an agent names the way out."""
    serving = [x for x in (w.a, w.b) if w.serving(x)]
    ways = [w.member(x).get("way_out") for x in (w.a, w.b) if w.member(x).get("way_out")]
    if not serving and not ways:
        w.violations.append(f"t={w.clock.now:.1f}: settled with no IPC serving and no way out named")
    # A busy-out never outlives its drained switchover (issue 16).
    req = w.request_state()
    draining = req.get("state") in ("pending", "running") and bool(req.get("drain"))
    marks = [k for k in w.zk.nodes if k.startswith(f"{w.store_path}/busy-out-")]
    busied = [x for x in (w.a, w.b) if w.hosts.hosts[x].busied]
    if (marks or busied) and not draining:
        w.violations.append(
            f"t={w.clock.now:.1f}: busied out {busied or ''} / markers {marks or ''} with no drain going on "
            f"(request {req.get('id')} {req.get('state')})"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=200, help="how many schedules (seeds 0..N-1)")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--seed", type=int, help="replay one schedule")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.disable(logging.WARNING)  # the agents' warnings are the schedule's faults
    seeds = [a.seed] if a.seed is not None else list(range(a.first, a.first + a.seeds))
    t0 = time.perf_counter()
    outs = explore(seeds, jobs=1 if a.seed is not None else a.jobs)
    dt = time.perf_counter() - t0
    bad = [o for o in outs if o.violations]
    steps = sum(o.steps for o in outs)
    for o in bad[:5] + ([outs[0]] if a.verbose and not bad else []):
        print(f"seed {o.seed}: {len(o.violations)} violation(s)")
        print("  schedule:\n    " + "\n    ".join(o.schedule))
        print("  violations:\n    " + "\n    ".join(o.violations[:5]))
        print("  last sentences:\n    " + "\n    ".join(o.said))
        print(f"  replay: python -m tests.sim.explore --seed {o.seed} --verbose")
    print(
        f"simulation: {len(outs)} schedules, {steps} steps, {sum(len(o.violations) for o in outs)} violations "
        f"({len(outs) / dt:.0f} schedules/s, {dt:.1f} s)"
    )
    return 1 if bad else 0


def _chunk(seeds: list[int]) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="failover-sim-") as d:
        return [run_one(s, Path(d) / str(s)) for s in seeds]


def explore(seeds: list[int], jobs: int = 2) -> list[Outcome]:
    if jobs <= 1 or len(seeds) < 50:
        return _chunk(seeds)
    parts = [seeds[i::jobs] for i in range(jobs)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return sorted((o for part in pool.map(_chunk, parts) for o in part), key=lambda o: o.seed)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["RUNNING", "explore", "run_one"]
