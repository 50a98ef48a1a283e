from decimal import Decimal

from processors.core.account import AccountState, apply
from processors.core.aggregates import MonthTotals, merge, monthly_aggregates, monthly_totals, ratio
from processors.core.fact import Fact
from processors.core.movement import Movement
from schemas.aggregate import MonthlyAggregate
from tests.factories import fx


def movements_of(events: list[Fact]) -> list[Movement]:
    by_account: dict[str, list[Fact]] = {}
    for e in events:
        by_account.setdefault(e.account_id, []).append(e)
    return [m for acct, evs in by_account.items() for m in apply(AccountState(acct), evs).state.movements]


def aggregates(events: list[Fact]) -> list[MonthlyAggregate]:
    return monthly_aggregates(monthly_totals(movements_of(events)))


def test_worked_example_from_mrr_guides() -> None:
    # 5 new customers at $100/mo, 10 customers upgrading $100 -> $200, 3 customers at $200 cancelling.
    before = [fx("subscribe", account=f"u{i}", at="2025-01-05T00:00:00Z", amount="100.00") for i in range(10)]
    before += [fx("subscribe", account=f"c{i}", at="2025-01-05T00:00:00Z", amount="200.00") for i in range(3)]
    feb = [fx("subscribe", account=f"n{i}", at="2025-02-03T00:00:00Z", amount="100.00") for i in range(5)]
    feb += [fx("upgrade", account=f"u{i}", at="2025-02-10T00:00:00Z", amount="200.00") for i in range(10)]
    feb += [fx("cancel", account=f"c{i}", at="2025-02-20T00:00:00Z") for i in range(3)]
    jan_row, feb_row = aggregates(before + feb)
    assert (feb_row.new_mrr, feb_row.expansion_mrr, feb_row.churn_mrr, feb_row.net_new_mrr) == (
        50000,
        100000,
        60000,
        90000,
    )
    assert feb_row.opening_mrr == jan_row.closing_mrr == 160000
    assert feb_row.closing_mrr == 250000
    assert (
        feb_row.customers_opening,
        feb_row.new_customers,
        feb_row.churned_customers,
        feb_row.customers_closing,
    ) == (13, 5, 3, 15)
    # nrr = (1600 + 1000 - 600) / 1600; grr = (1600 - 600) / 1600; quick = (500 + 1000) / 600
    assert feb_row.nrr == Decimal("1.2500") and feb_row.grr == Decimal("0.6250")
    assert feb_row.quick_ratio == Decimal("2.5000")
    assert feb_row.arpa == 16667  # 2,500 / 15 = 166.666.. -> 166.67
    assert jan_row.nrr is None and jan_row.quick_ratio is None


def test_months_have_no_gaps_and_end_together() -> None:
    rows = aggregates(
        [
            fx("subscribe", account="a", currency="EUR", at="2025-01-15T00:00:00Z"),
            fx("subscribe", account="b", currency="USD", at="2025-03-15T00:00:00Z"),
            fx("upgrade", account="b", currency="USD", at="2025-06-15T00:00:00Z", amount="150.00"),
        ]
    )
    assert [(r.currency, r.month) for r in rows] == [
        ("EUR", m) for m in ("2025-01", "2025-02", "2025-03", "2025-04", "2025-05", "2025-06")
    ] + [("USD", m) for m in ("2025-03", "2025-04", "2025-05", "2025-06")]
    quiet = rows[1]
    assert quiet.opening_mrr == quiet.closing_mrr == 10000 and quiet.net_new_mrr == 0
    assert quiet.nrr == Decimal("1.0000") and quiet.quick_ratio is None


def test_year_boundary() -> None:
    rows = aggregates([fx("subscribe", at="2024-11-15T00:00:00Z"), fx("cancel", at="2025-02-01T00:00:00Z")])
    assert [r.month for r in rows] == ["2024-11", "2024-12", "2025-01", "2025-02"]
    assert rows[-1].closing_mrr == 0 and rows[-1].arpa is None and rows[-1].customers_closing == 0


def test_fully_retracted_month_disappears() -> None:
    jan = apply(AccountState("x"), [fx("subscribe", account="x", at="2025-01-01T00:00:00Z")])
    movement = jan.added[0]
    from processors.core.movement import retraction_of

    totals = merge(monthly_totals([movement]), monthly_totals([retraction_of(movement)]))
    assert totals[("2025-01", "USD")] == MonthTotals()
    assert monthly_aggregates(totals) == []


def test_ratio_rounding() -> None:
    assert ratio(2, 3) == Decimal("0.6667")
    assert ratio(1, 0) is None
    assert ratio(-1, 8) == Decimal("-0.1250")
    assert ratio(1, 20000) == Decimal("0.0000")  # 0.00005 ties to even


def test_json_shape_has_money_as_strings() -> None:
    row = aggregates([fx("subscribe", at="2025-01-15T00:00:00Z", amount="99.99")])[0]
    data = row.model_dump(mode="json")
    assert data["new_mrr"] == "99.99" and data["opening_mrr"] == "0.00"
    assert data["arpa"] == "99.99" and data["nrr"] is None
    assert MonthlyAggregate.model_validate(data) == row


def test_rollup_of_a_quarter() -> None:
    from processors.core.aggregates import period_months, rollup

    rows = aggregates(
        [
            fx("subscribe", account="a", at="2025-01-10T00:00:00Z", amount="100.00"),
            fx("subscribe", account="b", at="2025-02-10T00:00:00Z", amount="50.00"),
            fx("upgrade", account="a", at="2025-03-10T00:00:00Z", amount="130.00"),
            fx("cancel", account="b", at="2025-04-10T00:00:00Z"),
        ]
    )
    q1 = rollup([r for r in rows if r.month in period_months("2025-03", "qtd")[0]])
    assert q1 is not None
    assert (q1.first_month, q1.last_month, q1.opening_mrr, q1.closing_mrr) == ("2025-01", "2025-03", 0, 18000)
    assert (q1.new_mrr, q1.expansion_mrr, q1.net_new_mrr, q1.new_customers) == (15000, 3000, 18000, 2)
    assert q1.nrr is None and q1.quick_ratio is None
    q2 = rollup([r for r in rows if r.month in period_months("2025-04", "qtd")[0]])
    assert q2 is not None and q2.churn_mrr == 5000 and q2.grr == Decimal("0.7222")  # 130 / 180
    assert period_months("2025-05", "ytd") == (
        ["2025-01", "2025-02", "2025-03", "2025-04", "2025-05"],
        ["2024-01", "2024-02", "2024-03", "2024-04", "2024-05"],
    )
    assert period_months("2025-05", "qtd")[0] == ["2025-04", "2025-05"]
    assert rollup([]) is None
