"""Weekend drills: run a runbook against a cluster — scripted fault injection,
expectations, the plan's basic call checks — with CTS-style audits after every
step, safety interlocks, dry run, resume, and a report with an SVG timeline.

    failover drill run RUNBOOK [--dry-run] [--yes] [--from STEP] [--window HH:MM-HH:MM]
"""

from __future__ import annotations

import select
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from failover import drill_audit, drill_report, oncall, ops, zkstore
from failover import executor as exe
from failover.drill_hostops import HostOps
from failover.drill_report import StepResult
from failover.drill_timeline import Timeline
from failover.drill_window import Window as DrillWindow
from failover.inventory import Cluster
from failover.layouts import SERVICES
from failover.platforms import UnsafeArgument
from failover.records import ClusterRecord, HistoryEntry
from failover.rules import State, Topology
from failover.runbook import Runbook, Step

Echo = Callable[[str], None]
SETTLE_S = 10.0  # a fresh drill waits this long for a passing unhealthy state (a handover) before refusing
REPAIRS = ("line-clear", "unhang", "sshd-up", "reachable")  # injections that undo a fault


class DrillRefused(Exception):
    pass


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
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.c, self.rb, self.path = cluster, runbook, runbook_path
        self.dry_run, self.yes, self.window = dry_run, yes, window
        self.operator = ops.operator_name(operator)
        self.out_dir = out_dir
        self.echo = echo
        self.clock = clock  # local wall time, for the drill window (injected by tests)
        self.topo = Topology.from_cluster(cluster)
        self.results: list[StepResult] = []
        self.faults: list[dict] = []
        self.start_from = self._step_index(from_step)
        self.ex: exe.Executor | None = None
        self.store: zkstore.Store | None = None
        self.t0 = 0.0
        self.hostops = HostOps(cluster, time.time())
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

    def record(self) -> ClusterRecord:
        assert self.store is not None
        v = self.store.cluster()
        return v.data if v else ClusterRecord()

    def resolve(self, ref: str) -> str:
        if ref == "home-primary":
            return self.topo.home_primary
        if ref == "home-standby":
            return self.topo.peer(self.topo.home_primary)
        if ref in ("primary", "standby"):
            # (a dry run reads nothing: the preferred roles)
            p = self.topo.home_primary if self.store is None else (self.record().primary or self.topo.home_primary)
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
        self._check_window()
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

    def _check_window(self) -> None:
        text = self.window or (f"{self.rb.window.start}-{self.rb.window.end}" if self.rb.window else None)
        if not text:
            raise DrillRefused("no drill window declared (runbook `window:` or --window HH:MM-HH:MM)")
        try:
            win = DrillWindow.parse(text)
        except ValueError as e:
            raise DrillRefused(str(e)) from None
        now = self.clock()
        if self.dry_run:
            # A preview changes nothing: it runs at any hour (people prepare
            # Sunday's drill on Friday) and says when the real run may start.
            self.echo(win.describe(now))
        elif not win.contains(now):
            raise DrillRefused(f"outside the drill window {win} (now {now:%H:%M}); {win.describe(now)}")

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
        self.hostops = HostOps(self.c, self.t0)
        ctx = oncall.connected(self.c) if not self.dry_run else None
        if ctx is not None:
            self.store = ctx.__enter__()
            self.ex = exe.Executor(self.c)
        # Refused (or interrupted) here: nothing was done, so nothing is cleaned
        # up or recorded (a cleanup `resume` must not lift somebody else's pause).
        try:
            self.preflight()
        except KeyboardInterrupt:
            self._close(ctx)
            raise DrillRefused("interrupted before the first step; nothing was done") from None
        except BaseException:
            self._close(ctx)
            raise
        return self._run_drill(ctx)

    def _run_drill(self, ctx: Any) -> dict:
        timeline = None
        try:
            if not self.dry_run:
                self.start_epoch = int(self.record().epoch)
                timeline = Timeline(self.c)
                timeline.start()
            failed = self._run_steps(self.rb.steps, "steps", self.start_from)
            if failed and self.rb.rollback:
                self.echo("rollback: a step failed; running the runbook's rollback steps")
                self._run_steps(self.rb.rollback, "rollback", 1, always=True)
        except KeyboardInterrupt:
            self.echo("interrupted: aborting the drill, running cleanup")
            self.results.append(
                StepResult(0, "interrupted (Ctrl-C)", "abort", "failed", "interrupted by the operator", label="-")
            )
        finally:
            try:
                if self.rb.cleanup:
                    self._run_steps(self.rb.cleanup, "cleanup", 1, always=True)
            finally:
                if timeline is not None:
                    timeline.stop()
                report = self._report(timeline)
                self._record(report)
                self._close(ctx)
        return report

    def _record(self, report: dict) -> None:
        if self.store is None or self.dry_run:
            return
        self.store.add_history(
            HistoryEntry.of(
                "drill",
                self.operator,
                f"runbook {self.rb.name}",
                report["outcome"],
                report=report.get("files", {}).get("md"),
                epoch=self.record().epoch,
            )
        )

    def _close(self, ctx: Any) -> None:
        if self.ex is not None:
            self.ex.close()
        if ctx is not None:
            ctx.__exit__(None, None, None)

    def _run_steps(self, steps: list[Step], section: str, start: int, always: bool = False) -> bool:
        failed = False
        for n, st in enumerate(steps, 1):
            title = st.title(n) if section == "steps" else f"{section} {n}: {st.title(n)}"
            label = str(n) if section == "steps" else f"{section} {n}"
            r = StepResult(n if section == "steps" else -n, title, st.action, label=label)
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
            except (
                exe.ExecError,
                zkstore.ZkUnavailable,
                oncall.Fail,
                ops.Refused,
                DrillRefused,
                AssertionError,
                UnsafeArgument,
            ) as e:
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
        if st.config is not None:
            ipc = self.resolve(st.config.ipc)
            return [f"{ipc}: {cmd}" for cmd in self.hostops.config_commands(ipc, st.config)]
        if st.service is not None:
            return self.hostops.service_commands(self.resolve(st.service.ipc), st.service)
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
            return self._restore(st.restore.ipc)
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
        if st.config is not None:
            return self.hostops.config(self.ex, self.resolve(st.config.ipc), st.config)
        if st.service is not None:
            return self.hostops.service(self.ex, self.resolve(st.service.ipc), st.service)
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

    def _restore(self, ref: str) -> str:
        assert self.ex is not None
        targets = [i.name for i in self.c.ipcs] if ref == "all" else [self.resolve(ref)]
        lab = self._lab()
        for t in targets:
            if lab is not None:
                lab.fault(t, "restore")
            elif self.c.ipc(t).faults.get("restore"):
                self.ex.run_shell(t, self.c.ipc(t).faults["restore"], 60, "restore", check=True)
        return f"faults restored on {', '.join(targets)}"

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
                "epoch_before": int(self.record().epoch),
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
        drill_audit.wait(pred, within, what, why)

    def _request(self, kind: str, to: str, reason: str, follow_s: float = 120, **kw: Any) -> str:
        assert self.store is not None
        req = ops.new_request(kind, to, self.operator, reason, **kw)
        other = ops.submit(self.store, req)
        if other is not None:
            raise AssertionError(f"refused: {oncall.scheduled_text(other.to_json())}")
        res = oncall.follow(self.store, req.id, follow_s, echo=lambda line: self.echo(f"         {line}"))
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

    # ----- audits ---------------------------------------------------------------------
    def audit(self, settled: bool) -> list[dict]:
        assert self.ex is not None and self.store is not None
        return drill_audit.Audits(self.c, self.topo, self.ex, self.store, self._wait).run(settled)

    # ----- report --------------------------------------------------------------------
    def _is_home_expect(self, n: int) -> bool:
        st = self.rb.steps[n - 1]
        # the normal layout: the preferred primary serving and an eligible standby
        return bool(st.expect and st.expect.primary == "home-primary" and st.expect.standby_eligible)

    def _report(self, timeline: Timeline | None) -> dict:
        samples = timeline.samples if timeline else []
        faults = []
        if not self.dry_run and self.store is not None:
            hist = self.store.history(200)
            faults = drill_report.fault_metrics(self.faults, hist, samples, self.results, self._is_home_expect)
        report = drill_report.build(
            runbook=self.rb.name,
            path=self.path,
            cluster=self.c.name,
            operator=self.operator,
            t0=self.t0,
            dry_run=self.dry_run,
            results=self.results,
            faults=faults,
        )
        if self.dry_run:
            return report
        ipcs = [i.name for i in self.c.ipcs]
        services = [s for s in SERVICES if s in self.c.services]
        data = drill_report.timeline_data(ipcs, services, samples, report)
        drill_report.write(report, self.out_dir, data)
        return report
