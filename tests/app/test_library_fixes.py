"""Library behaviour the reference system relies on (fixed while wiring it in)."""

from __future__ import annotations

import asyncio
import random

from chaosemergence.defenses import AdaptiveThrottle, EventLog, LoadShedError
from chaosemergence.defenses.detect import StampedeDetector, StampedeSignals


async def test_a_concurrent_burst_from_idle_is_not_throttled() -> None:
    """Twenty calls in flight at once (a prewarm) are not rejected for being unanswered yet."""
    events = EventLog()
    throttle = AdaptiveThrottle(rng=random.Random(1), events=events)
    gate = asyncio.Event()
    started = 0

    async def call() -> str:
        nonlocal started
        started += 1
        await gate.wait()
        return "ok"

    calls = [asyncio.create_task(throttle.call(call)) for _ in range(20)]
    while started < 20:
        await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results == ["ok"] * 20
    assert throttle.local_rejections == 0 and len(events) == 0
    assert throttle.snapshot()["accepts"] == 20


async def test_a_refusing_backend_is_still_throttled() -> None:
    """Calls the backend refuses still drive the local rejection probability up."""
    throttle = AdaptiveThrottle(rejected_on=(ConnectionError,), rng=random.Random(2))

    async def refused() -> None:
        raise ConnectionError

    outcomes = []
    for _ in range(200):
        try:
            await throttle.call(refused)
        except LoadShedError:
            outcomes.append("local")
        except ConnectionError:
            outcomes.append("backend")
    assert outcomes.count("local") > 150


def test_a_zero_baseline_is_no_baseline() -> None:
    """An idle first reading does not make the first traffic a 5x surge."""
    detector = StampedeDetector()
    detector.observe(StampedeSignals(0.0, 0.0, 0, 0.0, 0.0))
    fired = detector.indicators(StampedeSignals(0.0, 100.0, 0, 10.0, 500.0))
    assert "request_rate" not in fired
    detector.observe(StampedeSignals(0.0, 100.0, 0, 10.0, 20.0))
    assert detector.baseline == 100.0
