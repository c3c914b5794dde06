"""`chaosemergence dashboard`: the seed's defense-effectiveness view, live in the terminal.

It reads the same frame the browser page polls (`GET /admin/dashboard` on the gateway,
with the admin token found the way every activity finds it) and draws it with `rich`:
overall switches, the active defenses, the six pattern probabilities and the phase
transition, and the recent incidents prevented. `--once` prints one frame and exits.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from chaosemergence.client import AdminClient
from chaosemergence.settings import ExtensionSettings

__all__ = ["dashboard_command", "fetch_frame", "render_frame", "run"]

PATTERN_LABELS = {
    "retry_storm": "Retry storm",
    "thundering_herd": "Thundering herd",
    "death_spiral": "Death spiral",
    "synchronization": "Synchronization",
    "cascade": "Cascade risk",
    "metastable": "Metastable",
}
MAX_INCIDENTS = 12


def fetch_frame(client: AdminClient) -> dict[str, Any]:
    """One dashboard frame from the gateway (ActivityFailed names the URL on failure)."""
    frame: dict[str, Any] = client.get("/admin/dashboard", what="read the dashboard")
    return frame


def _bar(fraction: float, width: int = 12) -> Text:
    fraction = max(0.0, min(1.0, fraction))
    full = round(fraction * width)
    style = "red" if fraction >= 0.7 else "yellow" if fraction >= 0.4 else "green"
    return Text("\u2588" * full, style=style) + Text("\u2591" * (width - full), style="dim")


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S")


def _pattern_note(name: str, p: float) -> str:
    if p >= 0.7:
        return "detected"
    if p >= 0.2:
        return "watching"
    return "safe"


def render_frame(frame: dict[str, Any], url: str = "") -> RenderableType:
    """The defense-effectiveness view of one frame."""
    system = frame.get("system") or {}
    defenses = frame.get("defenses") or {}
    patterns = frame.get("patterns") or {}
    p99 = system.get("p99_ms")
    headline = Text.assemble(
        ("p99 ", "dim"),
        (f"{p99:.0f} ms" if p99 is not None else "-", "bold"),
        ("   failure radius ", "dim"),
        (f"{system.get('failure_radius_pct', 0.0):.2f}%", "bold"),
        ("   requests/s ", "dim"),
        (f"{system.get('requests_per_second', 0.0):.1f}", "bold"),
        ("   cells up ", "dim"),
        (f"{system.get('cells_up', 0)}/{system.get('cells_total', 0)}", "bold"),
    )
    switched = float(defenses.get("switched_on_pct", 0.0))
    protection = Text("Defenses switched on: ") + _bar(switched / 100, 20) + f" {switched:.0f}%"

    active = Table(title="Active Defenses", title_justify="left", show_header=False, expand=True)
    active.add_column(width=2)
    active.add_column(style="bold", no_wrap=True)
    active.add_column()
    for row in defenses.get("rows") or []:
        mark = Text("\u2713", style="green") if row.get("on") else Text("\u2717", style="red")
        detail = Text(str(row.get("detail", "")))
        if row.get("acting"):
            detail.append("  acting", style="bold yellow")
        active.add_row(mark, f"{row.get('label')}:", detail)

    detection = Table(
        title="Pattern Detection", title_justify="left", show_header=False, expand=True
    )
    detection.add_column(no_wrap=True)
    detection.add_column(no_wrap=True)
    detection.add_column(justify="right", no_wrap=True)
    detection.add_column(style="dim", no_wrap=True)
    highest = patterns.get("max") or {}
    for key, label in PATTERN_LABELS.items():
        p = float(highest.get(key, 0.0))
        detection.add_row(f"{label}:", _bar(p, 10), f"{p:.0%}", f"({_pattern_note(key, p)})")
    phase = float(patterns.get("phase_risk", 0.0))
    detection.add_row("Phase transition:", _bar(phase, 10), f"{phase:.0%}", "(proximity)")

    incidents = Table(
        title="Recent Incidents Prevented", title_justify="left", show_header=False, expand=True
    )
    incidents.add_column(style="dim", no_wrap=True)
    incidents.add_column(no_wrap=True)
    incidents.add_column()
    shown = (frame.get("incidents") or [])[:MAX_INCIDENTS]
    for incident in shown:
        cell = incident.get("cell")
        where = "gateway" if cell == "gateway" else f"cell {cell}"
        style = {"detected": "yellow", "operator": "bold red"}.get(incident.get("category"), "")
        count = int(incident.get("count", 1))
        text = Text(str(incident.get("text", "")) + (f" (x{count})" if count > 1 else ""), style)
        incidents.add_row(_clock(float(incident.get("at", 0.0))), where, text)
    if not shown:
        incidents.add_row("", "", Text("none yet", style="dim"))

    title = "EMERGENCE DEFENSE SYSTEM STATUS"
    subtitle = f"{url}  {_clock(float(frame.get('at', time.time())))}"
    return Panel(
        Group(headline, protection, Text(""), active, detection, incidents),
        title=title,
        subtitle=subtitle.strip(),
        border_style="cyan",
    )


def run(
    url: str | None,
    *,
    once: bool,
    interval: float,
    state_dir: str | None = None,
    console: Console | None = None,
) -> int:
    """Print one frame (`once`) or refresh every `interval` s until Ctrl-C; 0, or 1 on error."""
    configuration: dict[str, Any] = {}
    if url:
        configuration["emergence_url"] = url
    if state_dir:
        configuration["emergence_state_dir"] = state_dir
    settings = ExtensionSettings.from_chaos(configuration, None)
    client = AdminClient(settings)
    console = console or Console()
    if once:
        console.print(render_frame(fetch_frame(client), settings.emergence_url))
        return 0
    with Live(console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                try:
                    live.update(render_frame(fetch_frame(client), settings.emergence_url))
                except Exception as error:  # keep watching through a restart of the system
                    live.update(Panel(Text(str(error), style="red"), title="dashboard"))
                time.sleep(interval)
        except KeyboardInterrupt:
            return 0


def dashboard_command(url: str | None, state_dir: str | None, once: bool, interval: float) -> int:
    """The CLI entry point: errors (no token, gateway down) on stderr, exit code 1."""
    from chaoslib.exceptions import ActivityFailed

    if not 0.1 <= interval <= 3600:
        print(f"chaosemergence dashboard: --interval must be in [0.1, 3600], got {interval}")
        return 2
    try:
        return run(url, once=once, interval=interval, state_dir=state_dir)
    except ActivityFailed as error:
        import sys

        print(f"chaosemergence dashboard: {error}", file=sys.stderr)
        return 1
