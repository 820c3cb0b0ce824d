"""Which agent sends the notifications: pure, so both agents reach the same
answer from the same reads. The conditional write of the shared cursor
(ledger.py) is what makes an event claimed once; this only keeps the two
agents from racing for it all the time.

- the agent holding P/leader, while its member znode lives in the same
  ZooKeeper session (it is running and connected);
- otherwise (no leader, or the holder's agent is gone) a running standby;
- otherwise whichever agent still runs (the first by name).
"""

from __future__ import annotations

from typing import Any

Owned = tuple[dict[str, Any], int]  # (znode data, ephemeralOwner session id)


def sender_of(leader: Owned | None, members: dict[str, Owned | None], roles: dict[str, str]) -> str | None:
    if leader is not None:
        holder = str(leader[0].get("ipc", ""))
        member = members.get(holder)
        if member is not None and member[1] == leader[1]:
            return holder
    running = sorted(ipc for ipc, m in members.items() if m is not None)
    standbys = [ipc for ipc in running if roles.get(ipc) == "standby"]
    pool = standbys or running
    return pool[0] if pool else None


def orphans(
    outbox: list[dict[str, Any]], members: dict[str, Owned | None], me: dict[str, Any] | None = None
) -> list[str]:
    """Outbox entries whose owner process no longer runs: its IPC's member
    record is gone or was written by another process (a restarted agent).
    Never this process's own (`me`: ipc, host, pid): restarted within its
    session timeout, its member record names the old process until its first
    publish, and its fresh claims are not orphans."""
    out = []
    for entry in outbox:
        owner = entry.get("owner") or {}
        if me is not None and all(owner.get(k) == me.get(k) for k in ("host", "pid")):
            continue
        member = members.get(str(owner.get("ipc", "")))
        agent = (member[0].get("agent") if member else None) or {}
        if member is None or agent.get("pid") != owner.get("pid") or agent.get("host") != owner.get("host"):
            out.append(str(entry["event"]["id"]))
    return out
