"""`mrr-stream scheduled`: the MRR changes already known to come: the movements that billing events
effective after now will cause in the next N days, per currency and type, and the movements themselves.

From Redis (what the worker holds as scheduled; `--as-of` only moves the window's start), or from the
in-process replay of JSON Lines files as of `--as-of` (default now)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from processors import clock
from processors.cli import render
from processors.core.fact import DAY_US
from processors.core.scheduled import MAX_DAYS, scheduled_changes
from processors.settings import Settings
from schemas.movement import MovementRecord
from schemas.scheduled import ScheduledChanges, ScheduledTotal

DEFAULT_DAYS = 90
ACCOUNTS_SHOWN = 3  # the first few account ids of a total in the table
NEGATIVE = frozenset({"contraction", "churn"})  # shown as negative amounts, as in the monthly table
CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
DAYS = re.compile(r"[0-9]{1,9}", re.ASCII)
CSV_FIELDS = (
    "effective_at",
    "month",
    "account_id",
    "currency",
    "type",
    "amount",
    "mrr_before",
    "mrr_after",
    "movement_id",
    "event_ids",
)


class Mistake(Exception):
    """An ordinary mistake of the user's or of the surroundings: one line on stderr, exit status 2."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scheduled", help="the MRR changes already scheduled: movements of events effective after now"
    )
    p.add_argument(
        "--days", default=str(DEFAULT_DAYS), help=f"the window, 1 to {MAX_DAYS} days (default {DEFAULT_DAYS})"
    )
    p.add_argument("--currency", help="one currency only, e.g. USD")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument(
        "--replay",
        nargs="+",
        metavar="FILE",
        help="compute from the in-process replay of JSON Lines files (- for stdin) instead of reading Redis",
    )
    p.add_argument(
        "--as-of",
        metavar="RFC3339",
        help="now, e.g. 2026-11-23T00:00:00Z or 2026-11-23 (default: the clock); with Redis it only moves "
        "the window's start",
    )
    p.set_defaults(run=run)


def parse_days(text: str) -> int:
    if not DAYS.fullmatch(text) or not 1 <= int(text) <= MAX_DAYS:
        raise Mistake(f"--days: {text!r} is not a whole number of days from 1 to {MAX_DAYS}")
    return int(text)


def parse_currency(text: str | None) -> str | None:
    if text is not None and not CURRENCY.fullmatch(text):
        raise Mistake(f"--currency: {text!r} is not an ISO 4217 code such as USD")
    return text


def parse_as_of(text: str | None) -> int:
    if text is None:
        return clock.now()
    try:
        return clock.parse_instant(text)  # (years to 2999: plus MAX_DAYS stays a datetime)
    except ValueError as exc:
        raise Mistake(f"--as-of: {exc}") from None


def from_replay(files: list[str], now: int, days: int, currency: str | None) -> ScheduledChanges:
    from processors.cli.replay_cmd import _lines
    from processors.replay import replay

    try:
        outcome = replay(_lines(files), max_record_bytes=Settings().max_record_bytes, at=now)
    except OSError as exc:
        raise Mistake(f"cannot read {exc.filename or 'the input'}: {exc.strerror or exc}") from None
    if outcome.rejects:
        print(
            f"mrr-stream scheduled: {len(outcome.rejects):,} rejected lines left out "
            "(`mrr-stream replay` lists them)",
            file=sys.stderr,
        )
    return scheduled_changes(outcome.scheduled, now, days, currency)


async def _read_redis(settings: Settings, until: int, currency: str | None) -> list[MovementRecord]:
    from processors.sinks.redis_view import RedisView

    try:
        view = RedisView(settings.redis_url.get_secret_value(), settings.redis_prefix)
    except ValueError as exc:  # a URL redis-py cannot read
        raise Mistake(f"MRR_REDIS_URL: {exc}") from None
    try:
        return await view.scheduled(until, currency)
    finally:
        await view.close()


