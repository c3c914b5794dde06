"""The `python -m chaosemergence.bench` command: measure, print the table, write the file."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from chaosemergence.bench.record import Record, compare, format_comparison, format_table, load

__all__ = ["SECTIONS", "main"]

SECTIONS = ("service", "primitives", "scale", "loadgen", "experience", "effectiveness")


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _service(record: Record, args: argparse.Namespace) -> None:
    from chaosemergence.bench.service import service_section

    _progress("service: wrk through the gateway and a cell (loopback)")
    service_section(record, seconds=args.seconds, rounds=args.rounds, progress=_progress)


def _primitives(record: Record, args: argparse.Namespace) -> None:
    from chaosemergence.bench.primitives import primitives_section

    _progress("primitives")
    asyncio.run(primitives_section(record, quick=args.quick))


def _scale(record: Record, args: argparse.Namespace) -> None:
    from chaosemergence.bench.scale import scale_section

    scale_section(record, seconds=args.seconds, sizes=args.sizes, progress=_progress)


def _loadgen(record: Record, args: argparse.Namespace) -> None:
    from chaosemergence.bench.loadgen import loadgen_section

    loadgen_section(record, seconds=max(args.seconds, 5.0), progress=_progress)


def _journals(record: Record, args: argparse.Namespace, sections: Sequence[str]) -> None:
    from chaosemergence.bench.journals import journals_sections

    journals_sections(record, sections, args.results, args.experience, progress=_progress)


def _measure(args: argparse.Namespace, sections: Sequence[str]) -> Record:
    """Each section in turn; once ``args.budget`` seconds have passed, the rest are skipped."""
    from chaosemergence.bench.wrk import WrkUnavailable

    record = Record()
    deadline = time.monotonic() + args.budget
    runners: list[tuple[str, Callable[[Record, argparse.Namespace], None]]] = [
        ("service", _service),
        ("primitives", _primitives),
        ("scale", _scale),
        ("loadgen", _loadgen),
    ]
    for name, run in runners:
        if name not in sections:
            continue
        if time.monotonic() > deadline:
            print(
                f"{name} section skipped: the {args.budget:.0f} s budget is spent", file=sys.stderr
            )
            continue
        try:
            run(record, args)
        except WrkUnavailable as error:
            print(f"{name} section skipped: {error}", file=sys.stderr)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            # A system that would not start, a tool that failed: the other sections still run.
            print(f"{name} section failed, its figures are missing: {error}", file=sys.stderr)
    wanted = [s for s in ("experience", "effectiveness") if s in sections]
    if wanted:
        _journals(record, args, wanted)
    return record


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes: integers, got {text!r}") from None
    if not sizes or sizes[0] < 1 or list(sizes) != sorted(set(sizes)):
        raise argparse.ArgumentTypeError(f"--sizes: ascending counts >= 1, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaosemergence.bench",
        description="Measure the figures of docs/bench.md, print them, write them to a file.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke check)")
    parser.add_argument(
        "--sections",
        "--only",
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
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=(1, 4, 10, 32),
        help="scale: the cell counts, ascending, comma-separated (default 1,4,10,32)",
    )
    parser.add_argument(
        "--results",
        nargs="+",
        type=Path,
        default=[],
        metavar="DIR",
        help="experience, effectiveness: folders of journals .ci/run-experiment.sh left",
    )
    parser.add_argument(
        "--experience",
        action="store_true",
        help="experience: time `make run` and the CI-profile set (about 10 min) instead of"
        " reading the journals of --results",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=1200.0,
        help="seconds after which the remaining measured sections are skipped (default 1200;"
        " --experience runs on past it, each experiment bounded by its own timeout)",
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
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be > 0 and --rounds >= 1")
    started = time.perf_counter()
    record = _measure(args, sections)
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
