"""The agent's hold on the role (failover/agent/tenure.py): one self-fence
whoever comes first, and a revocation that never waits behind it."""

from __future__ import annotations

import threading

from failover.agent.tenure import Tenure


def test_revoke_and_contact_never_wait_behind_a_self_fence() -> None:
    t = Tenure()
    t.confirm(True)
    inside, release = threading.Event(), threading.Event()

    def slow_stop() -> tuple[str, bool]:
        inside.set()
        release.wait(10)
        return "stopped CTI and IVR", True

    fencer = threading.Thread(target=t.self_fence, args=(slow_stop,))
    fencer.start()
    assert inside.wait(5)
    done = threading.Event()

    def listener() -> None:  # kazoo's connection thread, on LOST
        t.revoke()
        t.contact()
        done.set()

    threading.Thread(target=listener).start()
    assert done.wait(5), "revoke()/contact() blocked behind the self-fence"
    confirmer = threading.Thread(target=t.confirm, args=(True,))
    confirmer.start()
    confirmer.join(0.2)
    assert confirmer.is_alive(), "confirm(True) must wait for the self-fence to finish"
    release.set()
    fencer.join(5)
    confirmer.join(5)
    assert t.self_fenced and t.fence_note == "stopped CTI and IVR"


def test_one_self_fence_whoever_comes_first() -> None:
    t = Tenure()
    calls: list[int] = []

    def stop() -> tuple[str, bool]:
        calls.append(1)
        return "stopped", True

    threads = [threading.Thread(target=t.self_fence, args=(stop,)) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(5)
    assert len(calls) == 1 and t.self_fenced and not t.confirmed
    t.self_fence(stop, again=True)  # a start landed after it: again, on purpose
    assert len(calls) == 2
    assert t.resumed() and not t.self_fenced and t.fence_note == ""
    assert not t.resumed()


def test_a_failed_self_fence_is_tried_again() -> None:
    t = Tenure()
    t.self_fence(lambda: ("FAILED to stop CTI", False))
    assert not t.self_fenced and t.fence_note.startswith("FAILED")
    t.self_fence(lambda: ("stopped", True))
    assert t.self_fenced
