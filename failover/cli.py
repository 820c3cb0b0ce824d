"""The `failover` command. Exit codes (consistent across commands):
0 done, 1 failed, 2 usage or configuration error, 3 refused."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from failover import __version__
from failover import inventory as inv_mod
from failover.exits import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from failover.exits import Fail as Fail  # re-exported: `from failover.cli import Fail` keeps working

if TYPE_CHECKING:
    from failover.records import Request

DEFAULT_INVENTORY = "/etc/failover/inventory.yaml"


def default_inventory() -> str:
    return os.environ.get("FAILOVER_INVENTORY", DEFAULT_INVENTORY)


def load_inventory(path: str) -> inv_mod.Inventory:
    """Load or exit 2 with every problem listed (never a traceback)."""
    try:
        return inv_mod.load(path)
    except inv_mod.InventoryError as e:
        for line in e.errors:
            click.echo(line, err=True)
        click.echo(f"{path}: {len(e.errors)} error(s); nothing was done", err=True)
        sys.exit(EXIT_USAGE)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


inventory_option = click.option(
    "--inventory",
    "-i",
    "inventory_path",
    default=default_inventory,
    show_default="$FAILOVER_INVENTORY or " + DEFAULT_INVENTORY,
    type=click.Path(dir_okay=False),
    help="The inventory file.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="failover")
def main() -> None:
    """Failover orchestrator for a call center's pair of IPCs (primary / standby).

    Exit codes: 0 done, 1 failed, 2 usage or configuration error, 3 refused.
    """


# ----- inventory ----------------------------------------------------------------
@main.group("inventory")
def inventory_group() -> None:
    """Validate and inspect inventory files."""


@inventory_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
def inventory_check(file: str, as_json: bool) -> None:
    """Validate FILE: print a summary, or every error with file:line:column (exit 2)."""
    inv, problems = inv_mod.check(file)
    if as_json:
        emit_json({"file": file, "ok": not problems, "errors": [p.__dict__ for p in problems]})
        sys.exit(EXIT_USAGE if problems else EXIT_OK)
    if problems:
        for p in problems:
            click.echo(str(p), err=True)
        click.echo(f"{file}: {len(problems)} error(s)", err=True)
        sys.exit(EXIT_USAGE)
    assert inv is not None
    click.echo(inv_mod.summary(inv, file))


# ----- explain ----------------------------------------------------------------
@main.command("explain")
@inventory_option
@click.option("--cluster", "-c", default=None, help="Cluster name (when the inventory has several).")
@click.option(
    "--fault",
    "-f",
    "faults",
    multiple=True,
    metavar="KIND@IPC",
    help="A fault: cti, ivr, driver, line, kcxp, kcbp, kcxp-replica, kcbp-replica, fax or host, at an IPC. Repeatable.",
)
@click.option("--paused", is_flag=True, help="As if automation were paused.")
@click.option("--standby-down", is_flag=True, help="As if the standby were ineligible.")
@click.option("--json", "as_json", is_flag=True)
def explain_cmd(
    inventory_path: str,
    cluster: str | None,
    faults: tuple[str, ...],
    paused: bool,
    standby_down: bool,
    as_json: bool,
) -> None:
    """What the plan's rules would decide for the given faults, and the exact
    ordered commands per host. Connects to nothing, changes nothing."""
    from failover import explain as ex

    inv = load_inventory(inventory_path)
    try:
        c = inv.cluster(cluster)
        d = ex.explain(c, faults, paused=paused, standby_down=standby_down)
    except (ex.FaultSpecError, inv_mod.InventoryError) as e:
        click.echo(f"explain: {e}", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        emit_json(ex.as_dict(c, d, faults))
    else:
        click.echo(ex.render(c, d, faults))


# ----- agent --------------------------------------------------------------------
@main.command("agent")
@inventory_option
@click.option("--ipc", required=True, help="The IPC this agent manages.")
@click.option(
    "--state-dir",
    default="/var/lib/failover",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the agent keeps its ZooKeeper session (for reattach after a restart).",
)
@click.option("--log-level", default="WARNING", show_default=True)
def agent_cmd(inventory_path: str, ipc: str, state_dir: str, log_level: str) -> None:
    """Run the agent for one IPC (one per IPC). Prints one JSON line per decision
    (what it decided and why). Stopping it does not touch the IPC's services."""
    import logging

    from failover import agent as agent_mod

    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    inv = load_inventory(inventory_path)
    try:
        cluster, _ = inv.find_ipc(ipc)
    except inv_mod.InventoryError as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(agent_mod.main_loop(cluster, ipc, Path(state_dir), inv.clusters))


