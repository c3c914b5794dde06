"""The cell's client for the dependency every cell shares, hosted by the gateway.

``POST /internal/shared/{cell}`` with the admin token; the gateway's answer becomes the
same exceptions a local simulated dependency raises, so the retry policy treats both alike.
"""

from __future__ import annotations

import httpx

from chaosemergence.app.dependency import DependencyError, DependencyOverloaded, DependencyTimeout

__all__ = ["SharedDependencyClient"]


class SharedDependencyClient:
    """Calls the shared dependency through the gateway on behalf of one cell."""

    def __init__(self, gateway_url: str, token: str, cell: int, timeout: float = 2.0) -> None:
        self.url = f"{gateway_url}/internal/shared/{cell}"
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=1.0),
            headers={"Authorization": f"Bearer {token}"},
        )

    async def call(self) -> None:
        """One call; raises a DependencyError subclass when it did not succeed."""
        try:
            answer = await self._client.post(self.url)
        except httpx.TimeoutException:
            raise DependencyTimeout("shared_config: the gateway did not answer in time") from None
        except httpx.HTTPError as error:
            raise DependencyError(f"shared_config: {type(error).__name__}: {error}") from None
        if answer.status_code == 504:
            raise DependencyTimeout("shared_config: timed out")
        if answer.status_code == 503:
            raise DependencyOverloaded("shared_config: overloaded")
        if answer.status_code >= 400:
            raise DependencyError(f"shared_config: answered {answer.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()
