"""A small seeded soak as part of `make test` (`make soak` runs a long one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import soak

pytestmark = pytest.mark.timeout(600)


def test_small_seeded_soak(tmp_path: Path) -> None:
    seed = int(os.environ.get("FAILOVER_SOAK_SEED", "20261127"))
    report = soak.run(seed, faults=8, budget=240, root=tmp_path)
    assert report["faults"] >= 4
    assert report["dual_primary_instants"] == 0, report
