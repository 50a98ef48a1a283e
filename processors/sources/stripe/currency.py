"""Stripe's currency exponents: the decimal places of the minor unit Stripe's API amounts are counted in.

Stripe states every amount (`unit_amount`, `amount_off`, tier amounts; the `*_decimal` variants are the
same unit with decimals) as a count of the currency's minor unit, which is not always ISO 4217's:

- zero-decimal (https://docs.stripe.com/currencies#zero-decimal): BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF
  VND VUV XAF XOF XPF, and UGX, which that list also names but see below;
- three-decimal (https://docs.stripe.com/currencies#three-decimal): BHD JOD KWD OMR TND (Stripe requires
  the last digit of a charge to be 0, but the amount is still in thousandths);
- every other currency: two decimals.

Special cases (https://docs.stripe.com/currencies#special-cases), and what is chosen here:

- ISK: zero-decimal in practice since 2023-04-14 (card networks take whole krónur only), but Stripe keeps
  it two-decimal in the API for backwards compatibility: amounts must be multiples of 100 and `100` is one
  króna. Chosen: 2, as the API counts it.
- HUF and TWD: Stripe treats them as zero-decimal for payouts only; charges, prices and coupons are
  two-decimal amounts. Chosen: 2.
- UGX: Stripe's zero-decimal list names it, yet its special-cases section says that, for backwards
  compatibility, UGX amounts are passed with two decimals (a multiple of 100, 500 meaning 5 UGX), and
  integrators report that a live UGX charge of 12000 reads as 120.00 USh. The brief listed UGX as
  zero-decimal; chosen: 2, because it is how the API counts it, and the other reading would inflate every
  UGX price a hundredfold (the error this module exists to prevent). Change ZERO_DECIMAL if Stripe
  documents otherwise.

The lists were checked against Stripe's currencies page and public integrations of it; a currency Stripe
adds later is two-decimal unless it joins a list here.
"""

from __future__ import annotations

ZERO_DECIMAL: frozenset[str] = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "VND", "VUV", "XAF", "XOF", "XPF"}
)
THREE_DECIMAL: frozenset[str] = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
# Two-decimal in Stripe's API although the currency is (effectively) zero-decimal elsewhere: see above.
SPECIAL_TWO_DECIMAL: frozenset[str] = frozenset({"ISK", "HUF", "TWD", "UGX"})


def exponent(currency: str) -> int:
    """Decimal places of the unit Stripe counts `currency` in (ISO 4217 code, any case)."""
    code = currency.upper()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2
