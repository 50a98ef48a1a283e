"""`mrr-stream report --month M | --quarter Q | --year Y`: the period's table and a PNG chart:
the MRR bridge from opening to closing, and the monthly trend of the twelve months to the period's end
(closing MRR above, net new MRR and its movements below)."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from processors.cli import render
from processors.core.aggregates import rollup
from processors.settings import Settings
from schemas.aggregate import MonthlyAggregate, PeriodAggregate

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}  # others are written as their code
TREND_MONTHS = 12
MINUS = "\N{MINUS SIGN}"  # as matplotlib's own tick labels write it
NO_MATPLOTLIB = "matplotlib is not installed: pip install 'mrr-stream[report]'"
COLOURS = {
    "Opening": "#6b7385",
    "New": "#2f7ed8",
    "Expansion": "#35a853",
    "Reactivation": "#8e6cd9",
    "Contraction": "#f0a030",
    "Churn": "#d9463b",
    "Closing": "#1d2330",
    "Net new": "#1d2330",
    "Period": "#e9edf5",
}


class Mistake(Exception):
    """A report that cannot be made as asked: one line on stderr, status 2."""


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="a period's MRR table and a PNG of its bridge and trend")
    period = p.add_mutually_exclusive_group(required=True)
    period.add_argument("--month", help="YYYY-MM")
    period.add_argument("--quarter", help="YYYYQn, e.g. 2025Q2")
    period.add_argument("--year", help="YYYY")
    p.add_argument("--currency", default="USD")
    p.add_argument("--replay", metavar="FILE", help="compute from a JSON Lines file instead of reading Redis")
    p.add_argument("-o", "--output", type=Path, help="PNG to write (default: mrr-report-PERIOD-CUR.png)")
    p.set_defaults(run=run)


def months_of(args: argparse.Namespace) -> tuple[str, list[str]]:
    if args.month:
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", args.month):
            raise Mistake(f"--month takes YYYY-MM, e.g. 2025-06 (got {args.month!r})")
        return args.month, [args.month]
    if args.quarter:
        m = re.fullmatch(r"(\d{4})Q([1-4])", args.quarter)
        if not m:
            raise Mistake(f"--quarter takes YYYYQn, e.g. 2025Q2 (got {args.quarter!r})")
        year, q = int(m[1]), int(m[2])
        return args.quarter, [f"{year}-{month:02d}" for month in range(3 * q - 2, 3 * q + 1)]
    if not re.fullmatch(r"\d{4}", args.year):
        raise Mistake(f"--year takes YYYY, e.g. 2025 (got {args.year!r})")
    return args.year, [f"{args.year}-{month:02d}" for month in range(1, 13)]


def require_matplotlib() -> None:
    """matplotlib is the `report` extra: checked before any work, so that its absence is one line."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Mistake(NO_MATPLOTLIB) from None


def load(args: argparse.Namespace) -> tuple[list[MonthlyAggregate], int]:
    """The monthly rows and how many lines of the replayed file were rejected (0 from Redis)."""
    if args.replay:
        from processors.cli.replay_cmd import run_replay

        outcome = run_replay([args.replay], show_progress=False)
        return outcome.months, len(outcome.rejects)
    from processors.sinks.redis_view import read_months

    settings = Settings()
    months, _ = asyncio.run(read_months(settings.redis_url.get_secret_value(), settings.redis_prefix))
    return months, 0  # (Redis' dead letters are the stream's, not this report's input)


def rejected_warning(source: str, rejected: int) -> str | None:
    if not rejected:
        return None
    lines, were, them = ("1 line", "was", "it") if rejected == 1 else (f"{rejected:,} lines", "were", "them")
    return (
        f"warning: {lines} of {source} {were} rejected; the report leaves {them} out "
        f"(`mrr-stream replay {source}` lists {them})"
    )


def period_is_month(label: str) -> bool:
    return len(label) == len("YYYY-MM")


def month_name(month: str) -> str:
    """'2025-07' -> 'Jul 2025'."""
    return f"{MONTH_NAMES[int(month[5:]) - 1]} {month[:4]}"


def span_name(first: str, last: str) -> str:
    """'Jun 2025' for one month, 'Jul 2025 – Sep 2025' for several."""
    return month_name(first) if first == last else f"{month_name(first)} – {month_name(last)}"


