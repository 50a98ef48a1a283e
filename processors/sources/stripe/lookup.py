"""Catalog lookups from the Stripe API, for the Stripe stage, when `MRR_STRIPE_API_KEY` is set: an event
that names a coupon, price or discount not seen in the stream asks Stripe instead of waiting for its event.
The answer is turned into the Stripe event that would have carried it (`coupon.created`, `price.created`,
`customer.discount.created`), so the mapping keeps one way in for catalog facts.

- a coupon is retrieved with `applies_to` expanded (never in webhook events), so a coupon restricted to
  some products is known as such;
- a price with its `tiers` expanded;
- a discount has no retrieve call of its own: it is found on the subscription of the event that waits for
  it (retrieved with `discounts` expanded). This is how a discount applied before the webhook endpoint
  existed becomes known (no `customer.discount.*` event will ever come for it).

Stripe unreachable or failing: no answer, and no question for the next minute (the events wait as without
a key; the next batch that needs the key asks again). Never in tests: they use a stand-in with the same
signature (tests/unit/test_stripe_stage.py) or replace `_retrieve` (tests/unit/test_stripe_lookup.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import stripe

log = logging.getLogger("mrr_stream")

# (the state key the mapping waits for, such as "coupon:co_1"; the Stripe event waiting for it) -> the
# Stripe event carrying that object, or None (not found, not a kind Stripe can be asked for, or Stripe
# unreachable)
Lookup = Callable[[str, Mapping[str, Any]], Awaitable[dict[str, Any] | None]]
TIMEOUT = 10.0  # seconds; a slower answer is taken as none
QUIET = 60.0  # seconds without questions after Stripe failed to answer


class StripeLookup:
    def __init__(self, api_key: str) -> None:
        self.client = stripe.StripeClient(api_key, max_network_retries=2)
        self.quiet_until = 0.0

    def _retrieve(self, kind: str, object_id: str) -> Any:
        if kind == "coupon":
            return self.client.v1.coupons.retrieve(object_id, params={"expand": ["applies_to"]})
        if kind == "price":
            return self.client.v1.prices.retrieve(object_id, params={"expand": ["tiers"]})
        return self.client.v1.subscriptions.retrieve(object_id, params={"expand": ["discounts"]})

    async def __call__(self, key: str, waiting: Mapping[str, Any]) -> dict[str, Any] | None:
        kind, _, object_id = key.partition(":")
        ask: object = object_id
        if kind == "discount":
            data = waiting.get("data")
            sub = data.get("object") if isinstance(data, Mapping) else None
            ask = sub.get("id") if isinstance(sub, Mapping) and sub.get("object") == "subscription" else None
        if kind not in ("coupon", "price", "discount") or not object_id or not isinstance(ask, str):
            return None
        if time.monotonic() < self.quiet_until:
            return None
        try:
            async with asyncio.timeout(TIMEOUT):
                found = await asyncio.to_thread(self._retrieve, kind, ask)
        except stripe.InvalidRequestError as exc:  # (a 404: the object is not there)
            log.warning("Stripe API: %s not found (%s)", key, exc.http_status)
            return None
        except (stripe.StripeError, TimeoutError) as exc:
            # (the library's messages name the object and the status, never the key)
            log.warning(
                "Stripe API: %s not retrieved (%s); no questions for %d s", key, type(exc).__name__, QUIET
            )
            self.quiet_until = time.monotonic() + QUIET
            return None
        obj = found.to_dict()
        if kind == "discount":
            discounts = obj.get("discounts") or []
            obj = next((d for d in discounts if isinstance(d, dict) and d.get("id") == object_id), None)
            if obj is None:
                return None
        return {
            "id": f"lookup_{kind}_{object_id}",
            "object": "event",
            "type": "customer.discount.created" if kind == "discount" else f"{kind}.created",
            "created": obj.get("created", obj.get("start", 0)),
            "data": {"object": obj},
        }
