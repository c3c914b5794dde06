"""A cell's own SQLite database (WAL mode): user profiles and acknowledged payments.

One connection, one worker thread: SQLite calls never block the event loop and never
race each other. A payment is acknowledged only after its transaction has committed.

Except in the test-only unsafe mode (``SystemSettings.unsafe_ack_before_commit``): the
classic bug ``lost_writes`` exists to catch. There a payment write is queued behind the
reply (write-behind) and committed ``WRITE_BEHIND_LAG_SECONDS`` later, so a crash loses
the payments acknowledged in the last second. A graceful stop still commits the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["WRITE_BEHIND_LAG_SECONDS", "CellStore", "missing_in_file"]

logger = logging.getLogger(__name__)

# Unsafe mode only: how long after its acknowledgment a queued payment write commits.
WRITE_BEHIND_LAG_SECONDS = 1.0

_INSERT_PAYMENT = "INSERT OR IGNORE INTO payments VALUES (?, ?, ?, ?, ?)"
_UPDATE_STATUS = "UPDATE payments SET status = ? WHERE idempotency_key = ?"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    user_id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    tier TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS payments (
    idempotency_key TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class _QueuedWrite:
    """A payment write acknowledged before its commit (unsafe mode), due at `due`."""

    due: float
    key: str
    sql: str
    params: tuple[Any, ...]


class CellStore:
    """Async facade over one SQLite file.

    Writes made with ``ack_before_commit=True`` (unsafe mode) return before they commit:
    they wait in a write-behind queue, in order, and a background task commits each one
    ``lag`` seconds after it was queued. ``clock`` and ``sleep`` drive that task.
    """

    def __init__(
        self,
        path: Path,
        *,
        lag: float = WRITE_BEHIND_LAG_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._lag = lag
        self._clock = clock
        self._sleep = sleep
        # Unsafe mode's write-behind queue, oldest first, and the payment keys it (or the
        # batch being committed) holds. Guarded by the event loop: touched only from it,
        # and by close() once nothing else runs.
        self._behind: deque[_QueuedWrite] = deque()
        self._queued_keys: set[str] = set()
        self._writer: asyncio.Task[None] | None = None
        self._warned = False

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _read_profile(self, user_id: str) -> dict[str, str]:
        row = self._conn.execute(
            "SELECT display_name, tier FROM profiles WHERE user_id = ?", (user_id,)
        ).fetchone()
        if row is None:
            # Profiles are created on first sight, deterministically from the id.
            row = (f"user-{user_id}", ("gold", "silver", "bronze")[sum(map(ord, user_id)) % 3])
            self._conn.execute(
                "INSERT OR IGNORE INTO profiles VALUES (?, ?, ?)", (user_id, row[0], row[1])
            )
        return {"user_id": user_id, "display_name": row[0], "tier": row[1]}

    async def read_profile(self, user_id: str) -> dict[str, str]:
        result: dict[str, str] = await self._run(self._read_profile, user_id)
        return result

    def _record_payment(self, user_id: str, key: str, amount: int, status: str) -> bool:
        cursor = self._conn.execute(_INSERT_PAYMENT, (key, user_id, amount, status, time.time()))
        return cursor.rowcount == 1

    async def record_payment(
        self, user_id: str, key: str, amount: int, status: str, *, ack_before_commit: bool = False
    ) -> bool:
        """Commit a payment; False when the idempotency key was already recorded.

        With ``ack_before_commit`` (unsafe mode) the write is only queued: True means "new
        and queued", and a crash within the lag loses it.
        """
        if ack_before_commit:
            return await self._queue_payment(user_id, key, amount, status)
        created: bool = await self._run(self._record_payment, user_id, key, amount, status)
        return created

    def _set_status(self, key: str, status: str) -> None:
        self._conn.execute(_UPDATE_STATUS, (status, key))

    async def set_payment_status(
        self, key: str, status: str, *, ack_before_commit: bool = False
    ) -> None:
        """Update a payment's status (queued behind its insert with ``ack_before_commit``)."""
        if ack_before_commit:
            self._enqueue(key, _UPDATE_STATUS, (status, key))
            return
        await self._run(self._set_status, key, status)

    # ------------------------------------------------------ unsafe mode: write-behind
    def _exists(self, key: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM payments WHERE idempotency_key = ?", (key,)
        ).fetchone()
        return row is not None

    async def _queue_payment(self, user_id: str, key: str, amount: int, status: str) -> bool:
        if key in self._queued_keys:
            return False
        # Claimed before the read, so a concurrent duplicate sees it while we wait.
        self._queued_keys.add(key)
        if await self._run(self._exists, key):
            self._queued_keys.discard(key)
            return False
        self._enqueue(key, _INSERT_PAYMENT, (key, user_id, amount, status, time.time()))
        return True

    def _enqueue(self, key: str, sql: str, params: tuple[Any, ...]) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "UNSAFE (unsafe_ack_before_commit): %s acknowledges payments %.1f s before "
                "they commit; a crash loses them. Test-only: it exists to prove lost_writes "
                "can fail.",
                self.path,
                self._lag,
            )
        self._queued_keys.add(key)
        self._behind.append(_QueuedWrite(self._clock() + self._lag, key, sql, params))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_behind())

    def _commit(self, batch: list[_QueuedWrite]) -> None:
        self._conn.execute("BEGIN")
        try:
            for write in batch:
                self._conn.execute(write.sql, write.params)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    async def _write_behind(self) -> None:
        """Commit queued writes as they fall due, oldest first, until the queue is empty."""
        try:
            while self._behind:
                wait = self._behind[0].due - self._clock()
                if wait > 0:
                    await self._sleep(wait)
                now = self._clock()
                batch: list[_QueuedWrite] = []
                while self._behind and self._behind[0].due <= now:
                    batch.append(self._behind.popleft())
                if not batch:
                    continue
                try:
                    await self._run(self._commit, batch)
                except sqlite3.Error:
                    logger.exception("write-behind: %d queued write(s) lost", len(batch))
                pending = {write.key for write in self._behind}
                self._queued_keys -= {w.key for w in batch} - pending
        finally:
            self._writer = None

    @property
    def queued_writes(self) -> int:
        """Writes acknowledged and not yet committed (always 0 outside unsafe mode)."""
        return len(self._behind)

    def _missing(self, keys: list[str]) -> list[str]:
        present: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT idempotency_key FROM payments WHERE idempotency_key IN ({marks})", chunk
            ).fetchall()
            present.update(r[0] for r in rows)
        return [k for k in keys if k not in present]

    async def missing_payments(self, keys: list[str]) -> list[str]:
        """The keys among `keys` that are not in the database."""
        missing: list[str] = await self._run(self._missing, keys)
        return missing

    def _count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM payments").fetchone()[0])

    async def count_payments(self) -> int:
        count: int = await self._run(self._count)
        return count

    def close(self) -> None:
        """Stop: a graceful stop commits what the write-behind queue still holds."""
        if self._writer is not None:
            self._writer.cancel()
        if self._behind:
            batch = list(self._behind)
            self._behind.clear()
            with contextlib.suppress(RuntimeError):  # executor already shut down
                self._executor.submit(self._commit, batch).result()
        self._executor.shutdown(wait=True)
        self._conn.close()


def missing_in_file(path: Path, keys: list[str]) -> list[str]:
    """The keys among `keys` that are not in the payments table of the SQLite file at `path`.

    For a cell whose process is down: its database file outlives it (that is what an
    acknowledged write means), and opening it replays the WAL the dead process left.
    """
    if not path.exists():
        return list(keys)
    conn = sqlite3.connect(path, timeout=5.0)
    try:
        present: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT idempotency_key FROM payments WHERE idempotency_key IN ({marks})", chunk
            ).fetchall()
            present.update(r[0] for r in rows)
    finally:
        conn.close()
    return [k for k in keys if k not in present]
