"""Issue 11: a small public surface; detectors and the control loop in their own namespaces."""

from __future__ import annotations

import importlib
import pkgutil

import chaosemergence.defenses as defenses
from chaosemergence.defenses import control, detect, metrics

# The primitives most services need, and nothing else, at the top.
TOP = {
    "PRIORITIES",
    "AdaptiveThrottle",
    "Backoff",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "DecorrelatedJitterBackoff",
    "DefenseError",
    "DefenseEvent",
    "EventLog",
    "ExponentialBackoff",
    "Fallback",
    "FullJitterBackoff",
    "Guard",
    "HashRing",
    "Jitter",
    "LoadShedError",
    "LoadShedder",
    "MetricsRecorder",
    "ProbabilisticExpiry",
    "RetryBudget",
    "RetryPolicy",
    "ShedDecision",
    "SingleFlight",
    "should_refresh",
    "stable_hash",
}
NAMESPACES = {"detect", "control", "metrics"}


def test_top_level_exports_the_primitives() -> None:
    """`__all__` is exactly the primitives, and each one is importable from the top."""
    assert set(defenses.__all__) == TOP
    for name in TOP:
        assert getattr(defenses, name) is not None


def test_detectors_and_control_are_not_at_the_top() -> None:
    """The control loop and the detectors live in their namespaces, not in the flat one."""
    for name in ("ControlLoop", "StagedRecovery", "MemoryGuardrail"):
        assert name in control.__all__ and name not in defenses.__all__
    for name in ("MetastableDetector", "StampedeDetector", "pearson", "ComplexityBudget"):
        assert name in detect.__all__ and name not in defenses.__all__
    assert "InMemoryRecorder" in metrics.__all__


def test_every_namespace_exports_what_it_names() -> None:
    """Each `__all__` name resolves, and no two namespaces export the same object twice."""
    seen: dict[str, str] = {}
    for module in (defenses, detect, control, metrics):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
            assert name not in seen or name == "MetricsRecorder", (name, seen.get(name))
            seen[name] = module.__name__


def test_module_files_are_private() -> None:
    """Every module in the package is a namespace or starts with an underscore."""
    names = {info.name for info in pkgutil.iter_modules(defenses.__path__)}
    public = {name for name in names if not name.startswith("_")}
    assert public == NAMESPACES
    for name in names - NAMESPACES:
        importlib.import_module(f"chaosemergence.defenses.{name}")
