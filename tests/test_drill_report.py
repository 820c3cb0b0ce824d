"""The drill report without the lab: the timeline's label layout never
overlaps (hypothesis), the calls lane says who answered when, the drill window
at any hour (an injected clock), and the HTML report rendered in a real
headless Chromium: no console errors, the picture's lanes and markers there,
a screenshot kept in test-artifacts/drills/."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import combinations
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover import drill_report
from failover.drill_svg import LEFT, WIDTH, fit, layout_labels, render, tick_step
from failover.drill_timeline import NOBODY, answering_intervals
from failover.drill_window import Window
from tests import drill_fixture as fx

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "drills"


# ----- label layout --------------------------------------------------------------------
@given(
    st.lists(
        st.tuples(st.floats(-100, 1200, allow_nan=False), st.text(min_size=1, max_size=300)),
        max_size=40,
    )
)
def test_labels_never_overlap_and_stay_in_the_plot(labels: list[tuple[float, str]]) -> None:
    lo, hi = LEFT, LEFT + WIDTH
    texts = [fit(t, lo, hi) for _, t in labels]
    boxes = layout_labels([x for x, _ in labels], texts, lo, hi)
    assert len(boxes) == len(labels)
    for a, b in combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    for b in boxes:
        assert lo <= b.x and b.x + b.w <= hi + 1e-9


def test_tick_step_is_round() -> None:
    assert [tick_step(s) for s in (7, 40, 95, 600, 1900)] == [1, 5, 10, 100, 200]


# ----- who answered calls ----------------------------------------------------------------
def test_calls_lane_follows_the_samples() -> None:
    ivs = answering_intervals(fx.samples(), fx.IPCS, fx.T0 + 40)
    assert [iv.who for iv in ivs] == ["ipc-a", NOBODY, "ipc-b"]
    assert ivs[1].start - fx.T0 == pytest.approx(20.1) and ivs[2].start - fx.T0 == pytest.approx(22.2)
    assert ivs[-1].end == fx.T0 + 40


def test_svg_has_lanes_axis_and_one_marker_per_fault_and_check() -> None:
    rep = fx.report()
    svg = render(drill_report.timeline_data(fx.IPCS, fx.SERVICES, fx.samples(), rep))
    assert 'class="lane calls"' in svg and 'class="lane services"' in svg and 'class="axis"' in svg
    assert svg.count('class="marker fault"') == 2 and svg.count('class="marker check"') == 3
    assert re.findall(r'data-who="([^"]+)"', svg) == ["ipc-a", NOBODY, "ipc-b"]
    ticks = [float(t) for t in re.findall(r'class="tick"[^>]*>([0-9.]+)<', svg)]
    assert ticks[:3] == [0, 5, 10] and ticks[-1] >= 35
    assert svg.count('class="fault-time') == 5  # line alarm: D, S; CTI: D, S, N


def test_steps_have_names_and_labels() -> None:
    rep = fx.report()
    assert [s["label"] for s in rep["steps"]][-2:] == ["9", "cleanup 1"]
    md = drill_report.markdown(rep)
    assert "| cleanup 1 | cleanup 1: clear every injected fault |" in md


# ----- the drill window at any hour ----------------------------------------------------
FRIDAY_AFTERNOON = datetime(2026, 12, 4, 14, 20)


def test_window_says_when_it_opens() -> None:
    w = Window.parse("06:00-12:00")
    assert not w.contains(FRIDAY_AFTERNOON)
    assert w.next_opening(FRIDAY_AFTERNOON) == datetime(2026, 12, 5, 6, 0)
    assert "the window opens at Saturday 2026-12-05 06:00 local time" in w.describe(FRIDAY_AFTERNOON)
    night = Window.parse("22:00-06:00")
    assert night.contains(datetime(2026, 12, 4, 23, 0)) and night.contains(datetime(2026, 12, 5, 5, 59))
    assert not night.contains(datetime(2026, 12, 5, 6, 0))
    assert "open now (until 06:00" in night.describe(datetime(2026, 12, 4, 23, 0))
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        Window.parse("6-12")


def _drill(tmp_path: Path, *, dry_run: bool, lines: list[str]) -> object:
    from failover import drills
    from failover import runbook as rb_mod
    from failover.inventory import load
    from tests.test_inventory import GOOD as INV
    from tests.test_inventory import _write

    inv = load(str(_write(tmp_path, INV)))
    rb = tmp_path / "rb.yaml"
    rb.write_text('version: 1\nname: tiny\nwindow: {start: "06:00", end: "12:00"}\nsteps:\n  - wait: 1\n')
    c = inv.clusters[0]
    return drills.Drill(
        c,
        rb_mod.load(rb, c),
        str(rb),
        dry_run=dry_run,
        yes=True,
        out_dir=tmp_path / "reports",
        echo=lines.append,
        clock=lambda: FRIDAY_AFTERNOON,
    )


def test_dry_run_at_any_hour_says_when_the_window_opens(tmp_path: Path) -> None:
    lines: list[str] = []
    report = _drill(tmp_path, dry_run=True, lines=lines).run()  # type: ignore[attr-defined]
    assert report["outcome"] == "dry-run" and [s["status"] for s in report["steps"]] == ["dry-run"]
    assert any("the window opens at Saturday 2026-12-05 06:00 local time" in ln for ln in lines), lines
    assert not (tmp_path / "reports").exists()


def test_real_run_outside_the_window_is_refused_saying_when_it_opens(tmp_path: Path) -> None:
    from failover.drills import DrillRefused

    d = _drill(tmp_path, dry_run=False, lines=[])
    with pytest.raises(DrillRefused, match=r"outside the drill window 06:00-12:00 \(now 14:20\); the window opens at"):
        d.preflight()  # type: ignore[attr-defined]


# ----- the HTML report in a real browser -----------------------------------------------
@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[object]:
    """The status page's browser harness (tests/browser.py): always stopped."""
    from tests.browser import chromium

    if not Path("/usr/bin/chromedriver").exists():
        pytest.fail("chromium-driver missing: run `make install`")
    with chromium(tmp_path / "chrome-profile", (1200, 1600)) as driver:
        yield driver


