"""`make bench`: what the defenses cost, as figures against anchors measured in the same run.

``python -m chaosemergence.bench`` measures every section, prints a table and writes
``bench-results.json`` (the shape: chaosemergence/bench/record.py, docs/bench.md);
``--compare old.json`` sets an earlier run beside this one. These are benchmarks, not
tests: nothing here fails on a timing.
"""

from __future__ import annotations

from chaosemergence.bench.cli import main

__all__ = ["main"]