def report_title(currency: str, label: str, first: str, last: str) -> str:
    """The chart's title: the period as asked and the months it covers (fewer where the data ends)."""
    span = span_name(first, last)
    return f"{currency} MRR, {span}" if first == last == label else f"{currency} MRR, {label}: {span}"


def money_tick(value: float, currency: str) -> str:
    """An axis label: the currency's symbol (or code), thousands separators, cents only where a tick has
    them (ticks are drawn at round values: $1,250,000, −$50,000, $0.50)."""
    # From the float's shortest decimal form: value * 100 in floats is off past 2^53 cents.
    cents = int((Decimal(repr(float(value))) * 100).to_integral_value())  # (numpy floats too)
    digits = render.money(abs(cents)).removesuffix(".00")
    symbol = SYMBOLS.get(currency, f"{currency} ")
    return f"{MINUS if cents < 0 else ''}{symbol}{digits}"


def trend_of(rows: Sequence[MonthlyAggregate], last: str) -> list[MonthlyAggregate]:
    """The twelve months to `last` (fewer where the data starts later)."""
    year, month = int(last[:4]), int(last[5:])
    index = year * 12 + month - 1 - (TREND_MONTHS - 1)
    first = f"{index // 12:04d}-{index % 12 + 1:02d}"
    return [r for r in rows if first <= r.month <= last]


def month_ticks(months: Sequence[str]) -> list[str]:
    """'Jul', with the year under the first month and under each January."""
    names = [MONTH_NAMES[int(m[5:]) - 1] for m in months]
    return [
        f"{name}\n{m[:4]}" if i == 0 or m.endswith("-01") else name
        for i, (m, name) in enumerate(zip(months, names, strict=True))
    ]


def _money_axis(ax: Axes, currency: str, label: str, axis: Literal["x", "y"] = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    money = ax.yaxis if axis == "y" else ax.xaxis
    money.set_major_formatter(FuncFormatter(lambda value, _: money_tick(value, currency)))
    money.set_label_text(f"{label} ({currency})")
    ax.grid(axis=axis, color="#d5d9e0", linewidth=0.8)
    ax.set_axisbelow(True)
    (ax.axhline if axis == "y" else ax.axvline)(0, color="#1d2330", linewidth=0.8)


def _legend(ax: Axes) -> None:
    # Beside the panel rather than on it: it never hides a bar, whatever the figures.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)


def bridge_label(cents: int, total: bool) -> str:
    """A bridge step's exact figure, signed where it is a movement."""
    return f"{'+' if cents >= 0 and not total else ''}{render.money(cents)}"


def draw_bridge(ax: Axes, period: PeriodAggregate) -> None:
    """The bridge lying down, from opening at the top to closing at the bottom: each figure has the room
    right of its bar, where standing bars' labels would collide with their neighbours'."""
    steps = [
        ("Opening", period.opening_mrr, True),
        ("New", period.new_mrr, False),
        ("Expansion", period.expansion_mrr, False),
        ("Reactivation", period.reactivation_mrr, False),
        ("Contraction", -period.contraction_mrr, False),
        ("Churn", -period.churn_mrr, False),
        ("Closing", period.closing_mrr, True),
    ]
    level = 0  # cents: the bridge's running total
    for i, (name, cents, total) in enumerate(steps):
        base = 0 if total else min(level, level + cents)
        ax.barh(i, abs(cents) / 100, left=base / 100, color=COLOURS[name], height=0.7)  # drawing only
        end = (base + abs(cents)) / 100
        ax.annotate(
            bridge_label(cents, total), (end, i), xytext=(4, 0), textcoords="offset points", va="center"
        )
        level = cents if total else level + cents
    ax.set_yticks(range(len(steps)), [s[0] for s in steps])
    ax.invert_yaxis()
    ax.margins(x=0.22)  # room for the figure right of the longest bar
    ax.set_xlim(left=0)
    ax.set_title(f"MRR bridge, {span_name(period.first_month, period.last_month)}")
    _money_axis(ax, period.currency, "MRR", axis="x")
    ax.tick_params(axis="x", labelrotation=30)


def _shade_period(ax: Axes, months: Sequence[str], period: PeriodAggregate, label: str | None) -> None:
    inside = [i for i, m in enumerate(months) if period.first_month <= m <= period.last_month]
    if inside and len(inside) < len(months):  # (a period that is the whole trend needs no marking)
        ax.axvspan(inside[0] - 0.5, inside[-1] + 0.5, color=COLOURS["Period"], zorder=0, label=label)


def draw_closing(ax: Axes, trend: Sequence[MonthlyAggregate], period: PeriodAggregate, label: str) -> None:
    months = [r.month for r in trend]
    _shade_period(ax, months, period, label)
    closing = [r.closing_mrr / 100 for r in trend]
    ax.bar(range(len(trend)), closing, color=COLOURS["Closing"], label="Closing MRR")
    ax.set_title(f"Closing MRR, {span_name(months[0], months[-1])}")
    _money_axis(ax, period.currency, "Closing MRR")
    _legend(ax)


Part = tuple[str, Callable[[MonthlyAggregate], int]]
GAINS: tuple[Part, ...] = (
    ("New", lambda r: r.new_mrr),
    ("Expansion", lambda r: r.expansion_mrr),
    ("Reactivation", lambda r: r.reactivation_mrr),
)
LOSSES: tuple[Part, ...] = (("Contraction", lambda r: -r.contraction_mrr), ("Churn", lambda r: -r.churn_mrr))


def _stack(ax: Axes, trend: Sequence[MonthlyAggregate], parts: Sequence[Part]) -> None:
    """Bars stacked from zero, each part on the ones before it."""
    bottom = [0.0] * len(trend)
    for name, cents in parts:
        values = [cents(r) / 100 for r in trend]
        ax.bar(range(len(trend)), values, bottom=bottom, color=COLOURS[name], label=name, width=0.7)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]


