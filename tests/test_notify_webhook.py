"""Webhook delivery against a real local HTTP receiver: a receiver that is down
for a while gets the event once it is back (retried, nothing lost, nothing
twice); one down for good leaves it in the dead-letter file; the token goes by
reference and never into a log or the dead-letter file."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
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


# ----- review fixes: redirects, bad tokens, broken answers ---------------------------------
class Canned:
    """A raw TCP server on a free loopback port answering every request with
    the same bytes (a redirect, a broken answer): http.server cannot send a
    malformed answer. Records each request's head; stopped in `close`."""

    def __init__(self, answer: bytes) -> None:
        self.answer, self.heads = answer, []  # type: list[str]
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                self.heads.append(self._read(conn))
                conn.sendall(self.answer)

    @staticmethod
    def _read(conn: socket.socket) -> str:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(dict(_header(x) for x in head.decode().split("\r\n")[1:]).get("content-length", 0))
        while len(body) < length:
            body += conn.recv(65536)
        return head.decode()

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close()


def _header(line: str) -> tuple[str, str]:
    k, _, v = line.partition(":")
    return k.strip().lower(), v.strip()


@pytest.fixture
def canned() -> Iterator[Callable[[bytes], Canned]]:
    made: list[Canned] = []

    def make(answer: bytes) -> Canned:
        made.append(Canned(answer))
        return made[-1]

    try:
        yield make
    finally:
        for c in made:
            c.close()


@pytest.mark.parametrize("code", [301, 302, 303, 307])
def test_a_redirect_is_a_failure_and_the_token_never_follows_it(
    tmp_path: Path,
    receiver: Receiver,
    canned: Callable[[bytes], Canned],
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    """urllib by default re-sends a redirected POST as a GET to the Location,
    without the body and with the token: the event lost, the token given to
    another host. Here the redirect is a failure, retried then dead-lettered."""
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    receiver.up()  # the host the redirect points to
    moved = canned(f"HTTP/1.1 {code} Moved\r\nLocation: {receiver.url}\r\nContent-Length: 0\r\n\r\n".encode())
    got = sender(tmp_path, moved.url, attempts=2, token_env="HOOK_TOKEN").deliver(EVENT.payload())
    assert not got.delivered and got.attempts == 2 and f"HTTP {code}" in got.why
    assert receiver.requests == []  # nothing, and no token, went to the other host
    assert len(moved.heads) == 2 and all(h.startswith("POST /hook") for h in moved.heads)
    rec = json.loads((tmp_path / "dead.jsonl").read_text())
    assert rec["event"] == EVENT.payload() and rec["attempts"] == 2


def test_a_token_ending_in_a_line_break_is_stripped(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN + "\n")
    receiver.up()
    assert sender(tmp_path, receiver.url, token_env="HOOK_TOKEN").deliver(EVENT.payload()).delivered
    assert receiver.accepted[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_a_token_with_a_control_character_is_refused_without_quoting_it(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """http.client's own error quotes the header value, i.e. the token: it
    must reach neither the log nor the dead-letter file."""
    caplog.set_level(logging.WARNING, logger="failover.notify")
    (tmp_path / "token").write_text(f"{TOKEN}\nsecond-line-{TOKEN}\n")
    receiver.up()
    got = sender(tmp_path, receiver.url, attempts=2, token_file=str(tmp_path / "token")).deliver(EVENT.payload())
    assert not got.delivered and "control character" in got.why and receiver.requests == []
    dead = (tmp_path / "dead.jsonl").read_text()
    assert "token_file" in json.loads(dead)["error"]
    assert TOKEN not in dead and TOKEN not in caplog.text and "Invalid header" not in caplog.text


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",  # BadStatusLine
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",  # IncompleteRead
    ],
)
def test_a_broken_answer_is_retried_then_dead_lettered(
    tmp_path: Path, canned: Callable[[bytes], Canned], answer: bytes
) -> None:
    """http.client raises HTTPException (not an OSError) on these: it used to
    escape post() and kill the deliverer thread."""
    broken = canned(answer)
    got = sender(tmp_path, broken.url, attempts=2).deliver(EVENT.payload())
    assert not got.delivered and got.attempts == 2 and "bad answer" in got.why
    assert len(broken.heads) == 2 and (tmp_path / "dead.jsonl").exists()
