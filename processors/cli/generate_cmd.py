"""`mrr-stream generate`: write a reproducible billing history as JSON Lines."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from processors.generate import HistoryGenerator, arrange, parse_month


def register(sub: Any) -> None:
    p = sub.add_parser("generate", help="write a realistic, reproducible billing history (JSON Lines)")
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=parse_month, default=parse_month("2025-01"), help="first month, YYYY-MM")
    p.add_argument("--shuffle", action="store_true", help="random arrival order")
    p.add_argument("--duplicates", type=float, default=0.0, metavar="FRACTION", help="share of events resent")
    p.add_argument(
        "--late", type=float, default=0.0, metavar="FRACTION", help="share of events arriving late"
    )
    p.add_argument("--late-days", type=float, default=60.0, help="how late a late event can be, in days")
    p.add_argument("--bad", type=float, default=0.0, metavar="FRACTION", help="share of bad lines mixed in")
    p.add_argument("-o", "--output", help="file to write; standard output by default")
    p.add_argument(
        "--format",
        choices=("billing", "stripe"),
        default="billing",
        help="billing: contract billing events (default); stripe: the Stripe webhook events of such a "
        "history (Event objects), for `mrr-stream stripe import` or the webhook receiver",
    )
    p.set_defaults(run=run)


def write_lines(output: str | None, lines: list[str]) -> None:
    """One line each, to the file `output` or to standard output."""
    out = open(output, "w") if output else sys.stdout  # noqa: SIM115
    try:
        for line in lines:
            out.write(line)
            out.write("\n")
    finally:
        if output:
            out.close()


def run_stripe(args: argparse.Namespace) -> int:
    import json

    from processors.sources.stripe.generate import as_delivered, stripe_history

    if args.late or args.bad:
        print("mrr-stream generate: --late and --bad apply to --format billing only", file=sys.stderr)
        return 2
    lines = [
        json.dumps(e, separators=(",", ":"))
        for e in stripe_history(args.accounts, args.months, args.seed, args.start)
    ]
    count = len(lines)
    lines = as_delivered(lines, args.seed, args.duplicates, args.shuffle)
    write_lines(args.output, lines)
    print(f"{count:,} Stripe events, {len(lines):,} lines", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.format == "stripe":
        return run_stripe(args)
    events = HistoryGenerator(args.accounts, args.months, args.seed, args.start).events()
    lines = arrange(
        events,
        args.seed,
        shuffle=args.shuffle,
        duplicates=args.duplicates,
        late=args.late,
        late_days=args.late_days,
        bad=args.bad,
    )
    write_lines(args.output, lines)
    print(f"{len(events):,} events, {len(lines):,} lines", file=sys.stderr)
    return 0
