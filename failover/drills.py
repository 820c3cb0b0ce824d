"""Weekend drills: run a runbook against a cluster — scripted fault injection,
expectations, the plan's basic call checks — with CTS-style audits after every
step, safety interlocks, dry run, resume, and a report with an SVG timeline.

    failover drill run RUNBOOK [--dry-run] [--yes] [--from STEP] [--window HH:MM-HH:MM]
"""

from __future__ import annotations

import html
import json
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from failover import executor as exe
from failover import oncall, ops, zkstore
from failover.inventory import Cluster
from failover.layouts import APP_SERVICES, SERVICES
from failover.rules import Role, State, Topology
from failover.runbook import Runbook, Step

Echo = Callable[[str], None]
SETTLE_S = 10.0  # a fresh drill waits this long for a passing unhealthy state (a handover) before refusing
REPAIRS = ("line-clear", "unhang", "sshd-up", "reachable")  # injections that undo a fault
ROLE_CHANGES = ("failover", "takeover", "switchover", "manual-failover", "board-down", "standby-fault")


class DrillRefused(Exception):
    pass


@dataclass
class StepResult:
    n: int
    title: str
    action: str
    status: str = "not run"  # ok | failed | skipped | not run
    detail: str = ""
    started: float = 0.0
    duration: float = 0.0
    audits: list[dict] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


@dataclass
class Sample:
    t: float
    ipc: str
    states: dict[str, str]


class Timeline:
    """Every service's state on each IPC, sampled over SSH during the drill."""

    def __init__(self, cluster: Cluster, interval: float = 0.3) -> None:
        self.cluster = cluster
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ex = exe.Executor(cluster, exe.RetryPolicy(attempts=1, total_seconds=1))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="drill-timeline")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self._ex.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for i in self.cluster.ipcs:
                try:
                    st = self._ex.status_fast(i.name)
                    states = {s: v.value for s, v in st.states.items()}
                except exe.ExecError:
                    states = {s: "UNKNOWN" for s in self.cluster.services}
                self.samples.append(Sample(time.time(), i.name, states))
            self._stop.wait(self.interval)


