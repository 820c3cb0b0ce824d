"""Many clusters on one ZooKeeper ensemble: a fault or a pause in one never
affects another; with credentials configured, a client without them cannot
change anything."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from failover import inventory as inv_mod
from failover import zkstore
from failover.lab.lab import Lab
from failover.lab.observer import Recorder, snapshot
from failover.lab.simctl import request
from tests.cluster import FAILOVER, AgentProc, wait_for

pytestmark = pytest.mark.timeout(300)
CLUSTERS = ["lab1", "lab2", "lab3"]


def test_three_clusters_isolated_with_acls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = Lab(root=tmp_path / "lab", zk_count=3, clusters=3)
    lab.up()
    agents: list[AgentProc] = []
    clients: list[KazooClient] = []
    try:
        doc = yaml.safe_load(lab.inventory_path.read_text())
        for i, c in enumerate(doc["clusters"]):
            c["zookeeper"]["auth"] = {"env": f"FO_TEST_ZK_{i}"}
            monkeypatch.setenv(f"FO_TEST_ZK_{i}", f"user{i}:secret-{i}")
        lab.inventory_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        inv = inv_mod.load(lab.inventory_path)
        with Recorder(lab.labid, lab.cluster_ipcs()) as rec:
            for c in CLUSTERS:
                for suffix in ("a", "b"):
                    a = AgentProc(lab.inventory_path, f"{c}-ipc-{suffix}", tmp_path / "state", tmp_path)
                    a.start()
                    agents.append(a)
            stores = {}
            for c in CLUSTERS:
                cl = inv.cluster(c)
                zk = zkstore.connect(cl)
                zk.start(timeout=15)
                clients.append(zk)
                stores[c] = zkstore.Store(zk, cl.zookeeper.path)

            def rec_of(c: str) -> dict:
                v = stores[c].cluster()
                return v.data.to_json() if v else {}

            for c in CLUSTERS:
                wait_for(
                    lambda c=c: (
                        rec_of(c).get("primary") == f"{c}-ipc-a"
                        and (m := stores[c].member(f"{c}-ipc-b")) is not None
                        and m.eligible
                    ),
                    40,
                    what=f"{c} steady",
                )
            pids = {
                c: request(lab.ipc(f"{c}-ipc-a").dir, {"op": "status"}, 5)["services"]["cti"]["pid"] for c in CLUSTERS
            }
            # A fault in lab1, a pause in lab2: lab3 must not notice either.
            env = {**os.environ, "FAILOVER_INVENTORY": str(lab.inventory_path)}
            assert (
                subprocess.run(
                    [FAILOVER, "pause", "-c", "lab2", "--reason", "only lab2"], env=env, capture_output=True
                ).returncode
                == 0
            )
            lab.fault("lab1-ipc-a", "kill", "cti")
            lab.fault("lab2-ipc-a", "kill", "cti")  # paused: no failover in lab2
            wait_for(lambda: rec_of("lab1").get("primary") == "lab1-ipc-b", 30, what="lab1 failover")
            time.sleep(3)
            assert rec_of("lab2")["primary"] == "lab2-ipc-a" and rec_of("lab2")["epoch"] == 1
            assert rec_of("lab3")["primary"] == "lab3-ipc-a" and rec_of("lab3")["epoch"] == 1
            assert request(lab.ipc("lab3-ipc-a").dir, {"op": "status"}, 5)["services"]["cti"]["pid"] == pids["lab3"]
            assert {"cti", "ivr"} <= set(snapshot(lab.labid)["lab3-ipc-a"])
            assert (stores["lab3"].pause() is None) and (stores["lab1"].pause() is None)
            # ACL: without credentials, read yes, change no.
            anon = KazooClient(hosts=lab.zk_hosts())
            anon.start(timeout=15)
            clients.append(anon)
            raw, _ = anon.get("/failover/lab3/cluster")
            assert b'"primary"' in raw
            with pytest.raises(NoAuthError):
                anon.set("/failover/lab3/cluster", b"{}")
            with pytest.raises(NoAuthError):
                anon.create("/failover/lab3/pause", b"{}")
            with pytest.raises(NoAuthError):
                anon.delete("/failover/lab3/history", recursive=True)
            # Another cluster's credentials do not open lab3 either.
            with pytest.raises(NoAuthError):
                stores["lab1"].zk.set("/failover/lab3/cluster", b"{}")
            assert rec_of("lab3")["primary"] == "lab3-ipc-a"
            bad = rec.violations()
            assert not bad, bad[:3]
    finally:
        for a in agents:
            a.stop()
        for z in clients:
            try:
                z.stop()
                z.close()
            except Exception:
                pass
        lab.down()
