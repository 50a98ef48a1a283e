"""How monthly aggregates are shown: a rich table for people, JSON and CSV for programs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from schemas.aggregate import MonthlyAggregate, ReplayResult
from schemas.money import format_cents


def to_json(months: Sequence[MonthlyAggregate], rejected: int) -> str:
    return ReplayResult(rejected=rejected, months=list(months)).model_dump_json(indent=2)


def to_csv(months: Sequence[MonthlyAggregate]) -> str:
    out = io.StringIO()
    names = list(MonthlyAggregate.model_fields)
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in months:
        writer.writerow({k: ("" if v is None else v) for k, v in json.loads(row.model_dump_json()).items()})
    return out.getvalue()


def money(cents: int | None) -> str:
    if cents is None:
        return "-"
    text = format_cents(abs(cents))
    whole, frac = text.split(".")
    return f"{'-' if cents < 0 else ''}{int(whole):,}.{frac}"


def pct(value: Decimal | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def table(months: Sequence[MonthlyAggregate], title: str) -> Table:
    t = Table(title=title, header_style="bold", show_lines=False)
    for name in (
        "Month",
        "Cur",
        "Opening",
        "New",
        "Expansion",
        "Reactiv.",
        "Contraction",
        "Churn",
        "Net new",
        "Closing",
        "Cust.",
        "ARPA",
        "NRR",
        "GRR",
        "Quick",
    ):
        t.add_column(name, justify="left" if name in ("Month", "Cur") else "right")
    currency = None
    for m in months:
        if currency is not None and m.currency != currency:
            t.add_section()
        currency = m.currency
        net = money(m.net_new_mrr)
        t.add_row(
            m.month,
            m.currency,
            money(m.opening_mrr),
            money(m.new_mrr),
            money(m.expansion_mrr),
            money(m.reactivation_mrr),
            money(-m.contraction_mrr),
            money(-m.churn_mrr),
            f"[green]{net}[/]" if m.net_new_mrr >= 0 else f"[red]{net}[/]",
            money(m.closing_mrr),
            str(m.customers_closing),
            money(m.arpa),
            pct(m.nrr),
            pct(m.grr),
            "-" if m.quick_ratio is None else f"{m.quick_ratio:.2f}",
        )
    return t


def print_table(months: Sequence[MonthlyAggregate], title: str, console: Console | None = None) -> None:
    if console is None:
        # A pipe or a CI log gets the whole table rather than 80 columns of ellipses.
        console = Console() if Console().is_terminal else Console(width=180)
    console.print(table(months, title))
