"""The notifier: threads in every agent. The poller, when this agent is
the sender (sender.py), reads the history, the member records and the shared
cursor, computes the new events (events.py) and claims them with a
conditional write (ledger.py); one delivery lane per receiver
(delivery.py) sends each claimed event (webhook.py); once every receiver has
it, it leaves the outbox.

It reads ZooKeeper through the agent's own client and never blocks the
agent's cycle: a receiver that is down delays notifications, not failover.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from failover import zkstore
from failover.inventory import Cluster
from failover.notify import ledger
from failover.notify.delivery import Lane
from failover.notify.events import Event, Seen, Snapshot, compute
from failover.notify.sender import Owned, orphans, sender_of
from failover.notify.webhook import WebhookSender

log = logging.getLogger("failover.notify")
HISTORY_BATCH = 200  # history entries read per poll at most (the rest next poll)


class Notifier:
    def __init__(self, cluster: Cluster, ipc: str, store: zkstore.Store, state_dir: Path, stop: threading.Event):
        assert cluster.notify is not None
        self.c, self.me, self.store, self.stop = cluster, ipc, store, stop
        self.interval = cluster.notify.poll_interval
        self.settle = cluster.notify.settle
        self.owner = {"ipc": ipc, "host": socket.gethostname(), "pid": os.getpid()}
        dead = state_dir / f"{cluster.name}-{ipc}.notify-dead-letter.jsonl"
        self.lanes = [Lane(WebhookSender(h, dead, stop), self._delivered, stop) for h in cluster.notify.webhooks]
        self.lock = threading.Lock()
        # Event id -> receivers that have not had it yet; an id is here from
        # when it is queued until it leaves the outbox, so nothing is queued twice.
        self.waiting: dict[str, int] = {}
        self.unfinished: list[str] = []  # delivered, not yet removed from the outbox (ZooKeeper was away)
        self.refusing = ""  # why the last poll claimed nothing (logged once per reason)

    def start(self) -> None:
        threading.Thread(target=self._poll_loop, name="notify-poll", daemon=True).start()
        for lane in self.lanes:
            lane.start()

    # ----- the poller -------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.poll()
            except zkstore.ZkUnavailable:
                pass  # next poll; the history and the cursor wait in ZooKeeper
            except Exception:  # notifications must never take the agent down
                log.exception("notifier poll failed")

    def poll(self) -> list[Event]:
        """One look; returns the events this agent claimed."""
        self._finish_pending()
        if not all(lane.alive() for lane in self.lanes):
            # Claimed events would wait in the outbox, owned by a live process
            # that will never send them: leave them to the history.
            return self._refuse("a delivery thread is not running")
        members = self._members()
        if self._sender(members) != self.me:
            return []
        led = ledger.read(self.store)
        if led is None:
            # First start: from the newest history entry on; the conditions
            # raised now are notified on the next poll.
            names = self.store.history_names()
            ledger.create(self.store, Seen(names[-1] if names else ""))
            return []
        lost = [i for i in orphans(led.outbox, members, self.owner) if not self._queued(i)]
        if lost:
            return self._adopt(led, lost)
        return self._claim(led, members)

    def _members(self) -> dict[str, Owned | None]:
        # The records as JSON: the event rules (events.py, sender.py) are pure
        # functions over what the znodes say.
        members: dict[str, Owned | None] = {}
        for i in self.c.ipcs:
            owned = self.store.member_owner(i.name)
            members[i.name] = None if owned is None else (owned[0].to_json(), owned[1])
        return members

    def _sender(self, members: dict[str, Owned | None]) -> str | None:
        crec = self.store.cluster()
        roles = {k: r.value for k, r in crec.data.roles.items()} if crec else {}
        got = self.store.leader()
        return sender_of(None if got is None else (got[0].to_json(), got[1]), members, roles)

    def _claim(self, led: ledger.Ledger, members: dict[str, Owned | None]) -> list[Event]:
        """Compute the new events and claim them, as many as the outbox has
        room for: the rest stay in ZooKeeper (the cursor does not pass them)."""
        room = ledger.MAX_ENTRIES - len(led.outbox)
        if room <= 0:
            return self._refuse(f"the outbox is full ({len(led.outbox)} events not yet delivered)")
        # At most two events per history entry (a role change that failed).
        history = self.store.history(min(HISTORY_BATCH, room // 2), after=led.seen.history) if room > 1 else []
        snap = Snapshot(
            self.c.name,
            [{"id": h.id, **h.to_json()} for h in history],
            {ipc: m[0] if m else None for ipc, m in members.items()},
            round(time.time(), 3),
        )
        events, seen = compute(led.seen, snap, led.version, self.settle)
        if not events and seen == led.seen:
            return []
        entries = ledger.entries(events, self.owner)
        if not ledger.fits(led, seen, entries):
            return self._refuse(f"the outbox is full ({len(led.outbox)} events not yet delivered)")
        if not ledger.write(self.store, led, seen, [*led.outbox, *entries]):
            return []
        self.refusing = ""
        for entry in entries:
            self._queue(entry["event"])  # as stored: an adopter sends the same
        return events

    def _refuse(self, why: str) -> list[Event]:
        if why != self.refusing:
            log.error("notifier: claiming no new events: %s", why)
            self.refusing = why
        return []

    def _adopt(self, led: ledger.Ledger, lost: list[str]) -> list[Event]:
        """Send again what a dead agent claimed and did not finish (same ids)."""
        if not ledger.adopt(self.store, led, lost, self.owner):
            return []
        log.warning("notifier: adopting %d unsent event(s) of an agent that stopped", len(lost))
        ids = set(lost)
        payloads = [e["event"] for e in led.outbox if e["event"]["id"] in ids]
        for p in payloads:
            self._queue(p)  # as stored (a slim one stays slim)
        return [Event.from_payload(p) for p in payloads]

    # ----- delivery -------------------------------------------------------------------
    def _queued(self, event_id: str) -> bool:
        with self.lock:
            return event_id in self.waiting

    def _queue(self, payload: dict[str, Any]) -> None:
        with self.lock:
            if payload["id"] in self.waiting:
                return
            self.waiting[payload["id"]] = len(self.lanes)
        for lane in self.lanes:
            lane.put(payload)

    def _delivered(self, event_id: str) -> None:
        """A lane is done with the event (delivered or dead-lettered); the last
        one takes it out of the outbox."""
        with self.lock:
            self.waiting[event_id] -= 1
            if self.waiting[event_id] > 0:
                return
            self.unfinished.append(event_id)
        try:
            self._finish_pending()
        except zkstore.ZkUnavailable:
            pass  # retried by the poller

    def _finish_pending(self) -> None:
        with self.lock:
            pending, self.unfinished = self.unfinished, []
        for i, event_id in enumerate(pending):
            try:
                done = ledger.finish(self.store, event_id)
            except zkstore.ZkUnavailable:
                done = False
            with self.lock:
                if not done:
                    self.unfinished = [*pending[i:], *self.unfinished]
                    return
                self.waiting.pop(event_id, None)


def start(cluster: Cluster, ipc: str, store: zkstore.Store | None, state_dir: Path, stop: threading.Event) -> None:
    """Start the notifier threads if the cluster has receivers (the agent's one line)."""
    if cluster.notify is None or store is None:
        return
    Notifier(cluster, ipc, store, state_dir, stop).start()
