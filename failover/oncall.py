"""The on-call commands (status, switchover, failover, rejoin, pause, resume,
history): each says what will happen, what happened, and how the cluster
stands now. Exit codes: 0 done, 1 failed, 2 usage/configuration, 3 refused."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import click

from failover import explain as ex
from failover import status as st
from failover import switchover as sw
from failover import zkstore
from failover.exits import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Fail
from failover.inventory import Cluster
from failover.records import Request
from failover.rules import Observation, Policy, Role, Topology, failover_plan


@contextlib.contextmanager
def connected(c: Cluster, timeout: float = 5.0) -> Iterator[zkstore.Store]:
    """A short-lived ZooKeeper client; unreachable -> one clear sentence."""
    zk = zkstore.connect(c, timeout=max(c.timings.session_timeout, 4.0))
    try:
        zk.start(timeout=timeout)
    except Exception:
        with contextlib.suppress(Exception):
            zk.stop()
            zk.close()
        raise Fail(
            EXIT_FAILED,
            f"ZooKeeper unreachable for cluster {c.name} ({', '.join(c.zookeeper.hosts)}): "
            f"no connection within {timeout:g} s; nothing was done",
        ) from None
    try:
        yield zkstore.Store(zk, c.zookeeper.path, acl=zkstore.acl_for(c))
    except zkstore.ZkUnavailable as e:
        raise Fail(EXIT_FAILED, f"ZooKeeper stopped answering ({e}); check `failover status` before retrying") from None
    finally:
        with contextlib.suppress(Exception):
            zk.stop()
            zk.close()


def read_view(c: Cluster, s: zkstore.Store) -> dict:
    s.sync()
    rec = s.cluster()
    req = s.request()
    members = {i.name: s.member(i.name) for i in c.ipcs}
    return st.view(
        c, rec.data if rec else None, s.leader(), members, s.pause(), req.data if req else None, s.history(20)
    )


# ----- switchover / failover -------------------------------------------------------
def parse_at(text: str | None, now: datetime | None = None) -> float | None:
    """'+10m', '+30s', '+2h', 'HH:MM' (next occurrence, local time) or ISO 8601."""
    if not text:
        return None
    now = now or datetime.now()
    m = re.fullmatch(r"\+(\d+)([smh])", text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return (now + timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours"}[unit]: n})).timestamp()
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if m:
        t = now.replace(hour=int(m.group(1)), minute=int(m.group(2)), second=0, microsecond=0)
        if t <= now:
            t += timedelta(days=1)
        return t.timestamp()
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise click.BadParameter(f"{text!r}: use +10m, +30s, HH:MM or an ISO 8601 time") from None


def preflight_switchover(c: Cluster, v: dict, to: str | None, explicit: bool) -> tuple[str, str]:
    """(from, to) or Fail(3) with why."""
    primary = v["primary"]
    if primary is None or v["leader"] != primary:
        raise Fail(
            EXIT_REFUSED,
            f"refused: no primary holds the role now (primary {primary}, leader "
            f"{v['leader']}); for a dead primary use `failover failover --to IPC`",
        )
    cand = to or c.peer(primary).name
    if cand == primary:
        raise Fail(EXIT_REFUSED, f"refused: {cand} is already the primary (epoch {v['epoch']})")
    i = v["ipcs"][cand]
    problems = []
    if i["agent"] != "alive":
        problems.append(f"its agent is {i['agent']}")
    if i["role"] != "standby":
        problems.append(f"it is {i['role']} (rejoin it first)")
    elif not i["eligible"]:
        problems.append("it is not eligible (faults: see its sentence)")
    if i["line"] in ("alarm", "down") or i["board_down"]:
        # An unmonitored line (no line_check) or one that cannot be read never blocks.
        problems.append(f"its board is not up (line {i['line']}{', board down' if i['board_down'] else ''})")
    missing = [
        s
        for s in ("cti", "ivr", "kcxp-replica", "kcbp-replica", "driver")
        if s in i["services"] and i["services"][s]["state"] == "UNKNOWN"
    ]
    if missing:
        problems.append(f"state unknown for {', '.join(missing)} (not installed?)")
    if v["paused"] and not explicit:
        problems.append("the cluster is paused (give --to to switch over anyway)")
    if problems:
        raise Fail(EXIT_REFUSED, f"refused: cannot switch over to {cand}: " + "; ".join(problems))
    return primary, cand


def preflight_failover(c: Cluster, v: dict, to: str, confirm_dead: str | None, force: bool) -> None:
    """Fail(3) with why, unless a manual failover to `to` can be carried out:
    nobody holds the role, or (with `confirm_dead`) the old primary's agent
    does and will hand it over. The target's agent must be alive: it promotes."""
    old = c.peer(to).name
    leader = v["leader"]
    if leader == to and v["primary"] == to:
        raise Fail(EXIT_REFUSED, f"refused: {to} already holds the primary role (epoch {v['epoch']}); nothing to do")
    if leader == to:
        # Its agent holds `leader` while it tries to take the role from the
        # recorded primary (no proof yet): the request is that proof's way in.
        leader = None
    if leader is not None and not confirm_dead:
        o = v["ipcs"].get(leader) or {}
        seen = {
            False: f"its agent reports {leader} UNREACHABLE",
            True: f"its agent reports {leader} reachable",
        }.get(o.get("reachable"), f"its agent does not say whether {leader} is reachable")
        raise Fail(
            EXIT_REFUSED,
            f"refused: {leader}'s agent is alive and holds the role; use `failover switchover` for a live "
            f"primary. If {leader} itself is dead ({seen}; see `failover status --json`, "
            f"ipcs.{leader}.reachable, or its member record's obs): check that {leader} is powered off "
            f"(console, PDU), then run `failover failover --to {to} --confirm-dead {leader} --reason '...'`",
        )
    t = v["ipcs"][to]
    if t["agent"] != "alive":
        raise Fail(EXIT_REFUSED, f"refused: {to}'s agent is {t['agent']}: nobody would promote {to}")
    if not force and (t["role"] != "standby" or t["line"] in ("alarm", "down")):
        raise Fail(EXIT_REFUSED, f"refused: {to} is {t['role']} with line {t['line']}; --force to insist")
    if confirm_dead and leader is not None and leader != old:
        raise Fail(EXIT_REFUSED, f"refused: the role is held by {leader}, not {old}")


