"""Chaos Toolkit rollbacks: put the reference system back the way it was."""

from typing import Any

from chaosemergence.actions import stop_traffic as stop_traffic
from chaoslib.types import Configuration, Secrets

from chaosemergence.client import AdminClient
from chaosemergence.lease import release_lease

__all__ = ["clear_faults", "reset_all_defenses", "stop_traffic"]


def reset_all_defenses(
    configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Reset everything: clear faults, close breakers, restore jitter, re-enable every defense.

    Also restarts killed cells. Idempotent: safe to run twice or with nothing to reset.
    """
    client = AdminClient.from_chaos(configuration, secrets)
    answer: dict[str, Any] = client.post("/admin/reset", what="reset all defenses")
    # Nothing weakened any more: no lease to keep (docs/trust.md).
    release_lease(client.settings)
    cells = answer["cells"]
    return {
        "restarted_cells": answer["restarted"],
        "faults_cleared": sum(c.get("faults_cleared", 0) for c in cells.values()),
        "cells_reset": sum(1 for c in cells.values() if "error" not in c),
    }


def clear_faults(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Remove every injected fault from every cell now, before its expiry."""
    answer: dict[str, Any] = AdminClient.from_chaos(configuration, secrets).request(
        "DELETE", "/admin/faults", what="clear faults"
    )
    return answer
