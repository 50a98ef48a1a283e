"""Stripe events -> billing events (contract v1): a pure mapping, no I/O, no clock, no logging.

map_event(event, state) takes one Stripe Event object (parsed JSON) and the state keys it reads (see
reads) and returns the contract events it causes, the skips, the state writes, or the one key it waits for.
Stripe guarantees neither order nor single delivery, so what an event emits is decided from the event
itself wherever possible: a `customer.subscription.updated` event carries `data.previous_attributes`, so
the subscription before it is the object with those attributes put back, and the event emits only when
the MRR-relevant view of the subscription differs between before and after. Catalog facts (coupons,
discounts, tiered prices) never change once created in Stripe, so reading them from state does not make
an event's content depend on arrival order: it only makes an event wait until they are known.

Subscription status -> MRR status ("alive" means counted, at MRR 0 while trialing):
    trialing -> alive (trial: true, MRR 0); active, past_due -> alive; paused -> paused;
    unpaid -> paused (policy below); canceled -> canceled; incomplete, incomplete_expired -> not started;
    an alive status with `pause_collection` set -> paused.
Transitions (effective at the event's `created` unless said otherwise):
    not started -> alive: subscribe; alive -> alive with other terms: change (the engine classifies the
    movement; trialing -> active is a change with trial false at `trial_end`); paused -> alive: resume
    restating the terms; alive -> paused: pause; alive -> canceled: cancel at `ended_at`.
    customer.subscription.created: subscribe at `start_date` (`trial_start` when trialing); incomplete ones
    are skipped. customer.subscription.deleted: cancel at `ended_at`. paused/resumed: pause, or resume
    restating the terms, at `created`. They repeat what the updated event Stripe sends with them says
    (the same facts twice are harmless), but only updated events schedule discount ends (below).

Policies:
- unpaid: MRR 0, emitted as a pause (terms kept; back to active is a resume). Stripe closes an unpaid
  subscription's invoices unpaid, so nothing is being collected, yet the subscription has not ended and
  Stripe brings it back to active when the customer pays: a pause says both; a cancel would claim an
  ending Stripe did not record. (The engine's movement is a churn either way, then a reactivation.)
- rounding: Stripe amounts are minor units with up to 12 decimals (`unit_amount_decimal`), tiered totals
  are exact fractions; each line's amount in major units is rounded once, half-even, to the contract's
  6 places. Everything else (interval restatement, discounts) is exact or the event is skipped.
- mixed intervals: the contract has one interval per event. When the items do not share one interval
  and count (or the count exceeds the contract's 1,000, as 1,095 days does), every item is restated per
  `interval_count` years, the smallest count that keeps every item's amount exact at 6 places (a year
  being 365 days, 52 weeks or 12 months, as the contract's MRR factors have it); above 1,000 years the
  event is skipped ("unsupported intervals"). An amount_off coupon cannot be restated that way (Stripe
  takes it off each invoice, whose length varies), so with mixed intervals it is skipped.
- several discounts: combined only when exact whatever the order Stripe applies them in: at most one
  percent_off (up to 4 places), listed before any amount_off; amount_offs add up. Otherwise skipped
  ("unsupported discount"), as are item-level discounts and coupons whose `applies_to` leaves out an item.
  `once` coupons are left out of MRR; `repeating` ones count until their discount's `end`.
- product-restricted coupons: `applies_to` is expandable in Stripe's API, so webhook events never include
  it, and a coupon without it counts as unrestricted: a coupon restricted to some products, known from
  its `coupon.*` event or embedded in a discount, is applied to every item (the events say nothing
  else). Only a coupon whose `applies_to` is present (retrieved from the API with it expanded, as the
  stage's lookup does) has its restriction applied as said above.
- scheduled cancels (`cancel_at`, or `cancel_at_period_end` at the period end): a cancel effective at that
  instant, id "stripe:{sub}:cancel@{instant}:{canceled_at}". Stripe sets `canceled_at` to the time of the
  request that scheduled the cancel, so both the event that sets the schedule and the one that changes or
  clears it (which has the old values in previous_attributes) compute the same id, in any order; it voids
  it with "stripe:{evt}:uncancel". Set -> unset -> set again to the same instant gets a new request time,
  hence a new id, and is not caught by the first void.
- discount expiry (a repeating coupon's discount `end`): a change at `end` restating the terms without it.
  Which terms hold at `end` depends on the latest change before it, which one event cannot know, so:
  - ahead: the latest update by (`created`, id), the high-water mark kept in "sub:{id}", schedules
    "stripe:{evt}:discount-end@{end}" for each end after its instant (before any scheduled cancel); when
    a later update arrives it voids those ("…:void") and schedules its own; an older one arriving late
    schedules none. Whatever the order, those in effect are the latest update's. Only the creation and
    updates with previous_attributes take that role: voiding a discount end that passed before the
    voiding event is made good by the next point, which needs the state before that event. A deletion
    voids those at or after its `ended_at` and keeps updates arriving later from scheduling any there.
  - behind: an update after an end restates at that end the state just before it (from its
    previous_attributes): the terms without the ended discount, or a pause or cancel when the
    subscription was not counted then. Id "stripe:{sub}:discount-end@{end}:{rank}:{evt}", the rank
    sorting the earliest such update last at that instant, so that it is the one that stands (the engine
    applies one instant's events in event_id order): the state just before the first update after the
    end is the state at the end, and that update is the one that voids what was scheduled ahead.
  Events that change nothing this mapping reads (renewals, repeated notifications) emit nothing and do
  not move the high-water mark.

State keys (JSON values in UTF-8, each bounded, none growing with the subscription's age). Every id kept
is at most 255 UTF-8 bytes (longer, or not valid UTF-8, makes the event a "malformed event" skip), every
integer at most 15 digits (more: "amount out of range"), every decimal at most 32 characters (28
significant digits); the bounds below are the largest values these allow, in UTF-8 bytes (measured by
tests/unit/test_stripe_mapping.py with ids made of `"`, which JSON doubles; about half for plain ids):
- "sub:{id}": {"hw": [created, event id], "fwd": [[event_id, instant], ...], "ended"}: the high-water
  mark, the discount-end events it scheduled (one per distinct end, capped at 20, Stripe's limit of
  discounts per subscription; ids of at most 128 characters) and the deletion's `ended_at`: under 8 KB.
  ("kind" and "terms", written by earlier versions and never read, are dropped.)
- "coupon:{id}": amounts, currency, duration, per-currency amount_off (capped at 200 currencies) and
  applies_to products (capped at 100): under 56 KB.
- "discount:{id}": its coupon (as above) and its end: under 56 KB.
- "price:{id}": currency, interval, usage, scheme, amounts and tiers (capped at 100 tiers): under 10 KB.
A final guard skips ("state too large") any event that would write a value over 64 KB, with no writes
and no events (possible only from a record written by an earlier version).
Catalog keys are never deleted: a late subscription event may still need them (a deleted coupon keeps
applying to the discounts made from it).

Not supported (skipped with a reason, or left out as said): metered prices (usage is not recurring
revenue), item-level discounts, customer-level discounts (not listed on the subscription), coupons'
product restrictions when `applies_to` is absent, as in every webhook event (applied to every item, see
above), coupons not in the subscription's currency without a `currency_options` entry, several
percent_off discounts, prices with a custom amount or not recurring, tiers not expanded in a `price.*`
event (Stripe includes them only when expanded, so a tiered price needs its tiers embedded in the
subscription event or a `price.*` event that has them), `pause_collection.resumes_at` (the resume comes
with Stripe's own event), items lists truncated by Stripe (`has_more`), and discount ends scheduled from
paused/resumed events alone (without the updated event Stripe sends with them). Stripe's `created` has
one-second resolution: two changes of one subscription within the same second are applied in contract
event_id order, which may not be Stripe's. A tier's flat amount is not charged at quantity 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from processors.sources.stripe.currency import exponent
from schemas.billing_event import (
    MAX_ID_LENGTH,
    MAX_INTERVAL_COUNT,
    MAX_ITEMS,
    MAX_MRR,
    MAX_QUANTITY,
    MONTHLY_FACTOR,
    BillingEvent,
)

PREFIX = "stripe:"

_SUBSCRIPTION = "customer.subscription."
_CREATED, _UPDATED, _DELETED = (f"{_SUBSCRIPTION}{s}" for s in ("created", "updated", "deleted"))
_PAUSED, _RESUMED = f"{_SUBSCRIPTION}paused", f"{_SUBSCRIPTION}resumed"
_SUB_EVENTS = (_CREATED, _UPDATED, _DELETED, _PAUSED, _RESUMED)
_COUPON_EVENTS = ("coupon.created", "coupon.updated", "coupon.deleted")
_DISCOUNT_EVENTS = ("customer.discount.created", "customer.discount.updated", "customer.discount.deleted")
_PRICE_EVENTS = ("price.created", "price.updated", "price.deleted")

HANDLED: frozenset[str] = frozenset((*_SUB_EVENTS, *_COUPON_EVENTS, *_DISCOUNT_EVENTS, *_PRICE_EVENTS))

SKIP_REASONS: tuple[str, ...] = (
    "unsupported event type",
    "malformed event",
    "duplicate event",  # Mapper: a Stripe event id fed again
    "incomplete subscription",
    "metered price",
    "unsupported price",
    "unsupported discount",
    "unsupported intervals",
    "amount out of range",
    "mrr above contract cap",
    "invalid contract event",
    "unknown price",  # Mapper.finish: waited for a price that never came
    "unknown discount",
    "unknown coupon",
    "state too large",  # a state value over _MAX_STATE_BYTES (only from state written by older versions)
)


@dataclass(frozen=True, slots=True)
class Skip:
    stripe_event_id: str
    reason: str  # one of SKIP_REASONS
    detail: str  # one human line


@dataclass(frozen=True, slots=True)
class Mapped:
    events: tuple[BillingEvent, ...] = ()
    skips: tuple[Skip, ...] = ()
    writes: tuple[tuple[str, str | None], ...] = ()  # state key -> new JSON text (None: delete)
    waits_for: str | None = None  # a state key this event needs and state lacks; then all else is empty


# Caps of anything list-like kept in state (see the module docstring for the resulting size bounds).
_MAX_FORWARDS = 20
_MAX_CURRENCY_OPTIONS = 200
_MAX_PRODUCTS = 100
_MAX_TIERS = 100
_MAX_STRIPE_ID = 255  # UTF-8 bytes. Stripe's ids are about 30 characters; longer is not Stripe's
_MAX_INT = 10**15 - 1  # any integer kept: beyond every bound of the contract (15 digits)
_MAX_STATE_BYTES = 64 * 1024  # any state value, UTF-8: the final guard of map_event

_ALIVE = ("active", "trial")
_KIND = {
    "trialing": "trial",
    "active": "active",
    "past_due": "active",
    "paused": "paused",
    "unpaid": "paused",  # policy: see the module docstring
    "canceled": "canceled",
    "incomplete": "none",
    "incomplete_expired": "none",
}
_INTERVALS = ("day", "week", "month", "year")
_PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}  # the contract's MONTHLY_FACTOR, times 12
_MICRO = 1_000_000
_MAX_AMOUNT_MICRO = 10**12 * _MICRO - 1  # the contract's 12 integer digits and 6 places
_LAST_INSTANT = 32_503_680_000  # 3000-01-01T00:00:00Z, the contract's end (exclusive)
_RANK_BASE = 9_999_999_999  # ranks backward discount-end events, earliest Stripe event last
_DECIMAL = re.compile(r"[0-9]{1,30}(?:\.[0-9]{1,30})?")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Skipped(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Waiting(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


# ---------------------------------------------------------------------------------------------------------
# Reading untrusted JSON


def _malformed(detail: str) -> _Skipped:
    return _Skipped("malformed event", detail)


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _malformed(f"{what} is not an object")
    return value


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _valid_id(value: object) -> str | None:
    """A Stripe id, or an expanded object's id: non-empty, no control characters, valid UTF-8 (no lone
    surrogates) of at most _MAX_STRIPE_ID bytes; else None."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if not isinstance(value, str) or not value or len(value) > _MAX_STRIPE_ID or _CONTROL.search(value):
        return None
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate
        return None
    return value if size <= _MAX_STRIPE_ID else None


