"""Alertmanager configuration: route the alerts of alerts.yml to a webhook (on-call).

`observability/alertmanager.yml` is the example to start from (docs/observability.md shows
how to swap the webhook for PagerDuty, Opsgenie, Slack or e-mail); tests write theirs with
`alertmanager_yaml`, with short waits so a page arrives within seconds.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["alertmanager_yaml"]


def alertmanager_yaml(
    webhook_url: str,
    *,
    group_wait: str = "10s",
    group_interval: str = "1m",
    repeat_interval: str = "4h",
) -> str:
    """Every alert to one webhook, grouped by alert and cell; resolved alerts are sent too."""
    config: dict[str, Any] = {
        "route": {
            "receiver": "on-call",
            "group_by": ["alertname", "cell"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {
                "name": "on-call",
                "webhook_configs": [{"url": webhook_url, "send_resolved": True}],
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)