def from_redis(now: int, days: int, currency: str | None) -> ScheduledChanges:
    settings = Settings()
    try:
        records = asyncio.run(_read_redis(settings, now + days * DAY_US, currency))
    except (RedisError, OSError) as exc:
        raise Mistake(f"Redis (MRR_REDIS_URL) is unavailable: {exc}") from None
    return scheduled_changes(records, now, days, currency)


def signed(kind: str, cents: int) -> int:
    return -cents if kind in NEGATIVE else cents


def _coloured(kind: str, cents: int) -> str:
    text = render.money(signed(kind, cents))
    return f"[red]{text}[/]" if kind in NEGATIVE else f"[green]{text}[/]"


def _accounts(total: ScheduledTotal) -> str:
    shown = ", ".join(escape(a) for a in total.accounts[:ACCOUNTS_SHOWN])  # ids are data, not markup
    more = len(total.accounts) - ACCOUNTS_SHOWN
    return f"{shown}, … {more:,} more" if more > 0 else shown


def totals_table(changes: ScheduledChanges) -> Table:
    t = Table(title="By currency and type", header_style="bold")
    for name in ("Cur", "Type", "Amount", "Movements", "Accounts", "First accounts"):
        t.add_column(name, justify="left" if name in ("Cur", "Type", "First accounts") else "right")
    currency = None
    for total in changes.totals:
        if currency is not None and total.currency != currency:
            t.add_section()
        currency = total.currency
        t.add_row(
            total.currency,
            total.type,
            _coloured(total.type, total.amount),
            f"{total.movements:,}",
            f"{len(total.accounts):,}",
            _accounts(total),
        )
    return t


def movements_table(moves: Sequence[MovementRecord], title: str) -> Table:
    t = Table(title=title, header_style="bold")
    for name in ("Effective at (UTC)", "Account", "Cur", "Type", "Amount", "MRR before → after"):
        t.add_column(name, justify="right" if name in ("Amount", "MRR before → after") else "left")
    for m in moves:
        t.add_row(
            _when(m.effective_at),
            escape(m.account_id),
            m.currency,
            m.type,
            _coloured(m.type, m.amount),
            f"{render.money(m.mrr_before)} → {render.money(m.mrr_after)}",
        )
    return t


def _when(at: datetime) -> str:
    return at.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")  # UTC; the year in 4 digits


def to_csv(moves: Sequence[MovementRecord]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for m in moves:
        data = m.model_dump(mode="json")
        row = {name: data[name] for name in CSV_FIELDS}
        row["event_ids"] = " ".join(m.event_ids)
        writer.writerow(row)
    return out.getvalue()


def print_table(changes: ScheduledChanges, console: Console | None = None) -> None:
    if console is None:
        console = Console() if Console().is_terminal else Console(width=180)
    window = f"from {_when(changes.as_of)} to {_when(changes.until)} UTC ({changes.days} days)"
    if not changes.totals:
        console.print(f"No MRR change scheduled {window}.", markup=False)
        return
    console.print(f"Scheduled MRR changes {window}:", markup=False)
    console.print(totals_table(changes))
    counted = sum(t.movements for t in changes.totals)
    title = "Scheduled movements"
    if changes.truncated:
        title += f" (the first {len(changes.movements):,} of {counted:,})"
    console.print(movements_table(changes.movements, title))


def run(args: argparse.Namespace) -> int:
    try:
        days = parse_days(args.days)
        currency = parse_currency(args.currency)
        now = parse_as_of(args.as_of)
        if args.replay:
            changes = from_replay(args.replay, now, days, currency)
        else:
            changes = from_redis(now, days, currency)
    except Mistake as exc:
        print(f"mrr-stream scheduled: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(changes.model_dump_json(indent=2))
    elif args.format == "csv":
        sys.stdout.write(to_csv(changes.movements))
        if changes.truncated:
            print(
                f"mrr-stream scheduled: only the first {len(changes.movements):,} movements are listed",
                file=sys.stderr,
            )
    else:
        print_table(changes)
    return 0
