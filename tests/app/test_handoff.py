"""DataPlaneHandoff: the admin API's changes reach the data-plane loop without waiting on it."""

from __future__ import annotations

import asyncio
import threading

from chaosemergence.app.gateway import DataPlaneHandoff


def test_without_a_running_loop_the_change_runs_at_once() -> None:
    """Before the data plane starts (or after it stopped) nobody else touches its objects."""
    handoff = DataPlaneHandoff()
    ran: list[str] = []
    handoff.run(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name] and handoff.handed_off == 0


def test_a_blocked_loop_does_not_block_the_caller_and_runs_the_change_when_free() -> None:
    """The loop is stuck (a gate): run() returns at once; the change runs on the loop's own
    thread once the gate opens, before anything queued after it."""
    loop = asyncio.new_event_loop()
    gate, started = threading.Event(), threading.Event()
    order: list[str] = []

    def stuck() -> None:
        started.set()
        gate.wait(timeout=10)

    thread = threading.Thread(target=loop.run_forever, name="data-plane", daemon=True)
    thread.start()
    try:
        loop.call_soon_threadsafe(stuck)
        assert started.wait(timeout=5)
        handoff = DataPlaneHandoff()
        handoff.attach(loop)
        handoff.run(lambda: order.append(f"change on {threading.current_thread().name}"))
        assert order == [] and handoff.handed_off == 1  # returned without waiting
        loop.call_soon_threadsafe(lambda: order.append("later request"))
        gate.set()
        done = threading.Event()
        loop.call_soon_threadsafe(done.set)
        assert done.wait(timeout=5)
        assert order == ["change on data-plane", "later request"]
    finally:
        gate.set()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