# ----- on-call commands ------------------------------------------------------------
cluster_option = click.option(
    "--cluster", "-c", "cluster_name", default=None, help="Cluster name (required when the inventory has several)."
)
operator_option = click.option("--operator", default=None, help="Who is doing this [default: the OS user].")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _cluster(inventory_path: str, name: str | None) -> inv_mod.Cluster:
    inv = load_inventory(inventory_path)
    try:
        return inv.cluster(name)
    except inv_mod.InventoryError as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_USAGE)


@main.command("status")
@inventory_option
@click.option("--cluster", "-c", "cluster_name", default=None, help="Only this cluster [default: all].")
@click.option("--watch", "-w", is_flag=True, help="Refresh every second until Ctrl-C.")
@json_option
def status_cmd(inventory_path: str, cluster_name: str | None, watch: bool, as_json: bool) -> None:
    """Roles, epoch, every service, line, eligibility, capacity, each agent's last
    sentence, pause, pending switchover and the last role change."""
    from failover import oncall
    from failover import status as st

    inv = load_inventory(inventory_path)
    try:
        clusters = [inv.cluster(cluster_name)] if cluster_name else inv.clusters
    except inv_mod.InventoryError as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_USAGE)
    while True:
        views, failed = [], False
        for c in clusters:
            try:
                with oncall.connected(c) as s:
                    views.append(oncall.read_view(c, s))
            except oncall.Fail as e:
                failed = True
                views.append({"cluster": c.name, "error": str(e)})
        if as_json:
            emit_json(views if len(views) > 1 or not cluster_name else views[0])
        else:
            if watch:
                click.clear()
            for v in views:
                click.echo(v["error"] if "error" in v else st.render(v))
                click.echo("")
        if not watch:
            sys.exit(EXIT_FAILED if failed else EXIT_OK)
        time.sleep(1)


@main.command("switchover")
@inventory_option
@cluster_option
@click.option("--to", "to", default=None, help="Candidate IPC [default: the standby].")
@click.option("--at", "at", default=None, help="Schedule: +10m, +30s, HH:MM or ISO 8601.")
@click.option("--reason", default="", help="Why (recorded in the history).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--cancel",
    is_flag=True,
    help="Cancel the pending, scheduled or running switchover (or manual failover). With --drain: "
    "at the deadline, release the busy-out and keep the primary.",
)
@click.option("--drain", is_flag=True, help="Busy out the primary and let its calls finish before the hand-over.")
@click.option("--max-wait", default="15m", show_default=True, help="The drain's deadline: 15m, 90s, 1h.")
@click.option("--below", default=0, show_default=True, help="Hand over once at most N calls are active.")
@click.option(
    "--on-deadline",
    type=click.Choice(["ask", "proceed", "cancel"]),
    default=None,
    help="At the drain's deadline [default: ask; proceed with --yes; cancel with --cancel].",
)
@click.option(
    "--answer",
    "answer",
    type=click.Choice(["proceed", "cancel"]),
    default=None,
    help="Answer a running drain's deadline question.",
)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the result.")
@operator_option
def switchover_cmd(
    inventory_path: str,
    cluster_name: str | None,
    to: str | None,
    at: str | None,
    reason: str,
    yes: bool,
    cancel: bool,
    drain: bool,
    max_wait: str,
    below: int,
    on_deadline: str | None,
    answer: str | None,
    timeout: float,
    operator: str | None,
) -> None:
    """Planned switchover: the primary stops CTI and IVR and hands the role to
    the standby, which promotes. Shows the plan, asks, then follows it live.
    --drain: the primary takes no new calls and hands over once its calls
    have finished (or at --max-wait)."""
    from failover import oncall, ops
    from failover import oncall_drain as od

    c = _cluster(inventory_path, cluster_name)
    who = ops.operator_name(operator)
    try:
        spec = od.spec_of(c, max_wait, below, on_deadline, yes, cancel) if drain else None
        with oncall.connected(c) as s:
            if answer:
                click.echo(od.answer(s, answer, who))
                sys.exit(EXIT_OK)
            if cancel and not drain:
                _cancel_request(s, who, reason)
            if to is not None and to not in [i.name for i in c.ipcs]:
                raise oncall.Fail(EXIT_USAGE, f"no IPC named {to!r} in cluster {c.name}")
            when = oncall.parse_at(at)
            v = oncall.read_view(c, s)
            if v["switchover"]:
                raise oncall.Fail(EXIT_REFUSED, f"refused: {oncall.scheduled_text(v['switchover'])}")
            frm, cand = oncall.preflight_switchover(c, v, to, explicit=to is not None)
            _show_switchover_plan(c, v, frm, cand, when, spec)
            paused_ok = to is not None  # an explicit target may switch over while paused
            d = spec.record() if spec else None
            req = _confirm_and_submit(
                s,
                yes,
                lambda: ops.new_request("switchover", cand, who, reason, when, paused_ok, frm=frm, drain=d),
            )
            if when and when > time.time() + 1:
                click.echo(
                    f"scheduled: {frm} -> {cand} at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(when))}"
                    " (see `failover status`; cancel with `failover switchover --cancel`)"
                )
                sys.exit(EXIT_OK)
            click.echo(f"requested by {who}; following it:")
            result = _follow_switchover(s, req.id, timeout, spec, who)
            sys.exit(oncall.finish(c, s, result, "switchover"))
    except oncall.Fail as e:
        oncall.die(e)