def confirm_dead_text(v: dict, old: str, to: str, operator: str) -> list[str]:
    """What the operator asserts with --confirm-dead, said plainly, and who
    will carry the request out."""
    o = v["ipcs"].get(old) or {}
    lines = [
        click.style(
            f"You assert that {old} is POWERED OFF, checked by a person (at its console, or its outlet "
            f"switched off at the PDU).",
            fg="yellow",
            bold=True,
        ),
        click.style(
            f"The agents still try to stop and verify {old} over SSH (or power it off with its fence device); "
            f"where they cannot, your word ({operator}'s) is the proof and {to} starts CTI and IVR on it: "
            f"if {old} is in fact running, TWO IPCs MAY ANSWER CALLS.",
            fg="yellow",
            bold=True,
        ),
    ]
    if v["leader"] == old:
        lines.append(f"{old}'s agent holds the role: it hands the role to {to}; {to}'s agent then promotes.")
        if o.get("agent") != "alive":
            lines.append(f"  ({old}'s agent record is {o.get('agent')}: the hand-over waits for that agent)")
    else:
        lines.append(f"No agent holds the role: {to}'s agent takes it and promotes.")
    if o.get("reachable") is True:
        running = [s.upper() for s in ("cti", "ivr") if (o.get("services") or {}).get(s, {}).get("state") == "RUNNING"]
        lines.append(
            click.style(
                f"WARNING: {old}'s agent last reported {old} reachable"
                + (f", {' and '.join(running)} running" if running else "")
                + f" ({o.get('agent_age_s')} s ago): check again that it is powered off.",
                fg="red",
                bold=True,
            )
        )
    return lines


def failover_args(c: Cluster, to: str, confirm_dead: str | None, reason: str) -> str:
    """`failover failover --to TO [--confirm-dead OLD --reason ...]`: the old
    primary, or a usage error before anything is read or done."""
    if to not in [i.name for i in c.ipcs]:
        raise Fail(EXIT_USAGE, f"no IPC named {to!r} in cluster {c.name}")
    old = c.peer(to).name
    if confirm_dead is None:
        return old
    if confirm_dead != old:
        raise Fail(
            EXIT_USAGE,
            f"--confirm-dead {confirm_dead!r}: it must name the other IPC of cluster {c.name}, "
            f"the one failing over to {to}: --confirm-dead {old}; nothing was done",
        )
    if not reason.strip():
        raise Fail(
            EXIT_USAGE,
            f"--confirm-dead needs --reason: who checked that {old} is powered off, and how "
            "(recorded in the history); nothing was done",
        )
    return old


def failover_preview(c: Cluster, v: dict, old: str, to: str, confirm_dead: str | None, who: str) -> list[str]:
    """What `failover failover` shows before it asks: the move, the plan with
    its gate, and (with --confirm-dead) what the operator asserts, last."""
    if confirm_dead:
        head = f"Manual failover of cluster {c.name}: {old} (confirmed powered off by {who}) -> {to}"
        gate = f"only once {old} is proven stopped: verified over SSH, its fence device, or your word"
    else:
        head = f"Manual failover of cluster {c.name}: {old} (dead) -> {to}; {to}'s agent fences {old} first."
        gate = ""
    lines = [head, *plan_text(c, v, old, to, switchover=False, gate=gate)]
    return lines + (confirm_dead_text(v, old, to, who) if confirm_dead else [])