def draw_net_new(ax: Axes, trend: Sequence[MonthlyAggregate], period: PeriodAggregate) -> None:
    """Net new MRR as a line over its movements, gains stacked up and losses down from zero."""
    months = [r.month for r in trend]
    _shade_period(ax, months, period, None)
    _stack(ax, trend, GAINS)
    _stack(ax, trend, LOSSES)
    net = [r.net_new_mrr / 100 for r in trend]
    ax.plot(range(len(trend)), net, color=COLOURS["Net new"], marker="o", linewidth=1.5, label="Net new MRR")
    ax.set_title("Net new MRR and its movements")
    _money_axis(ax, period.currency, "MRR")
    ax.set_xticks(range(len(trend)), month_ticks(months))
    _legend(ax)


def chart(period: PeriodAggregate, trend: list[MonthlyAggregate], label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(14, 7.5), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=(1.15, 1.3))
    closing = fig.add_subplot(grid[0, 1])
    draw_bridge(fig.add_subplot(grid[:, 0]), period)
    draw_closing(closing, trend, period, month_name(label) if period_is_month(label) else label)
    draw_net_new(fig.add_subplot(grid[1, 1], sharex=closing), trend, period)
    closing.tick_params(labelbottom=False)  # the months are named once, under the panel below
    fig.suptitle(report_title(period.currency, label, period.first_month, period.last_month), fontsize=14)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make(args: argparse.Namespace) -> int:
    label, wanted = months_of(args)
    require_matplotlib()
    months, rejected = load(args)
    warning = rejected_warning(args.replay, rejected) if args.replay else None
    if warning:
        print(f"mrr-stream report: {warning}", file=sys.stderr)
    rows = [r for r in months if r.currency == args.currency]
    period = rollup([r for r in rows if r.month in wanted])
    if period is None:
        raise Mistake(f"no {args.currency} figures for {label}")
    console = render.default_console()
    render.print_table([r for r in rows if r.month in wanted], f"{args.currency} MRR, {label}", console)
    console.print(
        f"{label}: opening {render.money(period.opening_mrr)}, net new {render.money(period.net_new_mrr)},"
        f" closing {render.money(period.closing_mrr)}, NRR {render.pct(period.nrr)}, GRR "
        f"{render.pct(period.grr)}",
        markup=False,
    )
    path = args.output or Path(f"mrr-report-{label}-{args.currency}.png")
    chart(period, trend_of(rows, period.last_month), label, path)
    console.print(f"chart written to {path}", markup=False)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return make(args)
    except Mistake as exc:
        print(f"mrr-stream report: {exc}", file=sys.stderr)
        return 2