def _show_switchover_plan(c: Any, v: dict, frm: str, cand: str, when: float | None, spec: Any) -> None:
    from failover import oncall
    from failover import oncall_drain as od

    click.echo(
        f"Switchover of cluster {c.name}: {frm} -> {cand} (epoch {v['epoch']} -> {v['epoch'] + 1})"
        + (f" at {time.strftime('%H:%M:%S', time.localtime(when))}" if when else "")
    )
    click.echo("Plan:")
    if spec is not None:
        click.echo(od.plan_line(spec, frm))
    for line in oncall.plan_text(c, v, frm, cand):
        click.echo(line)


def _cancel_request(s: Any, who: str, reason: str) -> None:
    from failover import oncall, ops

    try:
        r = ops.cancel(s, who, reason)
    except ops.Refused as e:
        raise oncall.Fail(EXIT_REFUSED, f"refused: {e}") from None
    click.echo(oncall.cancelled_text(r, who))
    sys.exit(EXIT_OK)


def _follow_switchover(s: Any, rid: str, timeout: float, spec: Any, who: str) -> dict:
    """Follow the request; a drain's deadline question is asked here, and
    Ctrl-C during a drain cancels it (the busy-out is released)."""
    from failover import oncall
    from failover import oncall_drain as od

    if spec is None:
        return oncall.follow(s, rid, timeout)
    try:
        return oncall.follow(s, rid, spec.max_wait + timeout, on_request=od.asker(s, who))
    except (KeyboardInterrupt, click.Abort):
        od.interrupted(s, who, rid)
        return {"state": "cancelled", "why": "Ctrl-C while draining"}


def _confirm_and_submit(s: Any, yes: bool, make: Callable[[], Request], question: str = "Proceed?") -> Request:
    """Ask (unless --yes), then file the request the agents act on; refused if
    another is pending. The request is made only after the answer, so its
    timestamp is not the operator's reading time."""
    from failover import oncall, ops

    if not yes and not click.confirm(question, default=False):
        raise oncall.Fail(EXIT_REFUSED, "not confirmed: nothing was done")
    req = make()
    other = ops.submit(s, req)
    if other is not None:
        raise oncall.Fail(EXIT_REFUSED, f"refused: {oncall.scheduled_text(other.to_json())}")
    return req


@main.command("failover")
@inventory_option
@cluster_option
@click.option("--to", "to", required=True, help="The IPC to make primary.")
@click.option(
    "--confirm-dead",
    "confirm_dead",
    default=None,
    metavar="IPC",
    help="The other IPC, verified powered off by a person (console, PDU): your word is the proof that its "
    "CTI/IVR are not running. Allowed while its agent still holds the role; needs --reason.",
)
@click.option("--force", is_flag=True, help="Even if the target reports faults (fencing is never skipped).")
@click.option("--reason", default="", help="Why (recorded in the history; required with --confirm-dead).")
@click.option("--yes", "-y", is_flag=True)
@click.option("--timeout", default=120.0, show_default=True)
@operator_option
def failover_cmd(
    inventory_path: str,
    cluster_name: str | None,
    to: str,
    confirm_dead: str | None,
    force: bool,
    reason: str,
    yes: bool,
    timeout: float,
    operator: str | None,
) -> None:
    """Manual failover for a DEAD primary. Without --confirm-dead: only when its
    agent is gone too; the target's agent fences the old primary (over SSH) and
    promotes. With --confirm-dead OLD: OLD was verified powered off by a person;
    its agent, if alive, hands the role over and the target promotes on that word."""
    from failover import oncall, ops

    c = _cluster(inventory_path, cluster_name)
    who = ops.operator_name(operator)
    try:
        old = oncall.failover_args(c, to, confirm_dead, reason)
        with oncall.connected(c) as s:
            v = oncall.read_view(c, s)
            oncall.preflight_failover(c, v, to, confirm_dead, force)
            for line in oncall.failover_preview(c, v, old, to, confirm_dead, who):
                click.echo(line)
            question = (
                f"Do you confirm that {old} is powered off, and make {to} primary?" if confirm_dead else "Proceed?"
            )
            req = _confirm_and_submit(
                s,
                yes,
                lambda: ops.new_request("failover", to, who, reason, force=force, frm=old, confirm_dead=confirm_dead),
                question,
            )
            result = oncall.follow(s, req.id, timeout)
            sys.exit(oncall.finish(c, s, result, "failover"))
    except oncall.Fail as e:
        oncall.die(e)


