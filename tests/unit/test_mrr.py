from decimal import Decimal

import pytest

from processors.core.mrr import round_half_even, subscription_mrr
from tests.factories import ev


@pytest.mark.parametrize(
    ("interval", "count", "amount", "cents"),
    [
        ("month", 1, "100.00", 10000),
        ("quarter", 1, "1000.00", 33333),  # a $1,000/quarter contract is 333.33 MRR
        ("year", 1, "1200.00", 10000),  # $1,200/year is 100.00
        ("week", 1, "10.00", 4333),  # 10 * 52 / 12 = 43.333...
        ("day", 1, "1.00", 3042),  # 365 / 12 = 30.41666...
        ("month", 6, "600.00", 10000),
        ("week", 2, "10.00", 2167),  # 10 * 52 / 12 / 2 = 21.666...
        ("year", 2, "0.01", 0),  # 0.01 / 24 rounds to nothing
    ],
)
def test_normalised_to_a_month(interval: str, count: int, amount: str, cents: int) -> None:
    assert subscription_mrr(ev(interval=interval, amount=amount, interval_count=count)) == cents


def test_quantity_multiplies_the_unit_price() -> None:
    assert subscription_mrr(ev(amount="12.50", quantity=7)) == 8750
    assert subscription_mrr(ev(amount="12.50", quantity=0)) == 0


def test_sums_every_item() -> None:
    event = ev(
        items=[
            {"plan_id": "base", "unit_amount": "50.00"},
            {"plan_id": "addon", "unit_amount": "25.00", "quantity": 2},
        ]
    )
    assert subscription_mrr(event) == 10000


def test_percent_then_amount_discount() -> None:
    assert subscription_mrr(ev(amount="100.00", discount={"percent_off": "12.5"})) == 8750
    assert subscription_mrr(ev(amount="100.00", discount={"amount_off": "10.00"})) == 9000
    # percent first, then amount: (100 * 0.8) - 10
    assert subscription_mrr(ev(amount="100.00", discount={"percent_off": "20", "amount_off": "10"})) == 7000
    # amount_off is per billing interval, so it is normalised with the price
    assert subscription_mrr(ev(interval="year", amount="1200.00", discount={"amount_off": "120.00"})) == 9000


def test_discount_never_makes_mrr_negative() -> None:
    assert subscription_mrr(ev(amount="5.00", discount={"amount_off": "10.00"})) == 0
    assert subscription_mrr(ev(amount="5.00", discount={"percent_off": "100"})) == 0


def test_trial_has_no_mrr() -> None:
    assert subscription_mrr(ev(amount="100.00", trial=True)) == 0


def test_taxes_and_one_time_fees_are_not_mrr() -> None:
    plain = subscription_mrr(ev(amount="100.00"))
    loaded = subscription_mrr(ev(amount="100.00", tax_amount="20.00", one_time_fees=[{"amount": "500.00"}]))
    assert plain == loaded == 10000


def test_rounded_once_not_per_step() -> None:
    # 3 seats at 0.333335 a month: 0.999999... exact -> 1.00; rounding the unit price first would give 0.99
    assert subscription_mrr(ev(amount="0.333335", quantity=3)) == 100
    # 33.3333% off 10.00 a year: exactly 6.66667 / 12 = 0.5555558 -> 0.56
    assert subscription_mrr(ev(interval="year", amount="10.00", discount={"percent_off": "33.3333"})) == 56


def test_half_even_rounding() -> None:
    assert round_half_even(5, 2) == 2  # 2.5 -> 2
    assert round_half_even(7, 2) == 4  # 3.5 -> 4
    assert round_half_even(-5, 2) == -2
    assert round_half_even(11, 4) == 3  # 2.75
    assert subscription_mrr(ev(amount="0.005")) == 0  # half a cent, ties to even 0
    assert subscription_mrr(ev(amount="0.015")) == 2  # 1.5 cents -> 2
    with pytest.raises(ValueError):
        round_half_even(1, 0)


def test_matches_decimal_reference() -> None:
    # The integer arithmetic agrees with a straightforward high-precision Decimal computation.
    from decimal import ROUND_HALF_EVEN, localcontext

    cases = [
        ("week", 3, "17.990001", 13, "7.5", "1.25"),
        ("day", 1, "0.999999", 5, "0", "0"),
        ("quarter", 2, "12345.67", 1, "33.3333", "99.99"),
    ]
    for interval, count, amount, qty, pct, off in cases:
        event = ev(
            interval=interval,
            interval_count=count,
            amount=amount,
            quantity=qty,
            discount={"percent_off": pct, "amount_off": off},
        )
        factor = {"day": Decimal(365) / 12, "week": Decimal(52) / 12, "quarter": Decimal(1) / 3}[interval]
        with localcontext() as ctx:
            ctx.prec = 60
            value = max(Decimal(0), Decimal(amount) * qty * (1 - Decimal(pct) / 100) - Decimal(off))
            expected = (value * factor / count).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
        assert subscription_mrr(event) == int(expected * 100)
