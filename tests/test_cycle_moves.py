"""The agent's move each cycle (failover/moves.py: leader_move, next_move),
over a typed cluster snapshot: one row per move, pure. The leaderless rows
(take over or hold) are tests/test_moves.py's."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.moves import ClusterView, Next, RequestView, leader_move, next_move
from failover.rules import Role
from tests.test_moves import BASE

FREE = BASE  # a standby free to take the role nobody holds (tests/test_moves.py)
PRIMARY = ClusterView(me="ipc-a", peer="ipc-b", has_record=True, leader="mine", recorded_primary="ipc-a",
                      my_role=Role.PRIMARY)  # fmt: skip
STANDBY = ClusterView(me="ipc-b", peer="ipc-a", has_record=True, leader="other", recorded_primary="ipc-a")
LEADERLESS = replace(STANDBY, leader="none", leaderless=FREE)
SWITCH = RequestView("r1", "switchover", "ipc-b")
TO_PEER = RequestView("r2", "failover", "ipc-b", confirm_dead="ipc-a")
TO_ME = RequestView("r3", "failover", "ipc-b")

LEADER_ROWS = [
    ("no cluster record", replace(STANDBY, has_record=False, leader="none"), Next.BOOTSTRAP),
    ("recorded primary without leader", replace(PRIMARY, leader="none"), Next.RECLAIM),
    ("... and another session was quicker", replace(PRIMARY, leader="none", reclaim_failed=True), None),
    ("primary holding leader", PRIMARY, None),
    ("standby", STANDBY, None),
    ("recorded primary but standby in the roles", replace(PRIMARY, leader="none", my_role=Role.STANDBY), None),
]


@pytest.mark.parametrize(("name", "view", "move"), LEADER_ROWS, ids=[r[0] for r in LEADER_ROWS])
def test_leader_move(name: str, view: ClusterView, move: Next | None) -> None:
    assert leader_move(view) is move


ROWS = [
    # (name, view, next, refused with (substring; "" = not refused))
    ("primary serves", PRIMARY, Next.SERVE, ""),
    ("a takeover to finish", replace(PRIMARY, recorded_primary="ipc-b"), Next.FINISH_TAKEOVER, ""),
    ("a due switchover", replace(PRIMARY, request=SWITCH, switchover_verdict="go"), Next.SWITCH_OVER, ""),
    ("a scheduled switchover, not yet", replace(PRIMARY, request=SWITCH), Next.SERVE, ""),
    (
        "a switchover the target cannot take",
        replace(PRIMARY, request=SWITCH, switchover_verdict="ipc-b cannot take the role now"),
        Next.SERVE,
        "cannot take the role",
    ),
    ("an operator's --confirm-dead of us", replace(PRIMARY, request=TO_PEER), Next.CONFIRMED_DEAD, ""),
    ("a manual failover to us, nobody holding", replace(LEADERLESS, request=TO_ME), Next.MANUAL_FAILOVER, ""),
    ("a switchover to hand back", replace(LEADERLESS, hand_back="ipc-b is unreachable"), Next.HAND_BACK, ""),
    ("nobody holds the role: take it", LEADERLESS, Next.TAKE_OVER, ""),
    ("nobody holds the role, paused", replace(LEADERLESS, leaderless=replace(FREE, paused=True)), Next.HOLD, ""),
    (
        "fenced: no manual failover from here, the leaderless rules hold",
        replace(LEADERLESS, my_role=Role.FENCED, request=TO_ME, leaderless=replace(FREE, my_role=Role.FENCED)),
        Next.HOLD,
        "",
    ),
    (
        "two triggers: a manual failover to us beats a switchover to hand back",
        replace(LEADERLESS, request=TO_ME, hand_back="ipc-b cannot serve"),
        Next.MANUAL_FAILOVER,
        "",
    ),
    (
        "two triggers: a takeover to finish beats a due switchover",
        replace(PRIMARY, recorded_primary="ipc-b", request=SWITCH, switchover_verdict="go"),
        Next.FINISH_TAKEOVER,
        "",
    ),
    (
        "two triggers: a due switchover beats a --confirm-dead (only one request is active)",
        replace(PRIMARY, request=SWITCH, switchover_verdict="go"),
        Next.SWITCH_OVER,
        "",
    ),
    (
        "two triggers: a hand-back beats taking a handed-over role",
        replace(LEADERLESS, hand_back="ipc-b is unreachable", leaderless=replace(FREE, handed_over=True)),
        Next.HAND_BACK,
        "",
    ),
    ("the peer holds the role", STANDBY, Next.STANDBY, ""),
    ("a failover to us while the holder lives", replace(STANDBY, request=TO_ME), Next.STANDBY, "use `failover switch"),
    (
        "... with --confirm-dead of the holder: its agent hands over",
        replace(STANDBY, request=replace(TO_ME, confirm_dead="ipc-a")),
        Next.STANDBY,
        "",
    ),
]


@pytest.mark.parametrize(("name", "view", "move", "refused"), ROWS, ids=[r[0] for r in ROWS])
def test_next_move(name: str, view: ClusterView, move: Next, refused: str) -> None:
    m = next_move(view)
    assert m.next is move
    assert (refused in m.refuse) if refused else m.refuse == ""
    if move is Next.HOLD:
        assert m.sentence  # a hold always says why
    if move is Next.HAND_BACK:
        assert m.sentence == view.hand_back


@given(
    leader=st.sampled_from(["mine", "other", "none"]),
    recorded=st.sampled_from(["ipc-a", "ipc-b", None]),
    role=st.sampled_from(list(Role)),
    req=st.sampled_from([None, SWITCH, TO_PEER, TO_ME]),
    verdict=st.sampled_from(["", "go", "refused: why"]),
    hand_back=st.sampled_from(["", "cannot serve"]),
)
def test_only_the_holder_of_leader_serves_or_hands_over(
    leader: str, recorded: str | None, role: Role, req: RequestView | None, verdict: str, hand_back: str
) -> None:
    """The moves that act as primary need `leader`; the ones that take it need
    nobody holding it; a standby under a live holder only ever stays standby."""
    v = ClusterView("ipc-b", "ipc-a", True, leader, recorded, role, req, False, verdict, hand_back, FREE)
    m = next_move(v)
    if m.next in (Next.SERVE, Next.SWITCH_OVER, Next.CONFIRMED_DEAD, Next.FINISH_TAKEOVER):
        assert leader == "mine"
    if m.next in (Next.TAKE_OVER, Next.MANUAL_FAILOVER, Next.HAND_BACK, Next.HOLD):
        assert leader == "none"
    if leader == "other":
        assert m.next is Next.STANDBY