@main.command("rejoin")
@inventory_option
@cluster_option
@click.argument("ipc")
@click.option("--reason", default="", help="Why (recorded in the history).")
@click.option("--timeout", default=60.0, show_default=True)
@operator_option
def rejoin_cmd(
    inventory_path: str, cluster_name: str | None, ipc: str, reason: str, timeout: float, operator: str | None
) -> None:
    """A repaired IPC rejoins as standby: its agent converges it to the standby
    layout and it becomes eligible again."""
    from failover import oncall, ops

    c = _cluster(inventory_path, cluster_name)
    try:
        with oncall.connected(c) as s:
            try:
                ops.rejoin(s, ipc, ops.operator_name(operator), reason)
            except ops.Refused as e:
                raise oncall.Fail(EXIT_REFUSED, f"refused: {e}") from None
            click.echo(f"{ipc} marked standby; waiting for its agent to converge it …")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                m = ops.rejoined(s, ipc)
                if m is not None:
                    click.echo(click.style(f"rejoin done: {ipc} is an eligible standby: {m.sentence}", fg="green"))
                    sys.exit(EXIT_OK)
                time.sleep(0.2)
            m = s.member(ipc)
            raise oncall.Fail(
                EXIT_FAILED,
                f"rejoin FAILED: {ipc} is marked standby but not eligible after "
                f"{timeout:g} s: " + ((m.sentence if m else "") or "its agent is not reporting"),
            )
    except oncall.Fail as e:
        oncall.die(e)


@main.command("pause")
@inventory_option
@cluster_option
@click.option("--reason", default="", help="Why (shown by status, recorded in the history).")
@operator_option
def pause_cmd(inventory_path: str, cluster_name: str | None, reason: str, operator: str | None) -> None:
    """Stop every automatic action (agents keep monitoring and report PAUSED)."""
    from failover import oncall, ops

    c = _cluster(inventory_path, cluster_name)
    try:
        with oncall.connected(c) as s:
            ops.pause(s, ops.operator_name(operator), reason)
            click.echo(f"cluster {c.name} paused: no automatic action until `failover resume`")
    except oncall.Fail as e:
        oncall.die(e)


@main.command("resume")
@inventory_option
@cluster_option
@click.option("--reason", default="")
@operator_option
def resume_cmd(inventory_path: str, cluster_name: str | None, reason: str, operator: str | None) -> None:
    """Resume automatic actions."""
    from failover import oncall, ops

    c = _cluster(inventory_path, cluster_name)
    try:
        with oncall.connected(c) as s:
            was = ops.resume(s, ops.operator_name(operator), reason)
            click.echo(f"cluster {c.name} resumed" if was else f"cluster {c.name} was not paused")
    except oncall.Fail as e:
        oncall.die(e)


