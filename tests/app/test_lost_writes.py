"""`lost_writes` can fail: a cell SIGKILLed mid-write loses payments only when it acks first."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaosemergence import probes
from chaosemergence.app.storage import CellStore, missing_in_file
from tests.app.helpers import start_configured, users_of, wait_for
from tests.conftest import RunningSystem, stop_system

CELLS = 2
VICTIM = 0
CLIENTS = 3
# Acknowledged payments before the kill: a 0 must not come from no traffic, and they span
# more than the unsafe mode's 1 s lag, so the older ones are committed when the cell dies.
MIN_ACKS = 150
# The kill follows an acknowledgment whose round trip took less than this: its write was
# queued less than FAST_ACK_SECONDS before the kill, well inside the unsafe mode's 1 s lag.
FAST_ACK_SECONDS = 0.4
GATE_SECONDS = 30.0


class Payments:
    """Payments for one cell's users from `CLIENTS` threads, in the background, until stopped."""

    def __init__(self, url: str, users: list[str]) -> None:
        self.acknowledged: list[str] = []
        self.answers: Counter[str] = Counter()
        self._fast = 0  # acknowledgments with a round trip under FAST_ACK_SECONDS
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, users[i::CLIENTS]), daemon=True)
            for i in range(CLIENTS)
        ]

    def __enter__(self) -> Payments:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=20)
        assert not any(t.is_alive() for t in self._threads), "payment clients did not stop"

    def _run(self, url: str, users: list[str]) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                key = uuid.uuid4().hex
                body = {"amount_cents": 100, "idempotency_key": key}
                sent = time.monotonic()
                try:
                    answer = client.post(f"{url}/users/{users[i % len(users)]}/payments", json=body)
                    acked = answer.is_success and answer.json().get("acknowledged") is True
                    outcome = "acknowledged" if acked else str(answer.status_code)
                except httpx.HTTPError as error:
                    acked, outcome = False, type(error).__name__
                fast = time.monotonic() - sent < FAST_ACK_SECONDS
                with self._changed:
                    self.answers[outcome] += 1
                    if acked:
                        self.acknowledged.append(key)
                        self._fast += fast
                    self._changed.notify_all()
                i += 1

    def wait_for_fresh_ack(self, after: int) -> dict[str, int]:
        """Right after a fast acknowledgment that follows at least `after` others: the answers."""
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.acknowledged) >= after, GATE_SECONDS)
            assert ok, f"fewer than {after} acknowledged payments: {self.answers}"
            seen = self._fast
            ok = self._changed.wait_for(lambda: self._fast > seen, GATE_SECONDS)
            assert ok, f"no fast acknowledgment after {after}: {self.answers}"
            return dict(self.answers)


def _cell_pid(system: RunningSystem, index: int) -> int:
    """The pid of cell `index`'s current process (a child of the serve process)."""
    for pid in system.cell_pids():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"chaosemergence.app.cell_main" in argv and argv[argv.index(b"--index") + 1] == (
            str(index).encode()
        ):
            return pid
    raise AssertionError(f"no process for cell {index} among {system.cell_pids()}")


def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie its parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _kill_mid_write(tmp_path: Path, unsafe: bool) -> dict[str, Any]:
    """Payments in flight to VICTIM, SIGKILL it right after an ack, count lost writes."""
    system = start_configured(tmp_path, {"unsafe_ack_before_commit": unsafe}, cells=CELLS)
    try:
        users = users_of(CELLS, VICTIM, 24, "payer-")
        pid = _cell_pid(system, VICTIM)
        with Payments(system.url, users) as payments:
            before_kill = payments.wait_for_fresh_ack(after=MIN_ACKS)
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: _gone(pid), bool, 10, f"cell {VICTIM} (pid {pid}) to die")
        dead = system.admin("GET", "/admin/lost-writes").json()
        lost_while_dead = probes.lost_writes(configuration=system.configuration)
        restarted = system.admin("POST", "/admin/cells/restart").json()["restarted"]
        assert restarted == [VICTIM], restarted
        assert _cell_pid(system, VICTIM) != pid
        return {
            "answers_before_kill": before_kill,
            "answers": dict(payments.answers),
            "acknowledged": dead["cells"][str(VICTIM)]["acknowledged"],
            "lost_while_dead": lost_while_dead,
            "lost_after_restart": probes.lost_writes(configuration=system.configuration),
        }
    finally:
        stop_system(system)


