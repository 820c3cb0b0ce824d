"""The shared record of what was notified: the znode P/notified, changed only
with conditional (versioned) writes, so two agents never both claim an event.

  {"history": "h-0000000012",            the last history entry claimed
   "active": {key: {id, type, ipc, text, since}},   raised conditions
   "pending": {key: first seen},          conditions not lasting long enough yet
   "clearing": {key: first gone},         raised conditions gone, not long enough yet
   "outbox": [{"event": {...}, "owner": {ipc, host, pid}, "claimed": ts}]}

An event is written to the outbox *before* it is sent (the claim) and removed
once every receiver has it or dead-lettered it. An agent that dies between the
two leaves it there; the sending agent adopts entries whose owner is no longer
running (its member record names another process, or is gone) and sends them
again with the same id: at least once, never lost (docs/monitoring.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from failover import zkstore
from failover.notify.events import Event, Seen

# The outbox lives inside one znode, with the cursor: while a receiver is down
# it fills, and a znode past ZooKeeper's 1 MB limit makes every write fail
# and drops the session the agent shares. Full, the sender claims nothing new:
# the cursor stays put and the events wait in the history (nothing is lost).
MAX_ENTRIES = 100
MAX_BYTES = 256 * 1024
# One event past this (a history entry quoting long command output) is stored,
# and sent, slim: its long texts cut, so it always fits an empty outbox.
MAX_EVENT_BYTES = 8 * 1024
MAX_TEXT = 1000


@dataclass(frozen=True)
class Ledger:
    seen: Seen
    outbox: list[dict[str, Any]]
    version: int


def path_of(store: zkstore.Store) -> str:
    return f"{store.path}/notified"


def read(store: zkstore.Store) -> Ledger | None:
    got = store.get(path_of(store))
    if got is None:
        return None
    data, stat = got
    data = data or {}
    seen = Seen(
        data.get("history", ""), data.get("active") or {}, data.get("pending") or {}, data.get("clearing") or {}
    )
    return Ledger(seen, data.get("outbox") or [], stat.version)


def _cursor(seen: Seen) -> dict[str, Any]:
    return {"history": seen.history, "active": seen.active, "pending": seen.pending, "clearing": seen.clearing}


def create(store: zkstore.Store, seen: Seen) -> bool:
    """The first cursor. False: another agent created it first."""
    rec = {**_cursor(seen), "outbox": []}
    try:
        store.call(store.zk.create_async, path_of(store), zkstore.dumps(rec), acl=store.acl)
        return True
    except NodeExistsError:
        return False


def write(store: zkstore.Store, old: Ledger, seen: Seen, outbox: list[dict[str, Any]]) -> bool:
    """Conditional write over `old`; False when another agent wrote first."""
    rec = {**_cursor(seen), "outbox": outbox}
    try:
        store.call(store.zk.set_async, path_of(store), zkstore.dumps(rec), version=old.version)
        return True
    except (BadVersionError, NoNodeError):
        return False


def entries(events: list[Event], owner: dict[str, Any]) -> list[dict[str, Any]]:
    """Outbox entries for `events`, owned by `owner`."""
    now = round(time.time(), 3)
    return [{"event": slim(e.payload()), "owner": owner, "claimed": now} for e in events]


def slim(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload, its long texts cut (marked `truncated`) if it is too big;
    its detail dropped if that is not enough."""
    if len(zkstore.dumps(payload)) <= MAX_EVENT_BYTES:
        return payload
    cut = {**_cut(payload), "truncated": True}
    if len(zkstore.dumps(cut)) > MAX_EVENT_BYTES:
        cut["detail"] = {}
    return cut


def _cut(v: Any) -> Any:
    if isinstance(v, str):
        return v if len(v) <= MAX_TEXT else v[:MAX_TEXT] + "..."
    if isinstance(v, dict):
        return {k: _cut(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_cut(x) for x in v]
    return v


def fits(old: Ledger, seen: Seen, new: list[dict[str, Any]]) -> bool:
    """Room in the outbox for `new` (in entries and in bytes), with `seen`."""
    if len(old.outbox) + len(new) > MAX_ENTRIES:
        return False
    return len(zkstore.dumps({**_cursor(seen), "outbox": [*old.outbox, *new]})) <= MAX_BYTES


def claim(store: zkstore.Store, old: Ledger, seen: Seen, events: list[Event], owner: dict[str, Any]) -> bool:
    """Advance the cursor and put `events` in the outbox, owned by `owner`.
    False: another agent wrote first, or there is no room (MAX_ENTRIES, MAX_BYTES)."""
    new = entries(events, owner)
    return fits(old, seen, new) and write(store, old, seen, [*old.outbox, *new])


def adopt(store: zkstore.Store, old: Ledger, orphans: list[str], owner: dict[str, Any]) -> bool:
    """Make `owner` the owner of the outbox entries with these event ids."""
    ids = set(orphans)
    box = [{**e, "owner": owner} if e["event"]["id"] in ids else e for e in old.outbox]
    return write(store, old, old.seen, box)


def finish(store: zkstore.Store, event_id: str, attempts: int = 5) -> bool:
    """Remove a sent (or dead-lettered) event from the outbox; a conflicting
    write is read again and retried. False: ZooKeeper did not let us now."""
    for _ in range(attempts):
        cur = read(store)
        if cur is None:
            return True
        box = [e for e in cur.outbox if e["event"]["id"] != event_id]
        if len(box) == len(cur.outbox) or write(store, cur, cur.seen, box):
            return True
    return False
