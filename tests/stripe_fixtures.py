"""Stripe-shaped objects and events for tests, modelled on the examples of Stripe's API reference
(stripe/openapi, openapi/fixtures3.json) as they stood for three API versions:

- LEGACY (before basil, e.g. 2024-06-20): `current_period_start/end` on the subscription, `discount` a
  single expanded Discount with its `coupon` embedded, `discounts` its id;
- BASIL (2025-03-31.basil): `current_period_*` on each subscription item, no `discount`, `discounts` ids
  (never expanded in events), a Discount's `coupon` still embedded (customer.discount.* events);
- CLOVER (2025-09-30.clover): as basil, and a Discount's coupon is `source.coupon`, an id, not expanded.

Sub keeps one subscription's current object and returns, for each change, the Event Stripe would send:
`customer.subscription.updated` with `data.previous_attributes` holding the changed fields' old values (a
changed hash by its changed keys, a changed array whole, as Stripe documents).
"""

from __future__ import annotations

import copy
import hashlib
import random
from datetime import UTC, datetime
from typing import Any

LEGACY = "2024-06-20"
BASIL = "2025-03-31.basil"
CLOVER = "2025-09-30.clover"
VERSIONS = (LEGACY, BASIL, CLOVER)

DAY = 86_400
T0 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())  # 1735689600


def at(days: float) -> int:
    """An instant `days` after T0 (2025-01-01T00:00:00Z), in Unix seconds as Stripe gives them."""
    return T0 + round(days * DAY)


def micro(seconds: int) -> int:
    return seconds * 1_000_000


_serial = 0


def stripe_id(prefix: str) -> str:
    """A Stripe-looking id: random-looking, so that no test leans on ids sorting by time."""
    global _serial
    _serial += 1
    return f"{prefix}_" + hashlib.sha1(f"{prefix}{_serial}".encode()).hexdigest()[:24]


def price(
    price_id: str,
    unit_amount: int | str | None,
    currency: str = "usd",
    interval: str = "month",
    interval_count: int = 1,
    *,
    usage_type: str = "licensed",
    product: str = "prod_QXg1hqf4jFNsqG",
    tiers: list[dict[str, Any]] | None = None,
    tiers_mode: str | None = None,
    transform_quantity: dict[str, Any] | None = None,
    include_tiers: bool = True,
) -> dict[str, Any]:
    """A recurring Price. unit_amount: an int (minor units) or a decimal string (unit_amount_decimal)."""
    obj: dict[str, Any] = {
        "id": price_id,
        "object": "price",
        "active": True,
        "billing_scheme": "tiered" if tiers is not None else "per_unit",
        "created": T0 - 30 * DAY,
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "product": product,
        "recurring": {
            "interval": interval,
            "interval_count": interval_count,
            "meter": None,
            "trial_period_days": None,
            "usage_type": usage_type,
        },
        "tax_behavior": "unspecified",
        "tiers_mode": tiers_mode,
        "transform_quantity": transform_quantity,
        "type": "recurring",
        "unit_amount": unit_amount if isinstance(unit_amount, int) else None,
        "unit_amount_decimal": None if unit_amount is None else str(unit_amount),
    }
    if tiers is not None:
        obj["unit_amount"] = obj["unit_amount_decimal"] = None
        if include_tiers:  # Stripe includes tiers only when expanded
            obj["tiers"] = tiers
    return obj


def tier(up_to: int | None, unit_amount: int, flat_amount: int | None = None) -> dict[str, Any]:
    return {
        "flat_amount": flat_amount,
        "flat_amount_decimal": None if flat_amount is None else str(flat_amount),
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
        "up_to": up_to,
    }


def coupon(
    coupon_id: str,
    *,
    percent_off: float | None = None,
    amount_off: int | None = None,
    currency: str | None = None,
    duration: str = "forever",
    duration_in_months: int | None = None,
    currency_options: dict[str, int] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": coupon_id,
        "object": "coupon",
        "amount_off": amount_off,
        "created": T0 - 30 * DAY,
        "currency": currency,
        "duration": duration,
        "duration_in_months": duration_in_months,
        "livemode": False,
        "max_redemptions": None,
        "metadata": {},
        "name": None,
        "percent_off": percent_off,
        "redeem_by": None,
        "times_redeemed": 1,
        "valid": True,
    }
    if currency_options is not None:
        obj["currency_options"] = {k: {"amount_off": v} for k, v in currency_options.items()}
    return obj


