"""The schedule explorer in the fast tier (`make test` runs 5,000 schedules
before pytest; `make sim SEEDS=N` runs more). A failure prints its seed and
schedule; `python -m tests.sim.explore --seed S --verbose` replays it."""

from __future__ import annotations

import logging

import pytest

from tests.sim import explore

pytestmark = pytest.mark.timeout(300)


def test_seeded_schedules_hold_every_invariant() -> None:
    logging.disable(logging.WARNING)
    try:
        outs = explore.explore(list(range(100_000, 100_150)), jobs=1)
    finally:
        logging.disable(logging.NOTSET)
    bad = [o for o in outs if o.violations]
    assert not bad, "\n".join(f"seed {o.seed}: {o.violations[:3]}\n  " + "\n  ".join(o.schedule) for o in bad[:3])
    assert sum(o.steps for o in outs) > 150 * 50  # the agents did run


def test_a_schedule_replays_identically() -> None:
    logging.disable(logging.WARNING)
    try:
        one, two = (explore.explore([4242], jobs=1)[0] for _ in range(2))
    finally:
        logging.disable(logging.NOTSET)
    assert one.schedule == two.schedule and one.steps == two.steps and one.said == two.said
