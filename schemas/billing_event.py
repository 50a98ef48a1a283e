"""Billing event contract v1: the JSON object producers put on the input topic, one per event."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

EventType = Literal[
    "subscribe", "upgrade", "downgrade", "change", "cancel", "reactivate", "pause", "resume", "void"
]
Interval = Literal["day", "week", "month", "quarter", "year"]

# Events that state the subscription's full recurring terms after the event.
TERMS_REQUIRED: frozenset[str] = frozenset({"subscribe", "upgrade", "downgrade", "change"})
# Events that may restate the terms, or carry none so that the last terms apply again.
TERMS_OPTIONAL: frozenset[str] = frozenset({"reactivate", "resume"})
_TERM_FIELDS = ("currency", "interval", "items")

# Months per interval as a fraction (numerator, denominator): a year is 1/12 of its price per month.
# Here because the contract bounds an event's MRR (below); processors/core/mrr.py computes MRR with it.
MONTHLY_FACTOR: dict[str, tuple[int, int]] = {
    "day": (365, 12),
    "week": (52, 12),
    "month": (1, 1),
    "quarter": (1, 3),
    "year": (1, 12),
}

# Bounds. Every figure the project derives from an event must stay exact wherever it is kept: Python ints
# (exact at any size); Redis, where the contribution script's Lua numbers are doubles, exact for integers
# only up to 2**53 = 9,007,199,254,740,992, holding cents summed per (month, currency) over accounts; and
# Prometheus, float64 in currency units (cents below 2**53, divided by 100, still identify the cent).
# Each bound lies far beyond real billing: beyond it, values crashed the worker or could lose cents at scale.
#
# Largest MRR of one subscription = the gross MRR cap, MAX_MRR = 10,000,000.00 a month = 10**9 cents
# (discounts only lower it; the one half-even rounding of a value <= 10**9 cents stays <= 10**9).
# Times 10**6 subscriptions: 10**15 cents, 9.007 times below 2**53, the rest being headroom for a month's
# flows (expansions and contractions of the same MRR) summed into one bucket.
# The cap is needed: without it one item of unit_amount 999,999,999,999.999999 billed daily is
# 3.04 * 10**15 cents a month (3 such subscriptions pass 2**53), and 100 items of quantity 10**9 reach
# 3.04 * 10**26 cents.
MAX_MRR = 10_000_000  # currency units a month, per subscription, before discounts
MAX_QUANTITY = 10**9
MAX_INTERVAL_COUNT = 1000
MAX_ITEMS = 100
MAX_ID_LENGTH = 128
# effective_at, as a UTC instant: [1970-01-01T00:00:00Z, 3000-01-01T00:00:00Z). So every month is a
# four-digit YYYY-MM from 1970-01 to 2999-12, every instant converts to UTC (datetime's year 1 and 9999
# with an offset overflow), and one stray date adds at most 12,360 month rows rather than 120,000.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
END = datetime(3000, 1, 1, tzinfo=UTC)
_RANGE = "from 1970-01-01T00:00:00Z to before 3000-01-01T00:00:00Z in UTC (years 1970 to 2999)"

_MICRO = 1_000_000

# Money travels as a JSON string so that it never passes through a binary float. [0-9], never \d: \d is
# any Unicode digit ("١٠" would be 10). The Rust regex engine (set on the models) anchors $ at the very end
# (Python's re would also let "10\n" through).
Amount = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?$", strict=True)]
Percent = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,3}(\.[0-9]{1,4})?$", strict=True)]
# No control characters: the stream's table keys put an account's parts after a NUL byte.
NonEmptyId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$", strict=True),
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$", strict=True)]


def _in_range(at: datetime) -> datetime:
    # Compared as instants (aware datetimes compare in UTC without building one, so no overflow).
    if not EARLIEST <= at < END:
        raise PydanticCustomError("effective_at_range", f"must be {_RANGE}")
    return at


# RFC 3339 as the contract says: pydantic alone would also take "1735689600" (as Unix seconds), a time
# without seconds, "_" for "T" or "+0100". Parsed here (to microseconds, the engine's unit) so that strict
# mode, which takes a string for a datetime only straight from JSON, still applies. The offset is optional
# in the pattern so that a naive timestamp gets the reason that it has no timezone.
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


def _rfc3339(value: object) -> object:
    if not isinstance(value, str):
        return value
    found = _RFC3339.fullmatch(value)
    if found is None:
        raise PydanticCustomError(
            "effective_at_format", "must be RFC 3339 with an offset, such as 2025-01-15T10:00:00Z"
        )
    stamp, fraction, offset = found.groups()
    try:  # nanoseconds (Go's RFC3339Nano) are cut to microseconds, as pydantic did; "t" and "z" allowed
        return datetime.fromisoformat((stamp + (fraction or "")[:7] + (offset or "")).upper())
    except ValueError as exc:  # 2025-02-30, hour 24, offset +24:00
        reason = "is not a real date and time ({error})"
        raise PydanticCustomError("effective_at_value", reason, {"error": str(exc)}) from None


Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_in_range)]


def micro(amount: str) -> int:
    """A decimal string of the contract (at most six places) as an exact integer count of millionths."""
    whole, _, frac = amount.partition(".")
    return int(whole) * _MICRO + (int(frac.ljust(6, "0")) if frac else 0)


class FieldError(ValueError):
    """A rule across fields that still names the one field a producer has to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Contract(BaseModel):
    # strict: a JSON number is never coerced to a string or a timestamp, "3" never to an int.
    # extra="ignore": tax_amount, one_time_fees and fields of later versions are accepted and ignored.
    # rust-regex (pydantic's default, pinned here): $ is the end of the text, [0-9] and [A-Z] are ASCII.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", regex_engine="rust-regex")


