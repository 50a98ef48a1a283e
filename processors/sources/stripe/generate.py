"""A reproducible Stripe-shaped history: the webhook events a Stripe account would have sent (API version
2024-06-20 shapes: `current_period_*` on the subscription, `discount` with its coupon embedded), for the demo
(`mrr-stream generate --format stripe`) and the end-to-end test of the Stripe source.

Per customer, one subscription in USD, EUR or GBP: trials that convert or lapse, seat changes, plan
upgrades with proration invoice items, a 20% forever coupon or a 3-month repeating one, a metered add-on
beside a licensed price, pauses of collection, cancellations at period end (some withdrawn) and immediate
ones; every month a renewal that must map to nothing. Catalog events (price.created, coupon.created) come
first, as they do at Stripe.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

T = TypeVar("T")

API_VERSION = "2024-06-20"
DAY = 86_400
PLANS = {  # price id -> (amount in minor units per month, or per year for the annual plans)
    "basic": 2_900,
    "team": 9_900,
    "business": 29_900,
    "team_annual": 99_000,
}
CURRENCIES = ("usd", "eur", "gbp")
COUPONS: dict[str, dict[str, Any]] = {
    "co_launch20": {
        "percent_off": 20.0,
        "amount_off": None,
        "duration": "forever",
        "duration_in_months": None,
    },
    "co_3months": {"percent_off": 50.0, "amount_off": None, "duration": "repeating", "duration_in_months": 3},
    "co_welcome": {"percent_off": None, "amount_off": 1_000, "duration": "once", "duration_in_months": None},
}


def _ts(at: datetime) -> int:
    return int(at.timestamp())


def _price(plan: str, currency: str) -> dict[str, Any]:
    annual = plan.endswith("_annual")
    return {
        "id": f"price_{plan}_{currency}",
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "currency": currency,
        "product": f"prod_{plan.removesuffix('_annual')}",
        "recurring": {
            "interval": "year" if annual else "month",
            "interval_count": 1,
            "usage_type": "licensed",
        },
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": PLANS[plan],
        "unit_amount_decimal": str(PLANS[plan]),
    }


def _metered(currency: str) -> dict[str, Any]:
    return {
        "id": f"price_api_calls_{currency}",
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "currency": currency,
        "product": "prod_api_calls",
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "metered"},
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": 1,
        "unit_amount_decimal": "0.5",
    }


def _coupon(coupon_id: str) -> dict[str, Any]:
    return {"id": coupon_id, "object": "coupon", "currency": None, "valid": True, **COUPONS[coupon_id]}


class StripeHistory:
    def __init__(self, customers: int, months: int, seed: int, start: datetime) -> None:
        self.customers, self.months, self.seed = customers, months, seed
        self.start = start.replace(tzinfo=UTC) if start.tzinfo is None else start
        self.rng = random.Random(seed)
        self.count = 0
        self.out: list[dict[str, Any]] = []

    def _event(
        self, kind: str, at: datetime, obj: dict[str, Any], previous: dict[str, Any] | None = None
    ) -> None:
        self.count += 1
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        self.out.append(
            {
                "id": f"evt_{self.seed}_{self.count:07d}",
                "object": "event",
                "api_version": API_VERSION,
                "created": _ts(at),
                "data": data,
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "type": kind,
            }
        )

    def events(self) -> list[dict[str, Any]]:
        """Every event, ordered by `created` (then id), as Stripe would have sent them in order."""
        if self.out:
            return self.out
        catalog_at = self.start - timedelta(days=30)
        for currency in CURRENCIES:
            for plan in PLANS:
                self._event("price.created", catalog_at, _price(plan, currency))
            self._event("price.created", catalog_at, _metered(currency))
        for coupon_id in COUPONS:
            self._event("coupon.created", catalog_at, _coupon(coupon_id))
        for n in range(self.customers):
            self._customer(n)
        self.out.sort(key=lambda e: (e["created"], e["id"]))
        return self.out

    def _items(self, sub: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = sub["items"]["data"]
        return items

    def _customer(self, n: int) -> None:
        rng = self.rng
        currency = rng.choice(CURRENCIES)
        customer = f"cus_{self.seed}_{n:06d}"
        begin = self.start + timedelta(
            days=rng.uniform(0, 30 * self.months * 0.7), seconds=rng.randint(0, DAY)
        )
        end_of_history = self.start + timedelta(days=30 * self.months)
        plan = rng.choice(["basic", "team", "business", "team_annual"])
        trial = rng.random() < 0.3
        items = [
            {
                "id": f"si_{customer}_1",
                "object": "subscription_item",
                "price": _price(plan, currency),
                "quantity": rng.randint(1, 12),
            }
        ]
        if rng.random() < 0.2:
            items.append(
                {"id": f"si_{customer}_2", "object": "subscription_item", "price": _metered(currency)}
            )
        period = timedelta(days=365 if plan.endswith("_annual") else 30)
        sub: dict[str, Any] = {
            "id": f"sub_{customer.removeprefix('cus_')}",
            "object": "subscription",
            "customer": customer,
            "currency": currency,
            "status": "trialing" if trial else "active",
            "created": _ts(begin),
            "start_date": _ts(begin),
            "current_period_start": _ts(begin),
            "current_period_end": _ts(begin + (timedelta(days=14) if trial else period)),
            "trial_start": _ts(begin) if trial else None,
            "trial_end": _ts(begin + timedelta(days=14)) if trial else None,
            "cancel_at_period_end": False,
            "cancel_at": None,
            "canceled_at": None,
            "ended_at": None,
            "pause_collection": None,
            "discount": None,
            "items": {"object": "list", "data": items},
        }
        if rng.random() < 0.25:
            coupon_id = rng.choice(list(COUPONS))
            sub["discount"] = self._discount(coupon_id, customer, sub["id"], begin)
        self._event("customer.subscription.created", begin, sub)
        at = begin
        if trial:
            at = begin + timedelta(days=14)
            if rng.random() < 0.25:  # no payment method: the trial lapses
                self._delete(sub, at, at)
                return
            self._update(
                sub,
                at,
                {"status": "active", "current_period_start": _ts(at), "current_period_end": _ts(at + period)},
            )
        while True:
            renewal = datetime.fromtimestamp(sub["current_period_end"], UTC)
            # changes within the period
            if rng.random() < 0.25:
                change_at = at + (renewal - at) * rng.uniform(0.1, 0.9)
                if change_at >= end_of_history:
                    return
                if self._change(sub, change_at, currency, customer) == "ended":
                    return
            if renewal >= end_of_history:
                return
            if sub["cancel_at_period_end"]:
                self._delete(sub, renewal, renewal)
                return
            at = renewal
            if sub["status"] == "canceled":
                return
            previous = {
                "current_period_start": sub["current_period_start"],
                "current_period_end": sub["current_period_end"],
            }
            next_end = at + (timedelta(days=365) if self._annual(sub) else timedelta(days=30))
            discount = sub["discount"]
            changes: dict[str, Any] = {"current_period_start": _ts(at), "current_period_end": _ts(next_end)}
            if discount is not None and discount["end"] is not None and discount["end"] <= _ts(at):
                changes["discount"] = None  # Stripe drops an ended discount at the next renewal
                previous["discount"] = discount
            sub.update(changes)
            self._event("customer.subscription.updated", at, sub, previous)

    def _annual(self, sub: dict[str, Any]) -> bool:
        return any(i["price"]["recurring"]["interval"] == "year" for i in self._items(sub))

    def _discount(self, coupon_id: str, customer: str, sub_id: str, at: datetime) -> dict[str, Any]:
        coupon = _coupon(coupon_id)
        months = coupon["duration_in_months"]
        return {
            "id": f"di_{sub_id}_{_ts(at)}",
            "object": "discount",
            "coupon": coupon,
            "customer": customer,
            "subscription": sub_id,
            "start": _ts(at),
            "end": _ts(at + timedelta(days=30 * months)) if months else None,
        }

    def _update(self, sub: dict[str, Any], at: datetime, changes: dict[str, Any]) -> None:
        previous = {key: copy.deepcopy(sub[key]) for key in changes}
        sub.update(changes)
        self._event("customer.subscription.updated", at, sub, previous)

    def _delete(self, sub: dict[str, Any], at: datetime, ended: datetime) -> None:
        sub.update({"status": "canceled", "canceled_at": _ts(at), "ended_at": _ts(ended)})
        self._event("customer.subscription.deleted", at, sub)

    def _change(self, sub: dict[str, Any], at: datetime, currency: str, customer: str) -> str:
        rng = self.rng
        roll = rng.random()
        items = copy.deepcopy(sub["items"])
        if roll < 0.35:  # seats
            first = items["data"][0]
            first["quantity"] = max(1, first["quantity"] + rng.choice([-3, -1, 1, 2, 5]))
            self._update(sub, at, {"items": items})
        elif roll < 0.5:  # a plan upgrade (monthly plans only: an interval change resets the period)
            first = items["data"][0]
            if first["price"]["recurring"]["interval"] == "month":
                order = ["basic", "team", "business"]
                current = first["price"]["id"].split("_")[1]
                if current in order and current != "business":
                    first["price"] = _price(order[order.index(current) + 1], currency)
                    self._update(sub, at, {"items": items})
                    self._event(
                        "invoiceitem.created",
                        at,
                        {
                            "id": f"ii_{self.count}",
                            "object": "invoiceitem",
                            "customer": customer,
                            "proration": True,
                            "amount": 1234,
                            "currency": currency,
                        },
                    )
        elif roll < 0.6:  # a coupon
            if sub["discount"] is None:
                discount = self._discount(rng.choice(["co_launch20", "co_3months"]), customer, sub["id"], at)
                self._update(sub, at, {"discount": discount})
        elif roll < 0.7:  # collection paused, resumed some days later within the period
            if sub["pause_collection"] is None:
                self._update(sub, at, {"pause_collection": {"behavior": "void", "resumes_at": None}})
                later = at + timedelta(days=rng.uniform(1, 10))
                if later < datetime.fromtimestamp(sub["current_period_end"], UTC):
                    self._update(sub, later, {"pause_collection": None})
        elif roll < 0.85:  # a cancel at period end, withdrawn one time in three
            if not sub["cancel_at_period_end"]:
                self._update(
                    sub,
                    at,
                    {
                        "cancel_at_period_end": True,
                        "cancel_at": sub["current_period_end"],
                        "canceled_at": _ts(at),
                    },
                )
                if rng.random() < 0.33:
                    later = at + timedelta(days=rng.uniform(0.5, 3))
                    if later < datetime.fromtimestamp(sub["current_period_end"], UTC):
                        self._update(
                            sub,
                            later,
                            {"cancel_at_period_end": False, "cancel_at": None, "canceled_at": None},
                        )
        else:  # cancelled at once
            self._delete(sub, at, at)
            return "ended"
        return "changed"


def stripe_history(customers: int, months: int, seed: int, start: datetime) -> list[dict[str, Any]]:
    return StripeHistory(customers, months, seed, start).events()


def as_delivered(events: Sequence[T], seed: int, resent: float, shuffle: bool = True) -> list[T]:
    """Events as Stripe's webhooks deliver them, reproducibly: a share `resent` sent twice (Stripe
    promises no single delivery) and, with `shuffle`, in no order (nor does it promise order)."""
    rng = random.Random(seed)
    out = [*events, *(e for e in events if rng.random() < resent)]
    if shuffle:
        rng.shuffle(out)
    return out
