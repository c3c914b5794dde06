"""The admin API a Starlette or FastAPI service embeds, so the extension drives it.

``EmergenceAdmin`` is a registry the service fills (its dependencies with their guards, its
caches, its timers' jitter, other defense switches) and the token-protected ``/admin`` API
and ``/metrics`` it mounts: the same paths and JSON the reference system's gateway serves,
so the extension's actions and probes work against the service unchanged
(docs/your-service.md). Needs the ``[embed]`` extra (Starlette and prometheus-client).
"""

from chaosemergence.extras import require

require("embed", "chaosemergence.embed")

from ._admin import Dependency, DependencyFault, EmergenceAdmin  # noqa: E402

__all__ = ["Dependency", "DependencyFault", "EmergenceAdmin"]
