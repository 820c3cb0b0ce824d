"""Taking the primary role: `leader` first, then a proof that the old
primary's CTI/IVR are not running (fencing.py), epoch + 1 with a conditional
write, promotion, and the history entry that names the proof."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from failover import executor as exe
from failover import fencing
from failover import switchover as plan
from failover.agent.state import (
    NO_PROOF_RETRY,
)
from failover.records import ClusterRecord, Handoff, HistoryEntry
from failover.rules import (
    Action,
    Decision,
    IpcObs,
    Role,
)

log = logging.getLogger("failover.agent")


class TakeOverActs:
    def _take_over(self, zk: dict, crec: ClusterRecord, handoff: Handoff | None, manual: dict | None = None) -> str:
        """Take the primary role: P/leader, a proof that the old primary's CTI
        and IVR are not running, epoch + 1, promotion. `handoff`: the old
        primary handed over (failover or switchover) in this epoch; `manual`:
        an operator's `failover failover --to` this IPC."""
        assert self.store is not None
        epoch = crec.epoch
        # The hand-over's fields (or the operator's request) as the takeover's metadata.
        meta = handoff.to_json() if handoff else (manual or {})
        rid = meta.get("request")
        retry_at, said, way = self.mem.no_proof
        if time.monotonic() < retry_at and not manual and not self.tenure.confirmed:
            # No proof a moment ago: do not hold `leader` again at once (the
            # recorded primary's agent may come back and take it; an
            # operator's request is tried at once).
            self.mem.way_out = way
            self._publish(zk, crec, Decision(Action.HOLD, said, alerts=(way,)), said)
            return said
        refused = self._claim_role(epoch, handoff is not None)
        if refused:
            return refused
        attempt = self._prove_peer(handoff, (manual or {}).get("confirmed_by", ""))
        if attempt.proof is None:
            # No proof: give P/leader back (the recorded primary's agent may
            # retake it) and say what a person can do. Nothing was started.
            self.store.release_leader(self.session_id or 0)
            self.tenure.revoke()
            self.tenure.stop_taking()
            self.mem.way_out = fencing.way_out(self.peer, self.me, attempt, self.fencer.has_device(self.peer))
            if rid:
                self._finish_request(rid, "failed", f"no proof that {self.peer} is down: {attempt.why}")
            sentence = f"Not taking the role from {self.peer}: {attempt.why}; {self.me} not promoted, ALERT."
            self.mem.no_proof = (time.monotonic() + NO_PROOF_RETRY, sentence, self.mem.way_out)
            self._publish(zk, crec, Decision(Action.HOLD, sentence, alerts=(self.mem.way_out,)), sentence)
            return sentence
        return self._promote(zk, crec, meta, attempt.proof)

    def _claim_role(self, epoch: int, handed_over: bool) -> str:
        """Hold P/leader before anything else ('' = held). A failsafe promise
        to the old primary is honoured by every path, manual ones included:
        a hand-over ends it (the primary gave the role up itself)."""
        assert self.store is not None
        wait = 0.0 if handed_over else self.grantor.holds_back()
        if wait > 0:
            self.mem.wake_at = time.monotonic() + wait
            return (
                f"No primary holds the role (epoch {epoch}), but {self.me} promised {self.grantor.promised_to} a "
                f"failsafe lease: not taking over for {wait:.1f} s more."
            )
        if self.tenure.taking_since is None or not self.tenure.confirmed:
            # Our own session may already own it (an agent restarted in the
            # middle of a takeover resumes its session): that is ours.
            if not self.store.take_leader(self._leader_data(epoch + 1), owner=self.session_id):
                self.tenure.stop_taking()
                return f"No primary held the role; another agent took it first (epoch {epoch})."
            self.tenure.start_taking()
        self.tenure.confirm(True)
        return ""

    def _prove_peer(self, handoff: Handoff | None, confirmed_by: str) -> fencing.Attempt:
        """The proof that the old primary's CTI/IVR are not running. After a
        hand-over we verify it ourselves when we can; when we cannot reach it,
        the old primary's agent's own proof stands (it stopped them, or powered
        its IPC off, before giving the role up in this epoch)."""
        if handoff is None:
            return self.fencer.prove_down(self.peer, confirmed_by)
        seen = self.fencer.verify(self.peer)
        if seen.proof is not None:
            return seen
        theirs = fencing.Proof.from_record(handoff.proof)
        if theirs is None and handoff.proof is None:  # a hand-over written before proofs existed
            theirs = fencing.Proof("verified", self.peer, "its agent stopped CTI and IVR, then handed over", self.peer)
        if not seen.alive and theirs is not None:
            return fencing.Attempt(
                fencing.Proof(theirs.kind, self.peer, f"{theirs.detail} (its agent's proof; {seen.why})", theirs.by),
                "",
            )
        # It answers and CTI/IVR run there again (a late start, an auto-start):
        # stop them, or power it off, like any other old primary.
        return self.fencer.prove_down(self.peer, confirmed_by)

    def _promote(self, zk: dict, crec: ClusterRecord, meta: dict, proof: fencing.Proof) -> str:
        """Epoch + 1 with a conditional write, then CTI/IVR up here."""
        assert self.store is not None and self.mem.obs is not None
        epoch = crec.epoch
        kind = meta.get("kind", "takeover")
        t_fenced = time.time()
        failovers = list(crec.failovers)
        if kind in ("failover", "takeover"):  # automatic ones count for flap damping
            failovers.append(t_fenced)
        old_role = Role.STANDBY if kind in ("switchover", "switch-back") else Role.FENCED
        if meta.get("request"):
            self._request_progress(meta["request"], f"{self.me}: fencing {self.peer}: {proof}")
        counts = crec.counts or {}
        change = dict(
            epoch=epoch + 1,
            primary=self.me,
            handoff=None,
            failovers=tuple(failovers[-20:]),
            roles={**crec.roles, self.me: Role.PRIMARY, self.peer: old_role},
            board_down=tuple(x for x in crec.board_down if x != self.me),
            counts={**counts, kind: counts.get(kind, 0) + 1},  # monotonic, for failover_failovers_total
        )
        if self._cas(zk, **change) is None:
            # Start again from P/leader next cycle: never promote on a claim
            # made before a record we did not see.
            self.store.release_leader(self.session_id or 0)
            self.tenure.revoke()
            self.tenure.stop_taking()
            return "Lost the race for the cluster record while taking over; retrying next cycle."
        self.tenure.stop_taking()
        self.mem.obs = IpcObs(Role.PRIMARY, self.mem.obs.services, board_down=False)
        promote = plan.promote_stage(self.topo, self.me, self.mem.obs)
        progress = self._progress_to(meta["request"]) if meta.get("request") else None
        rep = self.ex.execute((promote,), progress=progress, guard=self.guard) if promote.steps else None
        self._after_plan(rep, replace(crec, **change))
        sentence = self._record_takeover(meta, proof, epoch, t_fenced, rep)
        self._publish(zk, replace(crec, **change), Decision(Action.FAILOVER, sentence), sentence)
        return sentence

    def _record_takeover(
        self, meta: dict, proof: fencing.Proof, epoch: int, t_fenced: float, rep: exe.PlanReport | None
    ) -> str:
        """The history entry (with its proof and timings), the operator's
        request, and the sentence."""
        assert self.store is not None
        t_done = time.time()
        ok = rep is None or rep.ok
        took = self.tenure.taking_wall or t_fenced
        seen = meta.get("fault_seen_at") or took
        failed = {} if ok else {"failed": rep.summary() if rep else ""}
        entry = HistoryEntry.of(
            meta.get("kind", "takeover"),
            meta.get("who", f"agent {self.me}"),
            meta.get("reason") or f"{self.peer}'s agent lost its ZooKeeper session",
            "done" if ok else "failed",
            frm=self.peer,
            to=self.me,
            epoch=epoch + 1,
            fencing=str(proof),
            proof=proof.record(),
            # detection: first failed check -> decision; stop: the old primary
            # stopping CTI/IVR; fencing: from the hand-over (or from taking
            # P/leader) to the proof; promotion: proof -> CTI and IVR answering.
            detection_s=round(meta.get("decided_at", took) - seen, 3),
            stop_s=round(meta.get("stopped_at", took) - meta.get("decided_at", took), 3),
            fencing_s=round(t_fenced - meta.get("stopped_at", took), 3),
            promotion_s=round(t_done - t_fenced, 3),
            duration_s=round(t_done - seen, 3),
            **failed,
            # a switchover's calls: at its start, at the hand-over, cut (inventory `calls`)
            **({"calls": meta["calls"]} if meta.get("calls") else {}),
        )
        self.store.add_history(entry)
        rid = meta.get("request")
        if rid and ok:
            self._finish_request(
                rid,
                "done",
                f"{self.me} is primary, epoch {epoch + 1}, in {t_done - seen:.1f} s ({proof.kind})",
                primary=self.me,
                epoch=epoch + 1,
                duration_s=round(t_done - seen, 3),
            )
        elif rid and rep is not None:
            why = f"{self.me} took the role (epoch {epoch + 1}) but promotion failed: {rep.summary()}"
            self._finish_request(rid, "failed", why, primary=self.me, epoch=epoch + 1)
        result = f"promoted in {t_done - t_fenced:.1f} s" if ok else f"promotion FAILED: {entry.get('failed')}"
        return f"Took the primary role from {self.peer} (epoch {epoch} -> {epoch + 1}): {proof}; {result}."
