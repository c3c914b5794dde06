"""Which optional extra a feature needs, and a clear error when it is not installed.

`pip install chaostoolkit-emergence` gives the Chaos Toolkit activities and the defense
library; the reference system, Locust and the Prometheus recorder are extras
(docs/decisions.md, issue 11). A feature that needs one calls `require` before importing it.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtraError", "require"]

# extra -> the import names it provides (what `require` looks for).
EXTRAS: dict[str, tuple[str, ...]] = {
    "reference": ("starlette", "uvicorn", "aiohttp", "prometheus_client", "rich"),
    "traffic": ("locust",),
    "prometheus": ("prometheus_client",),
    "embed": ("starlette", "prometheus_client"),
}


class MissingExtraError(ImportError):
    """A feature needs an extra that is not installed; the message says how to install it."""

    def __init__(self, feature: str, extra: str, missing: list[str]) -> None:
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"{feature} needs the [{extra}] extra ({', '.join(missing)} not installed): "
            f"pip install 'chaostoolkit-emergence[{extra}]'"
        )


def require(extra: str, feature: str) -> None:
    """Raise `MissingExtraError` naming `extra` unless every module it provides imports."""
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(feature, extra, missing)
