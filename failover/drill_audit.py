"""The drill's audits after every step (Pacemaker CTS style): no service
active on two IPCs (always); exactly one primary and every IPC's layout
matching its role (after steps that should leave the cluster settled; the
layout audit is informational while paused, i.e. planned maintenance).
Each audit is a dict {audit, ok, detail}: the report's audit format.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from failover import executor as exe
from failover import zkstore
from failover.inventory import Cluster
from failover.layouts import APP_SERVICES
from failover.records import ClusterRecord
from failover.rules import Role, State, Topology

Wait = Callable[[Callable[[], bool], float, str, Callable[[], str] | None], None]


def wait(pred: Callable[[], bool], within: float, what: str, why: Callable[[], str] | None = None) -> None:
    """Poll `pred` every 0.2 s until true (ZooKeeper briefly unavailable counts
    as not yet); AssertionError naming `what` (and `why()`) at the deadline."""
    deadline = time.monotonic() + within
    while True:
        try:
            if pred():
                return
        except zkstore.ZkUnavailable:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within:g} s" + (f": {why()}" if why else ""))
        time.sleep(0.2)


class Audits:
    def __init__(self, cluster: Cluster, topo: Topology, ex: exe.Executor, store: zkstore.Store, wait: Wait) -> None:
        self.c, self.topo, self.ex, self.store, self.wait = cluster, topo, ex, store, wait

    def _record(self) -> ClusterRecord:
        v = self.store.cluster()
        return v.data if v else ClusterRecord()

    def run(self, settled: bool) -> list[dict]:
        out = []
        states: dict[str, dict[str, State]] = {}
        for i in self.c.ipcs:
            try:
                states[i.name] = self.ex.status_all(i.name).states
            except exe.ExecError as e:
                out.append({"audit": f"status of {i.name}", "ok": not settled, "detail": str(e)})
        app = [n for n, st in states.items() if any(st.get(s) is not State.STOPPED for s in APP_SERVICES)]
        both = [n for n, st in states.items() if all(st.get(s) is State.RUNNING for s in APP_SERVICES)]
        out.append(
            {
                "audit": "no service active on two IPCs",
                "ok": len(both) <= 1 and len(app) <= 1,
                "detail": f"CTI/IVR active on {', '.join(app) or 'none'}",
            }
        )
        if not settled:
            return out
        try:
            self.wait(lambda: self._one_primary(), 20, "one primary")
            out.append({"audit": "exactly one primary", "ok": True, "detail": f"primary {self._record().primary}"})
        except AssertionError as e:
            out.append({"audit": "exactly one primary", "ok": False, "detail": str(e)})
        if self.store.pause() is not None:
            # Maintenance mode: layouts may deviate on purpose (a service being
            # reconfigured); the safety audits above still apply.
            out.append(
                {
                    "audit": "every IPC's layout matches its role",
                    "ok": True,
                    "detail": "not checked while paused (maintenance)",
                }
            )
            return out
        try:
            self.wait(lambda: not self._layout_mismatch(), 20, "layouts", self._layout_mismatch)
            out.append({"audit": "every IPC's layout matches its role", "ok": True, "detail": "ok"})
        except AssertionError as e:
            out.append({"audit": "every IPC's layout matches its role", "ok": False, "detail": str(e)})
        return out

    def _one_primary(self) -> bool:
        rec = self._record()
        leader = self.store.leader()
        return bool(rec.primary and leader and leader[0].ipc == rec.primary)

    def _layout_mismatch(self) -> str:
        rec = self._record()
        bad = []
        for i in self.c.ipcs:
            role = rec.roles.get(i.name, Role.STANDBY)
            want = self.topo.expected(i.name, role, i.name in rec.board_down)
            st = self.ex.status_fast(i.name).states
            up = {s for s, v in st.items() if v is State.RUNNING}
            if up != set(want):
                bad.append(f"{i.name} ({role.value}): running {sorted(up)}, expected {sorted(want)}")
        return "; ".join(bad)
