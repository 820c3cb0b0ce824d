"""The on-call side of a drained switchover (`failover switchover --drain`):
the drain's options into a spec, the question at the deadline, Ctrl-C while
following (the busy-out is released: the request is cancelled and the
primary's agent releases it), and `--answer` from another terminal. The
decision itself is failover/drain.py; the agent's acts agent/drain.py."""

from __future__ import annotations

from collections.abc import Callable

import click

from failover import ops, zkstore
from failover.drain import DrainSpec, parse_duration
from failover.exits import EXIT_REFUSED, EXIT_USAGE, Fail
from failover.inventory import Cluster
from failover.records import Request


def spec_of(c: Cluster, max_wait: str, below: int, on_deadline: str | None, yes: bool, cancel: bool) -> DrainSpec:
    """The drain's options, checked (exit 2 naming the option, nothing done).
    At the deadline: --on-deadline, else --yes proceeds, --cancel cancels,
    otherwise the CLI asks."""
    if c.calls is None:
        raise Fail(
            EXIT_USAGE,
            f"--drain: cluster {c.name} has no `calls` in the inventory (active, busy_out, release commands; "
            "docs/inventory.md); nothing was done",
        )
    try:
        wait = parse_duration(max_wait)
    except ValueError as e:
        raise Fail(EXIT_USAGE, f"--max-wait {e}; nothing was done") from None
    choice = on_deadline or ("cancel" if cancel else "proceed" if yes else "ask")
    spec = DrainSpec(below, wait, choice)
    why = spec.check()
    if why:
        raise Fail(EXIT_USAGE, f"{why}; nothing was done")
    return spec


def plan_line(spec: DrainSpec, frm: str) -> str:
    then = {
        "ask": "ask you",
        "proceed": "hand over anyway, cutting the calls left",
        "cancel": f"release the busy-out and keep {frm} primary",
    }[spec.on_deadline]
    return (
        f"  0. drain: busy out {frm} (no new calls), wait until at most {spec.below} calls are active, "
        f"at most {spec.max_wait:g} s, then {then}; Ctrl-C releases the busy-out"
    )


def asker(s: zkstore.Store, who: str) -> Callable[[Request], bool]:
    """The follow hook: ask the deadline's question once, write the answer."""
    asked: set[str] = set()

    def hook(r: Request) -> bool:
        q = r.question
        if not q or r.answer or q in asked:
            return False
        asked.add(q)
        try:
            go = click.confirm(click.style(f"{q} Proceed?", fg="yellow", bold=True), default=False)
        except click.Abort:  # Ctrl-C or end of input at the question: cancel, never leave it busied out
            raise KeyboardInterrupt from None
        try:
            ops.answer(s, "proceed" if go else "cancel", who, r.id)
        except ops.Refused as e:
            click.echo(f"answer not recorded: {e}", err=True)
        return True

    return hook


def interrupted(s: zkstore.Store, who: str, rid: str | None = None) -> None:
    """Ctrl-C while following a drain: cancel it (the agent releases the busy-out)."""
    try:
        ops.cancel(s, who, "Ctrl-C while following the drain", req_id=rid)
    except ops.Refused as e:
        click.echo(f"Ctrl-C: nothing to cancel ({e})", err=True)
        return
    text = "Ctrl-C: the drained switchover is cancelled; the primary's agent releases the busy-out"
    click.echo(click.style(text, bold=True), err=True)


def answer(s: zkstore.Store, choice: str, who: str) -> str:
    try:
        ops.answer(s, choice, who)
    except ops.Refused as e:
        raise Fail(EXIT_REFUSED, f"refused: {e}") from None
    return f"answered {choice}: the primary's agent acts on it within a cycle (see `failover status`)"


__all__ = ["answer", "asker", "interrupted", "plan_line", "spec_of"]
