"""The drill report's timeline picture (SVG), drawn for a supervisor:

- a time axis in seconds since the drill started, with ticks;
- the top lane: calls answered by ipc-a / ipc-b / nobody, with each fault's
  detected (D), calls served again (S) and back to normal (N) times on it;
- one lane per service per IPC (running, stopped, changing, unknown);
- one labelled marker per injected fault and per basic-call check, labels laid
  out in rows so that no two overlap (`layout_labels`, property-tested).

Pure: plain data in, SVG text out; colours are chosen to print in grey scale
too (the lane's text says who answered, colour only repeats it).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from failover.drill_timeline import BOTH, NOBODY, Interval, Sample

LEFT, WIDTH, RIGHT = 160, 860, 20  # label column, plot, margin (px)
ROW_H, LANE_H = 16, 22
LABEL_H, CHAR_W, LABEL_PAD = 13, 6.0, 6  # font-size 10 sans-serif: ~6 px per character, generously
STATE_COLORS = {
    "RUNNING": "#2e9d4a",
    "STOPPED": "#e3e3e3",
    "START_PENDING": "#f0b429",
    "STOP_PENDING": "#f0b429",
    "UNKNOWN": "#c0392b",
}
IPC_COLORS = ("#1f6fb2", "#7b3fa0")  # first and second IPC of the cluster
WHO_COLORS = {NOBODY: "#c0392b", BOTH: "#000000"}
Scale = Callable[[float], float]  # seconds since the start -> x (px)


@dataclass(frozen=True)
class Marker:
    t: float  # seconds since the drill started
    kind: str  # "fault" | "check"
    label: str
    failed: bool = False


@dataclass(frozen=True)
class FaultTimes:
    at: float  # seconds since the drill started
    detect: float | None  # seconds after `at`
    served_again: float | None
    normal: float | None


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    def overlaps(self, o: Box) -> bool:
        return self.x < o.x + o.w and o.x < self.x + self.w and self.y < o.y + o.h and o.y < self.y + self.h


@dataclass(frozen=True)
class TimelineData:
    ipcs: list[str]
    services: list[str]
    samples: list[Sample]  # absolute times
    t0: float
    end: float
    answering: list[Interval]  # absolute times
    markers: list[Marker]
    faults: list[FaultTimes]


def label_width(text: str) -> float:
    return len(text) * CHAR_W + LABEL_PAD


def layout_labels(xs: Sequence[float], texts: Sequence[str], lo: float, hi: float) -> list[Box]:
    """A box for each label near its x (left edge at x, pulled left to stay
    inside [lo, hi]), on the first row where it overlaps nothing already
    placed; a label wider than the plot is cut to fit by the caller's text.
    Rows are LABEL_H + 2 apart, so boxes in different rows never touch."""
    rows: list[list[Box]] = []
    out: list[Box] = []
    for x, text in zip(xs, texts, strict=True):
        w = min(label_width(text), hi - lo)
        left = min(max(x, lo), hi - w)
        row = next((k for k, placed in enumerate(rows) if all(not _hits(left, w, b) for b in placed)), len(rows))
        if row == len(rows):
            rows.append([])
        box = Box(left, row * (LABEL_H + 2), w, LABEL_H)
        rows[row].append(box)
        out.append(box)
    return out


def _hits(left: float, w: float, b: Box) -> bool:
    return left < b.x + b.w + 2 and b.x < left + w + 2  # 2 px apart at least


def fit(text: str, lo: float, hi: float) -> str:
    """The text cut (with an ellipsis) so its label fits the plot."""
    room = int((hi - lo - LABEL_PAD) // CHAR_W)
    return text if len(text) <= room else text[: max(room - 1, 1)] + "…"


def tick_step(span: float, target: int = 10) -> float:
    """A round tick spacing (1, 2, 5 x 10^k seconds) giving about `target` ticks."""
    raw = max(span, 1e-9) / target
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def render(d: TimelineData) -> str:
    span = max(d.end - d.t0, 1.0)

    def x(t: float) -> float:  # t: seconds since start
        return LEFT + min(max(t, 0.0), span) / span * WIDTH

    texts = [fit(m.label, LEFT, LEFT + WIDTH) for m in d.markers]
    boxes = layout_labels([x(m.t) for m in d.markers], texts, LEFT, LEFT + WIDTH)
    labels_top = 44
    lane_top = labels_top + _rows(boxes) * (LABEL_H + 2) + 8
    points, tboxes = _time_points(d, x)
    rows_top = lane_top + LANE_H + 12 + _rows(tboxes) * (LABEL_H + 2)
    rows = [(i, s) for i in d.ipcs for s in d.services]
    axis_y = rows_top + ROW_H * len(rows) + 4
    height = axis_y + 34
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="drill-timeline" width="{LEFT + WIDTH + RIGHT}" '
        f'height="{height}" viewBox="0 0 {LEFT + WIDTH + RIGHT} {height}" font-family="sans-serif" font-size="11">',
        '<rect x="0" y="0" width="100%" height="100%" fill="#ffffff"/>',
        f'<text x="10" y="16" font-size="13" font-weight="bold">Drill timeline ({span:.0f} s)</text>',
        '<text x="10" y="32" font-size="10">F = injected fault, C = basic call check; on the calls lane: '
        "D detected, S calls served again, N back to normal. Services: green running, light grey stopped, "
        "amber changing, red unknown.</text>",
    ]
    out += _markers(d, texts, boxes, x, labels_top, axis_y)
    out += _calls_lane(d, x, lane_top)
    out += _fault_times(points, tboxes, x, lane_top)
    out += _service_rows(d, rows, x, rows_top)
    out += _axis(span, x, axis_y)
    out.append("</svg>")
    return "\n".join(out)


def _rows(boxes: list[Box]) -> int:
    return 0 if not boxes else round(max(b.y for b in boxes) / (LABEL_H + 2)) + 1


def _markers(d: TimelineData, texts: list[str], boxes: list[Box], x: Scale, top: float, bottom: float) -> list[str]:
    out = ['<g class="markers">']
    for m, text, b in zip(d.markers, texts, boxes, strict=True):
        color = "#c0392b" if (m.kind == "fault" or m.failed) else "#2c3e50"
        px = x(m.t)
        y = top + b.y
        dash = "" if m.kind == "fault" else ' stroke-dasharray="3,2"'
        out += [
            f'<g class="marker {m.kind}">',
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y + LABEL_H:.1f}" y2="{bottom:.1f}" stroke="{color}"'
            f' stroke-width="1"{dash}/>',
            f'<rect x="{b.x:.1f}" y="{y:.1f}" width="{b.w:.1f}" height="{b.h}" fill="#ffffff" stroke="{color}"/>',
            f'<text x="{b.x + 3:.1f}" y="{y + 10:.1f}" font-size="10" fill="{color}">{html.escape(text)}</text>',
            "</g>",
        ]
    out.append("</g>")
    return out


def _calls_lane(d: TimelineData, x: Scale, top: float) -> list[str]:
    out = [
        '<g class="lane calls">',
        f'<text x="10" y="{top + 15}" font-weight="bold">calls answered by</text>',
    ]
    for iv in d.answering:
        x0, x1 = x(iv.start - d.t0), x(iv.end - d.t0)
        color = WHO_COLORS.get(iv.who) or IPC_COLORS[d.ipcs.index(iv.who) % len(IPC_COLORS)]
        out.append(
            f'<rect class="answering" data-who="{html.escape(iv.who)}" x="{x0:.1f}" y="{top}" '
            f'width="{max(0.5, x1 - x0):.1f}" height="{LANE_H}" fill="{color}"/>'
        )
        name = iv.who if iv.who != BOTH else "TWO IPCs"
        if x1 - x0 >= label_width(name):
            out.append(
                f'<text x="{x0 + 3:.1f}" y="{top + 15}" fill="#ffffff" font-size="10">{html.escape(name)}</text>'
            )
    out.append("</g>")
    return out


TimePoint = tuple[str, int, float, float]  # letter, fault number, time (s since start), seconds after the fault


def _time_points(d: TimelineData, x: Scale) -> tuple[list[TimePoint], list[Box]]:
    """Each fault's D / S / N times, their letters laid out like the markers'
    labels so that close times never print on each other."""
    points = [
        (letter, k, f.at + after, after)
        for k, f in enumerate(d.faults, 1)
        for letter, after in (("D", f.detect), ("S", f.served_again), ("N", f.normal))
        if after is not None
    ]
    boxes = layout_labels([x(t) - 6 for _, _, t, _ in points], [f"{p[0]}{p[1]}" for p in points], LEFT, LEFT + WIDTH)
    return points, boxes


def _fault_times(points: list[TimePoint], boxes: list[Box], x: Scale, top: float) -> list[str]:
    out = []
    for (letter, k, t, after), b in zip(points, boxes, strict=True):
        px, y = x(t), top + LANE_H
        out.append(
            f'<g class="fault-time {letter}"><title>{letter}{k}: {after:.2f} s after fault F{k}</title>'
            f'<path d="M{px - 4:.1f},{y + 8} L{px + 4:.1f},{y + 8} L{px:.1f},{y + 1} Z" fill="#000000"/>'
            f'<text x="{b.x + 3:.1f}" y="{y + 19 + b.y:.1f}" font-size="9">{letter}{k}</text></g>'
        )
    return out


def _service_rows(d: TimelineData, rows: list[tuple[str, str]], x: Scale, top: float) -> list[str]:
    out = ['<g class="lane services">']
    end = d.end - d.t0
    for k, (ipc, svc) in enumerate(rows):
        y = top + k * ROW_H
        out.append(f'<text x="10" y="{y + 11}">{html.escape(ipc)} {html.escape(svc)}</text>')
        mine = [s for s in d.samples if s.ipc == ipc]
        for a, b in zip(mine, [*mine[1:], None], strict=False):
            t_a, t_b = a.t - d.t0, (b.t - d.t0 if b else end)
            x0, x1 = x(t_a), x(t_b)
            color = STATE_COLORS.get(a.states.get(svc, "UNKNOWN"), STATE_COLORS["UNKNOWN"])
            out.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(0.5, x1 - x0):.1f}" height="{ROW_H - 3}" fill="{color}"/>'
            )
    out.append("</g>")
    return out


def _axis(span: float, x: Scale, y: float) -> list[str]:
    step = tick_step(span)
    out = [
        '<g class="axis">',
        f'<line x1="{LEFT}" x2="{LEFT + WIDTH}" y1="{y}" y2="{y}" stroke="#000000"/>',
    ]
    for k in range(int(span // step) + 1):
        t = k * step
        px = x(t)
        out += [
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y}" y2="{y + 5}" stroke="#000000"/>',
            f'<text class="tick" x="{px:.1f}" y="{y + 16}" font-size="10" text-anchor="middle">{t:g}</text>',
        ]
    out += [
        f'<text x="{LEFT + WIDTH}" y="{y + 30}" font-size="10" text-anchor="end">seconds since start</text>',
        "</g>",
    ]
    return out
