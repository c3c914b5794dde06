"""One self-contained HTML report of one or more journals of the same experiment.

`chaosemergence report journal-on.json [journal-off.json ...] -o report.html` writes it: the
verdict of each run (`chaosemergence.verdict.judge`, in the mode the run was made in), its
resilience score (`chaosemergence.score`), the hypothesis before and after the method, and
charts over the experiment's timeline (p99, error rate, failure radius, retry amplification,
cells up and each cell's health) drawn from the series the recorder control sampled during the
run (`chaosemergence.controls.recorder`). The method's actions and the defenses' activations
are marks on the time axis; several runs share one time axis (seconds from the start of each
run's method), overlaid, so an "on" and an "off" run of the same experiment show the defense
at work. Inline SVG and CSS only: no script, nothing fetched.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaosemergence.controls.recorder import timeline_of
from chaosemergence.report import _format_tolerance, format_value
from chaosemergence.score import RunScore, score_run
from chaosemergence.verdict import judge

__all__ = [
    "CHARTS",
    "ReportRun",
    "load_report_run",
    "mode_of",
    "render_html",
    "report_command",
    "standalone_chart",
    "write_report",
]

MODE_LABELS = {"on": "defenses on", "off": "defenses off", "cut": "loop cut"}
MODE_COLORS = {"on": "#1b6ca8", "off": "#c0392b", "cut": "#7d3c98"}
EXTRA_COLORS = ("#16803c", "#b9770e", "#2e4053", "#a04000")
JOURNAL_NAME = re.compile(r"journal-.+-(?P<mode>on|off|cut)\.json$")
# Chart geometry (SVG user units).
WIDTH, HEIGHT = 920, 210
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 26, 30
LABEL_CHAR = 5.6  # width of one character of a mark's label (10px sans-serif), about


@dataclass
class ReportRun:
    """One journal, read for the report."""

    path: Path
    journal: dict[str, Any]
    mode: str
    label: str
    color: str
    verdict: bool
    why: str
    score: RunScore
    timeline: dict[str, Any] | None
    origin: float | None = None  # epoch seconds of t = 0 on the time axis
    samples: list[dict[str, Any]] = field(default_factory=list)

    def x(self, at: float) -> float:
        """Seconds on the shared time axis for epoch `at`."""
        return at - (self.origin or 0.0)


def mode_of(journal: dict[str, Any], path: Path | None = None) -> str:
    """The mode the run was made in: the recorder's note of it, else the journal's file name."""
    timeline = timeline_of(journal) or {}
    noted = timeline.get("mode") or {}
    defenses = str(noted.get("defenses", "")).strip().lower()
    loop = str(noted.get("loop", "")).strip().lower()
    if defenses in ("off", "false", "0", "no"):
        return "cut" if loop == "cut" else "off"
    if defenses in ("on", "true", "1", "yes"):
        return "on"
    match = JOURNAL_NAME.search(path.name) if path else None
    return match["mode"] if match else "on"


def load_report_run(path: Path, index: int = 0, mode: str | None = None) -> ReportRun:
    """Read one journal file and judge it."""
    journal: dict[str, Any] = json.loads(path.read_text())
    mode = mode or mode_of(journal, path)
    try:
        verdict, why = judge(mode, journal)
    except (KeyError, TypeError, ValueError) as error:
        verdict, why = False, f"cannot judge: {error}"
    timeline = timeline_of(journal)
    color = MODE_COLORS.get(mode, EXTRA_COLORS[index % len(EXTRA_COLORS)])
    run = ReportRun(
        path=path,
        journal=journal,
        mode=mode,
        label=f"{MODE_LABELS.get(mode, mode)} ({path.name})",
        color=color,
        verdict=verdict,
        why=why,
        score=score_run(journal),
        timeline=timeline,
    )
    if timeline:
        phases = timeline.get("phases") or {}
        run.origin = phases.get("method_start") or timeline.get("started_at")
        run.samples = [
            s for s in timeline.get("samples") or [] if isinstance(s.get("t"), int | float)
        ]
    return run


def _distinct_colors(runs: list[ReportRun]) -> None:
    """Two runs of the same mode get different colors."""
    used: set[str] = set()
    spare = iter(EXTRA_COLORS)
    for run in runs:
        if run.color in used:
            run.color = next(spare, run.color)
        used.add(run.color)


# ----------------------------------------------------------------------------- SVG helpers
def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _nice_max(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * exponent:
            return float(step * exponent)
    return float(10 * exponent)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    exponent = 10 ** math.floor(math.log10(raw))
    step = next(s * exponent for s in (1, 2, 2.5, 5, 10) if s * exponent >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + 1e-9:
        ticks.append(round(value, 6))
        value += step
    return ticks


@dataclass
class Axis:
    """The shared time axis, seconds from each run's method start."""

    low: float
    high: float

    def px(self, seconds: float) -> float:
        span = self.high - self.low or 1.0
        return LEFT + (seconds - self.low) / span * (WIDTH - LEFT - RIGHT)


