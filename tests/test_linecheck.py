"""The inventory's `line_check`, run on each IPC inside its batched status:
its exit code is the line state the rules read (0 up, 1 alarm, 3 driver not
running). Here on lab IPCs, with a check that reads a flag file on the IPC's
"disk" rather than the simulator's line, so only the line check can see it."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from tests.cluster import Harness, wait_for

pytestmark = pytest.mark.timeout(180)


def test_line_alarm_seen_only_through_the_line_check_stops_the_driver(tmp_path: Path) -> None:
    script = tmp_path / "linestat"
    script.write_text('#!/bin/sh\n[ -e "$PWD/line.alarm" ] && exit 1\nexit 0\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def with_line_check(doc: dict) -> None:
        doc["clusters"][0]["line_check"] = {"command": str(script), "timeout": 2}

    with Harness(tmp_path, edit=with_line_check) as h:
        h.steady()
        assert h.member("ipc-a")["obs"]["line"] == "up"
        before = h.pids("ipc-a")
        (Path(h.lab.ipc("ipc-a").dir) / "line.alarm").write_text("")
        wait_for(lambda: h.record().get("board_down") == ["ipc-a"], 15, what="rule 1")
        wait_for(lambda: "driver" not in h.running("ipc-a"), 10, what="driver stopped")
        time.sleep(1.0)
        assert set(h.running("ipc-a")) == {"cti", "ivr", "kcxp", "kcbp"}
        after = h.pids("ipc-a")
        assert all(after[s] == before[s] for s in ("cti", "ivr", "kcxp", "kcbp"))  # nothing else touched
        rec = h.record()
        assert rec["primary"] == "ipc-a" and rec["epoch"] == 1
        assert any("rule 1" in s for s in h.agents["ipc-a"].sentences())
        h.assert_never_both()