class Drill:
    def __init__(
        self,
        cluster: Cluster,
        runbook: Runbook,
        runbook_path: str,
        *,
        dry_run: bool = False,
        yes: bool = False,
        from_step: str | None = None,
        window: str | None = None,
        operator: str | None = None,
        out_dir: Path = Path("drill-reports"),
        echo: Echo = print,
    ) -> None:
        self.c, self.rb, self.path = cluster, runbook, runbook_path
        self.dry_run, self.yes, self.window = dry_run, yes, window
        self.operator = ops.operator_name(operator)
        self.out_dir = out_dir
        self.echo = echo
        self.topo = Topology.from_cluster(cluster)
        self.results: list[StepResult] = []
        self.faults: list[dict] = []
        self.start_from = self._step_index(from_step)
        self.ex: exe.Executor | None = None
        self.store: zkstore.Store | None = None
        self.t0 = 0.0
        self.start_epoch = 0

    # ----- helpers ------------------------------------------------------------
    def _step_index(self, from_step: str | None) -> int:
        if not from_step:
            return 1
        if from_step.isdigit() and 1 <= int(from_step) <= len(self.rb.steps):
            return int(from_step)
        for n, st in enumerate(self.rb.steps, 1):
            if st.name == from_step:
                return n
        raise DrillRefused(f"--from {from_step!r}: no such step (1..{len(self.rb.steps)} or a step name)")

    def record(self) -> dict:
        assert self.store is not None
        v = self.store.cluster()
        return v.data if v else {}

    def resolve(self, ref: str) -> str:
        if ref == "home-primary":
            return self.topo.home_primary
        if ref == "home-standby":
            return self.topo.peer(self.topo.home_primary)
        if ref in ("primary", "standby"):
            # (a dry run reads nothing: the preferred roles)
            p = (
                self.topo.home_primary
                if self.store is None
                else (self.record().get("primary") or self.topo.home_primary)
            )
            return p if ref == "primary" else self.topo.peer(p)
        return ref

    def _lab(self) -> Any:
        ipc = self.c.ipcs[0]
        if ipc.platform != "lab" or ipc.lab is None:
            return None
        from failover.lab.lab import Lab

        return Lab.load(Path(ipc.lab.control[-1]).parent)

    # ----- interlocks ------------------------------------------------------------
    def preflight(self) -> None:
        win = self.window or (f"{self.rb.window.start}-{self.rb.window.end}" if self.rb.window else None)
        if not win:
            raise DrillRefused("no drill window declared (runbook `window:` or --window HH:MM-HH:MM)")
        start, _, end = win.partition("-")
        now = datetime.now().strftime("%H:%M")
        inside = start <= now < end if start <= end else (now >= start or now < end)
        if not inside:
            raise DrillRefused(f"outside the drill window {win} (now {now})")
        if not self.c.drills_allowed and not self.yes:
            raise DrillRefused(
                f"cluster {self.c.name} is not marked for drills (drills_allowed: false); confirm with --yes"
            )
        if self.dry_run:
            return
        problems = self._health_problems()
        if problems and self.start_from > 1:
            # Resuming: the earlier steps (a failover, a fenced IPC, a pause)
            # may have left the cluster so on purpose; say it, do not refuse.
            self.echo(
                f"resuming at step {self.start_from}: the cluster is not in its normal state ("
                + "; ".join(problems)
                + "); continuing, as the earlier steps may have left it so"
            )
            return
        if problems:
            # A handover takes about a second; do not refuse on a passing state.
            self.echo(f"waiting up to {SETTLE_S:g} s for the cluster to settle: " + "; ".join(problems))
            deadline = time.monotonic() + SETTLE_S
            while problems and time.monotonic() < deadline:
                time.sleep(0.5)
                problems = self._health_problems()
        if problems:
            raise DrillRefused("the cluster is not healthy: " + "; ".join(problems))

    def _health_problems(self) -> list[str]:
        v = oncall.read_view(self.c, self.store)  # type: ignore[arg-type]
        p = v["primary"]
        problems = []
        if p is None or v["leader"] != p:
            problems.append("no primary holds the role")
        if v["paused"]:
            problems.append(f"the cluster is paused ({v['paused'].get('reason')})")
        for name, i in v["ipcs"].items():
            if name != p and not i["eligible"]:
                problems.append(f"standby {name} is not eligible")
            if i["agent"] != "alive":
                problems.append(f"{name}'s agent is {i['agent']}")
        return problems

    # ----- run -------------------------------------------------------------------
    def run(self) -> dict:
        self.t0 = time.time()
        timeline = None
        ctx = oncall.connected(self.c) if not self.dry_run else None
        try:
            if ctx is not None:
                self.store = ctx.__enter__()
                self.ex = exe.Executor(self.c)
            self.preflight()
            if not self.dry_run:
                self.start_epoch = int(self.record().get("epoch", 0))
                timeline = Timeline(self.c)
                timeline.start()
            failed = self._run_steps(self.rb.steps, "steps", self.start_from)
            if failed and self.rb.rollback:
                self.echo("rollback: a step failed; running the runbook's rollback steps")
                self._run_steps(self.rb.rollback, "rollback", 1, always=True)
        except KeyboardInterrupt:
            self.echo("interrupted: aborting the drill, running cleanup")
            self.results.append(StepResult(0, "interrupted (Ctrl-C)", "abort", "failed", "interrupted by the operator"))
        finally:
            try:
                if self.rb.cleanup:
                    self._run_steps(self.rb.cleanup, "cleanup", 1, always=True)
            finally:
                if timeline is not None:
                    timeline.stop()
                report = self._report(timeline)
                if self.store is not None and not self.dry_run:
                    self.store.add_history(
                        {
                            "kind": "drill",
                            "who": self.operator,
                            "why": f"runbook {self.rb.name}",
                            "outcome": report["outcome"],
                            "report": report.get("files", {}).get("md"),
                            "epoch": self.record().get("epoch"),
                        }
                    )
                if self.ex is not None:
                    self.ex.close()
                if ctx is not None:
                    ctx.__exit__(None, None, None)
        return report

    def _run_steps(self, steps: list[Step], section: str, start: int, always: bool = False) -> bool:
        failed = False
        for n, st in enumerate(steps, 1):
            title = st.title(n) if section == "steps" else f"{section} {n}: {st.title(n)}"
            r = StepResult(n if section == "steps" else -n, title, st.action)
            self.results.append(r)
            if section == "steps" and n < start:
                r.status, r.detail = "skipped", f"resumed from step {start}"
                continue
            if failed and not always:
                continue
            r.started = time.time()
            self.echo(f"[{r.started - self.t0:6.1f} s] {title} …")
            try:
                r.commands = self.describe(st)
                if self.dry_run:
                    r.status = "dry-run"
                    for cmd in r.commands:
                        self.echo(f"           would run: {cmd}")
                    continue
                r.detail = self.do(st) or "ok"
                r.status = "ok"
            except (exe.ExecError, zkstore.ZkUnavailable, oncall.Fail, ops.Refused, DrillRefused, AssertionError) as e:
                r.status, r.detail = "failed", str(e)
            r.duration = time.time() - r.started
            if not self.dry_run:
                r.audits = self.audit(settled=st.action not in ("inject", "wait"))
                bad = [a for a in r.audits if not a["ok"]]
                if bad and r.status == "ok":
                    r.status, r.detail = "failed", "audit failed: " + "; ".join(a["detail"] for a in bad)
            mark = {"ok": "ok", "failed": "FAILED"}.get(r.status, r.status)
            self.echo(f"           {mark} in {r.duration:.1f} s: {r.detail}")
            if r.status == "failed" and not st.continue_on_failure:
                failed = True
                if section == "steps":
                    self.echo(f"stopping at step {n}; resume later with --from {n}")
        return failed

    # ----- step actions ----------------------------------------------------------------
    def describe(self, st: Step) -> list[str]:
        """The commands a step would run (dry run and the report)."""
        if st.inject is not None:
            ipc = self.resolve(st.inject.ipc)
            return [self._fault_command(ipc, st.inject.fault, st.inject.service, st.inject.seconds)]
        if st.check is not None:
            ipc = self.resolve("primary")
            return [f"{ipc}: {self.c.smoke_checks[k].command}" for k in st.check]
        if st.run is not None:
            return [f"{self.resolve(st.run.ipc)}: {st.run.command}"]
        if st.switchover is not None:
            d = st.switchover.drain
            opts = f" --drain --max-wait {d.max_wait:g} --below {d.below} --on-deadline {d.on_deadline}" if d else ""
            return [f"failover switchover --to {self.resolve(st.switchover.to or 'standby')}{opts}"]
        if st.failover is not None:
            return [f"failover failover --to {self.resolve(st.failover.to)}"]
        if st.rejoin is not None:
            return [f"failover rejoin {self.resolve(st.rejoin.ipc)}"]
        if st.restore is not None:
            return [f"restore faults on {st.restore.ipc}"]
        return []

    def _fault_command(self, ipc: str, fault: str, service: str | None, seconds: float) -> str:
        i = self.c.ipc(ipc)
        if i.platform == "lab":
            svc = f" {service}" if service else ""
            if fault in ("sshd-down", "sshd-up", "unreachable", "reachable"):
                return f"{ipc}: failover lab fault {ipc} {fault}"
            kind = "kill" if fault == "stop" else fault
            return f"{ipc}: fault {kind}{svc} --seconds {seconds:g}"
        if fault == "stop" and service:
            return f"{ipc}: stop {service}"
        cmd = i.faults.get(f"{fault}:{service}" if service else fault) or i.faults.get(fault)
        if not cmd:
            raise DrillRefused(f"{ipc} has no fault command for {fault!r} in the inventory (ipcs[].faults)")
        return f"{ipc}: {cmd}"

    def do(self, st: Step) -> str:
        assert self.ex is not None and self.store is not None
        if st.inject is not None:
            return self._inject(st)
        if st.restore is not None:
            targets = [i.name for i in self.c.ipcs] if st.restore.ipc == "all" else [self.resolve(st.restore.ipc)]
            lab = self._lab()
            for t in targets:
                if lab is not None:
                    lab.fault(t, "restore")
                elif self.c.ipc(t).faults.get("restore"):
                    self.ex.run_shell(t, self.c.ipc(t).faults["restore"], 60, "restore", check=True)
            return f"faults restored on {', '.join(targets)}"
        if st.expect is not None:
            return self._expect(st)
        if st.check is not None:
            ipc = self.resolve("primary")
            for k in st.check:
                chk = self.c.smoke_checks[k]
                self.ex.run_shell(ipc, chk.command, chk.timeout, f"smoke check {k}", check=True)
            return f"{', '.join(st.check)} passed on {ipc}"
        if st.switchover is not None:
            to = self.resolve(st.switchover.to or "standby")
            d = st.switchover.drain
            return self._request(
                "switchover",
                to,
                st.switchover.reason or f"drill {self.rb.name}",
                frm=self.resolve("primary"),
                allow_paused=True,
                drain=d.model_dump() if d else None,
                follow_s=120 + (d.max_wait if d else 0),
            )
        if st.failover is not None:
            return self._request(
                "failover", self.resolve(st.failover.to), st.failover.reason or "drill", force=st.failover.force
            )
        if st.rejoin is not None:
            ipc = self.resolve(st.rejoin.ipc)
            ops.rejoin(self.store, ipc, self.operator, st.rejoin.reason or f"drill {self.rb.name}")
            self._wait(lambda: ops.rejoined(self.store, ipc) is not None, 60, f"{ipc} rejoined")
            return f"{ipc} rejoined as an eligible standby"
        if st.pause is not None:
            ops.pause(self.store, self.operator, st.pause.reason or f"drill {self.rb.name}")
            return "paused"
        if st.resume is not None:
            ops.resume(self.store, self.operator, st.resume.reason)
            return "resumed"
        if st.confirm is not None:
            return self._confirm(st.confirm.prompt, st.confirm.timeout)
        if st.wait is not None:
            time.sleep(st.wait)
            return f"waited {st.wait:g} s"
        if st.run is not None:
            ipc = self.resolve(st.run.ipc)
            res = self.ex.run_shell(ipc, st.run.command, st.run.timeout, "run", check=True)
            if st.run.expect_output is not None and st.run.expect_output not in res.stdout:
                raise AssertionError(
                    f"output of `{st.run.command}` on {ipc} lacks {st.run.expect_output!r}: "
                    f"{res.stdout.strip()[:200]!r}"
                )
            return f"ran on {ipc} ({res.duration:.1f} s)"
        raise AssertionError(f"unknown action {st.action}")

    def _inject(self, st: Step) -> str:
        assert st.inject is not None and self.ex is not None
        inj = st.inject
        ipc = self.resolve(inj.ipc)
        t = time.time()
        lab = self._lab()
        if inj.fault in ("sshd-down", "sshd-up", "unreachable", "reachable"):
            if lab is None:
                raise DrillRefused(f"host fault {inj.fault} needs the lab or an inventory fault command")
            detail = lab.fault(ipc, inj.fault)
        elif inj.fault == "stop" and lab is None:
            detail = self.ex.stop(ipc, inj.service or "")
        else:
            cmd = self._fault_command(ipc, inj.fault, inj.service, inj.seconds).split(": ", 1)[1]
            res = self.ex.run_shell(ipc, cmd, 30, f"inject {inj.fault}", check=True)
            detail = res.stdout.strip()[:120] or "injected"
        if inj.fault in REPAIRS:
            return f"{inj.fault} on {ipc}: {detail}"
        self.faults.append(
            {
                "step": st.name or inj.fault,
                "fault": inj.fault,
                "service": inj.service,
                "ipc": ipc,
                "at": t,
                "epoch_before": int(self.record().get("epoch", 0)),
            }
        )
        return f"{inj.fault} {inj.service or ''} on {ipc}: {detail}".replace("  ", " ")

    def _expect(self, st: Step) -> str:
        e = st.expect
        assert e is not None and self.ex is not None and self.store is not None
        start_epoch = self.faults[-1]["epoch_before"] if self.faults else self.start_epoch
        last = {"why": "not evaluated"}

        def ok() -> bool:
            self.store.sync()  # type: ignore[union-attr]
            v = oncall.read_view(self.c, self.store)  # type: ignore[arg-type]
            why = []
            if e.primary is not None and v["primary"] != self.resolve(e.primary):
                why.append(f"primary is {v['primary']}, not {self.resolve(e.primary)}")
            if e.board_down is not None and not v["ipcs"][self.resolve(e.board_down)]["board_down"]:
                why.append(f"{self.resolve(e.board_down)}'s board is not down")
            if e.capacity_at_least is not None and v["capacity"]["max_ivr"] < e.capacity_at_least:
                why.append(f"capacity {v['capacity']['max_ivr']} < {e.capacity_at_least}")
            standby = [n for n in v["ipcs"] if n != v["primary"]]
            if e.standby_ineligible and any(v["ipcs"][n]["eligible"] for n in standby):
                why.append("the standby is still eligible")
            if e.standby_eligible and not all(v["ipcs"][n]["eligible"] for n in standby):
                why.append("the standby is not eligible")
            if e.epoch_increased and (v["epoch"] or 0) <= start_epoch:
                why.append(f"epoch still {v['epoch']}")
            if e.service is not None:
                on = self.resolve(e.service.on)
                state = self.ex.status_fast(on).states.get(e.service.name)  # type: ignore[union-attr]
                want = State.RUNNING if e.service.state == "running" else State.STOPPED
                if state is not want:
                    why.append(f"{e.service.name} on {on} is {state.value if state else '?'}")
            last["why"] = "; ".join(why)
            return not why

        self._wait(ok, e.within, "expectation", lambda: last["why"])
        return "as expected"

    def _wait(self, pred: Callable[[], bool], within: float, what: str, why: Callable[[], str] | None = None) -> None:
        deadline = time.monotonic() + within
        while True:
            try:
                if pred():
                    return
            except zkstore.ZkUnavailable:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not met within {within:g} s" + (f": {why()}" if why else ""))
            time.sleep(0.2)

    def _request(self, kind: str, to: str, reason: str, follow_s: float = 120, **kw: Any) -> str:
        assert self.store is not None
        req = ops.new_request(kind, to, self.operator, reason, **kw)
        other = ops.submit(self.store, req)
        if other is not None:
            raise AssertionError(f"refused: {oncall.scheduled_text(other)}")
        res = oncall.follow(self.store, req["id"], follow_s, echo=lambda line: self.echo(f"         {line}"))
        if res.get("state") != "done":
            raise AssertionError(f"{kind} {res.get('state')}: {res.get('why')}")
        return str(res.get("why"))

    def _confirm(self, prompt: str, timeout: float) -> str:
        if self.yes:
            return "confirmed (--yes)"
        if not sys.stdin or not sys.stdin.isatty():
            raise AssertionError(f"confirmation needed ({prompt}) but nobody can answer: use --yes")
        self.echo(f"{prompt} [y/N] (timeout {timeout:g} s)")
        r, _, _ = select.select([sys.stdin], [], [], timeout)
        if not r:
            raise AssertionError(f"no answer within {timeout:g} s")
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise AssertionError("not confirmed")
        return "confirmed"

    # ----- audits (Pacemaker CTS style) -------------------------------------------------
    def audit(self, settled: bool) -> list[dict]:
        assert self.ex is not None and self.store is not None
        out = []
        states: dict[str, dict[str, State]] = {}
        for i in self.c.ipcs:
            try:
                states[i.name] = self.ex.status_all(i.name).states
            except exe.ExecError as e:
                out.append({"audit": f"status of {i.name}", "ok": not settled, "detail": str(e)})
        app = [n for n, st in states.items() if any(st.get(s) is not State.STOPPED for s in APP_SERVICES)]
        both = [n for n, st in states.items() if all(st.get(s) is State.RUNNING for s in APP_SERVICES)]
        out.append(
            {
                "audit": "no service active on two IPCs",
                "ok": len(both) <= 1 and len(app) <= 1,
                "detail": f"CTI/IVR active on {', '.join(app) or 'none'}",
            }
        )
        if not settled:
            return out
        try:
            self._wait(lambda: self._one_primary(), 20, "one primary")
            out.append(
                {"audit": "exactly one primary", "ok": True, "detail": f"primary {self.record().get('primary')}"}
            )
        except AssertionError as e:
            out.append({"audit": "exactly one primary", "ok": False, "detail": str(e)})
        if self.store.pause() is not None:
            # Maintenance mode: layouts may deviate on purpose (a service being
            # reconfigured); the safety audits above still apply.
            out.append(
                {
                    "audit": "every IPC's layout matches its role",
                    "ok": True,
                    "detail": "not checked while paused (maintenance)",
                }
            )
            return out
        try:
            self._wait(lambda: not self._layout_mismatch(), 20, "layouts", self._layout_mismatch)
            out.append({"audit": "every IPC's layout matches its role", "ok": True, "detail": "ok"})
        except AssertionError as e:
            out.append({"audit": "every IPC's layout matches its role", "ok": False, "detail": str(e)})
        return out

    def _one_primary(self) -> bool:
        assert self.store is not None
        rec = self.record()
        leader = self.store.leader()
        return bool(rec.get("primary") and leader and leader[0].get("ipc") == rec.get("primary"))

    def _layout_mismatch(self) -> str:
        assert self.ex is not None
        rec = self.record()
        bad = []
        for i in self.c.ipcs:
            role = Role(rec.get("roles", {}).get(i.name, "standby"))
            want = self.topo.expected(i.name, role, i.name in rec.get("board_down", []))
            st = self.ex.status_fast(i.name).states
            up = {s for s, v in st.items() if v is State.RUNNING}
            if up != set(want):
                bad.append(f"{i.name} ({role.value}): running {sorted(up)}, expected {sorted(want)}")
        return "; ".join(bad)

    # ----- report --------------------------------------------------------------------
    def _fault_metrics(self, timeline: Timeline | None) -> list[dict]:
        if self.store is None:
            return []
        hist = self.store.history(200)
        out = []
        samples = timeline.samples if timeline else []
        for n, f in enumerate(self.faults):
            t = f["at"]
            t_next = self.faults[n + 1]["at"] if n + 1 < len(self.faults) else float("inf")
            change = next((h for h in hist if h.get("kind") in ROLE_CHANGES and t <= h.get("when", 0) < t_next), None)
            detect = None
            if change is not None:
                detect = change.get("detection_s")
                if detect is None:
                    detect = round(change["when"] - t, 3)
            serving_times = sorted({s.t for s in samples if t <= s.t < t_next})
            down_after = [x for x in serving_times if not self._serving_at(samples, x)]
            served_again = None
            if down_after:
                later = [x for x in serving_times if x > down_after[0] and self._serving_at(samples, x)]
                served_again = round(later[0] - t, 3) if later else None
            elif serving_times:
                served_again = 0.0
            normal = next(
                (
                    r.started + r.duration
                    for r in self.results
                    if r.action == "expect"
                    and r.status == "ok"
                    and t < r.started < t_next
                    and r.n > 0
                    and self._is_home_expect(r.n)
                ),
                None,
            )
            out.append(
                {
                    **f,
                    "time_to_detect_s": detect,
                    "calls_served_again_s": served_again,
                    "back_to_normal_s": round(normal - t, 3) if normal else None,
                    "reaction": change.get("kind") if change else "none",
                }
            )
        return out

    def _is_home_expect(self, n: int) -> bool:
        st = self.rb.steps[n - 1]
        # the normal layout: the preferred primary serving and an eligible standby
        return bool(st.expect and st.expect.primary == "home-primary" and st.expect.standby_eligible)

    @staticmethod
    def _serving_at(samples: list[Sample], t: float) -> bool:
        at = [s for s in samples if abs(s.t - t) < 0.25]
        return any(all(s.states.get(x) == "RUNNING" for x in APP_SERVICES) for s in at)

    def _report(self, timeline: Timeline | None) -> dict:
        failed = [r for r in self.results if r.status == "failed"]
        outcome = "dry-run" if self.dry_run else ("failed" if failed else "passed")
        first_failed = next((r.n for r in self.results if r.status == "failed" and r.n > 0), None)
        report: dict[str, Any] = {
            "runbook": self.rb.name,
            "file": self.path,
            "cluster": self.c.name,
            "operator": self.operator,
            "started": self.t0,
            "duration_s": round(time.time() - self.t0, 2),
            "outcome": outcome,
            "failed_step": first_failed,
            "steps": [
                {
                    "n": r.n,
                    "title": r.title,
                    "action": r.action,
                    "status": r.status,
                    "detail": r.detail,
                    "duration_s": round(r.duration, 3),
                    "audits": r.audits,
                    "commands": r.commands,
                }
                for r in self.results
            ],
            "faults": self._fault_metrics(timeline) if not self.dry_run else [],
        }
        if self.dry_run:
            return report
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stem = self.out_dir / f"{datetime.fromtimestamp(self.t0).strftime('%Y%m%d-%H%M%S')}-{self.rb.name}"
        svg = timeline_svg(timeline.samples if timeline else [], self.results, self.t0, self.c)
        files = {
            "json": str(stem) + ".json",
            "md": str(stem) + ".md",
            "html": str(stem) + ".html",
            "svg": str(stem) + ".svg",
        }
        report["files"] = files
        Path(files["svg"]).write_text(svg)
        Path(files["json"]).write_text(json.dumps(report, indent=1, default=str) + "\n")
        Path(files["md"]).write_text(markdown(report))
        Path(files["html"]).write_text(html_report(report, svg))
        return report


