"""The Grafana dashboard of the reference system, generated with Grafana's own SDK.

The seed's seven views, one row each, every panel a PromQL query on the metrics of
chaosemergence/app/metrics.py (the same numbers the probes read). The JSON is committed
(observability/grafana/chaosemergence.json); regenerate it after changing a panel:

    python -m chaosemergence.observe.grafana -o observability/grafana/chaosemergence.json

Needs the `grafana` extra (grafana-foundation-sdk). Import the JSON in Grafana (Dashboards >
New > Import) and pick a Prometheus data source that scrapes the system
(docs/observability.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "PANELS",
    "VIEWS",
    "Query",
    "View",
    "build_dashboard",
    "dashboard_json",
    "dashboard_problems",
    "main",
]

UID = "chaosemergence"
DATASOURCE_VARIABLE = "datasource"
Kind = Literal["timeseries", "stat", "state-timeline"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    queries: tuple[Query, ...]
    kind: Kind = "timeseries"
    unit: str = "short"
    minimum: float | None = None
    maximum: float | None = None
    threshold: float | None = None  # red at and above
    mappings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class View:
    title: str
    panels: tuple[PanelSpec, ...]


def _q(expr: str, legend: str = "") -> tuple[Query, ...]:
    return (Query(expr, legend),)


BREAKER_STATES = {"0": "CLOSED", "1": "OPEN", "2": "HALF-OPEN", "3": "EMERGENCY"}
RECOVERY_PHASES = {"0": "idle", "1": "paused", "2": "restoring", "3": "manual"}
ERROR_RATIO = (
    'sum(rate(emergence_requests_total{outcome="failure"}[1m])) '
    "/ sum(rate(emergence_requests_total[1m]))"
)

VIEWS: tuple[View, ...] = (
    View(
        "Circuit breakers",
        (
            PanelSpec(
                "Breaker state (cells' dependencies)",
                "Each cell's breaker in front of each dependency.",
                _q(
                    "max by (cell, dependency) (emergence_breaker_state)",
                    "cell {{cell}} {{dependency}}",
                ),
                kind="state-timeline",
                mappings=BREAKER_STATES,
            ),
            PanelSpec(
                "Gateway breaker in front of each cell",
                "The gateway's breaker per cell.",
                _q("max by (cell) (emergence_gateway_breaker_state)", "cell {{cell}}"),
                kind="state-timeline",
                mappings=BREAKER_STATES,
            ),
            PanelSpec(
                "Dependency success rate",
                "Share of dependency attempts that succeeded, per cell and dependency.",
                _q(
                    "sum by (cell, dependency) "
                    '(rate(emergence_dependency_results_total{result="success"}[1m])) '
                    "/ sum by (cell, dependency) (rate(emergence_dependency_results_total[1m]))",
                    "cell {{cell}} {{dependency}}",
                ),
                unit="percentunit",
                minimum=0,
                maximum=1,
            ),
            PanelSpec(
                "User p99 latency by route",
                "The 99th percentile of user-visible latency at the gateway.",
                _q(
                    "histogram_quantile(0.99, sum by (le, route) "
                    "(rate(emergence_request_duration_seconds_bucket[1m])))",
                    "{{route}}",
                ),
                unit="s",
                threshold=1.0,
            ),
            PanelSpec(
                "Breaker trips",
                "Breakers entering OPEN or EMERGENCY over the last 5 minutes.",
                _q(
                    "sum by (cell, dependency, state) "
                    "(increase(emergence_breaker_trips_total[5m]))",
                    "cell {{cell}} {{dependency}} -> {{state}}",
                ),
            ),
            PanelSpec(
                "Emergence risk",
                "Each breaker's emergence risk (above 0.5 it stays open 30 s, above 0.8 60 s).",
                _q(
                    "max by (cell, dependency) (emergence_breaker_emergence_risk)",
                    "cell {{cell}} {{dependency}}",
                ),
                minimum=0,
                maximum=1,
                threshold=0.5,
            ),
        ),
    ),
    View(
        "Complexity budget",
        (
            PanelSpec(
                "Complexity score",
                "Each cell's complexity score; the alert fires above 0.7.",
                _q("max by (cell) (emergence_complexity_score)", "cell {{cell}}"),
                minimum=0,
                maximum=1,
                threshold=0.7,
            ),
            PanelSpec(
                "Shed level",
                "Share of low-priority load the shedder's level drops (0, 0.1, 0.3, 0.7).",
                _q("max by (cell) (emergence_shed_fraction)", "cell {{cell}}"),
                unit="percentunit",
                minimum=0,
                maximum=1,
            ),
            PanelSpec(
                "Requests refused at admission",
                "Per second, by the defense that refused them.",
                _q("sum by (defense) (rate(emergence_shed_requests_total[1m]))", "{{defense}}"),
                unit="reqps",
            ),
        ),
    ),
    View(
        "Stampede prevention",
        (
            PanelSpec(
                "Requests vs computations",
                "Cache misses that joined a computation in flight, and computations made.",
                (
                    Query(
                        "sum(rate(emergence_coalesced_requests_total[1m]))", "coalesced requests"
                    ),
                    Query("sum(rate(emergence_backend_computations_total[1m]))", "computations"),
                    Query("sum(rate(emergence_early_refreshes_total[1m]))", "early refreshes"),
                ),
                unit="ops",
            ),
            PanelSpec(
                "Work saved by coalescing",
                "Computations saved over the last 5 minutes (misses answered by another's).",
                _q("sum(increase(emergence_coalesced_requests_total[5m]))", "computations saved"),
                kind="stat",
            ),
            PanelSpec(
                "Cache hit rate",
                "Share of cache lookups that hit.",
                _q(
                    'sum(rate(emergence_cache_requests_total{result="hit"}[1m])) '
                    "/ sum(rate(emergence_cache_requests_total[1m]))",
                    "hit rate",
                ),
                unit="percentunit",
                minimum=0,
                maximum=1,
            ),
            PanelSpec(
                "Stampede emergency",
                "1 while a cell's stampede protection is in emergency mode.",
                _q("max by (cell) (emergence_stampede_emergency)", "cell {{cell}}"),
                kind="state-timeline",
                mappings={"0": "normal", "1": "EMERGENCY"},
            ),
        ),
    ),
    View(
        "Jitter effectiveness",
        (
            PanelSpec(
                "Correlation on the shared dependency",
                "Largest pairwise correlation of the cells' own load (jitter is added above 0.5).",
                _q("max(emergence_correlation)", "correlation"),
                minimum=-1,
                maximum=1,
                threshold=0.5,
            ),
            PanelSpec(
                "Peak-to-mean of the shared dependency",
                "Peak over mean arrivals per bucket: 1 is flat, high means synchronized bursts.",
                _q("max(emergence_shared_peak_to_mean)", "peak / mean"),
            ),
            PanelSpec(
                "Jitter factor",
                "The jitter factor each cell's timers use (0: naively aligned).",
                _q("max by (cell) (emergence_jitter_factor)", "cell {{cell}}"),
            ),
            PanelSpec(
                "Calls delayed by jitter",
                "Computations delayed 0-100 ms while correlation was above 0.5, per second.",
                _q("sum(rate(emergence_precompute_jitter_delays_total[1m]))", "delayed"),
                unit="ops",
            ),
        ),
    ),
    View(
        "Cascade prevention",
        (
            PanelSpec(
                "Cells up",
                "Cell processes running (the alert pages on a cell down for 10 s).",
                _q("sum(emergence_cell_up)", "cells up"),
                kind="stat",
            ),
            PanelSpec(
                "Failure radius",
                "Share of user requests that fail, over the last minute.",
                _q(ERROR_RATIO, "failing"),
                unit="percentunit",
                minimum=0,
                threshold=0.05,
            ),
            PanelSpec(
                "Cascade risk",
                "0.6 x cross-cell traffic + 0.4 x failing shared resources (alert above 0.1).",
                _q("max by (cell) (emergence_cascade_risk)", "cell {{cell}}"),
                minimum=0,
                maximum=1,
                threshold=0.1,
            ),
            PanelSpec(
                "Isolation score",
                "1 - share of a cell's requests from users homed elsewhere (1 = isolated).",
                _q("min by (cell) (emergence_isolation_score)", "cell {{cell}}"),
                minimum=0,
                maximum=1,
            ),
        ),
    ),
    View(
        "Metastable detection",
        (
            PanelSpec(
                "Metastable state",
                "1 while the detector holds a condition.",
                _q("max by (cell) (emergence_metastable)", "cell {{cell}}"),
                kind="state-timeline",
                mappings={"0": "healthy", "1": "METASTABLE"},
            ),
            PanelSpec(
                "Recovery step",
                "The staged recovery: idle, paused, restoring (ramping), manual.",
                _q("max by (cell) (emergence_recovery_phase)", "cell {{cell}}"),
                kind="state-timeline",
                mappings=RECOVERY_PHASES,
            ),
            PanelSpec(
                "Traffic admitted by the recovery",
                "Share of non-critical ingress the staged recovery lets in (ramp to 100%).",
                _q("min by (cell) (emergence_recovery_admit_fraction)", "cell {{cell}}"),
                unit="percentunit",
                minimum=0,
                maximum=1,
            ),
            PanelSpec(
                "Pattern probabilities",
                "The control loop's probability of each of the six emergent patterns.",
                _q("max by (pattern) (emergence_pattern_probability)", "{{pattern}}"),
                minimum=0,
                maximum=1,
            ),
            PanelSpec(
                "Phase-transition risk",
                "Proximity to a phase transition (the alert fires above 0.7).",
                _q("max by (cell) (emergence_phase_transition_risk)", "cell {{cell}}"),
                minimum=0,
                maximum=1,
                threshold=0.7,
            ),
        ),
    ),
    View(
        "Defense effectiveness",
        (
            PanelSpec(
                "Active defenses",
                "Cells with each defense switched on.",
                _q("sum by (defense) (emergence_defense_enabled)", "{{defense}}"),
            ),
            PanelSpec(
                "Recent incidents prevented",
                "Defense activations over the last 5 minutes, by defense.",
                _q(
                    "sum by (defense) "
                    '(increase(emergence_defense_events_total{kind="activated"}[5m]))',
                    "{{defense}}",
                ),
            ),
            PanelSpec(
                "Retries blocked and requests shed",
                "Retries the retry budget refused and requests refused at admission (5 min).",
                (
                    Query(
                        "sum(increase(emergence_gateway_retries_refused_total[5m]))",
                        "retries blocked",
                    ),
                    Query("sum(increase(emergence_shed_requests_total[5m]))", "requests shed"),
                    Query("sum(increase(emergence_stale_fallbacks_total[5m]))", "served stale"),
                ),
            ),
            PanelSpec(
                "Goodput",
                "User requests answered successfully per second, by route.",
                _q(
                    'sum by (route) (rate(emergence_requests_total{outcome="success"}[1m]))',
                    "{{route}}",
                ),
                unit="reqps",
            ),
            PanelSpec(
                "Alerts firing",
                "The alerts of chaosemergence/observe/alerts.yml firing now.",
                _q('sum by (alertname) (ALERTS{alertstate="firing"})', "{{alertname}}"),
            ),
        ),
    ),
)

PANELS: tuple[PanelSpec, ...] = tuple(p for view in VIEWS for p in view.panels)


def _panel(spec: PanelSpec, panel_id: int) -> Any:
    from grafana_foundation_sdk.builders import common as options
    from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, timeseries
    from grafana_foundation_sdk.builders.dashboard import ThresholdsConfig
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import dashboard as model

    legend = (
        options.VizLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .calcs([])
    )
    tooltip = (
        options.VizTooltipOptions()
        .mode(common.TooltipDisplayMode.MULTI)
        .sort(common.SortOrder.NONE)
    )
    builder: Any
    if spec.kind == "stat":
        builder = (
            stat.Panel()
            .reduce_options(options.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .graph_mode(common.BigValueGraphMode.AREA)
        )
    elif spec.kind == "state-timeline":
        builder = (
            statetimeline.Panel()
            .show_value(common.VisibilityMode.AUTO)
            .legend(legend)
            .tooltip(tooltip)
        )
    else:
        builder = timeseries.Panel().legend(legend).tooltip(tooltip)
    builder = (
        builder.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(model.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}"))
        .unit(spec.unit)
        .height(8)
        .span(8)
    )
    for index, query in enumerate(spec.queries):
        target = prometheus.Dataquery().expr(query.expr).ref_id("ABCDEFGH"[index])
        if query.legend:
            target = target.legend_format(query.legend)
        builder = builder.with_target(target)
    if spec.minimum is not None:
        builder = builder.min(spec.minimum)
    if spec.maximum is not None:
        builder = builder.max(spec.maximum)
    if spec.threshold is not None:
        builder = builder.thresholds(
            ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(None, "green"), model.Threshold(spec.threshold, "red")])
        )
    if spec.mappings:
        mapped = {
            value: model.ValueMappingResult(text=text, color=_color(text))
            for value, text in spec.mappings.items()
        }
        builder = builder.mappings([model.ValueMap(options=mapped)])
    return builder


def _color(text: str) -> str:
    if text in ("CLOSED", "healthy", "idle", "normal"):
        return "green"
    if text in ("HALF-OPEN", "restoring", "paused"):
        return "yellow"
    return "red"


def build_dashboard() -> Any:
    """The dashboard model (grafana_foundation_sdk.models.dashboard.Dashboard)."""
    from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row

    builder = (
        Dashboard("chaosemergence: emergent failures and their defenses")
        .uid(UID)
        .description(
            "The seed's seven views of the reference system (chaosemergence), generated by "
            "chaosemergence.observe.grafana."
        )
        .tags(["chaosemergence", "chaos-engineering", "emergence"])
        .time("now-15m", "now")
        .refresh("5s")
        .with_variable(
            DatasourceVariable(DATASOURCE_VARIABLE).label("Prometheus").type("prometheus")
        )
    )
    panel_id = 0
    for view in VIEWS:
        panel_id += 1
        builder = builder.with_row(Row(view.title).id(panel_id))
        for spec in view.panels:
            panel_id += 1
            builder = builder.with_panel(_panel(spec, panel_id))
    return builder.build()


def dashboard_json() -> str:
    """The dashboard as Grafana's JSON model, as committed (sorted keys, 2-space indent)."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return json.dumps(build_dashboard(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def _differences(path: str, original: Any, decoded: Any) -> list[str]:
    """Where `decoded` (a round trip through the SDK's types) lost or changed `original`."""
    if isinstance(original, dict) and isinstance(decoded, dict):
        found = [f"{path}.{key}: not in the SDK's model" for key in original if key not in decoded]
        for key in original.keys() & decoded.keys():
            found += _differences(f"{path}.{key}", original[key], decoded[key])
        return found
    if isinstance(original, list) and isinstance(decoded, list) and len(original) == len(decoded):
        return [
            problem
            for i, (a, b) in enumerate(zip(original, decoded, strict=True))
            for problem in _differences(f"{path}[{i}]", a, b)
        ]
    return [] if original == decoded else [f"{path}: {original!r} read back as {decoded!r}"]


