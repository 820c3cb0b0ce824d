"""What each kind of drill step does (inject a fault, expect a layout, run
the plan's call checks, switch over, fail over, rejoin, restore, edit a
configuration) and how a dry run describes it. Part of the Drill (drills.py),
which runs the steps in order, audits after each and writes the report."""

from __future__ import annotations

import select
import sys
import time
from collections.abc import Callable
from typing import Any

from failover import drill_audit, oncall, ops
from failover.rules import State
from failover.runbook import Step

REPAIRS = ("line-clear", "unhang", "sshd-up", "reachable")  # injections that undo a fault


class DrillRefused(Exception):
    pass


class DrillSteps:
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