def _ident(value: object, what: str) -> str:
    found = _valid_id(value)
    if found is None:
        raise _malformed(f"{what} has no valid id")
    return found


def _bounded(value: int, what: str) -> int:
    """An integer kept in state or used as an amount: at most 15 digits."""
    if abs(value) > _MAX_INT:
        raise _Skipped("amount out of range", f"{what}: more than 15 digits")
    return value


def _currency(value: object, what: str) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise _malformed(f"{what} has no valid currency")
    return value.upper()


def _decimal(value: object) -> Decimal | None:
    """A non-negative decimal from Stripe's JSON: an integer, a decimal string, or a float (percent_off),
    read from its shortest repr so that 25.5 is exactly 25.5."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value) if value >= 0 else None
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            return None
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if not number.is_finite() or number < 0 or not _DECIMAL.fullmatch(format(number, "f")):
        return None
    return number


def _canon(number: Decimal) -> str:
    """The canonical text of a decimal: no exponent, no trailing zeros, so that state is byte-stable."""
    text = format(number.normalize(), "f")
    return text


def _fraction(text: object) -> Fraction:
    number = _decimal(text)
    if number is None:
        raise _malformed(f"not a decimal amount: {str(text)[:40]}")
    return Fraction(number)


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str | None) -> Mapping[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, Mapping) else None


# ---------------------------------------------------------------------------------------------------------
# Catalog records: what state keeps of a price, a coupon, a discount (canonical, bounded JSON)


def _price_like(item: Mapping[str, Any]) -> Mapping[str, Any]:
    """An item's Price, or its legacy Plan (API versions before Prices) restated as a Price."""
    price = item.get("price")
    if isinstance(price, Mapping):
        return price
    plan = _obj(item.get("plan"), "subscription item price")
    return {
        "id": plan.get("id"),
        "object": "price",
        "currency": plan.get("currency"),
        "product": plan.get("product"),
        "type": "recurring",
        "recurring": {
            "interval": plan.get("interval"),
            "interval_count": plan.get("interval_count"),
            "usage_type": plan.get("usage_type"),
        },
        "billing_scheme": plan.get("billing_scheme"),
        "unit_amount": plan.get("amount"),
        "unit_amount_decimal": plan.get("amount_decimal"),
        "tiers_mode": plan.get("tiers_mode"),
        "tiers": plan.get("tiers"),
        "transform_quantity": plan.get("transform_usage"),
    }


