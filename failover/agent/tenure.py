"""This agent's hold on the primary role, as it last confirmed it.

Four threads touch it: the cycle (reads `leader`, takes it, promotes), the
watchdog (reads `leader` every 0.2 s, self-fences on time), kazoo's listener
(a lost connection revokes at once) and the HTTP server (the failsafe grant,
/primary). So every field lives here and changes only through these methods;
nothing else in the agent keeps a copy. One lock makes the compound changes
whole (self-fence, resume, take, confirm); two changes never wait for it: a
revocation (kazoo's listener runs on its connection thread and must not block
behind a self-fence's SSH stops; revoking is always safe) and the time of the
last contact (a single write)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Tenure:
    def __init__(self) -> None:
        self.lock = threading.RLock()  # compound check-then-act: `with tenure.lock:`
        self._confirmed = False  # owner of P/leader at the last successful read
        self._last_contact = time.monotonic()  # last answer from ZooKeeper
        self._self_fenced = False  # CTI/IVR stopped here for lack of ZooKeeper
        self._fence_note = ""  # what the self-fence did (said once ZooKeeper is back)
        self._taking_since: float | None = None  # monotonic: P/leader held for a takeover not done yet
        self._taking_wall: float | None = None  # wall time of the same

    # ----- reads ------------------------------------------------------------------
    @property
    def confirmed(self) -> bool:
        return self._confirmed

    @property
    def self_fenced(self) -> bool:
        return self._self_fenced

    @property
    def fence_note(self) -> str:
        return self._fence_note

    @property
    def taking_since(self) -> float | None:
        return self._taking_since

    @property
    def taking_wall(self) -> float | None:
        return self._taking_wall

    def contact_age(self) -> float:
        return time.monotonic() - self._last_contact

    # ----- changes ----------------------------------------------------------------
    def contact(self) -> None:
        """ZooKeeper answered (lock-free: one write)."""
        self._last_contact = time.monotonic()

    def confirm(self, holds: bool) -> None:
        """What this cycle's read of P/leader said. Confirming waits for a
        self-fence in progress to finish: never primary again half-way
        through stopping CTI/IVR."""
        if not holds:
            self.revoke()
            return
        with self.lock:
            self._confirmed = True

    def revoke(self) -> None:
        """Stop acting as primary at once (a lost connection, `leader` not
        ours). Lock-free: it must never wait behind a self-fence."""
        self._confirmed = False

    def start_taking(self) -> None:
        """P/leader taken for a takeover (kept across cycles until it is done)."""
        with self.lock:
            self._taking_since = time.monotonic()
            self._taking_wall = time.time()
            self._confirmed = True

    def stop_taking(self) -> None:
        with self.lock:
            self._taking_since = None

    def self_fence(self, stop: Callable[[], tuple[str, bool]], again: bool = False) -> str:
        """Run `stop` (it stops CTI/IVR here: its note, and whether all
        stopped) once, whoever of the watchdog and the cycle comes first;
        `again`: a start landed after the first self-fence. Returns the note."""
        with self.lock:
            if self._self_fenced and not again:
                return self._fence_note
            self._confirmed = False
            note, ok = stop()
            self._self_fenced = ok
            self._fence_note = note
            return note

    def resumed(self) -> bool:
        """ZooKeeper is back and we still hold the role: forget the self-fence
        (converge starts CTI/IVR again). True when there was one to forget."""
        with self.lock:
            was = self._self_fenced or bool(self._fence_note)
            self._self_fenced = False
            self._fence_note = ""
            return was
