"""How monthly aggregates are shown: a rich table for people, JSON and CSV for programs.

A money figure is never cut: the table has a month a row where the terminal is wide enough for every
field (about 150 columns), and otherwise turns the other way, as finance lays out an MRR bridge: a field a
row, the months as columns, in as many blocks of months as the width needs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from schemas.aggregate import MonthlyAggregate, ReplayResult
from schemas.money import format_cents

WIDE_CONSOLE = 180  # a pipe or a CI log: the whole table a month a row
UNCONSTRAINED = 100_000


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


def ratio(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _net_style(m: MonthlyAggregate) -> str:
    return "green" if m.net_new_mrr >= 0 else "red"


@dataclass(frozen=True, slots=True)
class Field:
    """One figure of a month: its column header (a month a row) and row label (months as columns)."""

    header: str
    label: str
    text: Callable[[MonthlyAggregate], str]
    style: Callable[[MonthlyAggregate], str] | None = None

    def cell(self, m: MonthlyAggregate) -> Text:
        return Text(self.text(m), style="" if self.style is None else self.style(m))


# Contraction and churn are shown negative: the row then adds up, opening + movements = closing.
FIELDS = (
    Field("Opening", "Opening MRR", lambda m: money(m.opening_mrr)),
    Field("New", "New", lambda m: money(m.new_mrr)),
    Field("Expansion", "Expansion", lambda m: money(m.expansion_mrr)),
    Field("Reactiv.", "Reactivation", lambda m: money(m.reactivation_mrr)),
    Field("Contraction", "Contraction", lambda m: money(-m.contraction_mrr)),
    Field("Churn", "Churn", lambda m: money(-m.churn_mrr)),
    Field("Net new", "Net new MRR", lambda m: money(m.net_new_mrr), _net_style),
    Field("Closing", "Closing MRR", lambda m: money(m.closing_mrr)),
    Field("Cust.", "Customers", lambda m: f"{m.customers_closing:,}"),
    Field("ARPA", "ARPA", lambda m: money(m.arpa)),
    Field("NRR", "NRR (month)", lambda m: pct(m.nrr)),
    Field("GRR", "GRR (month)", lambda m: pct(m.grr)),
    Field("Quick", "Quick ratio", lambda m: ratio(m.quick_ratio)),
)
BRIDGE_END = FIELDS[7]  # a rule after closing MRR: the bridge above it, customers and ratios below


def table(months: Sequence[MonthlyAggregate], title: str) -> Table:
    """A month a row, as wide as its figures need (about 150 columns)."""
    t = Table(title=title, header_style="bold")
    t.add_column("Month", no_wrap=True)
    t.add_column("Cur", no_wrap=True)
    for f in FIELDS:
        t.add_column(f.header, justify="right", no_wrap=True)
    for currency, rows in groupby(months, key=lambda m: m.currency):
        for m in rows:
            t.add_row(m.month, currency, *(f.cell(m) for f in FIELDS))
        t.add_section()
    return t


def months_as_columns(months: Sequence[MonthlyAggregate]) -> Table:
    """The same figures turned: a field a row, a column per month; one currency's months are titled
    with it, several currencies' have it under each month."""
    one_currency = len({m.currency for m in months}) == 1
    title = f"{months[0].currency}, {_span(months)}" if one_currency and months else None
    t = Table(title=title, header_style="bold")
    t.add_column("", no_wrap=True)
    for m in months:
        header = m.month if one_currency else f"{m.month}\n{m.currency}"
        # Folded rather than cut should even one month not fit: every digit stays on the screen.
        t.add_column(header, justify="right", no_wrap=True, overflow="fold")
    for f in FIELDS:
        t.add_row(f.label, *(f.cell(m) for m in months), end_section=f is BRIDGE_END)
    return t


def _span(months: Sequence[MonthlyAggregate]) -> str:
    first, last = months[0].month, months[-1].month
    return first if first == last else f"{first} to {last}"


def natural_width(console: Console, renderable: RenderableType) -> int:
    """Columns the renderable takes unconstrained (rich's own measure stops at the console's width)."""
    return console.measure(renderable, options=console.options.update_width(UNCONSTRAINED)).maximum


def fits(console: Console, renderable: RenderableType) -> bool:
    return natural_width(console, renderable) <= console.width


def _widest(group: Sequence[MonthlyAggregate]) -> list[MonthlyAggregate]:
    return sorted(group, key=lambda m: max(len(f.text(m)) for f in FIELDS), reverse=True)


def blocks(console: Console, months: Sequence[MonthlyAggregate]) -> Iterator[list[MonthlyAggregate]]:
    """The months in as few blocks as fit the width, a currency's months apart from another's unless
    they all fit at once, and blocks of even size (12 months in 4, 4 and 4 rather than 5, 5 and 2)."""
    if fits(console, months_as_columns(months)):
        yield list(months)
        return
    for _, rows in groupby(months, key=lambda m: m.currency):
        group = list(rows)
        widest = _widest(group)
        # Any `per` of the group fit when its `per` widest do; one month a block is the floor.
        per = next((n for n in range(len(group), 1, -1) if fits(console, months_as_columns(widest[:n]))), 1)
        yield from _even(group, -(-len(group) // per))


def _even(group: list[MonthlyAggregate], count: int) -> Iterator[list[MonthlyAggregate]]:
    """`count` consecutive blocks whose sizes differ by one at most (23 months in 5: 5, 5, 5, 4, 4)."""
    size, longer = divmod(len(group), count)
    start = 0
    for i in range(count):
        end = start + size + (i < longer)
        yield group[start:end]
        start = end


def layout(months: Sequence[MonthlyAggregate], title: str, console: Console) -> list[RenderableType]:
    wide = table(months, title)
    if not months or fits(console, wide):
        return [wide]
    turned: list[RenderableType] = [Text(title, style="bold")]
    turned += [months_as_columns(block) for block in blocks(console, months)]
    needed = natural_width(console, wide)
    hint = (
        f"Months are columns to fit {console.width} columns: a terminal of {needed} shows a month a row; "
        "--format csv or --format json prints every field."
    )
    return [*turned, Text(hint, style="dim")]


def default_console() -> Console:
    console = Console()
    # A pipe or a CI log gets the table a month a row rather than the terminal's 80 columns.
    return console if console.is_terminal else Console(width=WIDE_CONSOLE)


def print_table(months: Sequence[MonthlyAggregate], title: str, console: Console | None = None) -> None:
    console = default_console() if console is None else console
    for part in layout(months, title, console):
        console.print(part)
