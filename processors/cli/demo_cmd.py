"""`mrr-stream demo`: a year of billing for a few thousand accounts, replayed into the monthly table."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from processors.cli import render
from processors.cli.replay_cmd import run_replay
from processors.generate import HistoryGenerator, arrange, parse_month


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="generate a year of billing and show its MRR")
    p.add_argument("--accounts", type=int, default=3000)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--seed", type=int, default=2025)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    with console.status("generating billing history"):
        events = HistoryGenerator(args.accounts, args.months, args.seed, parse_month("2025-01")).events()
        lines = arrange(events, args.seed, shuffle=True, duplicates=0.05, late=0.1, bad=0.002)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
        path.write_text("\n".join(lines) + "\n")
        console.print(
            f"{len(events):,} billing events for {args.accounts:,} accounts, sent as {len(lines):,} "
            "lines in shuffled order with duplicates, late events and bad lines mixed in"
        )
        outcome = run_replay([str(path)], show_progress=console.is_terminal)
    render.print_table(outcome.months, "MRR by month (in-process replay)")
    console.print(
        f"{outcome.duplicates:,} duplicates ignored; {len(outcome.rejects):,} lines rejected, e.g.:"
    )
    for reject in outcome.rejects[:3]:
        console.print(f"  {reject.rejection}", markup=False)
    return 0
