"""What the SSH executor's operations report: typed errors naming host and
action, command results, host status, and a plan's step-by-step report. Its
own module so that the executor's parts (executor.py: connections and
commands; service_ops.py: start/stop/kill; plan_runner.py: plans) share them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from failover.layouts import LABELS
from failover.rules import State, Step


class _Backoff:
    """Tight polling for state changes: most starts and stops finish within
    tens of milliseconds of the command, a few take seconds. Every `first`
    seconds for the first `tight` seconds (a poll through a long-lived session
    costs a few ms: doubling from the start cost up to 80 ms per step after a
    100 ms transition), then doubling up to `cap`."""

    def __init__(self, first: float = 0.02, cap: float = 0.25, tight: float = 0.5) -> None:
        self.delay, self.cap = first, cap
        self.until = time.monotonic() + tight

    def sleep(self) -> None:
        time.sleep(self.delay)
        if time.monotonic() >= self.until:
            self.delay = min(self.cap, self.delay * 2)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class ExecError(Exception):
    """Base: every error names the host and the action."""

    def __init__(self, host: str, action: str, detail: str) -> None:
        super().__init__(f"{host}: {action}: {detail}")
        self.host, self.action, self.detail = host, action, detail


class Unreachable(ExecError):
    """Could not connect (refused, timed out, connection dropped before the
    command was sent). Transient: retried."""


class AuthFailed(ExecError):
    pass


class HostKeyUnknown(ExecError):
    pass


class HostKeyChanged(ExecError):
    pass


class ConfigError(ExecError):
    """The inventory names something the host does not have (sc.exe 1060), or
    an argument that cannot be quoted safely."""


class AccessDenied(ExecError):
    pass


class CommandFailed(ExecError):
    def __init__(self, host: str, action: str, detail: str, result: Result | None = None) -> None:
        super().__init__(host, action, detail)
        self.result = result


class CommandTimedOut(ExecError):
    pass


class OutcomeUnknown(ExecError):
    """The connection broke after the command was sent: it may or may not have run."""


@dataclass(frozen=True)
class Result:
    host: str
    command: str
    exit_code: int
    stdout: str
    stderr: str
    duration: float


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    total_seconds: float = 15.0
    initial_backoff: float = 0.2
    max_backoff: float = 2.0


@dataclass(frozen=True)
class HostStatus:
    host: str
    states: dict[str, State]
    line: str
    duration: float
    healthy: dict[str, bool | None] = field(default_factory=dict)  # probe results


@dataclass
class StepResult:
    step: Step
    status: str  # done | failed | unknown | not run
    detail: str = ""
    duration: float = 0.0

    def line(self) -> str:
        what = f"{self.step.op} {LABELS.get(self.step.service, self.step.service)} on {self.step.host}"
        dur = f" {self.duration:.1f} s" if self.status != "not run" else ""
        return f"{what}: {self.status}{dur}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class PlanReport:
    results: list[StepResult]
    blocked: str = ""  # why the plan stopped early, if it did

    @property
    def ok(self) -> bool:
        return all(r.status == "done" for r in self.results) and not self.blocked

    def by_status(self, status: str) -> list[StepResult]:
        return [r for r in self.results if r.status == status]

    def summary(self) -> str:
        if self.ok:
            return f"plan done: {len(self.results)} step(s)"
        parts = [
            f"{s}: " + "; ".join(r.line() for r in self.by_status(s))
            for s in ("done", "failed", "unknown", "not run")
            if self.by_status(s)
        ]
        return (f"plan stopped ({self.blocked}). " if self.blocked else "plan stopped. ") + " | ".join(parts)


Progress = Callable[[str], None]


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