# ----- rendering ---------------------------------------------------------------------
def markdown(r: dict) -> str:
    lines = [
        f"# Drill `{r['runbook']}` on cluster {r['cluster']}: **{r['outcome'].upper()}**",
        "",
        f"- started {datetime.fromtimestamp(r['started']).isoformat(timespec='seconds')} by {r['operator']}, "
        f"{r['duration_s']:.0f} s",
        f"- runbook: {r['file']}",
        "",
    ]
    if r["failed_step"]:
        lines += [
            f"Stopped at step {r['failed_step']}: resume with `failover drill run {r['file']} --from "
            f"{r['failed_step']}`.",
            "",
        ]
    lines += ["## Steps", "", "| # | step | result | duration | detail |", "|---|---|---|---|---|"]
    for s in r["steps"]:
        audits = "; ".join(f"{a['audit']}: {'ok' if a['ok'] else 'FAILED'}" for a in s["audits"] if not a["ok"])
        detail = (s["detail"] + (f" (audit: {audits})" if audits else "")).replace("|", "/")
        lines.append(f"| {s['n']} | {s['title']} | {s['status']} | {s['duration_s']:.1f} s | {detail} |")
    lines += [
        "",
        "## Faults",
        "",
        "| fault | on | reaction | detected in | calls served again after | back to normal after |",
        "|---|---|---|---|---|---|",
    ]
    for f in r["faults"]:

        def fmt(x: float | None) -> str:
            return "-" if x is None else f"{x:.2f} s"

        lines.append(
            f"| {f['fault']} {f.get('service') or ''} | {f['ipc']} | {f['reaction']} | "
            f"{fmt(f['time_to_detect_s'])} | {fmt(f['calls_served_again_s'])} | "
            f"{fmt(f['back_to_normal_s'])} |"
        )
    audits = [a for s in r["steps"] for a in s["audits"]]
    lines += [
        "",
        f"## Audits: {sum(a['ok'] for a in audits)} passed, {sum(not a['ok'] for a in audits)} failed",
        "",
        "Timeline: see the `.svg` / `.html` next to this file.",
        "",
    ]
    return "\n".join(lines)


