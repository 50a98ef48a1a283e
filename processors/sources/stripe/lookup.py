"""Catalog lookups from the Stripe API, for the Stripe stage, when `MRR_STRIPE_API_KEY` is set: an event
that names a coupon or price not seen in the stream asks Stripe instead of waiting for its event. The
answer is turned into the Stripe event that would have carried it (`coupon.created`, `price.created`), so
the mapping keeps one way in for catalog facts. Discounts have no retrieve call in Stripe's API: an event
waiting for one waits for its `customer.discount.*` event.

Never in tests: they use a stand-in with the same signature (tests/unit/test_stripe_stage.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import stripe

log = logging.getLogger("mrr_stream")

# A state key the mapping waits for ("coupon:co_1", "price:price_1") -> the Stripe event carrying that
# object, or None (not found, not a kind Stripe can be asked for, or Stripe unreachable)
Lookup = Callable[[str], Awaitable[dict[str, Any] | None]]
TIMEOUT = 10.0  # seconds; a slower answer is taken as none, and the event waits as without a key


class StripeLookup:
    def __init__(self, api_key: str) -> None:
        self.client = stripe.StripeClient(api_key, max_network_retries=2)

    def _retrieve(self, kind: str, object_id: str) -> Any:
        if kind == "coupon":
            return self.client.v1.coupons.retrieve(object_id)
        # tiers are left out unless expanded
        return self.client.v1.prices.retrieve(object_id, params={"expand": ["tiers"]})

    async def __call__(self, key: str) -> dict[str, Any] | None:
        kind, _, object_id = key.partition(":")
        if kind not in ("coupon", "price") or not object_id:
            return None
        try:
            async with asyncio.timeout(TIMEOUT):
                found = await asyncio.to_thread(self._retrieve, kind, object_id)
        except (stripe.StripeError, TimeoutError) as exc:
            # (the library's messages name the object and the status, never the key)
            log.warning("Stripe API: %s not retrieved (%s)", key, type(exc).__name__)
            return None
        obj = found.to_dict()
        return {
            "id": f"lookup_{kind}_{object_id}",
            "object": "event",
            "type": f"{kind}.created",
            "created": obj.get("created", 0),
            "data": {"object": obj},
        }