def dashboard_problems(data: dict[str, Any]) -> list[str]:
    """What makes `data` not a valid dashboard for Grafana (empty: valid).

    Every field must survive a round trip through the SDK's generated types (the dashboard,
    each panel's options for its plugin, each Prometheus query), and the structure must hold:
    unique panel ids, known panel types, a 24-column grid, queries with unique refIds on the
    `datasource` variable, which must be a Prometheus data-source variable.
    """
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import prometheus, stat, statetimeline, timeseries
    from grafana_foundation_sdk.models.dashboard import Dashboard

    def through(model: Any) -> Any:
        return json.loads(json.dumps(model, cls=JSONEncoder))

    plugins: dict[str, Any] = {
        "timeseries": timeseries,
        "stat": stat,
        "state-timeline": statetimeline,
    }
    problems = _differences("dashboard", data, through(Dashboard.from_json(data)))
    variables = data.get("templating", {}).get("list", [])
    if not any(
        v.get("type") == "datasource"
        and v.get("name") == DATASOURCE_VARIABLE
        and v.get("query") == "prometheus"
        for v in variables
    ):
        problems.append(f"no Prometheus data-source variable named {DATASOURCE_VARIABLE!r}")
    panels = data.get("panels")
    if not isinstance(panels, list) or not panels:
        return [*problems, "no panels"]
    ids = [panel.get("id") for panel in panels]
    if len(set(ids)) != len(ids) or not all(isinstance(i, int) for i in ids):
        problems.append(f"panel ids must be unique integers: {ids}")
    for panel in panels:
        where = f"panel {panel.get('id')} ({panel.get('title')!r})"
        grid = panel.get("gridPos", {})
        if not (
            grid.get("w", 0) > 0
            and grid.get("h", 0) > 0
            and grid.get("x", -1) >= 0
            and grid["x"] + grid["w"] <= 24
            and grid.get("y", -1) >= 0
        ):
            problems.append(f"{where}: gridPos {grid} outside the 24-column grid")
        if panel.get("type") == "row":
            continue
        plugin = plugins.get(str(panel.get("type")))
        if plugin is None:
            problems.append(f"{where}: unknown panel type {panel.get('type')!r}")
            continue
        options = panel.get("options")
        if not isinstance(options, dict):
            problems.append(f"{where}: no options")
        else:
            decoded = through(plugin.Options.from_json(options))
            problems += _differences(f"{where}.options", options, decoded)
        if panel.get("datasource") != {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}:
            problems.append(f"{where}: datasource {panel.get('datasource')} is not the variable")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no query")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            problems.append(f"{where}: duplicate refIds {refs}")
        for target in targets:
            decoded = through(prometheus.Dataquery.from_json(target))
            problems += _differences(f"{where}.targets", target, decoded)
            if not str(target.get("expr", "")).strip():
                problems.append(f"{where}: empty query")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaosemergence.observe.grafana")
    parser.add_argument("-o", "--output", default="-", help="file to write (default stdout)")
    args = parser.parse_args(argv)
    text = dashboard_json()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
