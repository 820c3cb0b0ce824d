"""The standby's move when no agent holds the role: one row per reason, pure."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.moves import LeaderlessView, leaderless_move
from failover.rules import Role

BASE = LeaderlessView(
    me="ipc-b",
    peer="ipc-a",
    epoch=3,
    my_role=Role.STANDBY,
    peer_role=Role.PRIMARY,
    peer_agent_alive=False,
    recorded_primary="ipc-a",
    handed_over=False,
)

ROWS = [
    # (name, change, take, in the sentence, in the way out ("" = none))
    ("free to take", {}, True, "", ""),
    ("handed over while paused", {"handed_over": True, "paused": True}, True, "", ""),
    ("handed over in manual mode", {"handed_over": True, "mode": "manual"}, True, "", ""),
    ("handed over past flap damping", {"handed_over": True, "recent_failovers": 5}, True, "", ""),
    (
        "fenced, peer alive and standby",
        {"my_role": Role.FENCED, "peer_role": Role.STANDBY, "peer_agent_alive": True},
        False,
        "is fenced",
        "",
    ),
    (
        "fenced, nobody else",
        {"my_role": Role.FENCED, "peer_role": Role.FENCED},
        False,
        "is fenced",
        "failover rejoin ipc-b",
    ),
    ("paused", {"paused": True, "pause_reason": "drill"}, False, "paused (drill)", "failover resume"),
    ("manual mode", {"mode": "manual"}, False, "manual mode", "failover failover --to ipc-b"),
    ("recorded primary's agent alive", {"peer_agent_alive": True}, False, "waiting for it", ""),
    (
        "handed to the peer, its agent alive",
        {"handed_away": True, "peer_agent_alive": True, "recorded_primary": "ipc-b", "peer_role": Role.STANDBY},
        False,
        "waiting for its agent to take it",
        "",
    ),
    (
        "handed to the peer, its agent gone",
        {"handed_away": True, "recorded_primary": "ipc-b", "peer_role": Role.STANDBY},
        True,
        "",
        "",
    ),
    ("flap damping", {"recent_failovers": 2}, False, "2 automatic failovers", "flap damping"),
    ("own fault, primary recorded", {"own_faults": ("KCXP stopped",)}, False, "cannot serve (KCXP stopped)", ""),
    (
        "own fault, nobody primary",
        {"own_faults": ("KCXP stopped",), "peer_role": Role.FENCED},
        False,
        "cannot serve",
        "no IPC can serve calls",
    ),
    ("own IPC unreachable", {"reachable": False}, False, "unreachable over SSH", ""),
]


@pytest.mark.parametrize(("name", "change", "take", "said", "way"), ROWS, ids=[r[0] for r in ROWS])
def test_row(name: str, change: dict, take: bool, said: str, way: str) -> None:
    m = leaderless_move(replace(BASE, **change))
    assert m.take is take, name
    assert said in m.sentence
    assert (way in m.way_out) if way else m.way_out == ""


@given(
    paused=st.booleans(),
    manual=st.booleans(),
    recent=st.integers(0, 5),
    faults=st.booleans(),
    reachable=st.booleans(),
    alive=st.booleans(),
)
def test_a_move_that_does_not_take_says_why_and_taking_needs_every_gate(
    paused: bool, manual: bool, recent: int, faults: bool, reachable: bool, alive: bool
) -> None:
    v = replace(
        BASE,
        paused=paused,
        mode="manual" if manual else "automatic",
        recent_failovers=recent,
        own_faults=("IVR stopped",) if faults else (),
        reachable=reachable,
        peer_agent_alive=alive,
    )
    m = leaderless_move(v)
    gates = not paused and not manual and recent < v.max_failovers and not faults and reachable and not alive
    assert m.take is gates
    assert m.take or m.sentence.startswith("No primary holds the role (epoch 3)")
