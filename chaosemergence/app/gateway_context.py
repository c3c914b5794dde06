"""What the gateway's data plane and admin API share, and the helpers both use.

``GatewayContext`` is built once by ``create_gateway`` (app/gateway.py); each field says
which event loop owns it or what guards it (docs/trust.md: two listeners, two loops).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from starlette.responses import JSONResponse

from chaosemergence.app.gateway_defenses import GatewayDefenses, GatewaySwitches
from chaosemergence.app.gateway_fleet import CellFleet
from chaosemergence.app.handoff import DataPlaneHandoff
from chaosemergence.app.lease import Lease
from chaosemergence.app.metrics import GatewayMetrics
from chaosemergence.app.settings import SystemSettings
from chaosemergence.app.supervisor import Supervisor
from chaosemergence.app.sync import SharedDependencyHost
from chaosemergence.app.window import MetricWindow
from chaosemergence.contract import AdminContract, InvalidField

__all__ = [
    "AcknowledgedPayments",
    "GatewayContext",
    "bad_request",
    "cancel_tasks",
    "every",
]

logger = logging.getLogger("chaosemergence.gateway")


class AcknowledgedPayments:
    """The payments each cell acknowledged (by idempotency key), per cell.

    Written by the data plane, copied by the admin API: guarded by ``lock``.
    """

    def __init__(self, cells: int) -> None:
        self.lock = threading.Lock()
        self.by_cell: dict[int, set[str]] = {i: set() for i in range(cells)}

    def add(self, cell: int, key: str) -> None:
        with self.lock:
            self.by_cell[cell].add(key)

    def copy(self) -> dict[int, set[str]]:
        with self.lock:
            return {index: set(keys) for index, keys in self.by_cell.items()}


@dataclass
class GatewayContext:
    """The gateway's shared state: who owns what is in each field's comment."""

    settings: SystemSettings
    supervisor: Supervisor
    token: str
    registry: CollectorRegistry
    metrics: GatewayMetrics
    # Ticked by the admin loop; read by /admin/increase.
    window: MetricWindow
    # The admin API's contract: what the handlers check, and the document they publish.
    contract: AdminContract
    # The shared dependency the cells call (hosted by the data plane; faults, series locked).
    shared: SharedDependencyHost
    # Data-plane loop only; the admin API reads ``defenses.published``.
    defenses: GatewayDefenses
    # What the admin API last set of the gateway's switches (locked).
    switches: GatewaySwitches
    # Written by the data plane, copied by the admin API (locked).
    payments: AcknowledgedPayments
    # The admin calls to the cells (the admin API's client by default).
    fleet: CellFleet
    handoff: DataPlaneHandoff
    # The lease on what the tool weakened (admin loop only; app/lease.py).
    lease: Lease
    started_at: float
    # Where the admin listener is, once bound (the data plane relays /admin there).
    admin_url: list[str] = field(default_factory=list)


async def cancel_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel a lifespan's periodic tasks and wait until each has stopped."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def every(seconds: float, work: Callable[[], Awaitable[None] | None], name: str) -> None:
    """Run ``work`` every ``seconds`` until cancelled; a failure is logged, not fatal."""
    while True:
        try:
            result = work()
            if result is not None:
                await result
        except Exception:
            logger.exception("gateway loop %s failed", name)
        await asyncio.sleep(seconds)


def bad_request(error: ValueError | str) -> JSONResponse:
    """400 naming the field (``InvalidField``; a body that is not JSON names ``body``)."""
    field = error.field if isinstance(error, InvalidField) else "body"
    return JSONResponse({"error": str(error), "field": field}, status_code=400)
