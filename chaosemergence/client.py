"""The admin API client every activity uses: bearer token, a timeout on every call, clear errors."""

from __future__ import annotations

from typing import Any

import httpx
from chaoslib.exceptions import ActivityFailed

from chaosemergence.settings import ExtensionSettings

__all__ = ["AdminClient"]


class AdminClient:
    """Talks to the gateway's /admin API; every failure is an ActivityFailed naming the URL."""

    def __init__(self, settings: ExtensionSettings) -> None:
        self.settings = settings

    @classmethod
    def from_chaos(
        cls, configuration: dict[str, Any] | None, secrets: dict[str, Any] | None
    ) -> AdminClient:
        return cls(ExtensionSettings.from_chaos(configuration, secrets))

    def request(self, method: str, path: str, *, what: str, **kwargs: Any) -> Any:
        """Send one admin call; `what` says in words what was being done (for the error).

        It goes to the admin API's own listener (docs/trust.md); when a published one does
        not take the connection (a stale file), to the main URL, which relays admin paths.
        """
        base = self.settings.admin_url()
        url = f"{base}{path}"
        headers = {"Authorization": f"Bearer {self.settings.admin_token()}"}
        try:
            try:
                response = httpx.request(
                    method, url, headers=headers, timeout=self.settings.timeout, **kwargs
                )
            except httpx.ConnectError:
                if base == self.settings.emergence_url or self.settings.explicit_admin_url:
                    raise
                url = f"{self.settings.emergence_url}{path}"
                response = httpx.request(
                    method, url, headers=headers, timeout=self.settings.timeout, **kwargs
                )
        except httpx.TimeoutException:
            raise ActivityFailed(
                f"{what}: {method} {url} got no answer within {self.settings.timeout:.0f} s"
            ) from None
        except httpx.HTTPError as error:
            raise ActivityFailed(
                f"{what}: {method} {url} failed: {type(error).__name__}: {error}"
            ) from None
        if response.status_code == 401:
            raise ActivityFailed(
                f"{what}: {method} {url} answered 401: wrong or missing admin token"
            )
        if response.status_code >= 400:
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text
            raise ActivityFailed(
                f"{what}: {method} {url} answered {response.status_code}: {detail}"
            )
        return response.json()

    def get(self, path: str, *, what: str, **kwargs: Any) -> Any:
        return self.request("GET", path, what=what, **kwargs)

    def post(self, path: str, *, what: str, **kwargs: Any) -> Any:
        return self.request("POST", path, what=what, **kwargs)
