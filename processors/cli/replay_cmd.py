"""`mrr-stream replay FILE...`: the in-process replay of JSON Lines files."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, BinaryIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from processors import clock
from processors.cli import render
from processors.core.fact import utc_of
from processors.replay import ReplayOutcome, replay
from processors.settings import Settings
from schemas.money import format_cents


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay", help="replay billing events (JSON Lines) in-process and print the monthly table"
    )
    p.add_argument("files", nargs="+", help="JSON Lines files; - reads standard input")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--rejects", type=Path, help="write rejected lines here instead of to stderr")
    p.add_argument(
        "--max-rejects",
        type=_count,
        metavar="N",
        help="exit with status 1 when more than N lines were rejected (the figures are printed all the same)",
    )
    p.add_argument("--accounts", type=Path, help="write each account's current MRR (JSON Lines) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    p.add_argument(
        "--as-of",
        metavar="RFC3339",
        help="the figures as of this instant (default: now): later events are scheduled, and the months "
        "run through its month",
    )
    p.set_defaults(run=run)


def _count(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of lines, 0 or more")
    return int(text)


def _lines(files: list[str]) -> Iterator[tuple[str, bytes]]:
    for name in files:
        stream: BinaryIO = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
        label = "stdin" if name == "-" else name
        try:
            for number, raw in enumerate(stream, start=1):
                yield f"{label}:{number}", raw
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()


def _total_lines(files: list[str]) -> int | None:
    if "-" in files:
        return None
    total = 0
    for name in files:
        with open(name, "rb") as f:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return total


def run_replay(files: list[str], show_progress: bool, at: int | None = None) -> ReplayOutcome:
    """`at`: the as-of instant (µs since the epoch); None: now."""
    at = clock.now() if at is None else at
    if not show_progress:
        return replay(_lines(files), max_record_bytes=Settings().max_record_bytes, at=at)
    columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("replay", total=_total_lines(files))
        pending = 0

        def tick() -> None:
            nonlocal pending
            pending += 1
            if pending == 10_000:  # a refresh per line would cost more than the replay itself
                progress.advance(task, pending)
                pending = 0

        return replay(_lines(files), on_line=tick, max_record_bytes=Settings().max_record_bytes, at=at)


def write_accounts(outcome: ReplayOutcome, out: IO[str]) -> None:
    for account_id in sorted(outcome.accounts):
        for currency, cents in sorted(outcome.accounts[account_id].mrr.items()):
            line = {"account_id": account_id, "currency": currency, "mrr": format_cents(cents)}
            out.write(json.dumps(line) + "\n")


def verdict(outcome: ReplayOutcome, max_rejects: int | None) -> str | None:
    """Why the replay failed though it ran (status 1), or None: a file of lines none of which was valid,
    or more rejected lines than the caller allows."""
    rejected = len(outcome.rejects)
    if rejected and not outcome.events and not outcome.duplicates:
        return f"every line was rejected ({rejected:,}): no billing event to replay"
    if max_rejects is not None and rejected > max_rejects:
        return f"{rejected:,} lines were rejected, more than --max-rejects {max_rejects:,}"
    return None


def _title(outcome: ReplayOutcome) -> str:
    as_of = "" if outcome.as_of is None else f" as of {utc_of(outcome.as_of):%Y-%m-%d %H:%M} UTC"
    return (
        f"MRR by month{as_of} — {len(outcome.scheduled):,} movements scheduled after it, "
        f"{outcome.events:,} events, {outcome.duplicates:,} duplicates ignored, "
        f"{len(outcome.rejects):,} rejected"
    )


def print_months(outcome: ReplayOutcome, fmt: str) -> None:
    if fmt == "json":
        print(render.to_json(outcome.months, len(outcome.rejects)))
    elif fmt == "csv":
        sys.stdout.write(render.to_csv(outcome.months))
    else:
        render.print_table(outcome.months, _title(outcome))


def run(args: argparse.Namespace) -> int:
    show_progress = not args.no_progress and sys.stderr.isatty()
    try:
        at = None if args.as_of is None else clock.parse_instant(args.as_of)
    except ValueError as exc:
        print(f"mrr-stream replay: --as-of: {exc}", file=sys.stderr)
        return 2
    with ExitStack() as files:
        # Opened before the replay runs, so that a path that cannot be written fails at once (the OSError
        # names it: one line, status 2) rather than after minutes of replay.
        reject_out = files.enter_context(args.rejects.open("w")) if args.rejects else sys.stderr
        accounts_out = files.enter_context(args.accounts.open("w")) if args.accounts else None
        outcome = run_replay(args.files, show_progress, at)
        for r in outcome.rejects:
            reject_out.write(f"rejected {r.source}: {r.rejection}\n")
        if accounts_out is not None:
            write_accounts(outcome, accounts_out)
    print_months(outcome, args.format)
    failed = verdict(outcome, args.max_rejects)
    if failed is None:
        return 0
    print(f"mrr-stream replay: {failed}", file=sys.stderr)
    return 1
