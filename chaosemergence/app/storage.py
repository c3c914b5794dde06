"""A cell's own SQLite database (WAL mode): user profiles and acknowledged payments.

One connection, one worker thread: SQLite calls never block the event loop and never
race each other. A payment is acknowledged only after its transaction has committed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["CellStore", "missing_in_file"]

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


class CellStore:
    """Async facade over one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

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
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO payments VALUES (?, ?, ?, ?, ?)",
            (key, user_id, amount, status, time.time()),
        )
        return cursor.rowcount == 1

    async def record_payment(self, user_id: str, key: str, amount: int, status: str) -> bool:
        """Commit a payment; False when the idempotency key was already recorded."""
        created: bool = await self._run(self._record_payment, user_id, key, amount, status)
        return created

    def _set_status(self, key: str, status: str) -> None:
        self._conn.execute(
            "UPDATE payments SET status = ? WHERE idempotency_key = ?", (status, key)
        )

    async def set_payment_status(self, key: str, status: str) -> None:
        await self._run(self._set_status, key, status)

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
