"""Keeps the reference system's lease while this process runs an experiment (docs/trust.md).

Switching defenses off or removing the jitter takes a lease at the gateway
(`chaosemergence.app.lease`). This process renews it from a daemon thread every third of
its length, for as long as the gateway says something is held; when this process dies
(SIGKILL included) the renewals stop, the lease runs out, and the system puts every
defense back on by itself. A rollback that resets the system, or the reference-system
control's cleanup, stops the renewals.
"""

from __future__ import annotations

import logging
import threading

import httpx

from chaosemergence.settings import ExtensionSettings

__all__ = ["LeaseKeeper", "keep_lease", "keepers", "release_lease"]

logger = logging.getLogger("chaostoolkit")


class LeaseKeeper:
    """Renews one system's lease every ``lease_seconds / 3`` until told to stop or not held."""

    def __init__(self, settings: ExtensionSettings) -> None:
        self.settings = settings
        self.interval = settings.lease_seconds / 3
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + self.settings.timeout)

    def renew(self) -> bool | None:
        """One renewal: True held, False nothing held, None no answer."""
        url = f"{self.settings.admin_url()}/admin/lease"
        headers = {"Authorization": f"Bearer {self.settings.admin_token()}"}
        try:
            answer = httpx.post(
                url,
                json={"seconds": self.settings.lease_seconds},
                headers=headers,
                timeout=min(self.settings.timeout, self.interval),
            )
            answer.raise_for_status()
            held = bool(answer.json().get("held"))
        except (httpx.HTTPError, ValueError) as error:
            logger.debug("lease: renewal at %s failed: %s", url, error)
            return None
        self.renewals += 1
        return held

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                held = self.renew()
            except Exception as error:  # never let the thread die on a surprise
                logger.debug("lease: renewal failed: %s", error)
                continue
            if held is False:
                return  # nothing weakened any more: nothing to keep


_lock = threading.Lock()
# Guarded by _lock: one keeper per system (its URL).
keepers: dict[str, LeaseKeeper] = {}


def keep_lease(settings: ExtensionSettings) -> LeaseKeeper:
    """Renew `settings`' system's lease from now on (idempotent while renewals run)."""
    with _lock:
        keeper = keepers.get(settings.emergence_url)
        if keeper is None or not keeper.running:
            keeper = LeaseKeeper(settings)
            keepers[settings.emergence_url] = keeper
            keeper.start()
        return keeper


def release_lease(settings: ExtensionSettings | None = None) -> None:
    """Stop renewing (one system's lease, or every one): it is released or left to expire."""
    with _lock:
        chosen = (
            list(keepers)
            if settings is None
            else [u for u in keepers if u == settings.emergence_url]
        )
        stopping = [keepers.pop(url) for url in chosen]
    for keeper in stopping:
        keeper.stop()
