"""Movements -> monthly totals -> monthly aggregates per (month, currency).

Totals are plain sums over movement records, retractions included (they carry negated amounts and
signs), so the totals of a stream that saw corrections equal those of a replay that never needed any.
Every aggregate row is then derived from the totals: opening = the previous closing, and so on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal

from processors.core.movement import Movement
from processors.core.mrr import round_half_even
from schemas.aggregate import MonthlyAggregate, PeriodAggregate

MonthKey = tuple[str, str]  # (month "YYYY-MM", currency)
_RATIO_PLACES = 4


@dataclass(frozen=True, slots=True)
class MonthTotals:
    new: int = 0
    expansion: int = 0
    contraction: int = 0
    churn: int = 0
    reactivation: int = 0
    new_customers: int = 0
    reactivated_customers: int = 0
    churned_customers: int = 0
    movements: int = 0  # movements in effect; 0 means every movement of the month was retracted

    def __add__(self, other: MonthTotals) -> MonthTotals:
        return MonthTotals(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


_CUSTOMER_FIELD = {
    "new": "new_customers",
    "reactivation": "reactivated_customers",
    "churn": "churned_customers",
}


def monthly_totals(movements: Iterable[Movement]) -> dict[MonthKey, MonthTotals]:
    sums: dict[MonthKey, dict[str, int]] = {}
    for m in movements:
        s = sums.setdefault((m.month, m.currency), {})
        s[m.type] = s.get(m.type, 0) + m.amount
        s["movements"] = s.get("movements", 0) + m.sign
        counter = _CUSTOMER_FIELD.get(m.type)
        if counter is not None:
            s[counter] = s.get(counter, 0) + m.sign
    return {key: MonthTotals(**s) for key, s in sums.items()}


def merge(
    a: Mapping[MonthKey, MonthTotals], b: Mapping[MonthKey, MonthTotals]
) -> dict[MonthKey, MonthTotals]:
    out = dict(a)
    for key, totals in b.items():
        out[key] = out[key] + totals if key in out else totals
    return out


def _next_month(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"


def ratio(numerator: int, denominator: int) -> Decimal | None:
    """numerator / denominator to four places, half-even; None where the denominator is 0."""
    if denominator == 0:
        return None
    scaled = round_half_even(numerator * 10**_RATIO_PLACES, denominator)
    return Decimal(scaled).scaleb(-_RATIO_PLACES)


def monthly_aggregates(
    totals: Mapping[MonthKey, MonthTotals], through: str | None = None
) -> list[MonthlyAggregate]:
    """One row per (month, currency), every month from a currency's first movement to `through` (the
    month of "now": months run to now, a month without movements still has its row), or without it to
    the last month with a movement in any currency; every currency's table ends on the same month."""
    live = {key: t for key, t in totals.items() if t.movements != 0}
    if not live:
        return []
    last = max(max(month for month, _ in live), through or "")
    rows: list[MonthlyAggregate] = []
    for currency in sorted({c for _, c in live}):
        month = min(m for m, c in live if c == currency)
        opening = customers = 0
        while month <= last:
            t = live.get((month, currency), MonthTotals())
            closing = opening + t.new + t.expansion + t.reactivation - t.contraction - t.churn
            customers_closing = customers + t.new_customers + t.reactivated_customers - t.churned_customers
            rows.append(
                MonthlyAggregate(
                    month=month,
                    currency=currency,
                    opening_mrr=opening,
                    new_mrr=t.new,
                    expansion_mrr=t.expansion,
                    contraction_mrr=t.contraction,
                    churn_mrr=t.churn,
                    reactivation_mrr=t.reactivation,
                    net_new_mrr=closing - opening,
                    closing_mrr=closing,
                    customers_opening=customers,
                    customers_closing=customers_closing,
                    new_customers=t.new_customers,
                    reactivated_customers=t.reactivated_customers,
                    churned_customers=t.churned_customers,
                    arpa=round_half_even(closing, customers_closing) if customers_closing else None,
                    nrr=ratio(opening + t.expansion + t.reactivation - t.contraction - t.churn, opening),
                    grr=ratio(opening - t.contraction - t.churn, opening),
                    quick_ratio=ratio(t.new + t.expansion + t.reactivation, t.contraction + t.churn),
                )
            )
            opening, customers = closing, customers_closing
            month = _next_month(month)
    return rows


def rollup(rows: Sequence[MonthlyAggregate]) -> PeriodAggregate | None:
    """Consecutive months of one currency as one period: sums of movements, opening of the first month,
    closing of the last, and the period's ratios computed from those (not averaged over months)."""
    if not rows:
        return None
    if len({r.currency for r in rows}) != 1:
        raise ValueError("a roll-up takes the months of one currency")
    first, last = rows[0], rows[-1]

    def total(name: str) -> int:
        return sum(int(getattr(r, name)) for r in rows)

    new, exp, con, churn, react = (
        total(f"{k}_mrr") for k in ("new", "expansion", "contraction", "churn", "reactivation")
    )
    opening = first.opening_mrr
    return PeriodAggregate(
        currency=first.currency,
        first_month=first.month,
        last_month=last.month,
        opening_mrr=opening,
        new_mrr=new,
        expansion_mrr=exp,
        contraction_mrr=con,
        churn_mrr=churn,
        reactivation_mrr=react,
        net_new_mrr=last.closing_mrr - opening,
        closing_mrr=last.closing_mrr,
        customers_opening=first.customers_opening,
        customers_closing=last.customers_closing,
        new_customers=total("new_customers"),
        reactivated_customers=total("reactivated_customers"),
        churned_customers=total("churned_customers"),
        nrr=ratio(opening + exp + react - con - churn, opening),
        grr=ratio(opening - con - churn, opening),
        quick_ratio=ratio(new + exp + react, con + churn),
    )


def period_months(latest: str, period: str) -> tuple[list[str], list[str]]:
    """The months of the quarter or year to date ending with `latest`, and the same months a year before."""
    year, month = int(latest[:4]), int(latest[5:7])
    start = 1 if period == "ytd" else (month - 1) // 3 * 3 + 1
    if period not in ("qtd", "ytd"):
        raise ValueError("period is qtd or ytd")
    current = [f"{year:04d}-{m:02d}" for m in range(start, month + 1)]
    return current, [f"{year - 1:04d}-{m:02d}" for m in range(start, month + 1)]
