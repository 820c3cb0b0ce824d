"""Delivering one notification to one generic JSON webhook: POST with a
timeout, retried with exponential backoff, and after the last attempt a line
in the dead-letter file (JSON lines in the agent's state dir), so nothing is
lost silently.

The event id goes in the body and in the `Idempotency-Key` header: a receiver
that keeps the ids it has seen shows each event once, even when an agent
crashed between sending and recording it (docs/monitoring.md). The token is
read at send time from its reference and is never logged nor dead-lettered.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failover.inventory import Webhook

log = logging.getLogger("failover.notify")
# Answers worth another attempt: the receiver is down, overloaded or slow.
# Any other 4xx will not get better by retrying: dead-lettered at once.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "failover-notify/1"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would turn the POST into a GET to the
    Location (the event lost) and copy the token to whatever host it names.
    Returning None makes a 3xx an HTTPError, a failure like any other."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# build_opener keeps the proxy and HTTPS handlers; our subclass replaces the
# default redirect handler.
_OPENER = urllib.request.build_opener(_NoRedirect)


def _token_problem(token: str) -> str | None:
    """Why this token cannot go in a header, never quoting it (http.client's
    own error would: "Invalid header value b'Bearer <token>'")."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in token):
        return "the token has a control character (a line break inside it?)"
    return None


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    attempts: int
    why: str = ""  # the last failure
    retry: bool = True  # False: the receiver refused it for good (a 4xx)


def post(hook: Webhook, body: bytes, event_id: str) -> Outcome:
    """One attempt."""
    req = urllib.request.Request(hook.url, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("User-Agent", USER_AGENT)
    req.add_header("Idempotency-Key", event_id)
    req.add_header("X-Failover-Event-Id", event_id)
    try:
        token = (hook.token() or "").strip()
    except OSError as e:  # an unreadable token file: say which, never its content
        return Outcome(False, 1, f"cannot read token_file {hook.token_file}: {e.strerror}", retry=True)
    if token:
        # Retried: the token is read again at each attempt, a fixed file is picked up.
        if problem := _token_problem(token):
            return Outcome(False, 1, f"{_token_source(hook)}: {problem}", retry=True)
        # Unredirected: never sent on to another URL, whatever a handler does.
        value = f"Bearer {token}" if hook.header.lower() == "authorization" else token
        req.add_unredirected_header(hook.header, value)
    return _send(req, hook.timeout)


def _token_source(hook: Webhook) -> str:
    return f"token_env {hook.token_env}" if hook.token_env else f"token_file {hook.token_file}"


def _send(req: urllib.request.Request, timeout: float) -> Outcome:
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            r.read()
            return Outcome(True, 1)
    except urllib.error.HTTPError as e:
        # A 3xx is retried too: a receiver being moved may come back at its URL.
        retry = e.code in RETRY_STATUS or 300 <= e.code < 400
        return Outcome(False, 1, f"HTTP {e.code} {e.reason}", retry=retry)
    except (urllib.error.URLError, OSError) as e:
        return Outcome(False, 1, f"{type(e).__name__}: {getattr(e, 'reason', e)}")
    except http.client.HTTPException as e:  # BadStatusLine, IncompleteRead...: a broken answer
        return Outcome(False, 1, f"bad answer: {type(e).__name__}")
    except ValueError as e:
        # Its text may quote a header value, i.e. the token: never logged.
        return Outcome(False, 1, f"cannot build the request: {type(e).__name__}", retry=False)


@dataclass
class WebhookSender:
    hook: Webhook
    dead_letter: Path
    stop: threading.Event  # set: give up waiting between attempts (the event stays claimed in ZooKeeper)

    def deliver(self, payload: dict[str, Any]) -> Outcome:
        """Every attempt the receiver's policy allows; dead-lettered after the
        last one (not when the agent is stopping: then another agent or this
        one restarted sends it again)."""
        body = json.dumps(payload, sort_keys=True).encode()
        wait = self.hook.backoff
        why = ""
        for n in range(1, self.hook.attempts + 1):
            got = post(self.hook, body, payload["id"])
            if got.delivered:
                return Outcome(True, n)
            why = got.why
            log.warning(
                "webhook %s: event %s attempt %d/%d failed: %s",
                self.hook.name,
                payload["id"],
                n,
                self.hook.attempts,
                why,
            )
            if not got.retry or n == self.hook.attempts:
                self._dead(payload, n, why)
                return Outcome(False, n, why, retry=False)
            if self.stop.wait(wait):
                return Outcome(False, n, "agent stopping", retry=True)
            wait = min(wait * 2, self.hook.max_backoff)
        return Outcome(False, self.hook.attempts, why, retry=False)  # not reached: the loop returns

    def _dead(self, payload: dict[str, Any], attempts: int, why: str) -> None:
        rec = {
            "at": round(time.time(), 3),
            "receiver": self.hook.name,  # not its URL: some receivers' URLs are secrets themselves
            "attempts": attempts,
            "error": why,
            "event": payload,
        }
        try:
            self._append(rec)
        except OSError as e:
            # The journal is the last record left: the event goes there whole
            # (it never holds the token), and delivery goes on with the next.
            log.error(
                "webhook %s: event %s could not be dead-lettered to %s (%s): %s",
                self.hook.name,
                payload["id"],
                self.dead_letter,
                e.strerror or type(e).__name__,
                json.dumps(rec, sort_keys=True),
            )
            return
        log.error(
            "webhook %s: event %s dead-lettered to %s after %d attempts: %s",
            self.hook.name,
            payload["id"],
            self.dead_letter,
            attempts,
            why,
        )

    def _append(self, rec: dict[str, Any]) -> None:
        self.dead_letter.parent.mkdir(parents=True, exist_ok=True)
        # One write of one line, appended: a crash never leaves half a record.
        fd = os.open(self.dead_letter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (json.dumps(rec, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)
