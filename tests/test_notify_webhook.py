"""Webhook delivery against a real local HTTP receiver: a receiver that is down
for a while gets the event once it is back (retried, nothing lost, nothing
twice); one down for good leaves it in the dead-letter file; the token goes by
reference and never into a log or the dead-letter file."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.inventory import Webhook
from failover.notify.events import Event
from failover.notify.webhook import Outcome, WebhookSender
from tests.receiver import Receiver, wait_until

EVENT = Event("lab/h-0000000007", "role-change", "critical", "lab", "ipc-b", "failover: ipc-a -> ipc-b", 1.0)
TOKEN = "s3cret-token-value"


def sender(tmp_path: Path, url: str, **kw: object) -> WebhookSender:
    hook = Webhook.model_validate({"name": "oncall", "url": url, "backoff": 0.05, "max_backoff": 0.2, **kw})
    return WebhookSender(hook, tmp_path / "dead.jsonl", threading.Event())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.down()


def test_delivered_once_with_its_id_and_the_token_by_reference(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    receiver.up()
    got = sender(tmp_path, receiver.url, token_env="HOOK_TOKEN").deliver(EVENT.payload())
    assert got == Outcome(True, 1)
    [req] = receiver.accepted
    assert req.body == EVENT.payload() and req.body["schema"] == "failover.notification/1"
    assert req.headers["idempotency-key"] == EVENT.id == req.headers["x-failover-event-id"]
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert not (tmp_path / "dead.jsonl").exists()


def test_token_file_and_a_header_of_its_own(tmp_path: Path, receiver: Receiver) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    receiver.up()
    s = sender(tmp_path, receiver.url, token_file=str(tmp_path / "token"), header="X-Api-Key")
    assert s.deliver(EVENT.payload()).delivered
    assert receiver.accepted[0].headers["x-api-key"] == TOKEN


def test_receiver_answering_errors_for_a_while_gets_it_once(tmp_path: Path, receiver: Receiver) -> None:
    receiver.fail_first = 3
    receiver.up()
    got = sender(tmp_path, receiver.url, attempts=6).deliver(EVENT.payload())
    assert got.delivered and got.attempts == 4
    assert len(receiver.requests) == 4 and receiver.ids() == [EVENT.id]


def test_receiver_down_for_a_while_retried_nothing_lost_nothing_twice(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens on the receiver's port at first (connection refused);
    it comes up after two failed attempts and gets the event exactly once."""
    caplog.set_level(logging.WARNING, logger="failover.notify")
    s = sender(tmp_path, receiver.url, attempts=100)
    result: list[Outcome] = []
    t = threading.Thread(target=lambda: result.append(s.deliver(EVENT.payload())))
    t.start()
    try:
        wait_until(lambda: sum("failed" in r.getMessage() for r in caplog.records) >= 2, 30, what="two failed attempts")
        receiver.up()
        t.join(30)
    finally:
        s.stop.set()
        t.join(5)
    assert result and result[0].delivered and result[0].attempts >= 3
    assert receiver.ids() == [EVENT.id] and len(receiver.requests) == 1
    assert not (tmp_path / "dead.jsonl").exists()


def test_down_for_good_dead_lettered_without_the_token(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    got = sender(tmp_path, receiver.url, attempts=3, token_env="HOOK_TOKEN").deliver(EVENT.payload())
    assert not got.delivered and got.attempts == 3
    [line] = (tmp_path / "dead.jsonl").read_text().splitlines()
    rec = json.loads(line)
    assert rec["event"] == EVENT.payload() and rec["receiver"] == "oncall" and rec["attempts"] == 3
    assert "Connection refused" in rec["error"] or "URLError" in rec["error"]
    assert TOKEN not in line and TOKEN not in caplog.text


def test_refused_for_good_is_dead_lettered_at_once(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 400
    receiver.up()
    got = sender(tmp_path, receiver.url, attempts=5).deliver(EVENT.payload())
    assert not got.delivered and got.attempts == 1 and len(receiver.requests) == 1
    assert "HTTP 400" in json.loads((tmp_path / "dead.jsonl").read_text())["error"]


def test_stopping_agent_keeps_the_event_claimed_not_dead_lettered(tmp_path: Path, receiver: Receiver) -> None:
    s = sender(tmp_path, receiver.url, attempts=5)
    s.stop.set()
    got = s.deliver(EVENT.payload())
    assert not got.delivered and got.retry and got.why == "agent stopping"
    assert not (tmp_path / "dead.jsonl").exists()
