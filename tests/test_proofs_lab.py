"""Fencing with proof, for real: the plan's shape (Windows IPCs behind
Win32-OpenSSH stand-ins, agents on hosts of their own, default HTTP), a
3-node ZooKeeper, the lab's fence devices, and the independent observer on
every test (0 instants of CTI/IVR on two IPCs). The interleavings that need a
freeze at one exact moment are in test_proofs_sim.py; these are the shapes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from failover.lab import netns
from tests.cluster import AgentProc, Harness, wait_for

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not netns.available(), reason="network namespaces need root"),
]


def _shape(tmp_path: Path, **kw: object) -> Harness:
    return Harness(tmp_path, netns=True, platform="windows", apart=True, **kw)  # type: ignore[arg-type]


def _takeover(h: Harness, to: str) -> dict:
    return wait_for(
        lambda: ([e.to_json() for e in h.store.history() if e.to == to and e.proof] or [None])[-1],
        10,
        what=f"the history entry of the takeover by {to}",
    )


def test_power_cut_on_the_primary_its_agent_fences_and_hands_over(tmp_path: Path) -> None:
    """Before: no CTI/IVR anywhere until the IPC came back by itself (92 s)."""
    with _shape(tmp_path) as h:
        h.steady()
        t0 = time.monotonic()
        h.power_off("ipc-a")
        wait_for(lambda: h.serving("ipc-b"), 30, what="ipc-b serving")
        took = _takeover(h, "ipc-b")
        assert took["proof"]["kind"] in ("fence-device", "verified"), took
        assert h.record()["primary"] == "ipc-b"
        h.assert_never_both()
        print(f"power cut -> standby serving in {time.monotonic() - t0:.1f} s ({took['proof']})")


def test_agent_and_ipc_lost_together_the_standby_fences_through_the_device(tmp_path: Path) -> None:
    with _shape(tmp_path) as h:
        h.steady()
        h.agents["ipc-a"].kill9()
        h.power_off("ipc-a")
        wait_for(lambda: h.serving("ipc-b"), 30, what="ipc-b serving")
        took = _takeover(h, "ipc-b")
        assert took["proof"]["kind"] == "fence-device", took
        assert took["proof"]["by"] == "ipc-b"
        h.assert_never_both()


def test_sshd_hung_while_cti_answers_no_second_primary_until_fenced(tmp_path: Path) -> None:
    """sshd frozen on the primary (TCP accepts, no SSH banner) and its agent
    gone: the host is alive, CTI and IVR answer their probes. The standby
    powers it off through its device first, then promotes; never both."""
    with _shape(tmp_path) as h:
        h.steady()
        sshd = h.lab.ipc("ipc-a").sshd_pid
        assert sshd
        os.kill(sshd, signal.SIGSTOP)
        try:
            h.agents["ipc-a"].kill9()
            wait_for(lambda: h.serving("ipc-b"), 40, what="ipc-b serving")
            took = _takeover(h, "ipc-b")
            assert took["proof"]["kind"] == "fence-device", took
            assert "SSH" in took["proof"]["detail"] or "handshake" in took["proof"]["detail"], took
            assert not h.lab.powered("ipc-a")
            h.assert_never_both()
        finally:
            if h.lab.powered("ipc-a"):
                os.kill(sshd, signal.SIGCONT)


def test_windows_auto_start_after_a_reboot_is_stopped_by_continuous_fencing(tmp_path: Path) -> None:
    """The old primary reboots with CTI/IVR set to Automatic and its agent not
    back yet: the new primary stops them. The reboot itself starts them (that
    is outside any agent's hands); the window is what we bound."""
    with _shape(tmp_path) as h:
        h.steady()
        h.agents["ipc-a"].kill9()
        h.power_off("ipc-a")
        wait_for(lambda: h.serving("ipc-b") and h.record()["primary"] == "ipc-b", 30, what="takeover")
        h.assert_never_both()
        assert h.recorder is not None
        t_boot = time.monotonic()
        h.power_on("ipc-a", autostart=("cti", "ivr"))
        wait_for(lambda: not ({"cti", "ivr"} & set(h.running("ipc-a"))), 15, what="stray CTI/IVR on ipc-a stopped")
        window = [
            s.t - t_boot
            for s in h.recorder.samples
            if s.t >= t_boot and {"cti", "ivr"} & set(s.running.get("ipc-a", {}))
        ]
        stray_for = max(window, default=0.0)
        assert stray_for < 4.0, f"stray CTI/IVR ran {stray_for:.1f} s after the reboot"
        wait_for(lambda: any(e.kind == "stray-stopped" for e in h.store.history()), 10, what="history")
        late = [t - t_boot for t, _, _ in h.recorder.violations() if t - t_boot > stray_for + 0.1]
        assert not late, f"CTI/IVR on both IPCs outside the reboot's window: {late[:3]}"
        print(f"stray CTI/IVR after the reboot stopped within {stray_for:.1f} s")


def test_a_second_agent_for_the_same_ipc_refuses_to_run(tmp_path: Path) -> None:
    with _shape(tmp_path) as h:
        h.steady()
        dup = AgentProc(h.lab.inventory_path, "ipc-a", tmp_path / "other-state", tmp_path, h.lab.agent_netns("ipc-a"))
        dup.log = tmp_path / "agent-ipc-a-duplicate.log"
        dup.start()
        try:
            assert dup.proc is not None
            rc = dup.proc.wait(timeout=30)
            assert rc == 1, dup.log.read_text()
            assert any("Refusing to run" in s for s in dup.sentences()), dup.log.read_text()
        finally:
            dup.stop()
        time.sleep(1)
        assert h.serving("ipc-a") and h.record()["epoch"] == 1  # the real agent went on as it was
        h.assert_never_both()
