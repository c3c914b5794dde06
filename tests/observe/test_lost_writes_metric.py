"""emergence_acknowledged_writes_lost: what the AcknowledgedWriteLost alert reads."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx

from chaosemergence.observe.lost_writes import LostWriteWatch
from tests.app.helpers import start_configured, users_of, wait_for
from tests.app.test_lost_writes import MIN_ACKS, Payments, _cell_pid, _gone
from tests.conftest import RunningSystem, stop_system


class Database:
    """Committed keys per cell; counts the keys it was asked about."""

    def __init__(self) -> None:
        self.committed: dict[int, set[str]] = {0: set(), 1: set()}
        self.asked: list[list[str]] = []
        self.answering = True

    async def missing(self, cell: int, keys: list[str]) -> list[str] | None:
        if not self.answering:
            return None
        self.asked.append(keys)
        return [k for k in keys if k not in self.committed[cell]]


async def test_a_key_missing_at_two_checks_is_lost_and_committed_keys_are_asked_once() -> None:
    acknowledged: dict[int, set[str]] = {0: set(), 1: set()}
    db = Database()
    watch = LostWriteWatch(acknowledged)
    acknowledged[0] |= {"a", "b"}
    db.committed[0] |= {"a"}  # "b" is still in the write-behind queue
    assert await watch.check(db.missing) == {0: 0, 1: 0}
    db.committed[0] |= {"b"}  # committed before the next check: not lost
    acknowledged[0] |= {"c"}
    assert await watch.check(db.missing) == {0: 0, 1: 0}
    assert db.asked == [["a", "b"], ["b", "c"]]  # "a" was confirmed: never asked again
    db.committed[0] |= {"c"}
    acknowledged[1] |= {"x"}  # never committed (the cell died with it queued)
    assert await watch.check(db.missing) == {0: 0, 1: 0}  # missing once: maybe in flight
    assert await watch.check(db.missing) == {0: 0, 1: 1}  # missing twice: lost
    db.answering = False  # a cell that cannot answer keeps its last verdict
    assert await watch.check(db.missing) == {0: 0, 1: 1}
    db.answering = True
    assert await watch.check(db.missing) == {0: 0, 1: 1}  # and stays lost


def _gauge(system: RunningSystem, cell: int) -> float:
    text = httpx.get(f"{system.url}/metrics", timeout=5).text
    found = re.search(rf'^emergence_acknowledged_writes_lost\{{cell="{cell}"\}} (\S+)$', text, re.M)
    assert found, "the gateway does not export emergence_acknowledged_writes_lost"
    return float(found.group(1))


def test_the_gateway_exports_writes_lost_when_a_cell_dies_mid_write(tmp_path: Path) -> None:
    """Unsafe write-behind, SIGKILL right after an ack: the gauge reaches the ledger's count."""
    system = start_configured(tmp_path, {"unsafe_ack_before_commit": True}, cells=2)
    try:
        assert _gauge(system, 0) == 0.0
        pid = _cell_pid(system, 0)
        with Payments(system.url, users_of(2, 0, 24, "payer-")) as payments:
            payments.wait_for_fresh_ack(after=MIN_ACKS)
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: _gone(pid), bool, 10, "cell 0 to die")
        lost = system.admin("GET", "/admin/lost-writes").json()["lost_writes"]
        assert lost > 0
        # Two checks 5 s apart see the same keys missing.
        wait_for(lambda: _gauge(system, 0), lambda v: v == lost, 20, "the lost-writes gauge")
        assert _gauge(system, 1) == 0.0
    finally:
        stop_system(system)