def _price_record(price: Mapping[str, Any]) -> dict[str, Any]:
    """What the mapping keeps of a recurring Price. "tiers" is None when the payload did not include them
    (Stripe expands tiers only on request)."""
    price_id = _ident(price, "price")
    recurring = price.get("recurring")
    if not isinstance(recurring, Mapping):
        raise _Skipped("unsupported price", f"price {price_id} is not recurring")
    interval = recurring.get("interval")
    count = _int(recurring.get("interval_count"))
    if interval not in _INTERVALS or count is None or count < 1:
        raise _malformed(f"price {price_id} has no valid recurring interval")
    _bounded(count, f"price {price_id} interval_count")
    usage = recurring.get("usage_type") or "licensed"
    record: dict[str, Any] = {
        "id": price_id,
        "currency": _currency(price.get("currency"), f"price {price_id}"),
        "interval": interval,
        "interval_count": count,
        "usage_type": usage,
        "product": _optional_id(price.get("product"), f"price {price_id} product"),
    }
    if usage == "metered":
        return record
    if usage != "licensed":
        raise _Skipped("unsupported price", f"price {price_id} has usage_type {str(usage)[:20]}")
    scheme = price.get("billing_scheme") or "per_unit"
    record["billing_scheme"] = scheme
    if scheme == "per_unit":
        amount = _decimal(price.get("unit_amount_decimal"))
        if amount is None:
            amount = _decimal(price.get("unit_amount"))
        if amount is None:
            raise _Skipped("unsupported price", f"price {price_id} has no unit amount (custom amount?)")
        record["unit_amount_decimal"] = _canon(amount)
        transform = price.get("transform_quantity")
        if isinstance(transform, Mapping):
            divide_by = _int(transform.get("divide_by"))
            rounding = transform.get("round")
            if divide_by is None or divide_by < 1 or rounding not in ("up", "down"):
                raise _malformed(f"price {price_id} has an invalid transform_quantity")
            _bounded(divide_by, f"price {price_id} transform_quantity")
            record["transform_quantity"] = [divide_by, rounding]
        return record
    if scheme != "tiered":
        raise _Skipped("unsupported price", f"price {price_id} has billing_scheme {str(scheme)[:20]}")
    mode = price.get("tiers_mode")
    if mode not in ("graduated", "volume"):
        raise _Skipped("unsupported price", f"price {price_id} has tiers_mode {str(mode)[:20]}")
    record["tiers_mode"] = mode
    tiers = price.get("tiers")
    record["tiers"] = None if tiers is None else _tiers(price_id, tiers)
    return record


def _tiers(price_id: str, tiers: object) -> list[list[Any]]:
    if not isinstance(tiers, list) or not tiers:
        raise _malformed(f"price {price_id} has invalid tiers")
    if len(tiers) > _MAX_TIERS:
        raise _Skipped("unsupported price", f"price {price_id} has more than {_MAX_TIERS} tiers")
    rows: list[list[Any]] = []
    for tier in tiers:
        tier = _obj(tier, f"price {price_id} tier")
        up_to = tier.get("up_to")
        if up_to is not None and (_int(up_to) is None or up_to < 0):
            raise _malformed(f"price {price_id} has a tier with an invalid up_to")
        if up_to is not None:
            _bounded(up_to, f"price {price_id} tier up_to")
        amounts = []
        for name in ("unit_amount", "flat_amount"):
            value = tier.get(f"{name}_decimal")
            number = _decimal(value) if value is not None else _decimal(tier.get(name) or 0)
            if number is None:
                raise _malformed(f"price {price_id} has a tier with an invalid {name}")
            amounts.append(_canon(number))
        rows.append([up_to, *amounts])
    # Stripe lists tiers by up_to, the open-ended one (null) last; sorted here so the record is canonical.
    rows.sort(key=lambda row: (row[0] is None, row[0] or 0))
    if any(row[0] is None for row in rows[:-1]):
        raise _malformed(f"price {price_id} has several open-ended tiers")
    return rows


def _optional_id(value: object, what: str) -> str | None:
    return None if value is None else _ident(value, what)


def _coupon_record(coupon: Mapping[str, Any]) -> dict[str, Any]:
    coupon_id = _ident(coupon, "coupon")
    duration = coupon.get("duration")
    if duration not in ("forever", "once", "repeating"):
        raise _malformed(f"coupon {coupon_id} has no valid duration")
    record: dict[str, Any] = {"id": coupon_id, "duration": duration}
    percent, amount = coupon.get("percent_off"), coupon.get("amount_off")
    if percent is not None:
        number = _decimal(percent)
        if number is None or number > 100:
            raise _malformed(f"coupon {coupon_id} has an invalid percent_off")
        record["percent_off"] = _canon(number)
    elif amount is not None:
        if _int(amount) is None or amount < 0:
            raise _malformed(f"coupon {coupon_id} has an invalid amount_off")
        record["amount_off"] = _bounded(amount, f"coupon {coupon_id} amount_off")
        record["currency"] = _currency(coupon.get("currency"), f"coupon {coupon_id}")
        options = coupon.get("currency_options")
        if isinstance(options, Mapping):
            kept = {}
            for code, option in list(options.items())[:_MAX_CURRENCY_OPTIONS]:
                off = _int(option.get("amount_off")) if isinstance(option, Mapping) else None
                if isinstance(code, str) and _CURRENCY.fullmatch(code) and off is not None and off >= 0:
                    kept[code.upper()] = _bounded(off, f"coupon {coupon_id} {code} amount_off")
            record["currency_options"] = kept
    else:
        raise _malformed(f"coupon {coupon_id} has neither percent_off nor amount_off")
    applies = coupon.get("applies_to")
    if isinstance(applies, Mapping) and isinstance(applies.get("products"), list):
        products = [p for p in applies["products"] if isinstance(p, str)]
        # Over the cap the record says only that some restriction exists: the discount is then skipped.
        kept_products = None
        if len(products) <= _MAX_PRODUCTS:
            kept_products = sorted(_ident(p, f"coupon {coupon_id} applies_to product") for p in products)
        record["applies_to"] = kept_products
        record["restricted"] = True
    return record


