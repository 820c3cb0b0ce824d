"""Shared fixtures. The lab is real: ZooKeeper JVMs and sshd processes on free
loopback ports, torn down (by PID) even when a test fails."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from failover.lab.lab import Lab

# Property tests check logic, not speed (speed is measured in benchmarks):
# hypothesis's default 200 ms deadline per example is a timed assert that a
# loaded 2-core CI machine can fail now and then.
settings.register_profile("failover", deadline=None)
settings.load_profile("failover")

REPO = Path(__file__).resolve().parents[1]


def _sigterm_as_interrupt(*_: object) -> None:
    # A killed test run still tears its fixtures down (labs stopped by PID).
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def _need_lab_tools() -> None:
    missing = [t for t in ("java", "/usr/sbin/sshd", "ssh-keygen") if not shutil.which(t)]
    if not Path("/usr/share/java/zookeeper.jar").exists():
        missing.append("zookeeper.jar")
    if missing:
        pytest.fail(f"lab tools missing ({', '.join(missing)}): run `make install`")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One 3-node ZooKeeper + 2-IPC lab for the whole session."""
    _need_lab_tools()
    lab = Lab(root=tmp_path_factory.mktemp("lab") / "lab", zk_count=3)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
def fresh_lab(tmp_path: Path) -> Iterator[Lab]:
    """A private 1-node lab for tests that break things."""
    _need_lab_tools()
    lab = Lab(root=tmp_path / "lab", zk_count=1)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A lab with both agents running, bootstrapped (ipc-a primary), and the
    observer recording; the test fails if CTI/IVR ever ran on both IPCs."""
    from tests.cluster import Harness

    with Harness(tmp_path) as harness:
        harness.steady()
        yield harness
        harness.assert_never_both()


_LAB_MODULES = ("failover.lab", "tests.cluster", "tests.labssh", "tests.soak")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tiers: a test that starts real processes (ZooKeeper, sshd, agents) is
    marked `lab`, so `pytest -m "not lab"` runs the pure and simulated tiers
    alone. A module is real-process if it uses the lab fixtures or imports
    anything from the lab or the harness."""
    for item in items:
        names = vars(item.module).values() if getattr(item, "module", None) else ()
        real = {"lab", "fresh_lab"} & set(getattr(item, "fixturenames", ())) or any(
            (getattr(v, "__module__", None) or getattr(v, "__name__", "")).startswith(_LAB_MODULES) for v in names
        )
        if real:
            item.add_marker(pytest.mark.lab)
