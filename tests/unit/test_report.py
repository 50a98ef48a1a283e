"""`mrr-stream report`: its titles, axis labels and warning, the chart's panels read back from matplotlib's
objects (never its pixels), and the PNG it writes."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from processors.cli import main
from processors.cli.report_cmd import (
    draw_bridge,
    draw_closing,
    draw_net_new,
    money_tick,
    month_name,
    month_ticks,
    rejected_warning,
    report_title,
    span_name,
    trend_of,
)
from processors.core.aggregates import rollup
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import replay
from schemas.aggregate import MonthlyAggregate, PeriodAggregate
from tests.factories import raw

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rows() -> list[MonthlyAggregate]:
    """Two years of USD months (2024-01 to 2025-12) from a generated history."""
    events = HistoryGenerator(200, 24, 11, parse_month("2024-01")).events()
    lines = arrange(events, 11)
    months = replay((str(i), line.encode()) for i, line in enumerate(lines)).months
    return [m for m in months if m.currency == "USD"]


@pytest.fixture(scope="module")
def q3(rows: list[MonthlyAggregate]) -> PeriodAggregate:
    period = rollup([r for r in rows if "2025-07" <= r.month <= "2025-09"])
    assert period is not None
    return period


def months_between(first: str, last: str) -> list[str]:
    year, month = int(first[:4]), int(first[5:])
    out = []
    while (label := f"{year:04d}-{month:02d}") <= last:
        out.append(label)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def test_month_names_are_the_calendars() -> None:
    for month in months_between("2024-01", "2025-12"):
        expected = date(int(month[:4]), int(month[5:]), 1).strftime("%b %Y")  # (the C locale's names)
        assert month_name(month) == expected


def test_a_one_month_report_is_titled_by_its_month_only() -> None:
    assert span_name("2025-06", "2025-06") == "Jun 2025"
    assert report_title("USD", "2025-06", "2025-06", "2025-06") == "USD MRR, Jun 2025"


def test_a_period_is_titled_with_its_months() -> None:
    assert span_name("2025-07", "2025-09") == "Jul 2025 – Sep 2025"
    assert report_title("EUR", "2025Q3", "2025-07", "2025-09") == "EUR MRR, 2025Q3: Jul 2025 – Sep 2025"
    # a year whose figures stop in September says so
    assert report_title("USD", "2025", "2025-01", "2025-09") == "USD MRR, 2025: Jan 2025 – Sep 2025"


@pytest.mark.parametrize(
    ("value", "currency", "label"),
    [
        (1_250_000.0, "USD", "$1,250,000"),
        (-50_000.0, "USD", "\N{MINUS SIGN}$50,000"),
        (0.0, "GBP", "£0"),
        (12_345.5, "EUR", "€12,345.50"),
        (0.1 + 0.2, "USD", "$0.30"),  # a tick's float error is not shown
        (1_000.0, "CHF", "CHF 1,000"),
    ],
)
def test_money_ticks_have_the_currency_and_thousands_separators(
    value: float, currency: str, label: str
) -> None:
    assert money_tick(value, currency) == label


def test_money_ticks_are_exact_at_every_magnitude() -> None:
    for digits in range(1, 16):  # (a float holds 15 digits exactly)
        whole = int("9" * digits)
        assert money_tick(float(whole), "USD") == f"${whole:,}"
        assert money_tick(float(-whole), "EUR") == f"\N{MINUS SIGN}€{whole:,}"


def test_the_rejected_lines_warning() -> None:
    assert rejected_warning("h.jsonl", 0) is None
    assert rejected_warning("h.jsonl", 1) == (
        "warning: 1 line of h.jsonl was rejected; the report leaves it out "
        "(`mrr-stream replay h.jsonl` lists it)"
    )
    assert rejected_warning("h.jsonl", 1_018) == (
        "warning: 1,018 lines of h.jsonl were rejected; the report leaves them out "
        "(`mrr-stream replay h.jsonl` lists them)"
    )


@pytest.mark.parametrize("last", ["2024-05", "2025-01", "2025-09", "2025-12"])
def test_the_trend_is_the_twelve_months_to_the_periods_end(rows: list[MonthlyAggregate], last: str) -> None:
    wanted = months_between("2024-01", last)[-12:]
    assert [r.month for r in trend_of(rows, last)] == wanted


def test_month_ticks_name_the_year_at_the_start_and_each_january() -> None:
    assert month_ticks(["2024-11", "2024-12", "2025-01", "2025-02"]) == [
        "Nov\n2024",
        "Dec",
        "Jan\n2025",
        "Feb",
    ]


@pytest.fixture
def axes() -> Iterator[tuple[Axes, Axes, Axes]]:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    bridge = fig.add_subplot(1, 2, 1)
    closing = fig.add_subplot(2, 2, 2)
    net = fig.add_subplot(2, 2, 4, sharex=closing)
    yield bridge, closing, net
    fig.canvas.draw()  # (what savefig does: a drawing error fails the test)
    plt.close(fig)


def shown(cents: int) -> str:
    return f"{Decimal(cents) / 100:,.2f}"


def test_closing_mrr_has_its_own_panel_and_axis(
    axes: tuple[Axes, Axes, Axes], rows: list[MonthlyAggregate], q3: PeriodAggregate
) -> None:
    import numpy as np

    _, closing, net = axes
    trend = trend_of(rows, q3.last_month)
    draw_closing(closing, trend, q3, "2025Q3")
    draw_net_new(net, trend, q3)
    closing.figure.canvas.draw()
    # closing MRR: one bar a month, on the panel's only y axis, in currency units
    [bars] = closing.containers
    assert [bar.get_height() for bar in bars] == [r.closing_mrr / 100 for r in trend]
    assert closing.get_ylabel() == "Closing MRR (USD)" and closing.get_shared_x_axes().joined(closing, net)
    assert len(closing.figure.axes) == 3  # no twin axis
    for ax in (closing, net):
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert labels and all(re.fullmatch("\N{MINUS SIGN}?\\$\\d{1,3}(,\\d{3})*", label) for label in labels)
        assert any("," in label for label in labels)
    # net new MRR: its line, over its movements, and a legend naming each
    [line] = [line for line in net.get_lines() if line.get_label() == "Net new MRR"]
    assert np.asarray(line.get_ydata(), dtype=float).tolist() == [r.net_new_mrr / 100 for r in trend]
    legend = net.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "Net new MRR",
        "New",
        "Expansion",
        "Reactivation",
        "Contraction",
        "Churn",
    ]
    closing_legend = closing.get_legend()
    assert closing_legend is not None and {t.get_text() for t in closing_legend.get_texts()} == {
        "2025Q3",
        "Closing MRR",
    }
    assert [t.get_text() for t in net.get_xticklabels()] == month_ticks([r.month for r in trend])


def test_the_bridge_adds_up_and_says_its_exact_figures(
    axes: tuple[Axes, Axes, Axes], q3: PeriodAggregate
) -> None:
    from matplotlib.patches import Rectangle

    bridge, _, _ = axes
    draw_bridge(bridge, q3)
    movements = [q3.new_mrr, q3.expansion_mrr, q3.reactivation_mrr, -q3.contraction_mrr, -q3.churn_mrr]
    expected = [shown(q3.opening_mrr), *(("+" if c >= 0 else "") + shown(c) for c in movements)]
    assert [t.get_text() for t in bridge.texts] == [*expected, shown(q3.closing_mrr)]
    bars = [bar for bar in bridge.patches if isinstance(bar, Rectangle)]
    assert len(bars) == len(bridge.patches) == 7
    assert bars[0].get_width() == q3.opening_mrr / 100 and bars[-1].get_width() == q3.closing_mrr / 100
    level = q3.opening_mrr / 100
    for bar, cents in zip(bars[1:-1], movements, strict=True):  # each step starts where the last ended
        start, end = bar.get_x(), bar.get_x() + bar.get_width()
        assert (start, end) == pytest.approx(
            (level, level + cents / 100) if cents >= 0 else (level + cents / 100, level)
        )
        level += cents / 100
    assert level == pytest.approx(q3.closing_mrr / 100)
    assert bridge.get_title() == "MRR bridge, Jul 2025 – Sep 2025"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def history_with_bad_lines(path: Path, bad: int) -> Path:
    events = HistoryGenerator(120, 9, 5, parse_month("2025-01")).events()
    lines = arrange(events, 5) + ["{not json"] * bad
    path.write_text("\n".join(lines) + "\n")
    return path


def test_report_writes_a_png_and_warns_of_rejected_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    bad = 3
    history = history_with_bad_lines(tmp_path / "h.jsonl", bad)
    png = tmp_path / "out" / "q3.png"
    png.parent.mkdir()
    assert main(["report", "--quarter", "2025Q3", "--replay", str(history), "-o", str(png)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"mrr-stream report: {rejected_warning(str(history), bad)}"]
    assert f"lines of {history} were rejected; the report leaves them out" in err
    width, height = png_size(png)
    assert 1200 <= width <= 2400 and 700 <= height <= 1400 and png.stat().st_size > 30_000
    assert f"chart written to {png}" in out


def test_report_of_a_clean_file_has_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    history = tmp_path / "h.jsonl"
    history.write_text(json.dumps(raw("subscribe", account="a", at="2025-06-03T00:00:00Z")) + "\n")
    png = tmp_path / "jun.png"
    assert main(["report", "--month", "2025-06", "--replay", str(history), "-o", str(png)]) == 0
    assert capsys.readouterr().err == "" and png_size(png)[0] >= 1200