def _discount_record(discount: Mapping[str, Any], state: Mapping[str, str]) -> dict[str, Any]:
    """A Discount with its coupon resolved: embedded (before clover) or by id from state (clover's
    `source.coupon`, never expanded in events)."""
    discount_id = _ident(discount, "discount")
    coupon = discount.get("coupon")
    if coupon is None and isinstance(discount.get("source"), Mapping):
        coupon = discount["source"].get("coupon")
    if isinstance(coupon, Mapping):
        coupon_record = _coupon_record(coupon)
    elif isinstance(coupon, str) and coupon:
        key = f"coupon:{_ident(coupon, f'discount {discount_id} coupon')}"
        stored = _loads(state.get(key))
        if stored is None:
            raise _Waiting(key)
        coupon_record = dict(stored)
    else:
        raise _malformed(f"discount {discount_id} names no coupon")
    end = discount.get("end")
    if end is not None and (_int(end) is None or abs(end) > _MAX_INT):
        raise _malformed(f"discount {discount_id} has an invalid end")
    return {"id": discount_id, "coupon": coupon_record, "end": end}


# ---------------------------------------------------------------------------------------------------------
# A subscription as the mapping reads it


@dataclass(frozen=True, slots=True)
class _View:
    sub_id: str
    customer: str
    kind: str  # "trial", "active", "paused", "canceled", "none"
    items: tuple[Mapping[str, Any], ...]
    discounts: tuple[str | Mapping[str, Any], ...]  # in Stripe's order: an id, or an expanded Discount
    cancel: tuple[int, int | None] | None  # (instant, canceled_at) of a scheduled cancel
    start: int | None
    trial_start: int | None
    trial_end: int | None
    ended_at: int | None
    signature: str  # everything above that the mapping reads, canonical: equal means nothing changed


def _view(sub: Mapping[str, Any]) -> _View:
    sub_id = _ident(sub, "subscription")
    customer = _ident(sub.get("customer"), f"subscription {sub_id} customer")
    status = sub.get("status")
    kind = _KIND.get(status) if isinstance(status, str) else None
    if kind is None:
        raise _malformed(f"subscription {sub_id} has an unknown status {str(status)[:20]}")
    if kind in _ALIVE and isinstance(sub.get("pause_collection"), Mapping):
        kind = "paused"
    listing = _obj(sub.get("items"), f"subscription {sub_id} items")
    data = listing.get("data")
    if not isinstance(data, list) or not data:
        raise _malformed(f"subscription {sub_id} has no items")
    if listing.get("has_more") is True:
        raise _malformed(f"subscription {sub_id} items list is truncated (has_more)")
    items = tuple(_obj(item, f"subscription {sub_id} item") for item in data)
    discounts = _discount_entries(sub_id, sub)
    cancel_at = _int(sub.get("cancel_at"))
    if cancel_at is None and sub.get("cancel_at_period_end") is True:
        cancel_at = _period_end(sub, items)
    cancel = None if cancel_at is None else (cancel_at, _int(sub.get("canceled_at")))
    signature = _dumps(
        [
            kind,
            sorted(_item_signature(item) for item in items),
            [d if isinstance(d, str) else _ident(d, "discount") for d in discounts],
            cancel,
        ]
    )
    return _View(
        sub_id=sub_id,
        customer=customer,
        kind=kind,
        items=items,
        discounts=discounts,
        cancel=cancel,
        start=_int(sub.get("start_date")),
        trial_start=_int(sub.get("trial_start")),
        trial_end=_int(sub.get("trial_end")),
        ended_at=_int(sub.get("ended_at")),
        signature=signature,
    )


_PRICE_FIELDS = (
    "id",
    "currency",
    "billing_scheme",
    "unit_amount",
    "unit_amount_decimal",
    "tiers_mode",
    "tiers",
    "transform_quantity",
)


def _item_signature(item: Mapping[str, Any]) -> str:
    # Raw fields, not the record: a renewal must be recognised even when the price is unsupported.
    found = item.get("price") if isinstance(item.get("price"), Mapping) else item.get("plan")
    price: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    nested = price.get("recurring")
    recurring: Mapping[str, Any] = nested if isinstance(nested, Mapping) else {}
    fields = [price.get(name) for name in _PRICE_FIELDS]
    fields += [recurring.get(n) for n in ("interval", "interval_count", "usage_type")]
    fields += [price.get(n) for n in ("amount", "amount_decimal", "interval", "interval_count")]
    return _dumps([fields, item.get("quantity"), item.get("discounts") or []])


def _discount_entries(sub_id: str, sub: Mapping[str, Any]) -> tuple[str | Mapping[str, Any], ...]:
    """basil and later: `discounts`, ids (never expanded in events); before basil also `discount`, one
    expanded Discount with its coupon, which `discounts` may list by id too."""
    entries: list[str | Mapping[str, Any]] = []
    listed = sub.get("discounts")
    if listed is not None:
        if not isinstance(listed, list):
            raise _malformed(f"subscription {sub_id} discounts is not a list")
        for entry in listed:
            if isinstance(entry, Mapping):
                entries.append(entry)
            else:
                entries.append(_ident(entry, f"subscription {sub_id} discount"))
    legacy = sub.get("discount")
    if isinstance(legacy, Mapping):
        legacy_id = _ident(legacy, f"subscription {sub_id} discount")
        ids = [e if isinstance(e, str) else _ident(e, "discount") for e in entries]
        if legacy_id in ids:
            entries[ids.index(legacy_id)] = legacy
        else:
            entries.insert(0, legacy)
    return tuple(entries)