class Item(_Contract):
    plan_id: NonEmptyId
    unit_amount: Amount = Field(
        description="Price per billing interval, a decimal string of ASCII digits: up to 12 before the "
        "point and 6 after."
    )
    quantity: int = Field(
        default=1, ge=0, le=MAX_QUANTITY, description=f"An integer from 0 to {MAX_QUANTITY:,}."
    )


class Discount(_Contract):
    """A recurring discount: percent_off applies first, then amount_off per billing interval."""

    percent_off: Percent | None = Field(
        default=None, description="0 to 100, a decimal string with up to 4 places."
    )
    amount_off: Amount | None = Field(
        default=None, description="Per billing interval, a decimal string like unit_amount."
    )

    @model_validator(mode="after")
    def _check(self) -> Discount:
        if self.percent_off is not None and Decimal(self.percent_off) > 100:
            raise FieldError("percent_off", "must be between 0 and 100")
        return self


_BOUNDS = (
    "Billing event contract v1, one JSON object per event. Bounds, so that every figure derived from it "
    "stays exact in Redis (doubles) and Prometheus (float64) for up to 10**6 subscriptions: effective_at "
    f"{_RANGE}; 1 to {MAX_ITEMS} items; quantity 0 to {MAX_QUANTITY:,}; "
    f"interval_count 1 to {MAX_INTERVAL_COUNT:,}; "
    "the gross MRR of the terms, sum(unit_amount * quantity) times months per interval (day 365/12, "
    "week 52/12, month 1, quarter 1/3, year 1/12) divided by interval_count, before discounts, at most "
    f"{MAX_MRR:,}.00 (rejected naming items)."
)


class BillingEvent(_Contract):
    """Billing event contract v1 (its bounds: _BOUNDS, shown in the exported JSON Schema)."""

    model_config = ConfigDict(json_schema_extra={"description": _BOUNDS})

    event_id: NonEmptyId = Field(
        description="Deduplication key: a repeated id with the same content is a no-op."
    )
    type: EventType
    account_id: NonEmptyId
    subscription_id: NonEmptyId
    effective_at: Instant = Field(
        description=f"RFC 3339 timestamp with an offset (Z or +hh:mm), {_RANGE}: the instant counts, "
        "not the local date. An event effective after now is scheduled: kept at once, but it changes no "
        "current figure, movement or month until its instant (then its movements are exactly those it "
        "would have caused had it arrived at that instant)."
    )
    currency: Currency | None = None
    interval: Interval | None = None
    interval_count: int = Field(
        default=1,
        ge=1,
        le=MAX_INTERVAL_COUNT,
        description=f"Intervals per billing period, 1 to {MAX_INTERVAL_COUNT:,}.",
    )
    items: list[Item] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ITEMS,
        description=f"1 to {MAX_ITEMS} items. Their gross MRR, sum(unit_amount * quantity) normalised to a "
        f"month and divided by interval_count, before discounts, is at most {MAX_MRR:,}.00.",
    )
    discount: Discount | None = None
    trial: bool = False
    voids: NonEmptyId | None = Field(
        default=None,
        description="Added in v1.1. Required for a `void` event, which withdraws the earlier event of the "
        "same account with this event_id, whatever its time: a scheduled event is never applied, a past "
        "one is corrected away like a late event. A void of an event not seen yet waits for it; a void of "
        "a void is rejected. A void acts when it arrives, whatever its own effective_at (kept for the "
        "record); it states no terms and cannot itself be voided.",
    )

    @model_validator(mode="after")
    def _check_terms(self) -> BillingEvent:
        if self.type == "void":
            if self.voids is None:
                raise FieldError("voids", "required for a void event: the event_id it withdraws")
            if self.voids == self.event_id:
                raise FieldError("voids", "names the void itself; it must name an earlier event")
            for name in (*_TERM_FIELDS, "discount"):
                if getattr(self, name) is not None:
                    raise FieldError(name, "a void event states no terms")
            return self
        if self.voids is not None:
            raise FieldError("voids", f"only a void event names an event to void, not a {self.type} event")
        if self.type in TERMS_REQUIRED:
            for name in _TERM_FIELDS:
                if getattr(self, name) is None:
                    raise FieldError(name, f"required for a {self.type} event")
        elif self.type in TERMS_OPTIONAL:
            given = [name for name in _TERM_FIELDS if getattr(self, name) is not None]
            if given and len(given) != len(_TERM_FIELDS):
                missing = next(n for n in _TERM_FIELDS if getattr(self, n) is None)
                raise FieldError(missing, f"required when a {self.type} event restates the terms")
        if self.items is not None and self.interval is not None:
            # Exact: gross millionths per interval * months per interval <= MAX_MRR millionths * count.
            gross = sum(micro(item.unit_amount) * item.quantity for item in self.items)
            num, den = MONTHLY_FACTOR[self.interval]
            if gross * num > MAX_MRR * _MICRO * den * self.interval_count:
                cents = -(-gross * num * 100 // (_MICRO * den * self.interval_count))  # rounded up
                raise FieldError(
                    "items",
                    f"gross MRR {cents // 100:,}.{cents % 100:02d} a month (sum of unit_amount * quantity, "
                    f"before discounts) is above the contract's maximum of {MAX_MRR:,}.00 per subscription",
                )
        return self

    @property
    def has_terms(self) -> bool:
        return self.items is not None and self.type not in ("cancel", "pause", "void")
