"""The Prometheus configuration for a running reference system, written in one place.

Prometheus finds every process through the gateway's `/targets` (HTTP service discovery,
the same list the gateway, the cells and a restarted cell are always on), scrapes them every
second and evaluates the alert rules shipped with the package (`alerts.yml`, beside this
file). `.ci/weekly.sh`, `chaosemergence serve --prometheus` and the tests all write their
prometheus.yml with `prometheus_yaml`:

    python -m chaosemergence.observe.prometheus_config http://127.0.0.1:8080/targets \
        --rules /path/to/alerts.yml --alertmanager 127.0.0.1:9093 > prometheus.yml
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["JOB", "alert_rules", "alerts_file", "main", "prometheus_yaml", "rules_with_for"]

JOB = "chaosemergence"


def alerts_file() -> Path:
    """The alert rules shipped with the package (chaosemergence/observe/alerts.yml)."""
    return Path(str(resources.files("chaosemergence.observe").joinpath("alerts.yml")))


def alert_rules() -> dict[str, Any]:
    """The shipped rule groups, parsed."""
    rules: dict[str, Any] = yaml.safe_load(alerts_file().read_text())
    return rules


def rules_with_for(seconds: float) -> str:
    """The shipped rules with every `for:` capped at `seconds` (tests: alerts within seconds)."""
    rules = alert_rules()
    for group in rules["groups"]:
        for rule in group["rules"]:
            if _seconds(str(rule.get("for", "0s"))) > seconds:
                rule["for"] = f"{seconds:g}s"
    return yaml.safe_dump(rules, sort_keys=False)


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h)", duration):
        total += int(number) * units[unit]
    return total


def prometheus_yaml(
    targets_url: str,
    *,
    rule_files: list[str] | None = None,
    alertmanagers: list[str] | None = None,
    interval: str = "1s",
) -> str:
    """prometheus.yml scraping what `targets_url` (the gateway's /targets) lists.

    `rule_files` default to the shipped alerts.yml; `alertmanagers` are host:port targets
    (none: alerts are evaluated and visible at /alerts, but not sent anywhere).
    """
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": rule_files if rule_files is not None else [str(alerts_file())],
        "scrape_configs": [
            {
                "job_name": JOB,
                "http_sd_configs": [{"url": targets_url, "refresh_interval": interval}],
            }
        ],
    }
    if alertmanagers:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]
        }
    header = "# Written by chaosemergence.observe.prometheus_config: what the gateway lists.\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaosemergence.observe.prometheus_config", description=__doc__
    )
    parser.add_argument("targets_url", help="the gateway's /targets URL")
    parser.add_argument(
        "--rules", action="append", default=None, help="rule file (default: the shipped alerts)"
    )
    parser.add_argument(
        "--alertmanager", action="append", default=None, help="host:port of an Alertmanager"
    )
    parser.add_argument("--interval", default="1s", help="scrape and evaluation interval")
    args = parser.parse_args(argv)
    sys.stdout.write(
        prometheus_yaml(
            args.targets_url,
            rule_files=args.rules,
            alertmanagers=args.alertmanager,
            interval=args.interval,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
