"""Running a plan: stages in order; in a stage, hosts in parallel and each
host's steps in the order their services need; the first failure stops new
steps and the report says what was done, what was not, and what is unknown. A
stage that starts CTI/IVR on a new primary runs only once the old primary is
verified fenced. Part of the Executor (executor.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from failover import platforms
from failover.exec_types import (
    CommandTimedOut,
    ExecError,
    OutcomeUnknown,
    PlanReport,
    Progress,
    StepResult,
)
from failover.layouts import APP_SERVICES, LABELS
from failover.rules import Stage, State, Step

log = logging.getLogger("failover.executor")


class PlanRunner:
    def fenced(self, host: str) -> tuple[bool, str]:
        """Verify over SSH that CTI and IVR are stopped on `host` (the same
        batched status, through the long-lived session where there is one)."""
        try:
            st = self.status_fast(host)
        except ExecError as e:
            return False, f"cannot verify: {e}"
        up = [s for s in sorted(APP_SERVICES) if st.states.get(s) is not State.STOPPED]
        if up:
            return False, f"{', '.join(up)} not stopped on {host}"
        return True, f"CTI and IVR verified stopped on {host}"

    def execute(
        self,
        plan: Sequence[Stage],
        progress: Progress | None = None,
        fence_check: Callable[[str], tuple[bool, str]] | None = None,
        guard: Callable[[Step], str] | None = None,
    ) -> PlanReport:
        """Run a plan. fence_check(old) decides whether a gated stage may start
        CTI/IVR (default: verify over SSH). guard(step), checked right before
        each step, returns a reason to refuse it ("" = go): the agent refuses
        CTI/IVR starts the moment it is no longer a confirmed primary."""
        say = progress or (lambda _m: None)
        check = fence_check or self.fenced
        results = [StepResult(s, "not run") for st in plan for s in st.steps]
        index = {id(r.step): r for r in results}
        blocked = ""
        for st in plan:
            if blocked:
                break
            if st.requires_fenced:
                ok, why = check(st.requires_fenced)
                say(f"fencing {st.requires_fenced}: {why}")
                if not ok:
                    blocked = f"{st.requires_fenced} not verified fenced: {why}; CTI/IVR not started"
                    break
            failed = self._run_stage(st, [index[id(s)] for s in st.steps], say, guard)
            if failed:
                blocked = failed
        return PlanReport(results, blocked)

    def _run_stage(
        self, st: Stage, results: list[StepResult], say: Progress, guard: Callable[[Step], str] | None = None
    ) -> str:
        """Hosts in parallel; on each host, a step waits only for the earlier
        steps it is ordered after (start order, reversed for stops; a stop
        before a start, a restart after everything before it), so independent
        steps run at once. The first failure stops new steps from starting."""
        hosts: dict[str, list[StepResult]] = {}
        for r in results:
            hosts.setdefault(r.step.host, []).append(r)
        abort = threading.Event()
        after = _closure(self.cluster.after())
        jobs = [(r, _deps(rs, k, after)) for rs in hosts.values() for k, r in enumerate(rs)]
        done = {id(r): threading.Event() for r, _ in jobs}

        def run_step(r: StepResult, deps: list[StepResult]) -> None:
            try:
                for d in deps:
                    done[id(d)].wait()
                if abort.is_set() or any(d.status != "done" for d in deps):
                    return
                self._run_step(r, say, guard)
                if r.status != "done":
                    abort.set()
            finally:
                done[id(r)].set()

        if len(jobs) == 1:
            run_step(*jobs[0])
        else:
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                list(pool.map(lambda j: run_step(*j), jobs))
        bad = [r for r in results if r.status in ("failed", "unknown")]
        return f"stage '{st.title}' failed at: {bad[0].line()}" if bad else ""

    def _run_step(self, r: StepResult, say: Progress, guard: Callable[[Step], str] | None) -> None:
        what = f"{LABELS.get(r.step.service, r.step.service)} on {r.step.host}"
        refused = guard(r.step) if guard else ""
        if refused:
            r.status, r.detail = "failed", f"refused: {refused}"
            say(f"{r.step.op} {r.step.service} on {r.step.host}: refused ({refused})")
            return
        say(f"{r.step.op}ing {what} …")
        t0 = time.monotonic()
        try:
            r.detail = self.do(r.step, guard)
            r.status = "done"
        except (OutcomeUnknown, CommandTimedOut) as e:
            r.status, r.detail = "unknown", e.detail
        except ExecError as e:
            r.status, r.detail = "failed", e.detail
        r.duration = time.monotonic() - t0
        log.debug("step %s %s on %s: %s in %.3f s", r.step.op, r.step.service, r.step.host, r.status, r.duration)
        say(f"{r.step.op} {what}: {r.status} {r.duration:.1f} s" + ("" if r.status == "done" else f" ({r.detail})"))

    def dry_run(self, plan: Sequence[Stage]) -> list[str]:
        """The exact commands a plan would run, per host, without connecting."""
        lines = []
        for n, st in enumerate(plan, 1):
            gate = f"  [only once {st.requires_fenced} is verified fenced]" if st.requires_fenced else ""
            lines.append(f"{n}. {st.title}{gate}")
            for s in st.steps:
                for cmd in platforms.step_commands(self.cluster, s.host, s.op, s.service, self.refs):
                    lines.append(f"   {s.host}: {cmd}")
        return lines


def _closure(after: dict[str, tuple[str, ...]]) -> dict[str, set[str]]:
    """Every service each one is ordered after, directly or through others."""
    out: dict[str, set[str]] = {}

    def visit(s: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if s not in out:
            direct = set(after.get(s, ())) - seen - {s}
            out[s] = set(direct)
            for d in direct:
                out[s] |= visit(d, seen | {s})
        return out[s]

    for s in after:
        visit(s)
    return out


def _deps(steps: list[StepResult], k: int, after: dict[str, set[str]]) -> list[StepResult]:
    """The earlier steps of one host that step k must wait for."""
    me = steps[k].step
    deps = []
    for r in steps[:k]:
        other = r.step
        if "restart" in (me.op, other.op) or me.op != other.op or me.service == other.service:
            deps.append(r)  # a stop before a start; a restart is a barrier
        elif me.op == "start" and other.service in after.get(me.service, set()):
            deps.append(r)  # started after what it is ordered after
        elif me.op == "stop" and me.service in after.get(other.service, set()):
            deps.append(r)  # stopped after what is ordered after it
    return deps
