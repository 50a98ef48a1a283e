"""`mrr-stream replay FILE...`: the in-process replay of JSON Lines files."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

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
    p.add_argument("--accounts", type=Path, help="write each account's current MRR (JSON Lines) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    p.add_argument(
        "--as-of",
        metavar="RFC3339",
        help="the figures as of this instant (default: now): later events are scheduled, and the months "
        "run through its month",
    )
    p.set_defaults(run=run)


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


def write_accounts(outcome: ReplayOutcome, path: Path) -> None:
    with path.open("w") as f:
        for account_id in sorted(outcome.accounts):
            for currency, cents in sorted(outcome.accounts[account_id].mrr.items()):
                f.write(
                    json.dumps({"account_id": account_id, "currency": currency, "mrr": format_cents(cents)})
                )
                f.write("\n")


def run(args: argparse.Namespace) -> int:
    show_progress = not args.no_progress and sys.stderr.isatty()
    try:
        at = None if args.as_of is None else clock.parse_instant(args.as_of)
    except ValueError as exc:
        print(f"mrr-stream replay: --as-of: {exc}", file=sys.stderr)
        return 2
    outcome = run_replay(args.files, show_progress, at)
    reject_out = args.rejects.open("w") if args.rejects else sys.stderr
    try:
        for r in outcome.rejects:
            reject_out.write(f"rejected {r.source}: {r.rejection}\n")
    finally:
        if args.rejects:
            reject_out.close()
    if args.accounts:
        write_accounts(outcome, args.accounts)
    if args.format == "json":
        print(render.to_json(outcome.months, len(outcome.rejects)))
    elif args.format == "csv":
        sys.stdout.write(render.to_csv(outcome.months))
    else:
        as_of = "" if outcome.as_of is None else f" as of {utc_of(outcome.as_of):%Y-%m-%d %H:%M} UTC"
        title = (
            f"MRR by month{as_of} — {len(outcome.scheduled):,} movements scheduled after it, "
            f"{outcome.events:,} events, {outcome.duplicates:,} duplicates ignored, "
            f"{len(outcome.rejects):,} rejected"
        )
        render.print_table(outcome.months, title)
    return 0