@main.command("history")
@inventory_option
@cluster_option
@click.option("--limit", "-n", default=20, show_default=True)
@json_option
def history_cmd(inventory_path: str, cluster_name: str | None, limit: int, as_json: bool) -> None:
    """Role changes, switchovers, pauses, rejoins and drills: from, to, why, who,
    epoch, duration, outcome."""
    from failover import oncall
    from failover import status as st

    c = _cluster(inventory_path, cluster_name)
    try:
        with oncall.connected(c) as s:
            entries = s.history(limit)
    except oncall.Fail as e:
        oncall.die(e)
    if as_json:
        emit_json([e.to_json() for e in entries])
        return
    for e in entries:
        dur = f" {e.get('duration_s'):.1f} s" if e.get("duration_s") is not None else ""
        move = f"{e.frm or '-'} -> {e.to or '-'}" if e.to or e.frm else ""
        epoch = f" epoch {e.epoch}" if e.epoch is not None else ""
        click.echo(
            f"{st._when(e.when)}  {e.kind:<20} {move:<18}{epoch:<10} {e.outcome:<9}{dur:>8}  by {e.who}: {e.why}"
        )
        if e.proof:  # a takeover's proof that the old primary's CTI/IVR were not running
            click.echo(f"{'':<21}proof {st.proof_text(e.proof)}")


@main.command("check")
@click.option("--url", default=None, help="An agent's health endpoint, e.g. http://127.0.0.1:8008 (reads /cluster).")
@inventory_option
@cluster_option
@click.option("--warn", type=int, default=None, help="WARNING when IVR capacity is below this.")
@click.option("--crit", type=int, default=None, help="CRITICAL when IVR capacity is below this.")
@click.option(
    "--token", envvar="FAILOVER_HTTP_TOKEN", default=None, help="Bearer token for /cluster [env FAILOVER_HTTP_TOKEN]."
)
@click.option("--timeout", default=5.0, show_default=True)
def check_cmd(
    url: str | None,
    inventory_path: str,
    cluster_name: str | None,
    warn: int | None,
    crit: int | None,
    token: str | None,
    timeout: float,
) -> None:
    """Nagios/Icinga plugin: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; one line
    with perfdata. From an agent's endpoint (--url) or straight from ZooKeeper."""
    from failover import check as chk

    if url:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(url.rstrip("/") + "/cluster")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                view = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as e:
            code, line = chk.unknown(f"cannot read {url}/cluster: {e}")
            click.echo(line)
            sys.exit(code)
        if not (view.get("zookeeper") or {}).get("connected", True):
            view["note"] = "reporting agent has no ZooKeeper connection"
    else:
        from failover import oncall

        try:
            inv = inv_mod.load(inventory_path)
            c = inv.cluster(cluster_name)
        except inv_mod.InventoryError as e:
            code, line = chk.unknown(str(e).splitlines()[0])
            click.echo(line)
            sys.exit(code)
        try:
            with oncall.connected(c, timeout=timeout) as s:
                view = oncall.read_view(c, s)
        except oncall.Fail as e:
            code, line = chk.unknown(str(e))
            click.echo(line)
            sys.exit(code)
    code, line = chk.verdict(view, warn, crit)
    click.echo(line)
    sys.exit(code)


# ----- drills ---------------------------------------------------------------------
@main.group("drill")
def drill_group() -> None:
    """Weekend drills: runbooks with fault injection, checks, audits, reports."""


def _drill_inputs(
    runbook_file: str, inventory_path: str, cluster_name: str | None, window: str | None
) -> tuple[inv_mod.Cluster, Any]:
    """The cluster and the runbook, validated completely, or a usage error
    (exit 2) before anything runs."""
    from failover import runbook as rb_mod
    from failover.drill_window import Window

    if window is not None:
        try:
            Window.parse(window)
        except ValueError as e:
            click.echo(f"--window: {e}; nothing was run", err=True)
            sys.exit(EXIT_USAGE)
    inv = load_inventory(inventory_path)
    try:
        rb0 = rb_mod.load(runbook_file)
        c = inv.cluster(cluster_name or rb0.cluster)
        return c, rb_mod.load(runbook_file, c)
    except rb_mod.RunbookError as e:
        for p in e.problems:
            click.echo(str(p), err=True)
        click.echo(f"{runbook_file}: {len(e.problems)} error(s); nothing was run", err=True)
        sys.exit(EXIT_USAGE)
    except inv_mod.InventoryError as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_USAGE)