def _y(value: float, top: float) -> float:
    return TOP + (1 - value / top) * (HEIGHT - TOP - BOTTOM)


def _time_axis(axis: Axis) -> list[str]:
    parts = []
    base = HEIGHT - BOTTOM
    for tick in _ticks(axis.low, axis.high, 10):
        x = axis.px(tick)
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{base}"/>')
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{base + 14}" text-anchor="middle">{tick:g}</text>'
        )
    parts.append(
        f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 2}" text-anchor="end">'
        "seconds from the start of the method</text>"
    )
    return parts


def _marks(runs: list[ReportRun], axis: Axis, labels: bool) -> list[str]:
    """The method's actions (dashed lines) and defense activations (ticks at the bottom)."""
    parts: list[str] = []
    base = HEIGHT - BOTTOM
    named: list[tuple[float, str]] = []  # the first run's actions, labelled above the chart
    for row, run in enumerate(runs):
        timeline = run.timeline or {}
        for mark in timeline.get("marks") or []:
            if mark.get("phase") != "method" or not isinstance(mark.get("start"), int | float):
                continue
            x = axis.px(run.x(mark["start"]))
            kind = "action" if mark.get("type") == "action" else "probe"
            parts.append(
                f'<line class="mark {kind}" data-run="{row}" x1="{x:.1f}" y1="{TOP}" '
                f'x2="{x:.1f}" y2="{base}" stroke="{run.color}">'
                f"<title>{_e(run.label)}: {_e(kind)} {_e(mark.get('name'))} "
                f"({_e(mark.get('status'))})</title></line>"
            )
            if labels and row == 0 and kind == "action":
                named.append((x, str(mark.get("name"))))
        for event in timeline.get("events") or []:
            if event.get("kind") != "activated" or not isinstance(event.get("at"), int | float):
                continue
            seconds = run.x(event["at"])
            if not axis.low <= seconds <= axis.high:
                continue
            x = axis.px(seconds)
            y = base - 4 - 7 * row
            parts.append(
                f'<path class="activation" data-run="{row}" d="M{x:.1f},{y - 6:.1f} '
                f'L{x - 3:.1f},{y:.1f} L{x + 3:.1f},{y:.1f} Z" fill="{run.color}">'
                f"<title>{_e(run.label)}: {_e(event.get('defense'))} activated in cell "
                f"{_e(event.get('cell'))} at {seconds:+.1f} s: {_e(event.get('reason'))}</title>"
                "</path>"
            )
    # Actions whose labels would overlap (a method's first steps often are close) share one.
    groups: list[tuple[float, list[str]]] = []
    for x, name in sorted(named):
        if groups and x < groups[-1][0] + LABEL_CHAR * len(" + ".join(groups[-1][1])) + 8:
            groups[-1][1].append(name)
        else:
            groups.append((x, [name]))
    for x, names in groups:
        parts.append(
            f'<text class="marklabel" x="{x + 3:.1f}" y="{TOP - 4}">{_e(" + ".join(names))}</text>'
        )
    return parts


