"""The cells as the gateway's admin calls see them: one call fanned out to the live ones.

A fleet object over the supervisor: it knows which cells are alive and where, and sends
them admin calls with the token, each bounded by a timeout; a cell that is down or did not
answer in time is named in the answer, never waited on.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from chaosemergence.app.storage import missing_in_file
from chaosemergence.app.supervisor import Supervisor

__all__ = ["ADMIN_FANOUT_TIMEOUT", "CellFleet"]

# Every admin call the gateway fans out to a cell gets this long: the admin API answers
# within a second at any load, a cell that did not answer in time is named in the answer.
ADMIN_FANOUT_TIMEOUT = 0.8
SIGNAL_TIMEOUT = 1.0


class CellFleet:
    """Admin calls to the supervisor's cells, through ``admin_client`` unless told ``via``.

    ``admin_client`` belongs to the admin API's loop; the data plane passes its own client
    (a client belongs to one loop).
    """

    def __init__(self, supervisor: Supervisor, token: str, admin_client: httpx.AsyncClient):
        self.supervisor = supervisor
        self.cells = supervisor.settings.cells
        self.admin_client = admin_client
        self._headers = {"Authorization": f"Bearer {token}"}

    async def fan_out(
        self,
        method: str,
        path: str,
        cells: list[int] | None = None,
        *,
        via: httpx.AsyncClient | None = None,
        **kwargs: Any,
    ) -> dict[int, Any]:
        """Send one admin call to the chosen live cells; per-cell answers (or errors)."""
        client = self.admin_client if via is None else via
        chosen = range(self.cells) if cells is None else cells

        async def one(index: int) -> tuple[int, Any]:
            cell = self.supervisor.cells[index]
            if not cell.alive:
                return index, {"error": "cell is down"}
            try:
                answer = await client.request(
                    method,
                    f"{cell.url}{path}",
                    headers=self._headers,
                    timeout=ADMIN_FANOUT_TIMEOUT,
                    **kwargs,
                )
                return index, answer.json()
            except httpx.TimeoutException:
                return index, {"error": f"cell did not answer within {ADMIN_FANOUT_TIMEOUT} s"}
            except (httpx.HTTPError, ValueError) as error:
                return index, {"error": f"{type(error).__name__}: {error}"}

        return dict(await asyncio.gather(*(one(i) for i in chosen)))

    async def missing_payments(
        self, index: int, keys: list[str], *, via: httpx.AsyncClient | None = None
    ) -> Any:
        """Cell ``index``'s answer to which of ``keys`` its database lacks.

        ``{"missing": [...]}``, or ``{"error": ...}`` when it did not answer. A dead cell's
        database file is still there: it is read directly.
        """
        if self.supervisor.cells[index].alive:
            path = "/admin/payments/missing"
            return (await self.fan_out("POST", path, [index], via=via, json={"keys": keys}))[index]
        db = self.supervisor.run_dir / f"cell-{index}.sqlite3"
        return {"missing": await asyncio.to_thread(missing_in_file, db, keys)}

    async def push_signals(self, payload: dict[str, Any], *, via: httpx.AsyncClient) -> None:
        """Tell every live cell the gateway's signals (a cell that does not answer misses it)."""

        async def push(index: int) -> None:
            cell = self.supervisor.cells[index]
            if cell.alive:
                with contextlib.suppress(httpx.HTTPError):
                    await via.post(
                        f"{cell.url}/admin/signals",
                        json=payload,
                        headers=self._headers,
                        timeout=SIGNAL_TIMEOUT,
                    )

        await asyncio.gather(*(push(i) for i in range(self.cells)))