def discount(
    discount_id: str,
    coupon_obj: dict[str, Any],
    *,
    customer: str,
    subscription: str | None,
    start: int,
    end: int | None,
    version: str,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": discount_id,
        "object": "discount",
        "checkout_session": None,
        "customer": customer,
        "end": end,
        "invoice": None,
        "invoice_item": None,
        "promotion_code": None,
        "start": start,
        "subscription": subscription,
        "subscription_item": None,
    }
    if version == CLOVER:
        obj["source"] = {"coupon": coupon_obj["id"], "type": "coupon"}
        obj["customer_account"] = None
    else:
        obj["coupon"] = copy.deepcopy(coupon_obj)
    return obj


def event(
    type: str,
    obj: dict[str, Any],
    created: int,
    *,
    previous: dict[str, Any] | None = None,
    version: str = CLOVER,
    event_id: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": copy.deepcopy(obj)}
    if previous is not None:
        data["previous_attributes"] = copy.deepcopy(previous)
    return {
        "id": event_id or stripe_id("evt"),
        "object": "event",
        "api_version": version,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": stripe_id("req"), "idempotency_key": None},
        "type": type,
    }


def previous_attributes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Stripe's previous_attributes: the changed keys' old values; hashes by changed keys, arrays whole."""
    out: dict[str, Any] = {}
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            out[key] = previous_attributes(before, after)
        else:
            out[key] = copy.deepcopy(before)
    return out


class Sub:
    """One Stripe subscription through its life; each method returns the event Stripe would send."""

    def __init__(
        self,
        items: list[tuple[dict[str, Any], int | None]],  # (price, quantity: None for a metered price)
        *,
        version: str = CLOVER,
        start: int = T0,
        period_days: int = 30,
        status: str = "active",
        trial_days: int | None = None,
        customer: str | None = None,
        sub_id: str | None = None,
    ) -> None:
        self.version = version
        self.id = sub_id or stripe_id("sub")
        self.customer = customer or stripe_id("cus")
        self.period_days = period_days
        trial_end = start + trial_days * DAY if trial_days else None
        period_end = trial_end or start + period_days * DAY
        self.obj: dict[str, Any] = {
            "id": self.id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"enabled": False, "liability": None},
            "billing_cycle_anchor": start,
            "billing_cycle_anchor_config": None,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": "charge_automatically",
            "created": start,
            "currency": items[0][0]["currency"],
            "customer": self.customer,
            "days_until_due": None,
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": [],
            "ended_at": None,
            "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
            "items": {
                "object": "list",
                "data": [self._item(p, q, start, period_end) for p, q in items],
                "has_more": False,
                "total_count": len(items),
                "url": f"/v1/subscription_items?subscription={self.id}",
            },
            "latest_invoice": stripe_id("in"),
            "livemode": False,
            "metadata": {},
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": {"payment_method_options": None, "payment_method_types": None},
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": start,
            "status": "trialing" if trial_days else status,
            "test_clock": None,
            "transfer_data": None,
            "trial_end": trial_end,
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": start if trial_days else None,
        }
        if version == LEGACY:
            self.obj["current_period_start"] = start
            self.obj["current_period_end"] = period_end
            self.obj["discount"] = None

    def _item(self, price_obj: dict[str, Any], quantity: int | None, start: int, end: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": stripe_id("si"),
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": start,
            "discounts": [],
            "metadata": {},
            "price": copy.deepcopy(price_obj),
            "quantity": quantity if price_obj["recurring"]["usage_type"] == "licensed" else None,
            "subscription": self.id,
            "tax_rates": [],
        }
        if self.version != LEGACY:
            item["current_period_start"] = start
            item["current_period_end"] = end
        return item

    # -- reading -------------------------------------------------------------------------------------

    @property
    def period_end(self) -> int:
        if self.version == LEGACY:
            return int(self.obj["current_period_end"])
        return int(self.obj["items"]["data"][0]["current_period_end"])

    # -- events --------------------------------------------------------------------------------------

    def created(self, when: int | None = None) -> dict[str, Any]:
        return event(
            "customer.subscription.created", self.obj, when or self.obj["created"], version=self.version
        )

    def update(self, when: int, **changes: Any) -> dict[str, Any]:
        """Top-level fields changed at `when`: the customer.subscription.updated event."""
        old = copy.deepcopy(self.obj)
        self.obj.update(copy.deepcopy(changes))
        return self._updated(old, when)

    def _updated(self, old: dict[str, Any], when: int) -> dict[str, Any]:
        previous = previous_attributes(old, self.obj)
        return event("customer.subscription.updated", self.obj, when, previous=previous, version=self.version)

    def renew(self, when: int | None = None) -> dict[str, Any]:
        """A new billing period: only the period fields and latest_invoice change."""
        old = copy.deepcopy(self.obj)
        start = self.period_end
        end = start + self.period_days * DAY
        if self.version == LEGACY:
            self.obj["current_period_start"], self.obj["current_period_end"] = start, end
        else:
            for item in self.obj["items"]["data"]:
                item["current_period_start"], item["current_period_end"] = start, end
        self.obj["latest_invoice"] = stripe_id("in")
        return self._updated(old, when or start)

    def convert_trial(self, when: int) -> dict[str, Any]:
        old = copy.deepcopy(self.obj)
        self.obj["status"] = "active"
        self.obj["latest_invoice"] = stripe_id("in")
        start = self.obj["trial_end"]
        end = start + self.period_days * DAY
        if self.version == LEGACY:
            self.obj["current_period_start"], self.obj["current_period_end"] = start, end
        else:
            for item in self.obj["items"]["data"]:
                item["current_period_start"], item["current_period_end"] = start, end
        return self._updated(old, when)

    def set_quantity(self, when: int, quantity: int, index: int = 0) -> dict[str, Any]:
        old = copy.deepcopy(self.obj)
        self.obj["items"]["data"][index]["quantity"] = quantity
        return self._updated(old, when)

    def set_price(self, when: int, price_obj: dict[str, Any], index: int = 0) -> dict[str, Any]:
        old = copy.deepcopy(self.obj)
        self.obj["items"]["data"][index]["price"] = copy.deepcopy(price_obj)
        return self._updated(old, when)

    def set_discount(self, when: int, discount_obj: dict[str, Any] | None) -> dict[str, Any]:
        """Apply (or with None remove) the subscription's one discount, as each version shows it."""
        old = copy.deepcopy(self.obj)
        self.obj["discounts"] = [] if discount_obj is None else [discount_obj["id"]]
        if self.version == LEGACY:
            self.obj["discount"] = copy.deepcopy(discount_obj)
        return self._updated(old, when)

    def schedule_cancel(
        self, when: int, at_period_end: bool = True, cancel_at: int | None = None
    ) -> dict[str, Any]:
        return self.update(
            when,
            cancel_at_period_end=at_period_end,
            cancel_at=cancel_at if cancel_at is not None else self.period_end,
            canceled_at=when,
        )

    def withdraw_cancel(self, when: int) -> dict[str, Any]:
        return self.update(when, cancel_at_period_end=False, cancel_at=None, canceled_at=None)

    def pause_collection(self, when: int) -> dict[str, Any]:
        return self.update(when, pause_collection={"behavior": "void", "resumes_at": None})

    def resume_collection(self, when: int) -> dict[str, Any]:
        return self.update(when, pause_collection=None)

    def status_event(self, type: str, when: int) -> dict[str, Any]:
        """customer.subscription.paused / resumed: the object as it is, no previous_attributes."""
        return event(type, self.obj, when, version=self.version)

    def delete(self, when: int, ended_at: int | None = None) -> dict[str, Any]:
        self.obj.update(
            status="canceled", ended_at=ended_at or when, canceled_at=self.obj["canceled_at"] or when
        )
        return event("customer.subscription.deleted", self.obj, when, version=self.version)


def invoice_events(sub: Sub, when: int) -> list[dict[str, Any]]:
    """The invoice-side events of a proration (ignored by the mapping)."""
    item = {
        "id": stripe_id("ii"),
        "object": "invoiceitem",
        "amount": 1500,
        "currency": sub.obj["currency"],
        "customer": sub.customer,
        "date": when,
        "proration": True,
        "subscription": sub.id,
    }
    invoice = {
        "id": stripe_id("in"),
        "object": "invoice",
        "customer": sub.customer,
        "subscription": sub.id,
        "billing_reason": "subscription_update",
        "amount_due": 1500,
        "currency": sub.obj["currency"],
        "created": when,
    }
    return [event("invoiceitem.created", item, when), event("invoice.created", invoice, when)]


def random_history(rng: random.Random, version: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A random but plausible life of one subscription and the catalog events it reads: (catalog, life),
    each in Stripe's order. Stripe's own rules are kept (a trial converts once it has ended, a scheduled
    cancel ends the subscription, an ended discount may linger until a renewal drops it), so that the
    subscription's MRR at any instant follows from the objects alone."""
    prices = [price("price_a", 1000), price("price_b", 2500), price("price_c", 700)]
    sub = Sub([(prices[0], rng.randint(1, 3))], version=version, trial_days=rng.choice([None, 7]))
    life, catalog = [sub.created()], []
    discounts: dict[str, dict[str, Any]] = {}
    coupons: dict[str, dict[str, Any]] = {}  # by discount id
    day = 0.0

    def new_discount(when: int, coupon_obj: dict[str, Any], months: int | None) -> dict[str, Any]:
        end = when + rng.randint(1, 60) * DAY if months else None
        number = len(discounts) + 1
        found = discount(
            f"di_{number}",
            coupon_obj,
            customer=sub.customer,
            subscription=sub.id,
            start=when,
            end=end,
            version=version,
        )
        discounts[found["id"]] = found
        coupons[found["id"]] = coupon_obj
        catalog.append(event("coupon.created", coupon_obj, at(-1)))
        catalog.append(event("customer.discount.created", found, when, version=version))
        return found

    for _ in range(rng.randint(3, 14)):
        day += rng.choice([0.5, 1, 3, 10, 20, 35])
        when = at(day)
        status = sub.obj["status"]
        if sub.obj["cancel_at"] and when >= sub.obj["cancel_at"]:
            life.append(sub.delete(sub.obj["cancel_at"]))
            return catalog, life
        if status == "trialing":
            if when >= sub.obj["trial_end"]:
                life.append(sub.convert_trial(when))
            continue
        step = rng.choice(
            [
                "quantity",
                "price",
                "discount",
                "second discount",
                "no discount",
                "renew",
                "lazy renew",
                "pause collection",
                "resume collection",
                "status",
                "cancel",
                "withdraw",
                "delete",
                "add item",
            ]
        )
        if step == "quantity":
            life.append(sub.set_quantity(when, rng.randint(0, 6)))
        elif step == "price":
            life.append(sub.set_price(when, rng.choice(prices)))
        elif step == "discount":
            duration = rng.choice(["forever", "repeating", "repeating", "once"])
            months = rng.randint(1, 3) if duration == "repeating" else None
            number = len(discounts) + 1
            if rng.random() < 0.7:
                off = coupon(
                    f"co_{number}",
                    percent_off=rng.choice([10.0, 25.0, 50.0]),
                    duration=duration,
                    duration_in_months=months,
                )
            else:
                off = coupon(
                    f"co_{number}",
                    amount_off=rng.choice([100, 300]),
                    currency="usd",
                    duration=duration,
                    duration_in_months=months,
                )
            life.append(sub.set_discount(when, new_discount(when, off, months)))
        elif step == "second discount":  # an amount_off after a percent_off: exact in the contract
            first = discounts[sub.obj["discounts"][0]] if len(sub.obj["discounts"]) == 1 else None
            if version == LEGACY or first is None or coupons[first["id"]]["percent_off"] is None:
                continue
            months = rng.choice([None, 1])
            duration = "repeating" if months else "forever"
            off = coupon(
                f"co_{len(discounts) + 1}",
                amount_off=rng.choice([100, 250]),
                currency="usd",
                duration=duration,
                duration_in_months=months,
            )
            second = new_discount(when, off, months)
            life.append(sub.update(when, discounts=[*sub.obj["discounts"], second["id"]]))
        elif step == "no discount" and sub.obj["discounts"]:
            life.append(sub.set_discount(when, None))
        elif step == "renew":
            life.append(sub.renew(when))
        elif step == "lazy renew":  # a renewal that drops the discounts that have ended
            old = copy.deepcopy(sub.obj)
            sub.renew(when)
            kept = [
                d for d in sub.obj["discounts"] if discounts[d]["end"] is None or discounts[d]["end"] > when
            ]
            sub.obj["discounts"] = kept
            if version == LEGACY:
                sub.obj["discount"] = copy.deepcopy(discounts[kept[0]]) if kept else None
            life.append(sub._updated(old, when))
        elif step == "pause collection" and not sub.obj["pause_collection"]:
            life.append(sub.pause_collection(when))
        elif step == "resume collection" and sub.obj["pause_collection"]:
            life.append(sub.resume_collection(when))
        elif step == "status":
            change = {"active": "paused", "past_due": "unpaid", "paused": "active", "unpaid": "active"}
            if status == "active" and rng.random() < 0.5:
                change["active"] = "unpaid"
            life.append(sub.update(when, status=change[status]))
            if {status, change[status]} == {"active", "paused"} and rng.random() < 0.7:
                kind = "paused" if change[status] == "paused" else "resumed"
                life.append(sub.status_event(f"customer.subscription.{kind}", when + rng.choice([0, 1])))
        elif step == "cancel":
            cancel_at = when + rng.randint(1, 80) * DAY
            life.append(sub.schedule_cancel(when, at_period_end=False, cancel_at=cancel_at))
        elif step == "withdraw" and sub.obj["cancel_at"]:
            life.append(sub.withdraw_cancel(when))
        elif step == "delete":
            life.append(sub.delete(when))
            return catalog, life
        elif step == "add item" and len(sub.obj["items"]["data"]) < 3:
            old = copy.deepcopy(sub.obj)
            extra = price(f"price_x{len(old['items']['data'])}", rng.choice([300, 1234]))
            sub.obj["items"]["data"].append(sub._item(extra, rng.randint(1, 4), when, sub.period_end))
            life.append(sub._updated(old, when))
    if sub.obj["cancel_at"]:
        life.append(sub.delete(sub.obj["cancel_at"]))
    return catalog, life