def line_chart(
    title: str,
    key: str,
    unit: str,
    runs: list[ReportRun],
    axis: Axis,
    limit: float | None = None,
    labels: bool = False,
    value: Callable[[dict[str, Any]], Any] | None = None,
) -> str:
    """One chart: every run's series of `key` on the shared axis, with the marks."""
    read = value or (lambda sample: sample.get(key))
    series: list[tuple[ReportRun, list[tuple[float, float | None]]]] = []
    highest = limit or 0.0
    for run in runs:
        points: list[tuple[float, float | None]] = []
        for sample in run.samples:
            raw = read(sample)
            number = (
                float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
            )
            if number is not None and not math.isfinite(number):
                number = None
            points.append((run.x(sample["t"]), number))
            if number is not None:
                highest = max(highest, number)
        series.append((run, points))
    top = _nice_max(highest * 1.08 if highest else 1.0)
    if unit == "%" and highest <= 100:
        top = min(top, 100.0)  # a share never needs more room than all of it
    parts = [
        f'<svg class="chart" data-key="{_e(key)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{_e(title)}">',
        f'<text class="title" x="{LEFT}" y="12">{_e(title)}'
        f"{f' ({_e(unit)})' if unit else ''}</text>",
    ]
    for tick in _ticks(0, top, 4):
        y = _y(tick, top)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    parts += _time_axis(axis)
    if limit is not None:
        y = _y(limit, top)
        parts.append(
            f'<line class="limit" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}">'
            f"<title>tolerance limit {limit:g}</title></line>"
            f'<text class="limitlabel" x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" '
            f'text-anchor="end">tolerance {limit:g}</text>'
        )
    parts += _marks(runs, axis, labels)
    for row, (run, points) in enumerate(series):
        path: list[str] = []
        pen_up = True
        for seconds, number in points:
            if number is None:
                pen_up = True
                continue
            command = "M" if pen_up else "L"
            path.append(f"{command}{axis.px(seconds):.1f},{_y(number, top):.1f}")
            pen_up = False
        if path:
            parts.append(
                f'<path class="series" data-run="{row}" d="{" ".join(path)}" stroke="{run.color}">'
                f"<title>{_e(run.label)}</title></path>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _health_color(failed: float | None) -> str:
    if failed is None:
        return "#d5d8dc"
    if failed < 0.5:
        return "#2e8b57"
    if failed < 2:
        return "#9acd32"
    if failed < 10:
        return "#f1c40f"
    if failed < 50:
        return "#e67e22"
    return "#c0392b"


def health_strip(run: ReportRun, axis: Axis) -> str:
    """Each cell's share of failed requests over time, one row per cell (a heat strip)."""
    cells = sorted(
        {c for s in run.samples for c in (s.get("cells") or {})},
        key=lambda c: (not str(c).isdigit(), int(c) if str(c).isdigit() else 0, str(c)),
    )
    row_height = 12
    height = TOP + row_height * max(1, len(cells)) + BOTTOM
    parts = [
        f'<svg class="health" data-run-label="{_e(run.label)}" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" aria-label="cell health, {_e(run.label)}">',
        f'<text class="title" x="{LEFT}" y="12" fill="{run.color}">cell health: failed requests '
        f"per cell, {_e(run.label)}</text>",
    ]
    step = float((run.timeline or {}).get("interval") or 1.0)
    for row, cell in enumerate(cells):
        y = TOP + row * row_height
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{y + 10}" text-anchor="end">'
            f"cell {_e(cell)}</text>"
        )
        # Merge neighbouring samples of one color into one rectangle.
        start: float | None = None
        color = ""
        end = 0.0
        for sample in run.samples:
            seconds = run.x(sample["t"])
            if not axis.low <= seconds <= axis.high:
                continue
            failed = (sample.get("cells") or {}).get(cell)
            shade = _health_color(failed if isinstance(failed, int | float) else None)
            if start is not None and shade == color and seconds - end <= 2 * step:
                end = seconds
                continue
            if start is not None:
                parts.append(_rect(axis, start, end + step, y, row_height, color))
            start, end, color = seconds, seconds, shade
        if start is not None:
            parts.append(_rect(axis, start, end + step, y, row_height, color))
    base = height - BOTTOM
    for tick in _ticks(axis.low, axis.high, 10):
        x = axis.px(tick)
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{base + 14}" text-anchor="middle">{tick:g}</text>'
        )
    for mark in (run.timeline or {}).get("marks") or []:
        if mark.get("phase") == "method" and mark.get("type") == "action":
            x = axis.px(run.x(mark["start"]))
            parts.append(
                f'<line class="mark action" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{base}" '
                f'stroke="#111"><title>{_e(mark.get("name"))}</title></line>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _rect(axis: Axis, start: float, end: float, y: float, height: float, color: str) -> str:
    x0, x1 = axis.px(max(start, axis.low)), axis.px(min(end, axis.high))
    return (
        f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(0.5, x1 - x0):.1f}" height="{height - 1}" '
        f'fill="{color}"/>'
    )


