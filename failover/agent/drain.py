"""A drained switchover, the primary agent's acts (the decision is pure:
failover/drain.py; the protocol: failover/switchover.py).

The drain spans cycles and never blocks one: each cycle the primary observes
its IPC and its active calls as usual, and `_drain` either waits (the calls
are finishing), asks the operator (deadline), cancels, or lets
`_switch_over` demote and hand over as for a plain switchover. A fault on the
primary meanwhile beats the plan (`_fault_beats_drain`): the rules fail over
at once and the request ends failed.

The busy-out is recorded durably before it is made (P/busy-out-<ipc>: "busied
out since T by request R"), and every cycle `_sweep_busy_out` releases it
unless its drain is still going on with this agent as primary: so whatever
ends the switchover (done, failed, refused, cancelled, a fault, a hand-back,
this agent restarted) releases it."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

from failover import executor as exe
from failover import zkstore
from failover.agent.state import _active
from failover.calls import ActiveCalls, Unreadable, parse_active
from failover.drain import DrainMove, DrainSpec, Step, cut_count, drain_move
from failover.records import BusyOut, Request
from failover.rules import Action, Observation, decide

log = logging.getLogger("failover.agent")

# While draining, look at the calls this often (at most the monitor interval):
# the hand-over should follow the last call's end closely, as a plain
# switchover follows the operator's request.
DRAIN_POLL = 0.1
# Otherwise the count is for status and metrics only: read it every few
# seconds, so that the primary's cycle (fault detection) pays one more SSH
# command only now and then.
CALLS_EVERY = 5.0
# A failed release (the IPC down after a fault, say) is tried again this often,
# not every cycle: each try may cost the command's whole timeout.
RELEASE_RETRY = 30.0
GRACE = 2.0  # s beyond the calls commands' own timeout (inventory `calls.timeout`)


def _request(req: zkstore.Versioned[Request] | None) -> Request:
    return Request() if req is None else req.data


class DrainActs:
    calls_seen: ActiveCalls | None = None  # the last active calls read on our IPC (primary only)
    calls_read_at: float = 0.0  # monotonic, when the last read started
    calls_read_wall: float = 0.0  # wall time, when the read of `calls_seen` started
    drained: dict | None = None  # the calls of the switchover being handed over now, for its history
    _calls_reader: threading.Thread | None = None
    _busied: tuple[str | None, float] | None = None  # (request, wall time) this process busied out for
    _release_retry_at: float = 0.0  # monotonic: a failed release is tried again from then

    # ----- active calls as an observation -------------------------------------------
    def _observe_calls(self, zk: dict) -> None:
        """Read the active calls on our IPC (the inventory's `calls.active`):
        every cycle while a drain is due or on (a scheduled one from its
        time), else every CALLS_EVERY seconds: a plain switchover records
        the count as last read and pays nothing for it.
        Unknown (None) when not configured, unreachable or unreadable: never
        taken for "drained"."""
        calls = self.c.calls
        if calls is None or self.mem.obs is None or not self.mem.obs.reachable:
            self.calls_seen = None
            return
        if self._suspected_fault():
            return  # a fault beats a drain, and a hung CTI may hang the command too
        req = _active(zk.get("request"))
        due = req is not None and bool(req.data.drain) and (req.data.at is None or req.data.at <= time.time())
        fresh = zk.get("busy_out") is not None or due
        if not fresh and time.monotonic() - self.calls_read_at < CALLS_EVERY:
            return
        if self._calls_reader is not None and self._calls_reader.is_alive():
            return  # the last read is still running: its answer comes when it comes
        self.calls_read_at = time.monotonic()
        self._calls_reader = threading.Thread(
            target=self._read_calls, args=(time.time(),), name="active-calls", daemon=True
        )
        self._calls_reader.start()

    def _read_calls(self, started: float) -> None:
        """One read of `calls.active`, beside the cycle: a hung command holds
        up this thread, never the cycle that detects faults."""
        calls = self.c.calls
        assert calls is not None
        seen = None
        try:
            res = self.ex.run_shell(self.me, calls.active, calls.timeout, "active calls", grace=GRACE)
            if res.exit_code != 0:
                log.warning("%s: `%s` exited %s", self.me, calls.active, res.exit_code)
            else:
                seen = parse_active(res.stdout)
        except (exe.ExecError, Unreadable) as e:
            log.warning("%s: cannot read the active calls: %s", self.me, e)
        self.calls_seen, self.calls_read_wall = seen, started
        self.wake.set()  # a drain decides on the new count at once

    def _calls_command(self, which: str) -> str:
        """Run `calls.busy_out` or `calls.release` on our IPC: '' done, else why not."""
        assert self.c.calls is not None
        cmd = getattr(self.c.calls, which)
        try:
            res = self.ex.run_shell(self.me, cmd, self.c.calls.timeout, which.replace("_", "-"), grace=GRACE)
        except exe.ExecError as e:
            return str(e)
        if res.exit_code == 0:
            return ""
        return f"`{cmd}` exited {res.exit_code}: {(res.stderr or res.stdout).strip()[:120]}"

    # ----- the busy-out and its release ----------------------------------------------
    def _busy_out(self, rid: str | None) -> tuple[str, float]:
        """Busy out our IPC for request `rid`: ('' or why it failed, since).
        An agent restarted right after busying out finds its marker and keeps
        its time: the drain's deadline counts from the first busy-out."""
        assert self.store is not None
        mark: BusyOut | None = self._zk_snapshot.get("busy_out")
        if mark is None or mark.request != rid:
            self.store.set_busy_out(self.me, rid)  # the intent first: whoever ends the switchover finds it
            mark = BusyOut(self.me, rid, time.time())
        failed = self._calls_command("busy_out")
        if not failed:
            self._busied = (rid, time.time())
        return failed, mark.since

    def _release_busy_out(self, why: str) -> str:
        """Release the busy-out; a sentence part saying so (or why it failed:
        the marker stays and the next cycle tries again)."""
        assert self.store is not None
        self._busied = None
        if self.c.calls is not None:
            failed = self._calls_command("release")
            if failed:
                self._release_retry_at = time.monotonic() + RELEASE_RETRY
                return f"releasing the busy-out on {self.me} FAILED ({failed}); trying again in {RELEASE_RETRY:g} s"
        self.store.clear_busy_out(self.me)
        return f"busy-out on {self.me} released ({why})"

    def _sweep_busy_out(self, zk: dict, primary: bool) -> str:
        """Release a busy-out whose drain is over; '' or a sentence prefix."""
        mark: BusyOut | None = zk.get("busy_out")
        if mark is None:
            return ""
        r = _request(_active(zk.get("request")))
        if primary and r.id == mark.request and r.drain:
            return ""  # our drain goes on
        if time.monotonic() < self._release_retry_at:
            return ""  # the last release failed a moment ago
        return self._release_busy_out(f"request {mark.request} is over") + ". "

    def _release_without_zk(self, gone: float) -> str:
        """A primary busied out for a drain loses ZooKeeper: the drain cannot
        go on, and the IPC must not refuse new calls for the whole outage.
        Released once the outage is as long as the self-fence bound (the
        marker stays; the drain, when ZooKeeper is back, busies out again)."""
        if self._busied is None or gone < self.t.self_fence_after or self.c.calls is None:
            return ""
        failed = self._calls_command("release")
        if failed:
            return f"releasing the busy-out FAILED ({failed}); "
        self._busied = None
        return "busy-out released (no ZooKeeper: the drain waits); "

    # ----- the drain, cycle by cycle --------------------------------------------------
    def _fault_beats_drain(self, req: zkstore.Versioned, obs: Observation) -> bool:
        """During a drain a fault on the primary fails over at once: the
        request ends failed, the busy-out is released, and the cycle goes on
        as the rules say (True)."""
        r = _request(req)
        if DrainSpec.of(r.drain) is None:
            return False
        d = decide(obs)
        if not d.execute or d.action in (Action.NONE, Action.HOLD):
            return False
        # The busy-out is released by the next cycle's sweep, not here: on a
        # faulty IPC the release may take its whole timeout, and the failover
        # must not wait for it.
        why = f"a fault beats the plan: {d.reason}; the busy-out is released next"
        self._finish_request(r.id, "failed", why, primary=self.me, superseded=True)
        return True

    def _suspected_fault(self) -> str:
        """'' or what on our IPC failed its last check (not yet a fault)."""
        o = self.mem.obs
        if o is None or not o.reachable:
            return f"{self.me} unreachable"
        bad = sorted(s for s, v in o.services.items() if v.failures > 0)
        if o.line_failures > 0:
            bad.append("line")
        return f"{' and '.join(bad)} failing on {self.me}" if bad else ""

    def _drain(self, req: zkstore.Versioned, spec: DrainSpec) -> str:
        """'' to hand over now (drained, or as chosen at the deadline); else
        this cycle's sentence (still draining, or the switchover ended here)."""
        r = _request(req)
        rid = r.id
        draining = r.draining
        if draining is None:
            return self._start_drain(rid, spec)
        if self._busied is None or self._busied[0] != rid:
            # Not busied out by this process: it restarted, or ZooKeeper was
            # gone and the busy-out released. Again (it is safe to repeat).
            failed, _ = self._busy_out(rid)
            if failed:
                return f"{self.me} is primary, draining: busying out again FAILED ({failed}); retrying."
        now = time.time()
        # Only a count read after the busy-out took effect says the calls have
        # finished: one read before it may miss calls arriving since.
        seen = self.calls_seen if self._busied and self.calls_read_wall >= self._busied[1] else None
        m = drain_move(spec, seen, float(draining["started"]), now, r.answer or "")
        suspect = self._suspected_fault()
        if m.step is Step.PROCEED and suspect:
            # A CTI that just died cut its calls: "0 active" is the fault's
            # doing, not a drain. The rules confirm it (or not) next cycles.
            m = DrainMove(Step.WAIT, f"{suspect} suspected: not handing over until the rules have decided")
        if m.step is Step.PROCEED:
            self._request_progress(rid, f"{self.me}: {m.why}; handing over")
            self.drained = {
                "at_start": draining.get("at_start"),
                "at_handover": cut_count(seen),
                "drain_s": round(now - float(draining["started"]), 3),
                "drained_at": now,
            }
            return ""
        if m.step is Step.CANCEL:
            note = self._release_busy_out("the drain was cancelled")
            self._finish_request(rid, "cancelled", f"{m.why}; {note}; {self.me} stays primary", primary=self.me)
            return f"Drained switchover to {self.peer} cancelled: {m.why}; {note}."
        self._drain_progress(r, m.step, m.why)
        self.mem.wake_at = time.monotonic() + min(self.t.interval, DRAIN_POLL)
        return f"{self.me} is primary, draining for a switchover to {self.peer}: {m.why}."

    def _start_drain(self, rid: str | None, spec: DrainSpec) -> str:
        if self.c.calls is None:
            why = "the inventory has no `calls` commands: nothing can tell when the calls have finished"
            self._finish_request(rid, "refused", why)
            return f"Drained switchover refused: {why}."
        failed, since = self._busy_out(rid)
        if failed:
            note = self._release_busy_out("busying out failed")
            why = f"busying out {self.me} failed ({failed}); {note}; nothing else changed"
            self._finish_request(rid, "failed", why, primary=self.me)
            return f"Drained switchover to {self.peer} FAILED: {why}."
        seen = self.calls_seen
        count = "an unknown number of calls" if seen is None else seen.text()
        draining = {"started": since, "at_start": cut_count(seen), "calls": seen.record() if seen else None}
        line = (
            f"{self.me}: busied out (no new calls), {count} in progress; hand-over at {spec.below} or fewer, "
            f"or after {spec.max_wait:g} s ({spec.on_deadline} then)"
        )
        self._request_edit(rid, {"state": "running", "draining": draining}, line)
        self.mem.wake_at = time.monotonic() + min(self.t.interval, DRAIN_POLL)
        return f"{self.me} busied out for a drained switchover to {self.peer}: {count} in progress."

    def _drain_progress(self, r: Request, step: Step, why: str) -> None:
        """The calls as they drain, in the request (the CLI shows them live):
        a progress line when the count changes, and the question once."""
        seen = self.calls_seen.record() if self.calls_seen else None
        draining = dict(r.draining or {})
        change: dict[str, Any] = {}
        line = ""
        if draining.get("calls") != seen:
            change["draining"] = {**draining, "calls": seen}
            line = f"{self.me}: {why}"
        if step is Step.ASK and not r.question:
            change["question"] = why
            line = f"{self.me}: {why} (answer: failover switchover --answer proceed|cancel)"
        if change:
            self._request_edit(r.id, change, line)

    def _request_edit(self, rid: str | None, change: dict[str, Any], line: str = "") -> None:
        """Apply `change` (Request fields) to the operator's request, not once it is final."""
        assert self.store is not None
        for _ in range(5):
            cur = self.store.request()
            if cur is None or cur.data.id != rid or cur.data.state in zkstore.FINAL_STATES:
                return
            data = replace(cur.data, **change)
            if line:
                data = replace(data, progress=(*data.progress, line))
            try:
                self.store.update_request(cur.version, data)
                return
            except zkstore.Conflict:
                continue


__all__ = ["DRAIN_POLL", "DrainActs"]
