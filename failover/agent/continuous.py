"""Continuous fencing: while this agent holds the role, CTI and IVR must not
run on the other IPC. A thread of its own checks it about once a second
(docs/agent.md, "Fencing")."""

from __future__ import annotations

import logging

from failover import executor as exe
from failover.agent.state import (
    PEER_CHECK_EVERY,
)
from failover.layouts import APP_SERVICES, LABELS, stop_order
from failover.platforms import State
from failover.records import HistoryEntry
from failover.rules import (
    Step,
)

log = logging.getLogger("failover.agent")


class ContinuousFencing:
    def _peer_fence_loop(self) -> None:
        """Continuous fencing in a thread of its own: an unreachable peer must
        not slow the primary's cycle by an SSH connect timeout."""
        while not self.stop_event.wait(PEER_CHECK_EVERY):
            try:
                note = self._keep_peer_fenced()
            except Exception:  # never let this thread die
                log.exception("continuous fencing check failed")
                continue
            if note:
                self.say(note)

    def _keep_peer_fenced(self) -> str:
        """Continuous fencing: while we hold the role, CTI and IVR must not
        run on the peer (Windows auto-start after a reboot, a start that landed
        late). Seen over SSH, or, when SSH does not work, by their probes
        answering; stopped over SSH, else powered off through the peer's fence
        device, else an alert naming what a person must do. Only while our
        own leadership is fresh (a stale primary must not stop a legitimately
        promoted one)."""
        crec = self._zk_snapshot.get("cluster")
        if not self.tenure.confirmed or not crec or crec.data.primary != self.me:
            self.mem.stray = ""
            return ""
        try:
            st = self.ex.status_fast(self.peer)
            stray = sorted(
                s for s in APP_SERVICES & self.topo.services if st.states.get(s) not in (State.STOPPED, State.UNKNOWN)
            )
        except exe.ExecError:
            stray = sorted(s for s in APP_SERVICES & self.topo.services if self._answers(self.peer, s))
        if not stray:
            self.mem.stray = ""
            return ""
        if self.guard(Step(self.me, "start", "cti")):
            return ""
        return self._stop_stray(stray, int(crec.data.epoch))

    def _answers(self, host: str, service: str) -> bool:
        """The service's probe, without SSH (a TCP probe from this host)."""
        try:
            return self.ex.probe(host, service)
        except exe.ExecError:
            return False  # a command probe needs SSH: unknown, not "answering"

    def _still_primary(self, epoch: int) -> bool:
        """Leadership fresh and the epoch unchanged: re-checked before every
        action on the peer (a stop may take its whole timeout, and the peer
        may be promoted legitimately meanwhile)."""
        crec = self._zk_snapshot.get("cluster")
        now_epoch = int(crec.data.epoch) if crec else -1
        return self.tenure.confirmed and now_epoch == epoch and not self.guard(Step(self.me, "start", "cti"))

    def _stop_stray(self, stray: list[str], epoch: int) -> str:
        failed = []
        for s in stop_order(set(stray), self.topo.after):
            if not self._still_primary(epoch):
                return ""
            try:
                self.ex.stop(self.peer, s)
            except exe.ExecError as e:
                failed.append(f"{LABELS[s]} ({e.detail})")
        what = " and ".join(LABELS[s] for s in stray)
        how = "stopped"
        if failed and self.fencer.has_device(self.peer) and self._still_primary(epoch):
            dev = self.fencer.power_off(self.peer)
            how = f"could not be stopped ({'; '.join(failed)}): {dev.proof.detail if dev.proof else dev.why}"
            failed = [] if dev.proof else failed
        elif failed:
            how = f"could NOT be stopped ({'; '.join(failed)})"
        self.mem.stray = (
            f"No automatic action: {what} run on {self.peer} while {self.me} is primary and cannot be stopped "
            f"({'; '.join(failed)}). Stop them on {self.peer} by hand now (or power it off)."
            if failed
            else ""
        )
        assert self.store is not None
        self.store.add_history(
            HistoryEntry.of(
                "stray-stopped",
                f"agent {self.me}",
                f"{what} found running on {self.peer} while {self.me} is primary: {how}",
                "failed" if failed else "done",
                frm=self.peer,
                to=self.me,
                epoch=epoch,
            )
        )
        return f"Continuous fencing: {what} found running on {self.peer} while {self.me} is primary, {how}."
