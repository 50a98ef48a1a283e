"""Every table the CLI prints keeps every money figure whole at 100 columns (and 80): rendered from the
replay of a generated history, as a terminal of that width would show it."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from processors import clock
from processors.cli import main, render, scheduled_cmd, status_cmd
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import ReplayOutcome
from schemas.aggregate import MonthlyAggregate
from schemas.scheduled import ScheduledChanges

AS_OF = "2025-12-31T23:59:59Z"
WIDTHS = (100, 80)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A money figure as the tables write it: thousands separators, two places. A figure cut short ("1,204,7…")
# or folded over two lines does not match.
FIGURE = re.compile(r"(?<![\d,.])-?\d{1,3}(?:,\d{3})*\.\d{2}(?![\d.%])")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's history: 3,000 accounts over a year, shuffled, with duplicates, late events and bad
    lines; its closing MRR passes a million dollars, wide enough to have cut figures at 155 columns."""
    events = HistoryGenerator(3000, 12, 2025, parse_month("2025-01")).events()
    lines = arrange(events, 2025, shuffle=True, duplicates=0.05, late=0.2, bad=0.002)
    path = tmp_path_factory.mktemp("tables") / "history.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def outcome(history: Path) -> ReplayOutcome:
    from processors.cli.replay_cmd import run_replay

    return run_replay([str(history)], show_progress=False, at=clock.parse_instant(AS_OF))


def shown(cents: int) -> str:
    """A figure written independently of render.money: Decimal's own grouping."""
    return f"{Decimal(cents) / 100:,.2f}"


def month_figures(months: Iterable[MonthlyAggregate]) -> Counter[str]:
    """Every money figure of the months, contraction and churn negative as the tables show them."""
    figures: Counter[str] = Counter()
    for m in months:
        cents = [m.opening_mrr, m.new_mrr, m.expansion_mrr, m.reactivation_mrr, -m.contraction_mrr]
        cents += [-m.churn_mrr, m.net_new_mrr, m.closing_mrr] + ([] if m.arpa is None else [m.arpa])
        figures.update(shown(c) for c in cents)
    return figures


def assert_whole(out: str, expected: Counter[str], width: int) -> None:
    # (`scheduled` writes "… 121 more" after the first account ids: an ellipsis of its own, not a cut)
    assert not re.search(r"…(?! [\d,]+\s)", out), "a cell was cut short"
    assert max(len(line) for line in out.splitlines()) <= width
    missing = expected - Counter(FIGURE.findall(out))
    assert not missing, f"figures not shown whole at {width} columns: {sorted(missing)[:10]}"


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> int:
    """Standard output as a terminal of `request.param` columns, without colours, as rich detects one."""
    width: int = request.param
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setenv("NO_COLOR", "1")
    return width


def printed(capsys: pytest.CaptureFixture[str]) -> str:
    return ANSI.sub("", capsys.readouterr().out)  # (bold headers: NO_COLOR leaves them)


@pytest.mark.parametrize("terminal", WIDTHS, indirect=True)
def test_replay_table(
    terminal: int, history: Path, outcome: ReplayOutcome, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(history), "--as-of", AS_OF, "--no-progress"]) == 0
    out = printed(capsys)
    assert len(outcome.months) == 36 and max(m.closing_mrr for m in outcome.months) >= 100_000_000
    assert_whole(out, month_figures(outcome.months), terminal)


