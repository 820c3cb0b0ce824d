"""Operator operations on a cluster's ZooKeeper records (used by the CLI, the
drills and the benchmarks). Each one is a conditional write plus a history
entry naming the operator and the reason; the agents carry them out."""

from __future__ import annotations

import getpass
import time

from failover import zkstore


class Refused(Exception):
    pass


def operator_name(given: str | None = None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def rejoin(store: zkstore.Store, ipc: str, operator: str, reason: str = "") -> dict:
    """A repaired IPC rejoins as standby: its agent converges it to the standby
    layout and it becomes eligible again."""
    for _ in range(5):
        v = store.cluster()
        if v is None:
            raise Refused("the cluster has no record yet (no agent has bootstrapped it)")
        roles = dict(v.data.get("roles", {}))
        if ipc not in roles:
            raise Refused(f"{ipc} is not in this cluster (roles: {', '.join(roles)})")
        if roles[ipc] == "primary":
            raise Refused(f"{ipc} is the primary; only a fenced or standby IPC can rejoin")
        roles[ipc] = "standby"
        board = [x for x in v.data.get("board_down", []) if x != ipc]
        try:
            store.update_cluster(v.version, {**v.data, "roles": roles, "board_down": board})
        except zkstore.Conflict:
            time.sleep(0.05)
            continue
        entry = {
            "kind": "rejoin",
            "from": ipc,
            "to": ipc,
            "epoch": v.data.get("epoch"),
            "why": reason or "repaired, rejoins as standby",
            "who": operator,
            "outcome": "done",
        }
        store.add_history(entry)
        return entry
    raise Refused("the cluster record kept changing; try again")