def _period_end(sub: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> int | None:
    # Before basil on the subscription; from basil on each item: the subscription's period ends with the
    # first of them (all equal unless the intervals are mixed).
    end = _int(sub.get("current_period_end"))
    if end is not None:
        return end
    ends = [e for e in (_int(item.get("current_period_end")) for item in items) if e is not None]
    return min(ends) if ends else None


def _merged(current: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, Any]:
    """The object before an update: previous_attributes put back. Stripe lists a changed hash by its
    changed keys and a changed array whole, so hashes merge and everything else replaces."""
    out = dict(current)
    for key, value in previous.items():
        now = out.get(key)
        out[key] = _merged(now, value) if isinstance(value, Mapping) and isinstance(now, Mapping) else value
    return out


def _needs(view: _View) -> list[str]:
    """The state keys resolving a view may read."""
    keys = []
    for entry in view.discounts:
        if isinstance(entry, str):
            keys.append(f"discount:{entry}")
        else:
            coupon = entry.get("coupon")
            if coupon is None and isinstance(entry.get("source"), Mapping):
                coupon = entry["source"].get("coupon")
            if isinstance(coupon, str) and _valid_id(coupon) is not None:
                keys.append(f"coupon:{coupon}")
    for item in view.items:
        price = _price_like(item) if isinstance(item.get("price") or item.get("plan"), Mapping) else {}
        if price.get("billing_scheme") == "tiered" and price.get("tiers") is None:
            price_id = _valid_id(price.get("id"))
            if price_id is not None:
                keys.append(f"price:{price_id}")
    return keys


# ---------------------------------------------------------------------------------------------------------
# Terms: items, intervals and discounts resolved to the contract's


@dataclass(frozen=True, slots=True)
class _Line:
    plan_id: str
    micro: int  # major units per interval in millionths: per unit, or the whole line if quantity is 1
    quantity: int
    interval: str
    count: int
    product: str | None


@dataclass(frozen=True, slots=True)
class _Discount:
    id: str
    coupon: Mapping[str, Any]
    end: int | None


@dataclass(frozen=True, slots=True)
class _Resolved:
    kind: str
    currency: str
    lines: tuple[_Line, ...]
    metered: tuple[str, ...]  # price ids left out
    discounts: tuple[_Discount, ...]
    ends: tuple[int, ...] = field(default=())  # distinct ends of repeating discounts, ascending


def _resolve(view: _View, state: Mapping[str, str]) -> _Resolved:
    lines: list[_Line] = []
    metered: list[str] = []
    currencies: set[str] = set()
    for item in view.items:
        if item.get("discounts"):
            raise _Skipped("unsupported discount", f"item {str(item.get('id'))[:60]} has its own discounts")
        record = _price_record(_price_like(item))
        if record.get("billing_scheme") == "tiered" and record.get("tiers") is None:
            key = f"price:{record['id']}"
            stored = _loads(state.get(key))
            if stored is None or stored.get("tiers") is None:
                raise _Waiting(key)
            record = dict(stored)
        currencies.add(record["currency"])
        if record["usage_type"] == "metered":
            metered.append(record["id"])
            continue
        quantity = item.get("quantity", 1)
        quantity = 1 if quantity is None else quantity
        if _int(quantity) is None or quantity < 0:
            raise _malformed(f"item of price {record['id']} has an invalid quantity")
        lines.append(_line(record, quantity))
    if len(currencies) != 1:
        raise _Skipped("unsupported price", f"subscription {view.sub_id} mixes currencies")
    if not lines:
        raise _Skipped("metered price", f"subscription {view.sub_id} has only metered prices")
    discounts = _discounts(view, state)
    return _Resolved(view.kind, currencies.pop(), tuple(lines), tuple(metered), discounts, _ends(discounts))


def _discounts(view: _View, state: Mapping[str, str]) -> tuple[_Discount, ...]:
    return tuple(_discount(entry, state) for entry in view.discounts)


def _ends(discounts: Sequence[_Discount]) -> tuple[int, ...]:
    """The distinct ends of repeating discounts, ascending."""
    ends = {d.end for d in discounts if d.coupon.get("duration") == "repeating" and d.end is not None}
    return tuple(sorted(ends))


def _discount(entry: str | Mapping[str, Any], state: Mapping[str, str]) -> _Discount:
    if isinstance(entry, str):
        key = f"discount:{entry}"
        record = _loads(state.get(key))
        if record is None:
            raise _Waiting(key)
    else:
        record = _discount_record(entry, state)
    coupon = record.get("coupon")
    end = record.get("end")
    if not isinstance(coupon, Mapping) or (end is not None and _int(end) is None):
        raise _malformed(f"discount {str(record.get('id'))[:60]} record is invalid")
    return _Discount(str(record.get("id")), coupon, end)


def _line(record: Mapping[str, Any], quantity: int) -> _Line:
    scale = Fraction(1, 10 ** exponent(record["currency"]))
    base = (record["interval"], record["interval_count"], record.get("product"))
    if record["billing_scheme"] == "per_unit":
        unit = _fraction(record["unit_amount_decimal"])
        transform = record.get("transform_quantity")
        if transform:
            divide_by, rounding = transform
            billed = -(-quantity // divide_by) if rounding == "up" else quantity // divide_by
            return _Line(record["id"], _micro(unit * billed * scale, record["id"]), 1, *base)
        return _Line(record["id"], _micro(unit * scale, record["id"]), quantity, *base)
    total = _tiered(record["id"], record["tiers_mode"], record["tiers"], quantity)
    return _Line(record["id"], _micro(total * scale, record["id"]), 1, *base)


def _tiered(price_id: str, mode: str, tiers: Sequence[Sequence[Any]], quantity: int) -> Fraction:
    """Stripe's tiered amount for a quantity, in minor units: volume prices every unit at the tier the
    quantity falls in; graduated prices each tier's units at that tier; a tier's flat amount is added
    when the tier applies (with units in it)."""
    if quantity == 0:
        return Fraction(0)
    total, low = Fraction(0), 0
    for up_to, unit_text, flat_text in tiers:
        unit, flat = _fraction(unit_text), _fraction(flat_text)
        if mode == "volume":
            if up_to is None or quantity <= up_to:
                return quantity * unit + flat
            continue
        high = quantity if up_to is None else min(quantity, up_to)
        if high > low:
            total += (high - low) * unit + flat
        if up_to is None or quantity <= up_to:
            return total
        low = up_to
    raise _Skipped("unsupported price", f"price {price_id}: quantity {quantity} is above its last tier")


def _micro(amount: Fraction, what: str) -> int:
    # The one rounding: half-even to the contract's 6 places (round() on a Fraction is half-even).
    micro = round(amount * _MICRO)
    if micro > _MAX_AMOUNT_MICRO:
        raise _Skipped("amount out of range", f"{what}: amount above the contract's 12 integer digits")
    return micro


def _text(micro: int, places: int = 6) -> str:
    whole, frac = divmod(micro, 10**places)
    digits = str(frac).rjust(places, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def _intervals(lines: Sequence[_Line]) -> tuple[str, int, list[tuple[str, int, int]], bool]:
    """(interval, interval_count, [(plan_id, micro, quantity)], restated) for the contract's one
    interval. restated: the items were restated per `count` years (see the module docstring)."""
    kinds = {(line.interval, line.count) for line in lines}
    if len(kinds) == 1:
        interval, count = next(iter(kinds))
        if count <= MAX_INTERVAL_COUNT:
            return interval, count, [(ln.plan_id, ln.micro, ln.quantity) for ln in lines], False
    per_year = [Fraction(line.micro * _PER_YEAR[line.interval], line.count) for line in lines]
    years = math.lcm(*(value.denominator for value in per_year))
    if years > MAX_INTERVAL_COUNT:
        raise _Skipped(
            "unsupported intervals",
            "items' intervals restate exactly only over more than "
            f"{MAX_INTERVAL_COUNT} years: " + ", ".join(sorted({f"{c} {i}" for i, c in kinds})),
        )
    items = []
    for line, value in zip(lines, per_year, strict=True):
        micro = int(value * years)
        if micro > _MAX_AMOUNT_MICRO:
            raise _Skipped("amount out of range", f"price {line.plan_id} restated per {years} years")
        items.append((line.plan_id, micro, line.quantity))
    return "year", years, items, True


def _terms(resolved: _Resolved, at: int) -> dict[str, Any]:
    """The contract's terms of a resolved subscription at an instant (discounts ended by then left out)."""
    if len(resolved.lines) > MAX_ITEMS:
        raise _Skipped("amount out of range", f"more than {MAX_ITEMS} items")
    interval, count, items, restated = _intervals(resolved.lines)
    for plan_id, _, quantity in items:
        if quantity > MAX_QUANTITY:
            raise _Skipped("amount out of range", f"price {plan_id}: quantity above {MAX_QUANTITY:,}")
    gross = sum(micro * quantity for _, micro, quantity in items)
    num, den = MONTHLY_FACTOR[interval]
    if gross * num > MAX_MRR * _MICRO * den * count:
        raise _Skipped(
            "mrr above contract cap", f"gross MRR above the contract's {MAX_MRR:,}.00 per subscription"
        )
    terms: dict[str, Any] = {
        "currency": resolved.currency,
        "interval": interval,
        "interval_count": count,
        "items": [
            {"plan_id": plan_id, "unit_amount": _text(micro), "quantity": quantity}
            for plan_id, micro, quantity in sorted(items)
        ],
        "trial": resolved.kind == "trial",
    }
    discount = _combined(resolved, at, restated)
    if discount:
        terms["discount"] = discount
    return terms


def _combined(resolved: _Resolved, at: int, restated: bool) -> dict[str, str]:
    """The discounts in effect at `at` as the contract's one discount (see the module docstring)."""
    active = [
        d for d in resolved.discounts if d.coupon.get("duration") != "once" and (d.end is None or d.end > at)
    ]
    percent: Fraction | None = None
    amount_minor = 0
    amounts = 0
    for discount in active:
        coupon = discount.coupon
        if coupon.get("restricted"):
            products = coupon.get("applies_to")
            if products is None or any(line.product not in products for line in resolved.lines):
                raise _Skipped(
                    "unsupported discount", f"coupon {coupon.get('id')} applies to some items only"
                )
        if coupon.get("percent_off") is not None:
            if percent is not None:
                raise _Skipped("unsupported discount", "several percent_off discounts")
            if amounts:
                raise _Skipped("unsupported discount", "an amount_off discount listed before a percent_off")
            percent = _fraction(coupon["percent_off"])
            continue
        off = _int(coupon.get("amount_off"))
        if coupon.get("currency") != resolved.currency:
            options = coupon.get("currency_options")
            off = _int(options.get(resolved.currency)) if isinstance(options, Mapping) else None
        if off is None:
            raise _Skipped(
                "unsupported discount",
                f"coupon {coupon.get('id')} has no amount_off in {resolved.currency}",
            )
        if restated:
            raise _Skipped("unsupported discount", "amount_off on items of mixed intervals")
        amount_minor += off
        amounts += 1
    out: dict[str, str] = {}
    if percent is not None:
        scaled = percent * 10_000
        if scaled.denominator != 1:
            raise _Skipped("unsupported discount", "percent_off finer than 4 places")
        out["percent_off"] = _text(scaled.numerator, 4)
    if amounts:
        micro = _micro(Fraction(amount_minor, 10 ** exponent(resolved.currency)), "amount_off")
        out["amount_off"] = _text(micro)
    return out


# ---------------------------------------------------------------------------------------------------------
# Contract events


def _short(part: str) -> str:
    # Keeps composite ids within the contract's 128 characters: a long part becomes its hash.
    if len(part) <= 40:
        return part
    return "#" + hashlib.blake2b(part.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _cid(text: str) -> str:
    if len(text) <= MAX_ID_LENGTH:
        return text
    return PREFIX + _short(text)


def _cancel_id(sub_id: str, cancel: tuple[int, int | None]) -> str:
    at, requested = cancel
    return _cid(f"{PREFIX}{sub_id}:cancel@{at}:{'-' if requested is None else requested}")


def _instant(at: int) -> str:
    if not 0 <= at < _LAST_INSTANT:
        raise _Skipped("invalid contract event", f"instant {at} is outside the contract's years")
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Out:
    """The contract events one Stripe event emits, as JSON-ready payloads."""

    def __init__(self, account: str, sub_id: str) -> None:
        self.account = account
        self.sub_id = sub_id
        self.payloads: dict[str, dict[str, Any]] = {}
        self.with_terms = False

    def add(self, event_id: str, kind: str, at: int, terms: Mapping[str, Any] | None = None) -> None:
        payload: dict[str, Any] = {
            "event_id": _cid(event_id),
            "type": kind,
            "account_id": self.account,
            "subscription_id": self.sub_id,
            "effective_at": _instant(at),
        }
        if terms is not None:
            payload.update(terms)
            self.with_terms = True
        self.payloads[payload["event_id"]] = payload

    def void(self, event_id: str, target: str, at: int) -> None:
        self.add(event_id, "void", at)
        self.payloads[_cid(event_id)]["voids"] = target

    def events(self) -> tuple[BillingEvent, ...]:
        out = []
        for payload in self.payloads.values():
            try:
                out.append(BillingEvent.model_validate_json(json.dumps(payload)))
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                first = str(exc).splitlines()
                detail = first[1] + ": " + first[2].strip() if len(first) > 2 else str(exc)
                raise _Skipped("invalid contract event", f"{payload['event_id']}: {detail}"[:300]) from None
        return tuple(out)


# ---------------------------------------------------------------------------------------------------------
# The mapping


@dataclass(frozen=True, slots=True)
class _Event:
    id: str
    type: str
    created: int
    obj: Mapping[str, Any]
    previous: Mapping[str, Any] | None


def _event_id(event: object) -> str:
    """The event's id for a Skip: "" when it has none that is valid UTF-8."""
    if isinstance(event, Mapping) and isinstance(event.get("id"), str):
        return _printable(str(event["id"])[:_MAX_STRIPE_ID], "")
    return ""


def _printable(text: str, otherwise: str | None = None) -> str:
    """Text as valid UTF-8: lone surrogates escaped (or `otherwise` when given)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8") if otherwise is None else otherwise
    return text


def _parse(event: Mapping[str, Any]) -> _Event:
    event = _obj(event, "event")
    kind = event.get("type")
    if not isinstance(kind, str):
        raise _malformed("event has no type")
    if kind not in HANDLED:
        raise _Skipped("unsupported event type", kind[:100])
    event_id = _ident(event.get("id"), "event")
    created = _int(event.get("created"))
    if created is None or abs(created) > _MAX_INT:
        raise _malformed(f"event {event_id} has no created time")
    data = _obj(event.get("data"), "event data")
    previous = data.get("previous_attributes")
    return _Event(
        event_id,
        kind,
        created,
        _obj(data.get("object"), "event data.object"),
        previous if isinstance(previous, Mapping) else None,
    )


def reads(event: Mapping[str, Any]) -> tuple[str, ...]:
    """The state keys map_event may read for this event (so a table-backed caller can fetch just them):
    its subscription's key and the catalog keys it names."""
    try:
        parsed = _parse(event)
        keys: list[str] = []
        if parsed.type in _SUB_EVENTS:
            after = _view(parsed.obj)
            keys = [f"sub:{after.sub_id}", *_needs(after)]
            if parsed.type == _UPDATED and parsed.previous is not None:
                keys += _needs(_view(_merged(parsed.obj, parsed.previous)))
        elif parsed.type in _DISCOUNT_EVENTS:
            coupon = parsed.obj.get("coupon")
            if coupon is None and isinstance(parsed.obj.get("source"), Mapping):
                coupon = parsed.obj["source"].get("coupon")
            if isinstance(coupon, str) and _valid_id(coupon) is not None:
                keys = [f"coupon:{coupon}"]
        return tuple(dict.fromkeys(keys))
    except Exception:  # reads() is a hint: a malformed event reads nothing and map_event skips it
        return ()


def map_event(event: Mapping[str, Any], state: Mapping[str, str]) -> Mapped:
    """One Stripe Event object (the parsed JSON) and what is known -> contract events. Never raises for any
    input: anything unexpected/malformed/unsupported is a Skip with a reason."""
    event_id = _event_id(event)
    try:
        mapped = _map_any(event, state)
        # The final guard: no state value over _MAX_STATE_BYTES, whatever the input or the state read
        # (records written by older versions of this module were not bounded as they are now).
        for key, text in mapped.writes:
            size = 0 if text is None else len(text.encode("utf-8"))
            if size > _MAX_STATE_BYTES:
                raise _Skipped("state too large", f"{key[:80]}: {size:,} bytes")
        return mapped
    except _Waiting as waiting:
        return Mapped(waits_for=waiting.key)
    except _Skipped as skipped:
        return Mapped(skips=(Skip(event_id, skipped.reason, _printable(skipped.detail)),))
    except Exception as exc:  # never raise: whatever the payload, it is a skip
        detail = _printable(f"{type(exc).__name__}: {exc}"[:200])
        return Mapped(skips=(Skip(event_id, "malformed event", detail),))


def _map_any(event: Mapping[str, Any], state: Mapping[str, str]) -> Mapped:
    parsed = _parse(event)
    if parsed.type in _SUB_EVENTS:
        return _map_subscription(parsed, state)
    if parsed.type in _COUPON_EVENTS:
        record = _coupon_record(_typed(parsed, "coupon"))
        return Mapped(writes=((f"coupon:{record['id']}", _dumps(record)),))
    if parsed.type in _DISCOUNT_EVENTS:
        record = _discount_record(_typed(parsed, "discount"), state)
        return Mapped(writes=((f"discount:{record['id']}", _dumps(record)),))
    return _map_price(parsed)


def _typed(parsed: _Event, kind: str) -> Mapping[str, Any]:
    if parsed.obj.get("object") != kind:
        raise _malformed(f"{parsed.type} event does not carry a {kind}")
    return parsed.obj


def _map_price(parsed: _Event) -> Mapped:
    price = _typed(parsed, "price")
    if not isinstance(price.get("recurring"), Mapping):
        return Mapped()  # a one-time price: nothing recurring to keep
    record = _price_record(price)
    if record.get("billing_scheme") == "tiered" and record.get("tiers") is None:
        raise _Skipped(
            "unsupported price", f"price {record['id']}: tiers not included (Stripe sends them only expanded)"
        )
    return Mapped(writes=((f"price:{record['id']}", _dumps(record)),))


def _map_subscription(parsed: _Event, state: Mapping[str, str]) -> Mapped:
    _typed(parsed, "subscription")
    after = _view(parsed.obj)
    before: _View | None = None
    if parsed.type == _UPDATED and parsed.previous is not None:
        before = _view(_merged(parsed.obj, parsed.previous))
        if before.signature == after.signature:
            return Mapped()  # a renewal or a repeated notification: nothing this mapping reads changed
    # Resolved (items priced, discounts known) only where terms are needed, so that a cancel or a pause
    # never waits for catalog keys.
    res_after = _resolve(after, state) if after.kind in _ALIVE and parsed.type != _DELETED else None
    res_before = _resolve(before, state) if before is not None and before.kind in _ALIVE else None
    out = _Out(after.customer, after.sub_id)
    main = f"{PREFIX}{parsed.id}"
    at = parsed.created  # the instant the after-state holds from

    if parsed.type == _CREATED:
        if after.kind == "none":
            status = parsed.obj["status"]
            raise _Skipped("incomplete subscription", f"subscription {after.sub_id} is {status}")
        if res_after is not None:
            if after.kind == "trial":
                at = after.trial_start or after.start or parsed.created
            else:
                at = after.start or parsed.created
            out.add(main, "subscribe", at, _terms(res_after, at))
        if after.cancel is not None:
            out.add(_cancel_id(after.sub_id, after.cancel), "cancel", after.cancel[0])
    elif parsed.type == _DELETED:
        if after.kind == "none":
            raise _Skipped("incomplete subscription", f"subscription {after.sub_id} never started")
        at = after.ended_at or parsed.created
        out.add(main, "cancel", at)
    else:
        at = _transition(parsed, before, after, res_before, res_after, out, main)
        _schedule(parsed, before, after, out, main)
        if before is not None:
            ends = res_before.ends if res_before is not None else _ends(_discounts(before, state))
            _backward(parsed, before, res_before, ends, at, out)

    capable = parsed.type == _CREATED or before is not None
    writes = _high_water(parsed, state, after, res_after, at, out, capable)
    skips: tuple[Skip, ...] = ()
    if res_after is not None and res_after.metered and out.with_terms:
        ignored = ", ".join(res_after.metered)[:200]
        skips = (Skip(parsed.id, "metered price", f"left out of MRR: metered {ignored}"),)
    return Mapped(events=out.events(), skips=skips, writes=writes)


def _transition(
    parsed: _Event,
    before: _View | None,
    after: _View,
    res_before: _Resolved | None,
    res_after: _Resolved | None,
    out: _Out,
    main: str,
) -> int:
    """The main event of an updated/paused/resumed event; returns the instant the after-state holds from."""
    was = before.kind if before is not None else None
    at = parsed.created
    if was == "trial" and after.kind == "active":
        trial_end = after.trial_end or (before.trial_end if before is not None else None)
        at = min(trial_end or at, at)  # the trial converts at its end, whenever Stripe reports it
    if after.kind == "canceled" and was != "canceled":
        at = after.ended_at or at
    if res_after is not None:
        terms = _terms(res_after, at)
        kind: str | None
        if was is None:  # paused/resumed events, or an update without previous_attributes: a statement
            kind = "resume" if parsed.type == _RESUMED else "change"
        elif was in _ALIVE:
            # Against the terms just before: a discount ending at this very instant is a change here.
            kind = "change" if res_before is None or terms != _terms(res_before, at - 1) else None
        else:
            kind = {"none": "subscribe", "paused": "resume", "canceled": "reactivate"}[was]
        if kind is not None:
            out.add(main, kind, at, terms)
    elif after.kind in ("paused", "canceled") and (was is None or was in _ALIVE):
        out.add(main, "pause" if after.kind == "paused" else "cancel", at)
    return at


def _schedule(parsed: _Event, before: _View | None, after: _View, out: _Out, main: str) -> None:
    """Scheduled cancels: emitted when set, voided when cleared or moved (ids: see the module docstring)."""
    scheduled = after.cancel if after.kind != "none" else None
    if before is None:
        if scheduled is not None:
            out.add(_cancel_id(after.sub_id, scheduled), "cancel", scheduled[0])
        return
    previous = before.cancel if before.kind != "none" else None
    if scheduled == previous:
        return
    if previous is not None:
        out.void(f"{main}:uncancel", _cancel_id(after.sub_id, previous), parsed.created)
    if scheduled is not None:
        out.add(_cancel_id(after.sub_id, scheduled), "cancel", scheduled[0])


def _backward(
    parsed: _Event, before: _View, res_before: _Resolved | None, ends: Sequence[int], at: int, out: _Out
) -> None:
    """Discounts that ended before this event: the state just before it, restated at each end. When that
    state was not counted (paused, or its scheduled cancel had passed), a pause or cancel says so, so
    that the earliest event after the end still decides the end's state."""
    rank = f"{max(0, _RANK_BASE - parsed.created):010d}"
    for end in ends:
        if end >= at:
            continue
        event_id = f"{PREFIX}{_short(before.sub_id)}:discount-end@{end}:{rank}:{_short(parsed.id)}"
        canceled = before.cancel is not None and before.cancel[0] <= end
        if res_before is not None and not canceled:
            out.add(event_id, "change", end, _terms(res_before, end))
        else:
            out.add(event_id, "pause" if before.kind == "paused" and not canceled else "cancel", end)


@dataclass(frozen=True, slots=True)
class _SubState:
    """What "sub:{id}" holds (see the module docstring)."""

    mark: tuple[int, str] | None = None  # high-water mark: (created, Stripe event id)
    forwards: tuple[tuple[str, int], ...] = ()  # discount-end events the mark scheduled: (id, instant)
    ended: int | None = None  # the deletion's ended_at

    @classmethod
    def load(cls, text: str | None) -> _SubState:
        # Unreadable state counts as none: the worst it does is leave earlier discount-ends unwithdrawn.
        # ("kind" and "terms", written by earlier versions and never read, are dropped.)
        stored = _loads(text) or {}
        mark = stored.get("hw")
        if not (isinstance(mark, list) and len(mark) == 2 and _int(mark[0]) is not None):
            mark = None
        listed = stored.get("fwd")
        forwards: list[Any] = listed if isinstance(listed, list) else []
        return cls(
            mark=(mark[0], str(mark[1])) if mark else None,
            forwards=tuple(
                (f[0], f[1])
                for f in forwards
                if isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) and _int(f[1]) is not None
            ),
            ended=_int(stored.get("ended")),
        )

    def dumps(self) -> str:
        return _dumps(
            {
                "hw": None if self.mark is None else list(self.mark),
                "fwd": [list(f) for f in self.forwards],
                "ended": self.ended,
            }
        )


def _high_water(
    parsed: _Event,
    state: Mapping[str, str],
    after: _View,
    res_after: _Resolved | None,
    at: int,
    out: _Out,
    capable: bool,
) -> tuple[tuple[str, str | None], ...]:
    """Discount ends ahead of the latest event are scheduled by that event alone: a later one withdraws
    them and schedules its own. Only events whose previous state is known (updates with
    previous_attributes) and the creation take that role: an event that withdraws a discount end it
    happened after must restate it (see _backward), which needs the state before it. A deletion withdraws
    the discount ends from its instant on and forbids later ones."""
    key = f"sub:{after.sub_id}"
    stored = _SubState.load(state.get(key))
    if parsed.type == _DELETED:
        ended = at if stored.ended is None else min(stored.ended, at)
        kept = []
        for target, instant in stored.forwards:
            if instant >= ended:
                out.void(f"{target}:void", target, instant)
            else:
                kept.append((target, instant))
        updated = _SubState(stored.mark, tuple(kept), ended)
        return () if updated == stored else ((key, updated.dumps()),)
    mark = (parsed.created, parsed.id)
    if not capable or (stored.mark is not None and mark <= stored.mark):
        return ()
    for target, instant in stored.forwards:
        out.void(f"{target}:void", target, instant)
    forwards: list[tuple[str, int]] = []
    if res_after is not None:
        for end in res_after.ends:
            if end <= at or (after.cancel is not None and after.cancel[0] <= end):
                continue
            if stored.ended is not None and stored.ended <= end:
                continue
            if len(forwards) == _MAX_FORWARDS:
                raise _Skipped("unsupported discount", f"more than {_MAX_FORWARDS} discount ends")
            event_id = _cid(f"{PREFIX}{parsed.id}:discount-end@{end}")
            out.add(event_id, "change", end, _terms(res_after, end))
            forwards.append((event_id, end))
    updated = _SubState(mark, tuple(forwards), stored.ended)
    return ((key, updated.dumps()),)


def to_json(event: BillingEvent) -> str:
    """One compact JSON line the replay and the stream accept (exclude None; amounts as strings)."""
    return event.model_dump_json(exclude_none=True)


class Mapper:
    """In-memory driver (the `stripe import` command and the tests use it): state in a dict, parked events
    per missing key, re-mapped when the key arrives; duplicates of a Stripe event id mapped once."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self._parked: dict[str, list[Mapping[str, Any]]] = {}
        self._seen: set[str] = set()

    def feed(self, event: Mapping[str, Any]) -> Mapped:
        """Map one Stripe event, and every parked event the state it writes lets through."""
        event_id = _event_id(event)
        if event_id:
            if event_id in self._seen:
                return Mapped(skips=(Skip(event_id, "duplicate event", "already mapped or waiting"),))
            self._seen.add(event_id)
        first = map_event(event, self.state)
        if first.waits_for is not None:
            self._parked.setdefault(first.waits_for, []).append(event)
            return first
        events, skips, writes = list(first.events), list(first.skips), list(first.writes)
        pending = self._apply(first.writes)
        while pending:
            for parked in self._parked.pop(pending.pop(0), []):
                again = map_event(parked, self.state)
                if again.waits_for is not None:
                    self._parked.setdefault(again.waits_for, []).append(parked)
                    continue
                events += again.events
                skips += again.skips
                writes += again.writes
                pending += self._apply(again.writes)
        return Mapped(tuple(events), tuple(skips), tuple(writes))

    def _apply(self, writes: Sequence[tuple[str, str | None]]) -> list[str]:
        written = []
        for key, value in writes:
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
                written.append(key)
        return written

    def finish(self) -> tuple[Skip, ...]:
        """Parked events whose key never came, as skips (and forgets them)."""
        reasons = {"price": "unknown price", "discount": "unknown discount", "coupon": "unknown coupon"}
        skips = []
        for key, parked in self._parked.items():
            reason = reasons.get(key.partition(":")[0], "malformed event")
            skips += [Skip(_event_id(event), reason, f"waited for {key}"[:200]) for event in parked]
        self._parked.clear()
        return tuple(skips)
