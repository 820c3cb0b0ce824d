"""One delivery lane per receiver: its own queue and thread, so a receiver
that is down or black-holed (each attempt waiting for its timeout) delays
only its own notifications, never the other receivers' (docs/monitoring.md).

A lane's thread never dies of an error while the agent runs: a notification
that cannot be delivered must not silence every later one."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from failover.notify.webhook import WebhookSender

log = logging.getLogger("failover.notify")


class Lane:
    def __init__(self, sender: WebhookSender, done: Callable[[str], None], stop: threading.Event) -> None:
        self.sender, self.done, self.stop = sender, done, stop
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=f"notify-{self.sender.hook.name}", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        """Not started counts as alive: poll() may be driven without threads."""
        return self.thread is None or self.thread.is_alive()

    def put(self, payload: dict[str, Any]) -> None:
        self.queue.put(payload)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                payload = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                if not self._deliver(payload):
                    return  # stopping: the event stays in the outbox for whoever sends next
            except Exception:  # a bug here must not stop every later notification
                log.exception("webhook %s: delivering event %s failed", self.sender.hook.name, payload.get("id"))

    def _deliver(self, payload: dict[str, Any]) -> bool:
        """False: the agent is stopping."""
        got = self.sender.deliver(payload)
        if not got.delivered and got.retry:
            return False
        self.done(str(payload["id"]))
        return True
