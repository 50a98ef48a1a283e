"""Monthly recurring revenue of one subscription's terms: exact integer arithmetic, rounded once.

This is the one place where money is rounded. Amounts enter as decimal strings with up to six places
and leave as integer cents, rounded half-even; everything downstream adds and subtracts whole cents.
"""

from __future__ import annotations

# MONTHLY_FACTOR (months per interval) lives with the contract, which bounds an event's MRR with it.
from schemas.billing_event import MONTHLY_FACTOR, BillingEvent

MICRO = 1_000_000
# 100 percent expressed in 1/10,000ths of a percent, the finest unit percent_off allows.
_FULL_PERCENT = 1_000_000


def round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to an integer, ties to even (banker's rounding)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    q, r = divmod(numerator, denominator)
    twice = 2 * r
    if twice > denominator or (twice == denominator and q % 2 == 1):
        q += 1
    return q


def _scaled(value: str, places: int) -> int:
    whole, _, frac = value.partition(".")
    scale: int = 10**places
    return int(whole) * scale + (int(frac.ljust(places, "0")) if frac else 0)


def to_micro(amount: str) -> int:
    """A decimal string with at most six places as an integer count of millionths."""
    return _scaled(amount, 6)


def subscription_mrr(event: BillingEvent) -> int:
    """MRR in cents of the terms an event states: what the customer pays per month, net of discounts.

    max(0, sum(unit_amount * quantity) * (1 - percent_off/100) - amount_off) * factor / interval_count
    """
    if event.trial or event.items is None or event.interval is None:
        return 0
    gross = sum(to_micro(item.unit_amount) * item.quantity for item in event.items)
    # Scale: net is the amount per interval in millionths, times _FULL_PERCENT.
    net = gross * _FULL_PERCENT
    if event.discount is not None:
        if event.discount.percent_off is not None:
            net = gross * (_FULL_PERCENT - _scaled(event.discount.percent_off, 4))
        if event.discount.amount_off is not None:
            net -= to_micro(event.discount.amount_off) * _FULL_PERCENT
    if net <= 0:
        return 0
    num, den = MONTHLY_FACTOR[event.interval]
    return round_half_even(net * num * 100, MICRO * _FULL_PERCENT * den * event.interval_count)