@pytest.mark.parametrize("terminal", WIDTHS, indirect=True)
@pytest.mark.parametrize("every", [False, True])
def test_status_table(
    terminal: int,
    every: bool,
    outcome: ReplayOutcome,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def read_months(url: str, prefix: str) -> tuple[list[MonthlyAggregate], int]:
        return outcome.months, len(outcome.rejects)

    monkeypatch.setattr(status_cmd, "read_months", read_months)
    assert main(["status", *(["--all"] if every else [])]) == 0
    latest = max(m.month for m in outcome.months)
    months = outcome.months if every else [m for m in outcome.months if m.month == latest]
    assert_whole(printed(capsys), month_figures(months), terminal)


@pytest.mark.parametrize("terminal", WIDTHS, indirect=True)
@pytest.mark.parametrize(
    ("period", "first", "last"),
    [
        (["--month", "2025-06"], "2025-06", "2025-06"),
        (["--quarter", "2025Q3"], "2025-07", "2025-09"),
        (["--year", "2025"], "2025-01", "2025-12"),
    ],
)
def test_report_table(
    terminal: int,
    period: list[str],
    first: str,
    last: str,
    outcome: ReplayOutcome,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """(The replayed file and the PNG have tests of their own, in test_report.py: here, the rows the
    replay gave and no chart.)"""
    from processors.cli import report_cmd

    pytest.importorskip("matplotlib")
    monkeypatch.setattr(report_cmd, "load", lambda args: (outcome.months, 0))
    monkeypatch.setattr(report_cmd, "chart", lambda *args: None)
    assert main(["report", *period, "--currency", "USD"]) == 0
    months = [m for m in outcome.months if m.currency == "USD" and first <= m.month <= last]
    assert len(months) == len(range(int(first[5:]), int(last[5:]) + 1))
    assert_whole(printed(capsys), month_figures(months), terminal)


@pytest.fixture(scope="module")
def changes(history: Path) -> ScheduledChanges:
    """What the history schedules after 1 September: the replay as of then, as `scheduled --replay` has it."""
    now = clock.parse_instant("2025-09-01T00:00:00Z")
    return scheduled_cmd.from_replay([str(history)], now, 90, None)


@pytest.mark.parametrize("width", WIDTHS)
def test_scheduled_tables(width: int, changes: ScheduledChanges) -> None:
    assert changes.totals and changes.movements
    console = Console(width=width, record=True)
    scheduled_cmd.print_table(changes, console)
    expected = Counter(shown(scheduled_cmd.signed(t.type, t.amount)) for t in changes.totals)
    for m in changes.movements:
        expected.update(
            [shown(scheduled_cmd.signed(m.type, m.amount)), shown(m.mrr_before), shown(m.mrr_after)]
        )
    assert_whole(console.export_text(), expected, width)


def test_demo_reconciliation_table(outcome: ReplayOutcome) -> None:
    reconciliation = pytest.importorskip("processors.devtools.demo_cmd").reconciliation

    console = Console(width=100, record=True)
    console.print(reconciliation(outcome.months, outcome.months)[0])
    expected: Counter[str] = Counter()
    for m in outcome.months:
        expected.update([shown(m.closing_mrr), shown(m.net_new_mrr)] * 2)  # the replay's and Redis'
    assert_whole(console.export_text(), expected, 100)


def rendered(months: list[MonthlyAggregate], width: int) -> str:
    console = Console(width=width, record=True)
    render.print_table(months, "MRR by month", console)
    return console.export_text()


def test_a_wide_terminal_has_a_month_a_row_and_a_narrow_one_the_months_as_columns(
    outcome: ReplayOutcome,
) -> None:
    """The hint names the width that shows a month a row; one column less turns the table."""
    narrow = rendered(outcome.months, 100)
    hint = re.search(r"a terminal of (\d+) shows a month a row", " ".join(narrow.split()))
    assert hint and "--format csv" in narrow and "Opening MRR" in narrow
    needed = int(hint[1])
    wide = rendered(outcome.months, needed)
    assert "a terminal of" not in wide and re.search(r"Month\s+.\s+Cur\s", wide)
    assert_whole(wide, month_figures(outcome.months), needed)
    assert "Opening MRR" in rendered(outcome.months, needed - 1)


@pytest.mark.parametrize("width", [*WIDTHS, 60])
@pytest.mark.parametrize("last", ["2025-10", "2025-11", "2025-12"])
def test_the_months_as_columns_come_in_even_blocks_of_one_currency(
    outcome: ReplayOutcome, width: int, last: str
) -> None:
    console = Console(width=width)
    months = [m for m in outcome.months if m.month <= last]
    blocks = list(render.blocks(console, months))
    assert [m for block in blocks for m in block] == months
    for currency in {m.currency for m in months}:
        sizes = [len(b) for b in blocks if b[0].currency == currency]
        assert max(sizes) - min(sizes) <= 1, sizes
    for block in blocks:
        assert len({m.currency for m in block}) == 1
        assert render.fits(console, render.months_as_columns(block))


def test_one_month_of_every_currency_is_one_block(outcome: ReplayOutcome) -> None:
    """`status`: the latest month of each currency side by side, each column saying its currency."""
    latest = [m for m in outcome.months if m.month == "2025-12"]
    out = rendered(latest, 80)
    assert len(list(render.blocks(Console(width=80), latest))) == 1
    header = next(line for line in out.splitlines() if "2025-12" in line)
    assert header.count("2025-12") == len(latest) == 3
    assert_whole(out, month_figures(latest), 80)
