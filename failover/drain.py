"""A drained switchover, the decision (pure): the primary stops taking new
calls (busy-out), lets the calls it has finish, and hands over when active
calls are at most `below`, or at the deadline as the operator chose
(`on_deadline`: ask, proceed, cancel). The agent asks `drain_move` every
cycle (a drain spans cycles and never blocks one: a fault meanwhile still
goes through rules.decide); the CLI builds the spec from its options.

The protocol around it is in failover/switchover.py; the acts in
failover/agent/drain.py."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from failover.calls import ActiveCalls

ON_DEADLINE = ("ask", "proceed", "cancel")
DEFAULT_MAX_WAIT = 900.0  # 15 minutes: a long call-center call
# A deadline question nobody answers cancels the drain after this long: the
# only serving IPC must not refuse new calls until someone happens to look.
QUESTION_WAIT = 300.0


@dataclass(frozen=True)
class DrainSpec:
    below: int = 0
    max_wait: float = DEFAULT_MAX_WAIT
    on_deadline: str = "ask"

    @classmethod
    def of(cls, d: Mapping[str, Any] | None) -> DrainSpec | None:
        """A request's `drain` (None: a plain switchover)."""
        if not d:
            return None
        return cls(int(d.get("below", 0)), float(d.get("max_wait", DEFAULT_MAX_WAIT)), str(d.get("on_deadline", "ask")))

    def record(self) -> dict:
        return {"below": self.below, "max_wait": self.max_wait, "on_deadline": self.on_deadline}

    def check(self) -> str:
        """'' or why these options make no drain."""
        if self.below < 0:
            return f"--below {self.below}: must be 0 or more"
        if not 0 < self.max_wait <= 86400:
            return f"--max-wait {self.max_wait:g} s: must be more than 0 and at most a day"
        if self.on_deadline not in ON_DEADLINE:
            return f"on deadline {self.on_deadline!r}: one of {', '.join(ON_DEADLINE)}"
        return ""


class Step(Enum):
    WAIT = "wait"  # calls still finishing: observe again next cycle
    PROCEED = "proceed"  # hand over now (drained, or the deadline/operator says so)
    ASK = "ask"  # the deadline passed: the operator decides (the CLI asks)
    CANCEL = "cancel"  # release the busy-out, keep the primary


@dataclass(frozen=True)
class DrainMove:
    step: Step
    why: str


def drain_move(spec: DrainSpec, active: ActiveCalls | None, started: float, now: float, answer: str = "") -> DrainMove:
    """This cycle's step. `active`: this cycle's count (None: the command
    failed, so it is unknown and never counts as drained); `answer`: the
    operator's answer to the deadline question ('' none yet)."""
    count = "an unknown number of calls" if active is None else active.text()
    if answer == "proceed":
        return DrainMove(Step.PROCEED, f"the operator chose to proceed with {count}")
    if answer == "cancel":
        return DrainMove(Step.CANCEL, f"the operator chose to cancel with {count}")
    if active is not None and active.total <= spec.below:
        return DrainMove(Step.PROCEED, f"drained: {active.text()}, at most {spec.below}")
    deadline = started + spec.max_wait
    if now < deadline:
        # The deadline as a time of day, not "N s left": the agent logs its
        # sentence when it changes, and a countdown would change every cycle.
        until = time.strftime("%H:%M:%S", time.localtime(deadline))
        return DrainMove(Step.WAIT, f"draining: {count}, waiting for at most {spec.below} (deadline {until})")
    late = f"the drain reached its deadline ({spec.max_wait:g} s) with {count}"
    if spec.on_deadline == "proceed":
        return DrainMove(Step.PROCEED, f"{late}: proceeding, they will be cut")
    if spec.on_deadline == "cancel":
        return DrainMove(Step.CANCEL, f"{late}: cancelled as chosen, the primary stays")
    if now >= deadline + QUESTION_WAIT:
        return DrainMove(
            Step.CANCEL, f"{late}, and nobody answered within {QUESTION_WAIT:g} s: cancelled, the primary stays"
        )
    return DrainMove(Step.ASK, f"{late}: proceed (cutting them) or cancel?")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_duration(text: str) -> float:
    """'15m', '90s', '1h', '600' (seconds) -> seconds; ValueError otherwise."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r}: use e.g. 15m, 90s, 1h or a number of seconds")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def cut_count(active: ActiveCalls | None) -> int | None:
    """The calls a hand-over cuts: those still active when CTI and IVR stop."""
    return None if active is None else active.total


__all__ = [
    "ON_DEADLINE",
    "QUESTION_WAIT",
    "DrainMove",
    "DrainSpec",
    "Step",
    "cut_count",
    "drain_move",
    "parse_duration",
]