# ----------------------------------------------------------------------------- the page
def _axis(runs: list[ReportRun]) -> Axis | None:
    seconds = [run.x(s["t"]) for run in runs for s in run.samples]
    if not seconds:
        return None
    return Axis(math.floor(min(seconds)), math.ceil(max(seconds)) or 1.0)


def _limit(runs: list[ReportRun], funcs: Iterable[str]) -> float | None:
    """The upper bound of the hypothesis' range tolerance on a probe of one of `funcs`."""
    wanted = set(funcs)
    for run in runs:
        hypothesis = (run.journal.get("experiment") or {}).get("steady-state-hypothesis") or {}
        for probe in hypothesis.get("probes") or []:
            provider = probe.get("provider") or {}
            tolerance = probe.get("tolerance")
            if provider.get("func") in wanted and isinstance(tolerance, dict):
                bounds = tolerance.get("range")
                if isinstance(bounds, list) and len(bounds) == 2:
                    try:
                        return float(bounds[1])
                    except (TypeError, ValueError):
                        return None
    return None


def _when(journal: dict[str, Any]) -> str:
    start = journal.get("start")
    try:
        moment = datetime.fromisoformat(str(start)).astimezone(UTC)
    except ValueError:
        return str(start or "—")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _verdicts(runs: list[ReportRun]) -> list[str]:
    parts = [
        '<table class="runs"><tr><th>run</th><th>verdict</th><th>resilience score</th>'
        "<th>status</th><th>started</th><th>samples</th><th>defense activations</th></tr>"
    ]
    for run in runs:
        timeline = run.timeline or {}
        activations = sum(1 for e in timeline.get("events") or [] if e.get("kind") == "activated")
        score = "—" if run.score.score is None else f"{run.score.score:.0f} / 100"
        status = f"{run.journal.get('status')}{', deviated' if run.journal.get('deviated') else ''}"
        samples = (
            str(len(run.samples)) if run.timeline else "no timeline (run without the recorder)"
        )
        parts.append(
            f'<tr><td><span class="swatch" style="background:{run.color}"></span>'
            f"{_e(run.label)}</td>"
            f'<td class="{"ok" if run.verdict else "bad"}">{"OK" if run.verdict else "NOT OK"}: '
            f'{_e(run.why)}</td><td class="score">{score}</td><td>{_e(status)}</td>'
            f"<td>{_e(_when(run.journal))}</td><td>{_e(samples)}</td><td>{activations}</td></tr>"
        )
    parts.append("</table>")
    modes = {run.mode: run for run in runs}
    if "on" in modes and "off" in modes:
        proven = modes["on"].verdict and modes["off"].verdict
        parts.append(
            f'<p class="{"ok" if proven else "bad"}">'
            + (
                "The defenses are proven: with them the hypothesis held and they activated; "
                "without them the same experiment broke a harm probe."
                if proven
                else "Not proven: see each run's verdict above."
            )
            + "</p>"
        )
    return parts


