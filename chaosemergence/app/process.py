"""What a process holds: resident memory, open descriptors, threads (for the soak)."""

from __future__ import annotations

import os
import threading
from typing import Any

import psutil

__all__ = ["process_figures"]


def process_figures() -> dict[str, Any]:
    """This process's pid, resident memory (bytes), open descriptors and threads."""
    me = psutil.Process(os.getpid())
    return {
        "pid": me.pid,
        "rss_bytes": me.memory_info().rss,
        "open_fds": me.num_fds(),
        "threads": threading.active_count(),
        "os_threads": me.num_threads(),
    }