def test_html_report_renders_in_a_browser(tmp_path: Path, chrome: object) -> None:
    from selenium.webdriver.common.by import By

    rep = fx.report()
    files = drill_report.write(rep, tmp_path, drill_report.timeline_data(fx.IPCS, fx.SERVICES, fx.samples(), rep))
    chrome.get(Path(files["html"]).as_uri())  # type: ignore[attr-defined]
    svg = chrome.find_element(By.CSS_SELECTOR, "div.timeline svg")  # type: ignore[attr-defined]
    assert svg.size["width"] > 500 and svg.size["height"] > 150
    assert len(svg.find_elements(By.CSS_SELECTOR, "g.marker")) == 5
    lane = svg.find_elements(By.CSS_SELECTOR, "g.lane.calls rect.answering")
    assert [r.get_attribute("data-who") for r in lane] == ["ipc-a", NOBODY, "ipc-b"]
    # the label boxes as the browser laid them out: pairwise disjoint
    boxes = [e.rect for e in svg.find_elements(By.CSS_SELECTOR, "g.marker rect")]
    for a, b in combinations(boxes, 2):
        apart_x = a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
        apart_y = a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"]
        assert apart_x or apart_y, (a, b)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    chrome.save_screenshot(str(ARTIFACTS / "drill-report.png"))  # type: ignore[attr-defined]
    severe = [e for e in chrome.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]
    assert not severe, severe


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "failover", "drill", "run", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_dry_run_outside_the_window_exits_0_saying_when_it_opens(tmp_path: Path) -> None:
    from tests.test_inventory import GOOD as INV
    from tests.test_inventory import _write

    inv = _write(tmp_path, INV)
    now = datetime.now()
    start, end = now + timedelta(hours=2), now + timedelta(hours=3)  # a window that is closed now
    rb = tmp_path / "rb.yaml"
    rb.write_text(
        f'version: 1\nname: tiny\nwindow: {{start: "{start:%H:%M}", end: "{end:%H:%M}"}}\nsteps:\n  - wait: 1\n'
    )
    r = _cli(str(rb), "-i", str(inv), "--dry-run", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"the window opens at {start:%A %Y-%m-%d %H:%M} local time" in r.stdout
    r = _cli(str(rb), "-i", str(inv), "--dry-run", "--window", "6-12")
    assert r.returncode == 2 and "--window: drill window '6-12': expected HH:MM-HH:MM" in r.stderr