@drill_group.command("run")
@click.argument("runbook_file", type=click.Path(dir_okay=False))
@inventory_option
@cluster_option
@click.option("--dry-run", is_flag=True, help="Print every step and its commands; execute nothing.")
@click.option("--yes", "-y", is_flag=True, help="Answer confirmations; allow a cluster not marked for drills.")
@click.option("--from", "from_step", default=None, help="Resume from this step (number or name).")
@click.option("--window", default=None, help="Declare the drill window, HH:MM-HH:MM (else the runbook's).")
@click.option("--seed", type=int, default=None, help="Recorded in the report (runbooks are deterministic).")
@click.option("--reports", default="drill-reports", show_default=True, type=click.Path(file_okay=False))
@operator_option
def drill_run(
    runbook_file: str,
    inventory_path: str,
    cluster_name: str | None,
    dry_run: bool,
    yes: bool,
    from_step: str | None,
    window: str | None,
    seed: int | None,
    reports: str,
    operator: str | None,
) -> None:
    """Run a drill runbook against the cluster (validated completely first)."""
    from failover import drills

    c, rb = _drill_inputs(runbook_file, inventory_path, cluster_name, window)
    try:
        d = drills.Drill(
            c,
            rb,
            runbook_file,
            dry_run=dry_run,
            yes=yes,
            from_step=from_step,
            window=window,
            operator=operator,
            out_dir=Path(reports),
            echo=click.echo,
        )
        click.echo(
            f"drill {rb.name} on cluster {c.name}"
            + (" (dry run: nothing is executed)" if dry_run else "")
            + (f", seed {seed}" if seed is not None else "")
        )
        report = d.run()
    except drills.DrillRefused as e:
        click.echo(f"drill refused: {e}", err=True)
        sys.exit(EXIT_REFUSED)
    except Exception as e:  # one sentence, no traceback, for the person at the console
        click.echo(f"drill failed: {type(e).__name__}: {e}", err=True)
        sys.exit(EXIT_FAILED)
    if report.get("files"):
        click.echo(f"report: {report['files']['md']} (also .json, .html, .svg)")
    click.echo(f"drill {rb.name}: {report['outcome'].upper()}")
    sys.exit(EXIT_FAILED if report["outcome"] == "failed" else EXIT_OK)


# ----- hosts --------------------------------------------------------------------
@main.group("hosts")
def hosts_group() -> None:
    """SSH access to the IPCs: trust a host key, check reachability."""


@hosts_group.command("trust")
@inventory_option
@click.argument("ipc")
@click.option("--yes", is_flag=True, help="Trust without asking (only after checking the fingerprint out of band).")
def hosts_trust(inventory_path: str, ipc: str, yes: bool) -> None:
    """First contact with IPC's SSH host key: show its fingerprint and add it to
    the inventory's known_hosts once confirmed. A changed key is refused."""
    from failover import executor as ex

    inv = load_inventory(inventory_path)
    try:
        _, i = inv.find_ipc(ipc)
    except inv_mod.InventoryError as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_USAGE)

    def accept(text: str) -> bool:
        click.echo(f"{ipc} presents: {text}")
        return yes or click.confirm("Is this the right fingerprint (checked on the IPC's console)?", default=False)

    try:
        click.echo(ex.trust_host(i, accept))
    except ex.HostKeyChanged as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_REFUSED)
    except ex.ExecError as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_FAILED)


@hosts_group.command("check")
@inventory_option
@click.option("--cluster", "-c", default=None)
@click.option("--json", "as_json", is_flag=True)
def hosts_check(inventory_path: str, cluster: str | None, as_json: bool) -> None:
    """Connect to each IPC (strict host keys) and show every service's state
    from one batched status call, with the probes."""
    from failover import executor as ex

    inv = load_inventory(inventory_path)
    clusters = [inv.cluster(cluster)] if cluster else inv.clusters
    report: dict = {}
    failed = False
    for c in clusters:
        with ex.Executor(c, ex.RetryPolicy(attempts=2, total_seconds=5)) as e:
            for i in c.ipcs:
                try:
                    st = e.observe(i.name)
                    report[i.name] = {
                        "cluster": c.name,
                        "reachable": True,
                        "line": st.line,
                        "seconds": round(st.duration, 3),
                        "services": {k: {"state": v.value, "probe": st.healthy.get(k)} for k, v in st.states.items()},
                    }
                except ex.ExecError as err:
                    failed = True
                    report[i.name] = {"cluster": c.name, "reachable": False, "error": str(err)}
    if as_json:
        emit_json(report)
    else:
        for name, r in report.items():
            if not r["reachable"]:
                click.echo(f"{name}: UNREACHABLE: {r['error']}")
                continue
            click.echo(f"{name} (cluster {r['cluster']}): line {r['line']}, status in {r['seconds']} s")
            for svc, v in r["services"].items():
                probe = {True: "probe ok", False: "PROBE FAILING", None: ""}[v["probe"]]
                click.echo(f"  {svc:<13} {v['state']:<14} {probe}")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


# ----- lab ----------------------------------------------------------------------
def _lab_root(d: str | None) -> Path:
    from failover.lab.lab import DEFAULT_ROOT

    return Path(d) if d else DEFAULT_ROOT


