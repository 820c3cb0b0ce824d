"""Fencing when the old primary cannot be reached: its agent (co-located, in
the IPC's network namespace) self-fences, and the standby promotes only with a
proof: the old IPC powered off by its fence device, or an operator's word."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from failover.lab import netns
from tests.cluster import Harness, wait_for
from tests.test_cli import cli

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not netns.available(), reason="network namespaces need root"),
]


def test_isolated_primary_self_fences_before_standby_promotes(tmp_path: Path) -> None:
    with Harness(tmp_path, netns=True) as h:
        h.steady()
        t0 = time.monotonic()
        h.lab.fault("ipc-a", "unreachable")  # cut from ZooKeeper, from the standby, from everything
        wait_for(lambda: h.serving("ipc-b"), 40, what="ipc-b serving")
        t_serving = time.monotonic() - t0
        h.assert_never_both()  # the safety property first
        assert h.recorder is not None
        t_fenced = (
            next(x.t for x in h.recorder.samples if x.t > t0 and not ({"cti", "ivr"} & set(x.running.get("ipc-a", {}))))
            - t0
        )
        assert t_fenced < t_serving
        assert any("self-fencing" in s for s in h.agents["ipc-a"].sentences())
        hist = wait_for(lambda: [e.to_json() for e in h.store.history() if e.get("to") == "ipc-b"], 5, what="history")
        assert hist[-1]["proof"]["kind"] == "fence-device", hist[-1]
        assert not h.lab.powered("ipc-a")
        rec = h.record()
        assert rec["primary"] == "ipc-b" and rec["epoch"] == 2
        # Heal: exactly one primary; ipc-a stays out (fenced) until rejoin.
        h.lab.fault("ipc-a", "reachable")
        wait_for(lambda: h.member("ipc-a").get("role") == "fenced", 30, what="ipc-a back, fenced")
        time.sleep(2)
        assert h.record()["primary"] == "ipc-b" and not ({"cti", "ivr"} & set(h.running("ipc-a")))
        h.assert_never_both()
        print(f"self-fenced after {t_fenced:.1f} s, standby serving after {t_serving:.1f} s")


def test_isolated_primary_without_fence_device_waits_for_the_operator(tmp_path: Path) -> None:
    """No fence device: time is no proof, so the standby does not promote;
    its agent names the way out, and an operator's `--confirm-dead` (through
    the real CLI) is the proof it then promotes on."""
    with Harness(tmp_path, netns=True, fence=False) as h:
        h.steady()
        h.lab.fault("ipc-a", "unreachable")
        way = wait_for(lambda: h.member("ipc-b").get("way_out"), 30, what="ipc-b names the way out")
        assert "failover failover --to ipc-b --confirm-dead ipc-a" in way, way
        time.sleep(3)  # well past the old fence grace: still nobody promoted
        assert h.record()["primary"] == "ipc-a" and not h.serving("ipc-b")
        st = cli(h, "status")
        assert "ACTION NEEDED" in st.stdout, st.stdout + st.stderr
        r = cli(
            h,
            "failover",
            "--to",
            "ipc-b",
            "--confirm-dead",
            "ipc-a",
            "--reason",
            "PSU dead, checked at rack",
            "--operator",
            "li",
            "--yes",
            "--timeout",
            "60",
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert h.serving("ipc-b") and h.record()["primary"] == "ipc-b"
        took = [e.to_json() for e in h.store.history() if e.get("to") == "ipc-b" and e.get("proof")][-1]
        assert took["proof"]["kind"] == "operator" and "li" in took["proof"]["by"], took
        h.assert_never_both()


def test_1_primary_cut_from_zookeeper_only(tmp_path: Path) -> None:
    """The primary (and its co-located agent) loses ZooKeeper, nothing else: the
    standby, still connected, takes over once the old session has expired and
    the promise it gave has run out — fencing the old primary over SSH first."""
    with Harness(tmp_path, netns=True) as h:
        h.steady()
        h.lab.fault("ipc-a", "zk-cut")
        wait_for(lambda: h.record().get("primary") == "ipc-b" and h.serving("ipc-b"), 40, what="takeover")
        h.assert_never_both()
        assert not ({"cti", "ivr"} & set(h.running("ipc-a")))
        hist = wait_for(lambda: [e.to_json() for e in h.store.history() if e.get("to") == "ipc-b"], 5, what="history")
        assert hist[-1]["proof"]["kind"] == "verified", hist[-1]  # reachable over SSH: stopped and seen stopped
        h.lab.fault("ipc-a", "zk-heal")
        wait_for(lambda: h.member("ipc-a").get("role") == "fenced", 30, what="ipc-a back, fenced")
        time.sleep(2)
        assert h.record()["primary"] == "ipc-b" and h.member("ipc-b")["leader"] is True
        assert not ({"cti", "ivr"} & set(h.running("ipc-a")))
        h.assert_never_both()


def test_3_standby_cut_from_zookeeper(tmp_path: Path) -> None:
    with Harness(tmp_path, netns=True) as h:
        h.steady()
        t0 = time.monotonic()
        h.lab.fault("ipc-b", "zk-cut")
        time.sleep(8)  # past the standby's session timeout
        rec = h.record()
        assert rec["primary"] == "ipc-a" and rec["epoch"] == 1
        assert h.recorder is not None
        assert all({"cti", "ivr"} <= set(x.running.get("ipc-a", {})) for x in h.recorder.samples if x.t >= t0)
        h.lab.fault("ipc-b", "zk-heal")
        wait_for(lambda: h.member("ipc-b").get("eligible") is True, 30, what="standby eligible again")
        assert h.record()["primary"] == "ipc-a" and h.member("ipc-a")["leader"] is True
        h.assert_never_both()


def test_4_one_zookeeper_follower_partitioned(tmp_path: Path) -> None:
    """A follower cut off for real (its own namespace): clients on it move to
    the others; no role change, calls never stop."""
    with Harness(tmp_path, netns=True) as h:
        h.steady()
        t0 = time.monotonic()
        # Cut the follower the primary's agent talks to, when it talks to one:
        # the hard case (its session must move before it expires).
        followers = [n for n in h.lab.zk if n.mode() == "follower"]
        mine = h.zk_server_of("ipc-a")
        follower = mine if mine in followers else followers[0]
        h.lab.partition_zk(follower)
        try:
            time.sleep(10)
        finally:
            h.lab.partition_zk(follower, cut=False)
        wait_for(
            lambda: (
                h.record().get("primary") == "ipc-a"
                and h.member("ipc-a").get("leader") is True
                and h.member("ipc-b").get("eligible") is True
            ),
            30,
            what="one primary, eligible standby",
        )
        assert h.record()["epoch"] == 1
        assert h.recorder is not None
        assert all({"cti", "ivr"} <= set(x.running.get("ipc-a", {})) for x in h.recorder.samples if x.t >= t0)
        h.assert_never_both()


def test_8_ssh_to_standby_broken_mid_failover(tmp_path: Path) -> None:
    """The standby's SSH breaks while it promotes itself: never a mixed layout
    with CTI/IVR on both; a clear alert; once SSH is back the promotion completes."""
    with Harness(tmp_path, netns=True) as h:
        h.steady()
        h.lab.fault("ipc-b", "slow-start", "kcxp-replica", seconds=2.0)  # a promotion that takes a while
        h.lab.fault("ipc-a", "kill", "cti")
        wait_for(lambda: "kcxp" not in h.running("ipc-b"), 20, what="ipc-b promoting")
        h.lab.fault("ipc-b", "sshd-down")
        time.sleep(4)
        h.assert_never_both()
        h.lab.fault("ipc-b", "sshd-up")
        h.lab.fault("ipc-b", "clear")
        wait_for(
            lambda: (
                h.record().get("primary") == "ipc-b"
                and h.serving("ipc-b")
                and set(h.running("ipc-b")) == {"driver", "fax", "cti", "ivr", "kcxp-replica", "kcbp-replica"}
            ),
            40,
            what="promotion completed",
        )
        assert not ({"cti", "ivr"} & set(h.running("ipc-a")))
        said = " ".join(h.agents["ipc-b"].sentences())
        assert "FAILED" in said or "unreachable" in said.lower()  # the break was reported, not hidden
        h.assert_never_both()
