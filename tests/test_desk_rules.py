"""The status page's headline and banner rules (failover/desk.py), pure:
what it says when an agent is not reporting, and failed steps from the
history. The page in a browser is tests/test_desk.py."""

from __future__ import annotations

from failover import desk


def _view(answering: list[str], agents: dict[str, str]) -> dict:
    ipcs = {
        n: {
            "agent": a,
            "agent_age_s": 40.0 if a != "alive" else 0.5,
            "sentence": f"{n} said",
            "way_out": "",
            "role": "primary" if n == "ipc-a" else "standby",
            "eligible": n != "ipc-a",
            "services": {},
            "alerts": [],
        }
        for n, a in agents.items()
    }
    return {
        "answering": answering,
        "ipcs": ipcs,
        "primary": "ipc-a",
        "leader": "ipc-a",
        "epoch": 2,
        "last_change": {},
        "capacity": {"max_ivr": 60, "max_agent": 30, "fax": 4},
    }


def test_a_primary_whose_agent_is_silent_is_not_shown_as_answering_for_sure() -> None:
    h = desk.headline(_view(["ipc-a"], {"ipc-a": "stale", "ipc-b": "alive"}))
    assert h["level"] == "warn" and "as last reported" in h["text"] and "stale" in h["why"]


def test_nobody_answering_by_the_records_but_an_agent_absent_is_unknown_not_nobody() -> None:
    h = desk.headline(_view([], {"ipc-a": "absent", "ipc-b": "alive"}))
    assert h["level"] == "crit" and h["text"] == "UNKNOWN who answers calls" and "ipc-a's agent" in h["why"]
    assert desk.headline(_view([], {"ipc-a": "alive", "ipc-b": "alive"}))["text"] == "NOBODY is answering calls"
    assert desk.headline(_view(["ipc-b"], {"ipc-a": "absent", "ipc-b": "alive"}))["text"] == "Calls answered by ipc-b"


def test_a_failed_step_in_the_last_hour_is_on_the_banner() -> None:
    now = 10_000.0
    history = [
        {"kind": "takeover", "from": "ipc-a", "to": "ipc-b", "outcome": "failed", "when": now - 60, "failed": "x"},
        {"kind": "rejoin", "from": "ipc-a", "to": "ipc-a", "outcome": "done", "when": now - 30},
        {"kind": "drill", "outcome": "failed", "when": now - 7200, "why": "old"},
    ]
    got = desk.attention(_view(["ipc-b"], {"ipc-a": "alive", "ipc-b": "alive"}), {}, now, history)
    texts = [a["text"] for a in got if a["level"] == "crit"]
    assert any(t.startswith("takeover ipc-a -> ipc-b FAILED") and t.endswith(": x") for t in texts), texts
    assert not any("drill" in t or "rejoin" in t for t in texts), texts
