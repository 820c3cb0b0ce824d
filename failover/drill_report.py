"""The drill's report: what each step did, what each fault cost (time to
detect, until calls were answered again, back to normal), written as
`<time>-<runbook>.{json,md,html,svg}`. The HTML embeds the timeline picture
(failover/drill_svg.py) and prints readably (a print stylesheet, no meaning
carried by dark backgrounds).

Pure apart from `write`: the Drill hands over its results, samples and the
cluster's history; nothing here talks to ZooKeeper or SSH.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from failover.drill_svg import FaultTimes, Marker, TimelineData, render
from failover.drill_timeline import Sample, answering_intervals, answers_calls
from failover.records import ROLE_CHANGE_KINDS, HistoryEntry

ROLE_CHANGES = ROLE_CHANGE_KINDS  # what a drill counts as the cluster's reaction to a fault


@dataclass
class StepResult:
    n: int  # 1.. for steps, -1.. for rollback and cleanup steps (the report's JSON keeps this)
    title: str
    action: str
    status: str = "not run"  # ok | failed | skipped | not run | dry-run
    detail: str = ""
    started: float = 0.0
    duration: float = 0.0
    audits: list[dict] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    label: str = ""  # what people call it: "7", "rollback 1", "cleanup 1"


# ----- what each fault cost ---------------------------------------------------------
def fault_metrics(
    faults: list[dict],
    history: list[HistoryEntry],
    samples: list[Sample],
    results: list[StepResult],
    is_home_expect: Callable[[int], bool],
) -> list[dict]:
    """For each injected fault, until the next one: the cluster's reaction and
    its detection time (from the history), when calls were answered again
    (from the samples) and when the runbook saw the normal layout again."""
    out = []
    for n, f in enumerate(faults):
        t = f["at"]
        t_next = faults[n + 1]["at"] if n + 1 < len(faults) else float("inf")
        change = next((h for h in history if h.kind in ROLE_CHANGES and t <= (h.when or 0) < t_next), None)
        detect = None
        if change is not None:
            detect = change.get("detection_s")
            if detect is None:
                detect = round((change.when or t) - t, 3)
        normal = next(
            (
                r.started + r.duration
                for r in results
                if r.action == "expect"
                and r.status == "ok"
                and t < r.started < t_next
                and r.n > 0
                and is_home_expect(r.n)
            ),
            None,
        )
        out.append(
            {
                **f,
                "time_to_detect_s": detect,
                "calls_served_again_s": _served_again(samples, t, t_next),
                "back_to_normal_s": round(normal - t, 3) if normal else None,
                "reaction": change.kind if change else "none",
            }
        )
    return out


def _served_again(samples: list[Sample], t: float, t_next: float) -> float | None:
    times = sorted({s.t for s in samples if t <= s.t < t_next})
    down = [x for x in times if not _serving_at(samples, x)]
    if not down:
        return 0.0 if times else None
    later = [x for x in times if x > down[0] and _serving_at(samples, x)]
    return round(later[0] - t, 3) if later else None


def _serving_at(samples: list[Sample], t: float) -> bool:
    return any(answers_calls(s.states) for s in samples if abs(s.t - t) < 0.25)


# ----- the report --------------------------------------------------------------------
def build(
    *,
    runbook: str,
    path: str,
    cluster: str,
    operator: str,
    t0: float,
    dry_run: bool,
    results: list[StepResult],
    faults: list[dict],
) -> dict[str, Any]:
    failed = [r for r in results if r.status == "failed"]
    return {
        "runbook": runbook,
        "file": path,
        "cluster": cluster,
        "operator": operator,
        "started": t0,
        "duration_s": round(time.time() - t0, 2),
        "outcome": "dry-run" if dry_run else ("failed" if failed else "passed"),
        "failed_step": next((r.n for r in failed if r.n > 0), None),
        "steps": [
            {
                "n": r.n,
                "label": r.label or str(r.n),
                "title": r.title,
                "action": r.action,
                "status": r.status,
                "detail": r.detail,
                "started_s": round(r.started - t0, 3) if r.started else None,
                "duration_s": round(r.duration, 3),
                "audits": r.audits,
                "commands": r.commands,
            }
            for r in results
        ],
        "faults": [] if dry_run else faults,
    }


def timeline_data(ipcs: list[str], services: list[str], samples: list[Sample], report: dict[str, Any]) -> TimelineData:
    """The picture's data: lanes from the samples, markers from the report
    (one per injected fault, one per basic-call check that ran)."""
    t0 = report["started"]
    ends = [t0 + s["started_s"] + s["duration_s"] for s in report["steps"] if s["started_s"] is not None]
    end = max([s.t for s in samples] + ends + [t0 + 1])
    markers = [
        Marker(f["at"] - t0, "fault", f"F{k} {f['fault']} {f.get('service') or ''} on {f['ipc']}".replace("  ", " "))
        for k, f in enumerate(report["faults"], 1)
    ]
    checks = [s for s in report["steps"] if s["action"] == "check" and s["started_s"] is not None]
    markers += [
        Marker(s["started_s"], "check", f"C{k} {s['title']}", failed=s["status"] == "failed")
        for k, s in enumerate(checks, 1)
    ]
    markers.sort(key=lambda m: m.t)
    times = [
        FaultTimes(f["at"] - t0, f["time_to_detect_s"], f["calls_served_again_s"], f["back_to_normal_s"])
        for f in report["faults"]
    ]
    return TimelineData(ipcs, services, samples, t0, end, answering_intervals(samples, ipcs, end), markers, times)


def write(report: dict[str, Any], out_dir: Path, data: TimelineData) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{datetime.fromtimestamp(report['started']).strftime('%Y%m%d-%H%M%S')}-{report['runbook']}"
    files = {k: f"{stem}.{k}" for k in ("json", "md", "html", "svg")}
    report["files"] = files
    svg = render(data)
    Path(files["svg"]).write_text(svg)
    Path(files["json"]).write_text(json.dumps(report, indent=1, default=str) + "\n")
    Path(files["md"]).write_text(markdown(report))
    Path(files["html"]).write_text(html_report(report, svg))
    return files


# ----- rendering ---------------------------------------------------------------------
def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def markdown(r: dict) -> str:
    lines = [
        f"# Drill `{r['runbook']}` on cluster {r['cluster']}: **{r['outcome'].upper()}**",
        "",
        f"- started {datetime.fromtimestamp(r['started']).isoformat(timespec='seconds')} by {r['operator']}, "
        f"{r['duration_s']:.0f} s",
        f"- runbook: {r['file']}",
        "",
    ]
    if r["failed_step"]:
        lines += [
            f"Stopped at step {r['failed_step']}: resume with `failover drill run {r['file']} --from "
            f"{r['failed_step']}`.",
            "",
        ]
    lines += ["## Steps", "", "| # | step | result | duration | detail |", "|---|---|---|---|---|"]
    for s in r["steps"]:
        audits = "; ".join(f"{a['audit']}: {'ok' if a['ok'] else 'FAILED'}" for a in s["audits"] if not a["ok"])
        detail = (s["detail"] + (f" (audit: {audits})" if audits else "")).replace("|", "/")
        lines.append(
            f"| {s.get('label', s['n'])} | {s['title']} | {s['status']} | {s['duration_s']:.1f} s | {detail} |"
        )
    lines += [
        "",
        "## Faults",
        "",
        "| fault | on | reaction | detected in | calls served again after | back to normal after |",
        "|---|---|---|---|---|---|",
    ]
    for f in r["faults"]:
        lines.append(
            f"| {f['fault']} {f.get('service') or ''} | {f['ipc']} | {f['reaction']} | "
            f"{_secs(f['time_to_detect_s'])} | {_secs(f['calls_served_again_s'])} | "
            f"{_secs(f['back_to_normal_s'])} |"
        )
    audits = [a for s in r["steps"] for a in s["audits"]]
    lines += [
        "",
        f"## Audits: {sum(a['ok'] for a in audits)} passed, {sum(not a['ok'] for a in audits)} failed",
        "",
        "Timeline: see the `.svg` / `.html` next to this file.",
        "",
    ]
    return "\n".join(lines)


CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #000; background: #fff; }
h1 .passed { color: #1e7b34; } h1 .failed { color: #b02a1a; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #999; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
td.failed { font-weight: bold; color: #b02a1a; }
.timeline svg { max-width: 100%; height: auto; }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { margin: 0; font-size: 10pt; }
  .timeline, table, tr { page-break-inside: avoid; break-inside: avoid; }
  a { color: #000; text-decoration: none; }
}
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def html_report(r: dict, svg: str) -> str:
    outcome = r["outcome"]
    steps = "".join(
        f"<tr><td>{_e(s.get('label', s['n']))}</td><td>{_e(s['title'])}</td>"
        f"<td class='{_e(s['status'])}'>{_e(s['status'])}</td><td>{s['duration_s']:.1f} s</td>"
        f"<td>{_e(s['detail'])}</td></tr>"
        for s in r["steps"]
    )
    faults = "".join(
        f"<tr><td>F{k}</td><td>{_e(f['fault'])} {_e(f.get('service') or '')}</td><td>{_e(f['ipc'])}</td>"
        f"<td>{_e(f['reaction'])}</td><td>{_secs(f['time_to_detect_s'])}</td>"
        f"<td>{_secs(f['calls_served_again_s'])}</td><td>{_secs(f['back_to_normal_s'])}</td></tr>"
        for k, f in enumerate(r["faults"], 1)
    )
    audits = [a for s in r["steps"] for a in s["audits"]]
    started = datetime.fromtimestamp(r["started"]).isoformat(timespec="seconds")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"<title>Drill {_e(r['runbook'])}: {_e(outcome.upper())}</title><style>{CSS}</style></head><body>"
        f"<h1>Drill {_e(r['runbook'])} on cluster {_e(r['cluster'])}: "
        f"<span class='{_e(outcome)}'>{_e(outcome.upper())}</span></h1>"
        f"<p>Started {_e(started)} by {_e(r['operator'])}, {r['duration_s']:.0f} s; runbook {_e(r['file'])}. "
        f"Audits: {sum(a['ok'] for a in audits)} passed, {sum(not a['ok'] for a in audits)} failed.</p>"
        f"<div class='timeline'>{svg}</div>"
        "<h2>Faults</h2><table><tr><th>#</th><th>fault</th><th>on</th><th>reaction</th><th>detected in</th>"
        f"<th>calls served again after</th><th>back to normal after</th></tr>{faults}</table>"
        "<h2>Steps</h2><table><tr><th>#</th><th>step</th><th>result</th><th>duration</th><th>detail</th></tr>"
        f"{steps}</table></body></html>\n"
    )
