"""chaosemergence: emergence defenses, a reference system and a Chaos Toolkit extension."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "discover"]


def discover(discover_system: bool = True) -> dict[str, Any]:
    """Chaos Toolkit discovery: every action, probe and rollback, with docstring and arguments."""
    from chaoslib.discovery.discover import discover_activities, initialize_discovery_result

    discovery: dict[str, Any] = initialize_discovery_result(
        "chaostoolkit-emergence", __version__, "emergence"
    )
    for module, kind in (
        ("chaosemergence.actions", "action"),
        ("chaosemergence.probes", "probe"),
        ("chaosemergence.rollbacks", "action"),
    ):
        discovery["activities"].extend(discover_activities(module, kind))
    return discovery