def _hypothesis_table(runs: list[ReportRun]) -> list[str]:
    names: list[str] = []
    tolerances: dict[str, str] = {}
    outputs: dict[tuple[int, str, str], tuple[str, bool | None]] = {}
    for row, run in enumerate(runs):
        hypothesis = (run.journal.get("experiment") or {}).get("steady-state-hypothesis") or {}
        for probe in hypothesis.get("probes") or []:
            name = str(probe.get("name"))
            if name not in names:
                names.append(name)
            if "tolerance" in probe:
                tolerances.setdefault(name, _format_tolerance(probe["tolerance"]))
        for phase in ("before", "after"):
            state = (run.journal.get("steady_states") or {}).get(phase) or {}
            for probe in state.get("probes") or []:
                name = str((probe.get("activity") or {}).get("name"))
                if name not in names:
                    names.append(name)
                text = (
                    format_value(probe.get("output"))
                    if probe.get("status") == "succeeded"
                    else f"error ({probe.get('status')})"
                )
                outputs[(row, phase, name)] = (text, probe.get("tolerance_met"))
    head = "".join(
        f'<th colspan="2" style="border-bottom:3px solid {run.color}">{_e(run.label)}</th>'
        for run in runs
    )
    parts = [
        '<table class="hypothesis"><tr><th rowspan="2">probe</th><th rowspan="2">tolerance</th>'
        f"{head}</tr><tr>" + "<th>before</th><th>after</th>" * len(runs) + "</tr>"
    ]
    for name in names:
        cells = []
        for row in range(len(runs)):
            for phase in ("before", "after"):
                text, met = outputs.get((row, phase, name), ("not run", None))
                css = "ok" if met is True else "bad" if met is False else "none"
                sign = " ✓" if met is True else " ✗" if met is False else ""
                cells.append(f'<td class="{css}">{_e(text)}{sign}</td>')
        parts.append(
            f"<tr><td>{_e(name)}</td><td>{_e(tolerances.get(name, '—'))}</td>{''.join(cells)}</tr>"
        )
    parts.append("</table>")
    return parts


def _score_tables(runs: list[ReportRun]) -> list[str]:
    parts = [
        "<p>Each probe of the hypothesis, judged after the method, earns 0 when it missed "
        "its tolerance (or never ran), and 0.5 + 0.5 &times; headroom when it held: headroom "
        "is how far the value stayed from the tolerance's limit, 0 at the limit and 1 at the "
        "far end of the range (an exact tolerance that held has full headroom). Probes that "
        "measure harm users see (latency, failure radius, goodput, lost writes, cells down) "
        "weigh 2, others 1. The score is the weighted mean &times; 100: 100 = every probe held "
        "with all its room to spare, 50 = every probe held right at its limit, below 50 = "
        "something users feel broke.</p>"
    ]
    for run in runs:
        score = "—" if run.score.score is None else f"{run.score.score:.1f}"
        parts.append(
            f'<h3><span class="swatch" style="background:{run.color}"></span>{_e(run.label)}: '
            f'<span class="score">{score}</span></h3>'
        )
        parts.append(
            '<table class="score-parts"><tr><th>probe</th><th>value after</th><th>tolerance</th>'
            "<th>weight</th><th>held</th><th>headroom</th><th>credit</th><th></th></tr>"
        )
        for part in run.score.probes:
            room = "—" if part.headroom is None else f"{part.headroom:.0%}"
            ran = part.why != "not judged after the method"
            shown = format_value(part.value) if ran else "not run"
            tolerance = _format_tolerance(part.tolerance) if part.tolerance is not None else "—"
            parts.append(
                f"<tr><td>{_e(part.name)}</td><td>{_e(shown)}</td>"
                f"<td>{_e(tolerance)}</td><td>{part.weight:g}</td>"
                f'<td class="{"ok" if part.held else "bad"}">{"yes" if part.held else "no"}</td>'
                f"<td>{room}</td><td>{part.credit:.2f}</td><td>{_e(part.why)}</td></tr>"
            )
        parts.append("</table>")
    return parts