lab_dir_option = click.option(
    "--dir",
    "lab_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Lab directory [default: $FAILOVER_LAB_DIR or /tmp/failover-lab].",
)


@main.group("lab")
def lab_group() -> None:
    """The built-in lab: real ZooKeeper + simulated IPCs behind real sshd."""


@lab_group.command("up")
@lab_dir_option
@click.option("--zk-nodes", type=click.Choice(["1", "3"]), default="3", show_default=True)
@click.option("--clusters", type=click.IntRange(1, 8), default=1, show_default=True)
@click.option("--netns", is_flag=True, help="Each IPC in its own network namespace (root).")
@click.option("--empty", is_flag=True, help="Start no services (default: the plan's normal layout).")
@click.option(
    "--platform",
    type=click.Choice(["lab", "systemd", "windows"]),
    default="lab",
    show_default=True,
    help="What the IPCs are behind their sshd: the simulator's own verbs, a systemd host, "
    "or Windows (cmd.exe + sc.exe, Win32-OpenSSH).",
)
@click.option(
    "--agents-apart",
    is_flag=True,
    help="Each IPC's agent on a host of its own (network namespace; implies --netns), "
    "with the default HTTP bind and port: the plan's deployment.",
)
@click.option("--no-fence", is_flag=True, help="No fence device in the inventory (default: the lab's power switch).")
def lab_up(
    lab_dir: str | None,
    zk_nodes: str,
    clusters: int,
    netns: bool,
    empty: bool,
    platform: str,
    agents_apart: bool,
    no_fence: bool,
) -> None:
    """Start the lab and write a ready inventory."""
    from failover.lab.lab import Lab, LabError

    try:
        lab = Lab(
            root=_lab_root(lab_dir),
            zk_count=int(zk_nodes),
            clusters=clusters,
            netns=netns,
            platform=platform,  # type: ignore[arg-type]  # one of click's choices
            agents_apart=agents_apart,
            fence=not no_fence,
        )
    except LabError as e:
        click.echo(f"lab up refused: {e}", err=True)
        sys.exit(EXIT_REFUSED)
    try:
        lab.up(layout="empty" if empty else "normal")
    except LabError as e:
        click.echo(f"lab up refused: {e}", err=True)
        sys.exit(EXIT_REFUSED)
    except Exception as e:
        click.echo(f"lab up failed: {e}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(
        f"lab {lab.labid} up in {lab.up_seconds:.2f} s: {len(lab.zk)} ZooKeeper node(s), "
        f"{len(lab.ipcs)} {lab.platform} IPCs in {clusters} cluster(s)"
    )
    if lab.agents_apart:
        for i in lab.ipcs:
            click.echo(
                f"  agent host for {i.name}: {lab.agent_address(i.name)} (netns {lab.agent_netns(i.name)}): "
                f"ip netns exec {lab.agent_netns(i.name)} failover agent -i {lab.inventory_path} --ipc {i.name}"
            )
    click.echo(f"inventory: {lab.inventory_path}")
    click.echo(f"  export FAILOVER_INVENTORY={lab.inventory_path}")
    click.echo("  failover lab status | failover lab fault ipc-a kill cti | failover lab down")


@lab_group.command("status")
@lab_dir_option
@click.option("--json", "as_json", is_flag=True)
def lab_status(lab_dir: str | None, as_json: bool) -> None:
    """What runs in the lab: ZooKeeper nodes, each IPC's sshd, line and services."""
    from failover.lab.lab import Lab, LabError

    try:
        st = Lab.load(_lab_root(lab_dir)).status()
    except LabError as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_FAILED)
    if as_json:
        emit_json(st)
        return
    click.echo(f"lab {st['lab']} in {st['root']}  (inventory {st['inventory']})")
    where = "agents on hosts of their own" if st.get("agents_apart") else "agents beside their IPCs"
    click.echo(f"platform {st.get('platform', 'lab')}, {where}")
    serving = sum(1 for z in st["zookeeper"] if z["mode"])
    click.echo(f"ZooKeeper: {serving}/{len(st['zookeeper'])} nodes serving")
    for z in st["zookeeper"]:
        click.echo(f"  zk{z['id']}  {z['address']:<22} {z['mode'] or 'DOWN'}")
    for name, i in st["ipcs"].items():
        click.echo(
            f"IPC {name} (cluster {i['cluster']}, {i['address']}:{i['ssh_port']}"
            f"{', netns ' + i['netns'] if i['netns'] else ''}): sshd {i['sshd']}, "
            f"simulator {i['simulator']}, line {i['line']}, agent at {i['agent_url']}"
        )
        for svc, state in i["services"].items():
            proc = i["processes"].get(svc)
            extra = " (process stopped: hung)" if proc == "T" else ""
            click.echo(f"  {svc:<13} {state}{extra}")


