"""The notifier: two threads in every agent. The poller, when this agent is
the sender (sender.py), reads the history, the member records and the shared
cursor, computes the new events (events.py) and claims them with a
conditional write (ledger.py); the deliverer sends each claimed event to every
receiver (webhook.py), then removes it from the outbox.

It reads ZooKeeper through the agent's own client and never blocks the
agent's cycle: a receiver that is down delays notifications, not failover.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

from failover import zkstore
from failover.inventory import Cluster
from failover.notify import ledger
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
        self.senders = [WebhookSender(h, dead, stop) for h in cluster.notify.webhooks]
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.unfinished: list[str] = []  # delivered, not yet removed from the outbox (ZooKeeper was away)
        self.lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._poll_loop, name="notify-poll", daemon=True).start()
        threading.Thread(target=self._deliver_loop, name="notify-deliver", daemon=True).start()

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
        # The records as JSON: the event rules (events.py, sender.py) are pure
        # functions over what the znodes say.
        members: dict[str, Owned | None] = {}
        for i in self.c.ipcs:
            owned = self.store.member_owner(i.name)
            members[i.name] = None if owned is None else (owned[0].to_json(), owned[1])
        crec = self.store.cluster()
        roles = {k: r.value for k, r in crec.data.roles.items()} if crec else {}
        got = self.store.leader()
        leader = None if got is None else (got[0].to_json(), got[1])
        if sender_of(leader, members, roles) != self.me:
            return []
        led = ledger.read(self.store)
        if led is None:
            # First start: from the newest history entry on; the conditions
            # raised now are notified on the next poll.
            names = self._history_names()
            ledger.create(self.store, Seen(names[-1] if names else ""))
            return []
        lost = orphans(led.outbox, members)
        if lost:
            return self._adopt(led, lost)
        snap = Snapshot(
            self.c.name,
            self._history_after(led.seen.history),
            {ipc: m[0] if m else None for ipc, m in members.items()},
            round(time.time(), 3),
        )
        events, seen = compute(led.seen, snap, led.version, self.settle)
        if (events or seen != led.seen) and ledger.claim(self.store, led, seen, events, self.owner):
            for e in events:
                self.queue.put(e.payload())
            return events
        return []

    def _adopt(self, led: ledger.Ledger, lost: list[str]) -> list[Event]:
        """Send again what a dead agent claimed and did not finish (same ids)."""
        if not ledger.adopt(self.store, led, lost, self.owner):
            return []
        log.warning("notifier: adopting %d unsent event(s) of an agent that stopped", len(lost))
        ids = set(lost)
        events = [Event.from_payload(e["event"]) for e in led.outbox if e["event"]["id"] in ids]
        for e in events:
            self.queue.put(e.payload())
        return events

    def _history_names(self) -> list[str]:
        return self.store.history_names()

    def _history_after(self, last: str) -> list[dict[str, Any]]:
        return [{"id": h.id, **h.to_json()} for h in self.store.history(HISTORY_BATCH, after=last)]

    # ----- the deliverer ------------------------------------------------------------
    def _deliver_loop(self) -> None:
        while not self.stop.is_set():
            try:
                payload = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            outcomes = [s.deliver(payload) for s in self.senders]
            if any(not o.delivered and o.retry for o in outcomes):
                return  # stopping: the event stays in the outbox for whoever sends next
            with self.lock:
                self.unfinished.append(payload["id"])
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
            if not done:
                with self.lock:
                    self.unfinished = [*pending[i:], *self.unfinished]
                return


def start(cluster: Cluster, ipc: str, store: zkstore.Store | None, state_dir: Path, stop: threading.Event) -> None:
    """Start the notifier threads if the cluster has receivers (the agent's one line)."""
    if cluster.notify is None or store is None:
        return
    Notifier(cluster, ipc, store, state_dir, stop).start()
