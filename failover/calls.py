"""Active calls as an observation (pure): what the inventory's `calls.active`
command prints, read into numbers. The contract (docs/inventory.md): a single
number of calls in progress (`17`), or the IVR and agent calls apart when the
CTI can tell (`ivr=12 agent=5`); blank lines and surrounding text on other
lines are ignored, the last matching line counts (tools print banners)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOTAL = re.compile(r"^\s*(\d+)\s*$")
_SPLIT = re.compile(r"^\s*ivr\s*=\s*(\d+)\s+agent\s*=\s*(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ActiveCalls:
    total: int
    ivr: int | None = None  # None: the CTI cannot tell IVR from agent calls
    agent: int | None = None

    def text(self) -> str:
        if self.ivr is None or self.agent is None:
            return f"{self.total} active"
        return f"{self.total} active (ivr {self.ivr}, agent {self.agent})"

    def record(self) -> dict:
        """As published in the member record and the request's progress."""
        return {"active": self.total, "ivr": self.ivr, "agent": self.agent}


class Unreadable(ValueError):
    """The command's output does not follow the contract."""


def parse_active(output: str) -> ActiveCalls:
    """`17` or `ivr=12 agent=5` -> ActiveCalls; Unreadable otherwise."""
    for line in reversed(output.replace("\r\n", "\n").splitlines()):
        m = _SPLIT.match(line)
        if m:
            ivr, agent = int(m.group(1)), int(m.group(2))
            return ActiveCalls(ivr + agent, ivr, agent)
        m = _TOTAL.match(line)
        if m:
            return ActiveCalls(int(m.group(1)))
    shown = output.strip()[:80] or "nothing"
    raise Unreadable(f"active calls: expected `N` or `ivr=N agent=M`, got {shown!r}")


def from_record(rec: dict | None) -> ActiveCalls | None:
    """A published record back into ActiveCalls (None: not observed)."""
    if not rec or rec.get("active") is None:
        return None
    return ActiveCalls(int(rec["active"]), rec.get("ivr"), rec.get("agent"))


__all__ = ["ActiveCalls", "Unreadable", "from_record", "parse_active"]
