"""`mrr-stream report --month M | --quarter Q | --year Y`: the period's table and a PNG chart:
the MRR bridge from opening to closing, and the monthly trend of the year."""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path
from typing import Any

from rich.console import Console

from processors.cli import render
from processors.core.aggregates import rollup
from processors.settings import Settings
from schemas.aggregate import MonthlyAggregate, PeriodAggregate


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
            raise SystemExit("--month takes YYYY-MM")
        return args.month, [args.month]
    if args.quarter:
        m = re.fullmatch(r"(\d{4})Q([1-4])", args.quarter)
        if not m:
            raise SystemExit("--quarter takes YYYYQn, e.g. 2025Q2")
        year, q = int(m[1]), int(m[2])
        return args.quarter, [f"{year}-{month:02d}" for month in range(3 * q - 2, 3 * q + 1)]
    if not re.fullmatch(r"\d{4}", args.year):
        raise SystemExit("--year takes YYYY")
    return args.year, [f"{args.year}-{month:02d}" for month in range(1, 13)]


def load(args: argparse.Namespace) -> list[MonthlyAggregate]:
    if args.replay:
        from processors.cli.replay_cmd import run_replay

        return run_replay([args.replay], show_progress=False).months
    from processors.sinks.redis_view import read_months

    settings = Settings()
    return asyncio.run(read_months(settings.redis_url.get_secret_value(), settings.redis_prefix))[0]


def chart(period: PeriodAggregate, trend: list[MonthlyAggregate], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    fig, (bridge, line) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.1, 1]})
    steps = [
        ("Opening", period.opening_mrr, "total"),
        ("New", period.new_mrr, "+"),
        ("Expansion", period.expansion_mrr, "+"),
        ("Reactivation", period.reactivation_mrr, "+"),
        ("Contraction", -period.contraction_mrr, "-"),
        ("Churn", -period.churn_mrr, "-"),
        ("Closing", period.closing_mrr, "total"),
    ]
    colours = {
        "Opening": "#6b7385",
        "New": "#2f7ed8",
        "Expansion": "#35a853",
        "Reactivation": "#8e6cd9",
        "Contraction": "#f0a030",
        "Churn": "#d9463b",
        "Closing": "#1d2330",
    }
    level = 0.0
    for i, (name, cents, kind) in enumerate(steps):
        value = cents / 100  # drawing only; the labels below come from the exact cents
        bottom = 0.0 if kind == "total" else (level if value >= 0 else level + value)
        bridge.bar(i, abs(value), bottom=bottom, color=colours[name])
        bridge.text(i, bottom + abs(value), render.money(cents), ha="center", va="bottom", fontsize=8)
        level = value if kind == "total" else level + value
    bridge.set_xticks(range(len(steps)), [s[0] for s in steps], rotation=20)
    bridge.set_title(f"MRR bridge {period.first_month} to {period.last_month}")
    bridge.set_ylabel(period.currency)
    months = [r.month for r in trend]
    line.bar(
        months,
        [r.net_new_mrr / 100 for r in trend],
        color=["#35a853" if r.net_new_mrr >= 0 else "#d9463b" for r in trend],
        label="net new MRR",
    )
    twin = line.twinx()
    twin.plot(months, [r.closing_mrr / 100 for r in trend], color="#1d2330", marker="o", label="closing MRR")
    line.set_title("Monthly trend")
    line.tick_params(axis="x", rotation=45)
    line.set_ylabel("net new MRR")
    twin.set_ylabel("closing MRR")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    label, wanted = months_of(args)
    rows = [r for r in load(args) if r.currency == args.currency]
    chosen = [r for r in rows if r.month in wanted]
    period = rollup(chosen)
    if period is None:
        raise SystemExit(f"no {args.currency} figures for {label}")
    console = Console() if Console().is_terminal else Console(width=180)
    render.print_table(chosen, f"{args.currency} MRR, {label}", console)
    console.print(
        f"{label}: opening {render.money(period.opening_mrr)}, net new {render.money(period.net_new_mrr)},"
        f" closing {render.money(period.closing_mrr)}, NRR {render.pct(period.nrr)}, GRR "
        f"{render.pct(period.grr)}",
        markup=False,
    )
    year = wanted[-1][:4]
    trend = [r for r in rows if r.month[:4] == year and r.month <= wanted[-1]]
    path = args.output or Path(f"mrr-report-{label}-{args.currency}.png")
    chart(period, trend, f"mrr-stream report: {args.currency} {label}", path)
    console.print(f"chart written to {path}")
    return 0
