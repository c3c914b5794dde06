"""The `python -m chaosemergence.bench` command: measure, print the table, write the file."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from chaosemergence.bench.record import Record, compare, format_comparison, format_table, load

__all__ = ["SECTIONS", "main"]

SECTIONS = ("service", "primitives")


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _measure(sections: Sequence[str], quick: bool, seconds: float, rounds: int) -> Record:
    record = Record()
    if "service" in sections:
        from chaosemergence.bench.service import service_section
        from chaosemergence.bench.wrk import WrkUnavailable

        _progress("service: wrk through the gateway and a cell (loopback)")
        try:
            service_section(record, seconds=seconds, rounds=rounds, progress=_progress)
        except WrkUnavailable as error:
            print(f"service section skipped: {error}", file=sys.stderr)
    if "primitives" in sections:
        from chaosemergence.bench.primitives import primitives_section

        _progress("primitives")
        asyncio.run(primitives_section(record, quick=quick))
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaosemergence.bench",
        description="Measure the figures of docs/bench.md, print them, write them to a file.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke check)")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to measure (default: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="each wrk run's length (default 5, quick 2)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds of on, off and the sweep; best kept (default 3)",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("bench-results.json"), help="where to write"
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        metavar=("OLD", "NEW"),
        help="set OLD beside this run's results (or beside NEW, without measuring)",
    )
    args = parser.parse_args(argv)
    if args.compare and len(args.compare) > 2:
        parser.error("--compare takes OLD, or OLD and NEW")
    try:
        old = load(args.compare[0]) if args.compare else None
        if args.compare and len(args.compare) == 2:
            assert old is not None
            print(format_comparison(compare(old, load(args.compare[1]))))
            return 0
    except (OSError, ValueError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; known: {', '.join(SECTIONS)}")
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    rounds = args.rounds or (1 if args.quick else 3)
    if seconds <= 0 or rounds < 1:
        parser.error("--seconds must be > 0 and --rounds >= 1")
    started = time.perf_counter()
    record = _measure(sections, args.quick, seconds, rounds)
    command = shlex.join(["python", "-m", "chaosemergence.bench", *(argv or sys.argv[1:])])
    record.write(args.output, command)
    data = load(args.output)
    print(f"chaosemergence benchmarks (python {sys.version.split()[0]}): {command}")
    print(format_table(data))
    print(f"\nwrote {args.output} in {time.perf_counter() - started:.0f} s")
    if old is not None:
        print(f"\ncompared with {args.compare[0]}:")
        print(format_comparison(compare(old, data)))
    return 0