def test_unsafe_ack_before_commit_loses_acknowledged_payments(tmp_path: Path) -> None:
    """Acked before commit, a SIGKILL mid-write loses payments and lost_writes counts them."""
    seen = _kill_mid_write(tmp_path, unsafe=True)
    print(f"unsafe mode: {seen}")
    assert seen["acknowledged"] >= MIN_ACKS, seen
    # The payments of the last second, not every one: the probe tells committed from lost.
    assert 0 < seen["lost_while_dead"] < seen["acknowledged"], seen
    # Gone for good: the restarted process does not bring them back.
    assert seen["lost_after_restart"] == seen["lost_while_dead"], seen


def test_commit_before_ack_loses_nothing_under_the_same_kill(tmp_path: Path) -> None:
    """Committed before the ack (default), the same SIGKILL mid-write loses no payment."""
    seen = _kill_mid_write(tmp_path, unsafe=False)
    print(f"default mode: {seen}")
    assert seen["acknowledged"] >= MIN_ACKS, seen
    assert seen["lost_while_dead"] == 0, seen
    assert seen["lost_after_restart"] == 0, seen


def test_unsafe_mode_must_be_a_boolean() -> None:
    """A string such as "false" is refused rather than read as true."""
    from chaosemergence.app.settings import SystemSettings

    with pytest.raises(ValueError, match="unsafe_ack_before_commit"):
        SystemSettings(unsafe_ack_before_commit="false")  # type: ignore[arg-type]


async def test_write_behind_commits_after_the_lag(tmp_path: Path) -> None:
    """A queued payment is acked, absent from the file, then committed once its lag is up."""
    path = tmp_path / "cell.sqlite3"
    now = [100.0]
    naps: list[float] = []
    lag_over = asyncio.Event()

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        await lag_over.wait()

    store = CellStore(path, lag=1.0, clock=lambda: now[0], sleep=sleep)
    try:
        assert await store.record_payment("u", "k1", 100, "pending", ack_before_commit=True)
        assert not await store.record_payment("u", "k1", 100, "pending", ack_before_commit=True)
        await store.set_payment_status("k1", "settled", ack_before_commit=True)
        assert missing_in_file(path, ["k1"]) == ["k1"]
        assert store.queued_writes == 2
        await asyncio.sleep(0)  # let the writer start its nap
        assert naps == [1.0]
        now[0] = 101.0
        lag_over.set()
        deadline = time.monotonic() + 5
        while store.queued_writes or missing_in_file(path, ["k1"]):
            assert time.monotonic() < deadline, "the queued payment never committed"
            await asyncio.sleep(0.01)
        assert await store.missing_payments(["k1"]) == []
        assert not await store.record_payment("u", "k1", 100, "pending", ack_before_commit=True)
    finally:
        store.close()


async def test_graceful_close_commits_the_queue_and_safe_writes_commit_first(
    tmp_path: Path,
) -> None:
    """Only a crash loses queued writes: close() commits them; default writes commit at once."""
    path = tmp_path / "cell.sqlite3"
    never = asyncio.Event()

    async def sleep(_seconds: float) -> None:
        await never.wait()

    store = CellStore(path, lag=60.0, sleep=sleep)
    assert await store.record_payment("u", "safe", 100, "pending")
    assert missing_in_file(path, ["safe"]) == []
    assert await store.record_payment("u", "queued", 100, "pending", ack_before_commit=True)
    assert missing_in_file(path, ["queued"]) == ["queued"]
    store.close()
    assert missing_in_file(path, ["safe", "queued"]) == []