@lab_group.command("fault")
@lab_dir_option
@click.argument("ipc")
@click.argument("kind")
@click.argument("service", required=False)
@click.option("--seconds", type=float, default=5.0, show_default=True, help="For slow-start / slow-stop.")
@click.option(
    "--autostart", default=None, metavar="S1,S2", help="power-on: services started at boot besides the driver."
)
def lab_fault(
    lab_dir: str | None, ipc: str, kind: str, service: str | None, seconds: float, autostart: str | None
) -> None:
    """Inject a fault into a simulated IPC.

    \b
    Service faults (need SERVICE): kill, hang, unhang, fail-start, slow-start,
      slow-stop, stop-fail, clear
    IPC faults: line-alarm, line-clear, driver-crash
    Host faults: sshd-down, sshd-up, unreachable, reachable, zk-cut, zk-heal,
      isolate-site, heal-site (--netns labs), agent-isolate, agent-heal
      (--agents-apart labs), restore
    Power (the fence device's switch): power-off, power-on [--autostart cti,ivr],
      fence-broken, fence-fixed
    """
    from failover.lab.lab import Lab, LabError

    try:
        click.echo(Lab.load(_lab_root(lab_dir)).fault(ipc, kind, autostart or service, seconds))
    except LabError as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_USAGE)


@lab_group.command("calls")
@lab_dir_option
@click.argument("ipc")
@click.option("--count", type=int, default=None, help="Calls to put in progress now.")
@click.option("--rate", type=float, default=None, help="New calls a second from now on (0: none).")
@click.option("--min", "min_s", type=float, default=None, help="Shortest call, seconds.")
@click.option("--max", "max_s", type=float, default=None, help="Longest call, seconds.")
@click.option("--agent-share", type=float, default=None, help="Share of calls that go to an agent (0..1).")
def lab_calls(
    lab_dir: str | None,
    ipc: str,
    count: int | None,
    rate: float | None,
    min_s: float | None,
    max_s: float | None,
    agent_share: float | None,
) -> None:
    """Simulated calls on a simulated IPC: show them, or start traffic
    (`--count 30 --min 20 --max 60`, `--rate 0.5`). Calls arrive only while
    the IPC serves and is not busied out; stopping CTI or IVR cuts them."""
    from failover.lab import simctl
    from failover.lab.lab import Lab, LabError

    given = {"count": count, "rate": rate, "min": min_s, "max": max_s, "agent_share": agent_share}
    req = {"op": "calls", "action": "load" if any(v is not None for v in given.values()) else "stats"}
    req.update({k: v for k, v in given.items() if v is not None})
    try:
        st = simctl.request(Lab.load(_lab_root(lab_dir)).ipc(ipc).dir, req, timeout=5)
    except (LabError, OSError, KeyError) as e:
        click.echo(f"{ipc}: {e}", err=True)
        sys.exit(EXIT_USAGE)
    if not st.get("ok"):
        click.echo(f"{ipc}: {st.get('error')}", err=True)
        sys.exit(EXIT_USAGE)
    busy = ", BUSIED OUT" if st["busy_out"] else ""
    click.echo(
        f"{ipc}: {st['active']} active (ivr {st['ivr']}, agent {st['agent']}){busy}; "
        f"arrived {st['arrived']}, completed {st['completed']}, cut {st['cut']}, turned away {st['turned_away']}; "
        f"{st['rate']:g} new calls/s"
    )


@lab_group.command("down")
@lab_dir_option
@click.option("--keep", is_flag=True, help="Keep the lab directory (logs) after stopping.")
def lab_down(lab_dir: str | None, keep: bool) -> None:
    """Stop every process the lab started (by PID) and remove its namespaces."""
    from failover.lab.lab import Lab, LabError

    try:
        lab = Lab.load(_lab_root(lab_dir))
    except LabError as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_FAILED)
    stuck = lab.down(remove=not keep)
    if stuck:
        click.echo(f"lab {lab.labid}: could not stop PIDs {stuck}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"lab {lab.labid} down: no lab process left")


if __name__ == "__main__":
    main()