def plan_text(c: Cluster, v: dict, frm: str, to: str, switchover: bool = True, gate: str = "") -> list[str]:
    """The plan the agents will run, with the exact commands (the same stages:
    failover/switchover.py). A switchover demotes the old primary to the
    standby layout (it stays eligible); a manual failover stops everything on
    it (rule 2). `gate`: what must hold before the promotion [default: the old
    primary fenced, its CTI and IVR verified stopped]."""
    topo = Topology.from_cluster(c)
    down = frozenset(v.get("board_down") or [])  # rule 1's layout holds until a rejoin
    stages = sw.plan(topo, frm, to, down) if switchover else failover_plan(_as_recorded(topo, frm, to, down), frm, to)
    return ex.plan_lines(c, stages, gate)


def _as_recorded(topo: Topology, frm: str, to: str, down: frozenset[str]) -> Observation:
    """The pair as the record says it should be: the services of each layout running."""
    ipcs = {
        name: sw.in_layout(topo, name, role, name in down) for name, role in ((frm, Role.PRIMARY), (to, Role.STANDBY))
    }
    return Observation(topo, ipcs, frm, 0, Policy())


def follow(
    s: zkstore.Store,
    req_id: str,
    timeout: float,
    echo: Any = click.echo,
    on_request: Callable[[Request], bool] | None = None,
) -> dict:
    """Print the request's progress as the agents write it, until a final
    state. `on_request`: shown each request as read (a drain's question);
    True when it waited for the operator, which restarts the timeout."""
    seen = 0
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while time.monotonic() < deadline:
        cur = s.request()
        if cur is None or cur.data.id != req_id:
            return {"state": "failed", "why": "the request disappeared (cancelled by someone else?)"}
        prog = cur.data.progress
        for line in prog[seen:]:
            echo(f"  [{time.monotonic() - started:5.1f} s] {line}")
        seen = len(prog)
        if cur.data.state in zkstore.FINAL_STATES:
            return dict(cur.data.result or {"state": cur.data.state, "why": ""})
        if on_request is not None and on_request(cur.data):
            deadline = time.monotonic() + timeout
        time.sleep(0.1)
    cur = s.request()
    if cur is not None and cur.data.id == req_id and cur.data.state == "pending":
        with contextlib.suppress(zkstore.Conflict):
            s.delete_request(cur.version)
        return {
            "state": "failed",
            "why": f"no agent picked the request up within {timeout:g} s; it was withdrawn (are the agents running?)",
        }
    return {
        "state": "failed",
        "why": f"no final answer within {timeout:g} s (request state {cur.data.state if cur else 'gone'})",
    }


def finish(c: Cluster, s: zkstore.Store, result: dict, what: str) -> int:
    state = result.get("state", "failed")
    v = read_view(c, s)
    stands = f"cluster now: primary {v['primary'] or 'NONE'} (epoch {v['epoch']}), " + ", ".join(
        f"{n} {i['role']}" for n, i in v["ipcs"].items()
    )
    if state == "done":
        click.echo(click.style(f"{what} done: {result.get('why')}", fg="green", bold=True))
        click.echo(stands)
        return EXIT_OK
    if state == "cancelled":
        click.echo(
            click.style(
                f"{what} CANCELLED: {result.get('why')}; the agents keep the role where it is now or hand it back",
                fg="yellow",
                bold=True,
            ),
            err=True,
        )
        click.echo(stands, err=True)
        return EXIT_FAILED
    if state == "refused":
        click.echo(click.style(f"{what} refused: {result.get('why')}", fg="yellow", bold=True), err=True)
        click.echo(stands, err=True)
        return EXIT_REFUSED
    click.echo(click.style(f"{what} FAILED: {result.get('why')}", fg="red", bold=True), err=True)
    click.echo(stands, err=True)
    return EXIT_FAILED


def scheduled_text(r: dict) -> str:
    at = f" at {st._when(r.get('at'))}" if r.get("at") else ""
    return (
        f"{r.get('operator')} is switching over to {r.get('to')}{at} since {st._when(r.get('requested_at'))} "
        f"({r.get('reason') or 'no reason given'}), state {r.get('state')}"
    )


def cancelled_text(r: Request, operator: str) -> str:
    """What `switchover --cancel` did, and what happens next."""
    what = f"the {r.kind or 'switchover'} to {r.to} requested by {r.operator}"
    if r.state == "running":
        return (
            f"cancelled by {operator}: {what}, which was running; the agents keep the role where it is now "
            "or hand it back (see `failover status`)"
        )
    return f"cancelled by {operator}: {what} (it had not started: nothing changes)"


def die(e: Fail) -> None:
    click.echo(str(e), err=True)
    sys.exit(e.code)
