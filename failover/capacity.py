"""The plan's capacity model (pure). Per IPC with L line channels:
X + 2Y <= L, X = callers in the automated IVR, Y = callers talking to an agent
(the agent leg takes a second channel). IPCs are computed separately and summed.
Fax: one fax board per IPC, usable while that IPC's board driver runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    max_ivr: int  # concurrent callers if all are in the IVR
    max_agent: int  # concurrent callers if all talk to agents
    fax: int  # concurrent faxes
    lines: Mapping[str, int]  # usable line channels per IPC
    serving: bool  # CTI and IVR run somewhere: calls are answered at all

    def ivr_headroom(self, agent_calls: int) -> int | None:
        """Max IVR callers alongside `agent_calls` agent calls; None when the
        agent calls themselves do not fit."""
        return ivr_headroom(self.lines.values(), agent_calls) if self.serving else None

    def as_dict(self) -> dict[str, object]:
        return {
            "max_ivr": self.max_ivr,
            "max_agent": self.max_agent,
            "fax": self.fax,
            "lines": dict(self.lines),
            "serving": self.serving,
        }


def compute(
    channels: Mapping[str, int],
    fax_channels: Mapping[str, int],
    boards_up: Iterable[str],
    serving: bool,
) -> Capacity:
    """boards_up: IPCs whose board driver runs. serving: CTI + IVR run somewhere.
    Nothing is answered when nobody serves, whatever the boards."""
    up = [i for i in channels if i in set(boards_up)]
    lines = {i: (channels[i] if i in up and serving else 0) for i in channels}
    return Capacity(
        max_ivr=sum(lines.values()),
        max_agent=sum(v // 2 for v in lines.values()),
        fax=sum(fax_channels.get(i, 0) for i in up),
        lines=lines,
        serving=serving,
    )


def channels_in_use(ivr: int | None, agent: int | None, total: int) -> int:
    """Line channels the active calls hold: X + 2Y. When the CTI cannot
    tell IVR from agent calls, every call is counted as an agent call (two
    channels): headroom is never overstated."""
    if ivr is None or agent is None:
        return 2 * total
    return ivr + 2 * agent


def ivr_headroom(lines: Iterable[int], agent_calls: int) -> int | None:
    """X = sum(L_i) - 2Y, provided the Y agent calls can be placed (each IPC
    takes at most L_i // 2 of them); None otherwise."""
    ls = list(lines)
    if agent_calls < 0 or agent_calls > sum(v // 2 for v in ls):
        return None
    return sum(ls) - 2 * agent_calls