COLORS = {
    "RUNNING": "#2e9d4a",
    "STOPPED": "#d9d9d9",
    "START_PENDING": "#f0b429",
    "STOP_PENDING": "#f0b429",
    "UNKNOWN": "#c0392b",
}


def timeline_svg(samples: list[Sample], results: list[StepResult], t0: float, c: Cluster) -> str:
    rows = [(i.name, s) for i in c.ipcs for s in SERVICES if s in c.services]
    end = max([s.t for s in samples] + [r.started + r.duration for r in results if r.started] + [t0 + 1])
    span = max(end - t0, 1.0)
    left, width, row_h = 170, 900, 16
    height = 40 + row_h * len(rows) + 30
    x = lambda t: left + (t - t0) / span * width  # noqa: E731
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="10" y="16" font-size="13">Services per IPC during the drill ({span:.0f} s); '
        "green running, grey stopped, amber changing, red unknown</text>",
    ]
    for k, (ipc, svc) in enumerate(rows):
        y = 30 + k * row_h
        out.append(f'<text x="10" y="{y + 11}">{html.escape(ipc)} {html.escape(svc)}</text>')
        mine = [s for s in samples if s.ipc == ipc]
        for a, b in zip(mine, [*mine[1:], None], strict=False):
            t_end = b.t if b else end
            color = COLORS.get(a.states.get(svc, "UNKNOWN"), "#c0392b")
            out.append(
                f'<rect x="{x(a.t):.1f}" y="{y}" width="{max(0.5, x(t_end) - x(a.t)):.1f}" '
                f'height="{row_h - 3}" fill="{color}"/>'
            )
    for r in results:
        if r.started and r.n > 0:
            out.append(
                f'<line x1="{x(r.started):.1f}" x2="{x(r.started):.1f}" y1="26" y2="{height - 25}" '
                f'stroke="{"#c0392b" if r.status == "failed" else "#34495e"}" stroke-dasharray="3,3"/>'
            )
            out.append(f'<text x="{x(r.started) + 2:.1f}" y="{height - 12}" font-size="9">{r.n}</text>')
    out.append("</svg>")
    return "\n".join(out)


def html_report(r: dict, svg: str) -> str:
    md = html.escape(markdown(r))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Drill {html.escape(r['runbook'])}</title>"
        f"</head><body><h1>Drill {html.escape(r['runbook'])}: {r['outcome'].upper()}</h1>{svg}"
        f"<pre>{md}</pre></body></html>\n"
    )