def _legend(runs: list[ReportRun]) -> str:
    items = "".join(
        f'<span><span class="swatch" style="background:{run.color}"></span>{_e(run.label)}</span>'
        for run in runs
    )
    return (
        f'<p class="legend">{items}<span>┆ dashed: the method\'s actions and probes</span>'
        "<span>▲ defense activations (hover for defense, cell and reason)</span></p>"
    )


# The timeline's charts: title, sample key, unit, the probes whose tolerance is drawn on it.
CHARTS: list[tuple[str, str, str, list[str]]] = [
    ("p99 latency users see", "p99_ms", "ms", ["latency_percentile"]),
    ("Error rate: requests answered with an error", "error_rate_pct", "%", []),
    ("Failure radius: requests users saw fail", "failure_radius_pct", "%",
     ["measure_failure_radius"]),
    ("Retry amplification: dependency attempts per request", "retry_amplification", "x", []),
]  # fmt: skip


def _cells_up(sample: dict[str, Any]) -> Any:
    return sample.get("cells_up")


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:980px;color:#1c2833;line-height:1.4}
h1{font-size:1.5em;margin-bottom:0}h2{margin-top:1.6em;border-bottom:1px solid #d5d8dc}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
td,th{border:1px solid #d5d8dc;padding:3px 8px;text-align:left;vertical-align:top}
.ok{color:#186a3b;font-weight:600}.bad{color:#a93226;font-weight:600}.none{color:#7f8c8d}
td.ok,td.bad{font-weight:normal}td.ok{background:#eafaf1}td.bad{background:#fdedec}
.score{font-weight:700;font-size:1.1em}
.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;border-radius:2px;
vertical-align:middle}
.legend span{margin-right:18px}
svg{width:100%;height:auto;display:block;margin:6px 0 14px}
svg .title{font-size:13px;font-weight:600;fill:#1c2833}
svg .tick{font-size:10px;fill:#566573}
svg .grid{stroke:#eaecee;stroke-width:1}
svg .series{fill:none;stroke-width:1.8}
svg .mark{stroke-dasharray:4 3;stroke-width:1;opacity:.7}
svg .mark.probe{stroke-dasharray:1 3}
svg .marklabel{font-size:10px;fill:#1c2833}
svg .limit{stroke:#7f8c8d;stroke-dasharray:8 4;stroke-width:1.2}
svg .limitlabel{font-size:10px;fill:#7f8c8d}
.small{font-size:.85em;color:#566573}
"""


def render_html(runs: list[ReportRun]) -> str:
    """The whole page for `runs` (one or more journals of the same experiment)."""
    if not runs:
        raise ValueError("no journal to report on")
    _distinct_colors(runs)
    experiment = runs[0].journal.get("experiment") or {}
    title = str(experiment.get("title") or "experiment")
    body: list[str] = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="small">{_e(experiment.get("description") or "")}</p>',
        "<h2>Verdict</h2>",
        *_verdicts(runs),
        "<h2>Timeline</h2>",
    ]
    axis = _axis(runs)
    if axis is None:
        body.append(
            "<p>No timeline: these journals hold no series. Runs record one when their "
            "experiment declares the <code>chaosemergence.controls.recorder</code> control.</p>"
        )
    else:
        window = (runs[0].timeline or {}).get("window")
        body.append(_legend(runs))
        body.append(
            f'<p class="small">Sampled every second during the run by the recorder control, '
            f"each point over the last {_e(window)} s (the probes' own figures). t = 0 is the "
            "start of each run's method, so the runs line up.</p>"
        )
        for index, (name, key, unit, funcs) in enumerate(CHARTS):
            limit = _limit(runs, funcs) if funcs else None
            body.append(line_chart(name, key, unit, runs, axis, limit, labels=index == 0))
        body.append(line_chart("Cells up", "cells_up", "", runs, axis, value=_cells_up))
        body += [health_strip(run, axis) for run in runs if run.samples]
        body.append(
            '<p class="small">Cell health colors: green &lt; 0.5% of the cell\'s requests failed, '
            "light green &lt; 2%, yellow &lt; 10%, orange &lt; 50%, red ≥ 50%, grey: no "
            "request in the window.</p>"
        )
    body += [
        "<h2>Steady-state hypothesis, before and after the method</h2>",
        *_hypothesis_table(runs),
    ]
    body += ["<h2>Resilience score</h2>", *_score_tables(runs)]
    body.append(
        f'<p class="small">Written by <code>chaosemergence report</code> on '
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} from "
        f"{', '.join(_e(run.path.name) for run in runs)}.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}: chaosemergence report</title><style>{STYLE}</style></head>"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def standalone_chart(runs: list[ReportRun], key: str) -> str:
    """One chart of the report as an SVG file of its own (e.g. for a README), with a legend."""
    charts = {chart[1]: chart for chart in CHARTS}
    if key not in charts:
        raise ValueError(f"chart must be one of {', '.join(charts)}, got {key!r}")
    _distinct_colors(runs)
    axis = _axis(runs)
    if axis is None:
        raise ValueError("these journals hold no timeline to chart")
    name, _, unit, funcs = charts[key]
    chart = line_chart(name, key, unit, runs, axis, _limit(runs, funcs), labels=True)
    legend = "".join(
        f'<tspan fill="{run.color}" dx="{14 if i else 0}">&#9632; '
        f"{_e(run.label.split(' (')[0])}</tspan>"
        for i, run in enumerate(runs)
    )
    svg_style = "".join(line[4:] for line in STYLE.splitlines() if line.startswith("svg ."))
    return (
        chart.replace(
            '<svg class="chart"',
            '<svg xmlns="http://www.w3.org/2000/svg" class="chart"',
            1,
        )
        .replace(
            "</svg>",
            f'<text class="tick" x="{WIDTH - RIGHT}" y="12" text-anchor="end">{legend}</text>'
            f"<style>{svg_style}.series{{fill:none}}</style></svg>",
        )
        .replace(
            f'aria-label="{_e(name)}">',
            f'aria-label="{_e(name)}"><rect width="100%" height="100%" fill="#fff"/>',
            1,
        )
    )


def write_report(journals: list[Path], output: Path) -> Path:
    """Read `journals`, write the HTML report to `output`; its path."""
    runs = [load_report_run(path, index) for index, path in enumerate(journals)]
    output.write_text(render_html(runs), encoding="utf-8")
    return output


def report_command(journals: list[str], output: str | None, chart: str | None = None) -> int:
    """`chaosemergence report`: write the report (or with `chart`, that one chart as SVG), print
    its path; exit 2 on unreadable input."""
    paths = [Path(j) for j in journals]
    target = Path(output) if output else paths[0].with_suffix(".svg" if chart else ".html")
    try:
        if chart:
            runs = [load_report_run(path, index) for index, path in enumerate(paths)]
            target.write_text(standalone_chart(runs, chart), encoding="utf-8")
            written = target
        else:
            written = write_report(paths, target)
    except (OSError, ValueError) as error:
        print(f"chaosemergence report: {error}", file=sys.stderr)
        return 2
    print(f"report: {written.resolve()}")
    return 0
