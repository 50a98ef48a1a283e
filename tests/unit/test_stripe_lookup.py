"""StripeLookup without the network: what it asks for, what it makes of an answer, and that Stripe being
unreachable is "not found" (the event then waits as without a key), never an error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import stripe

from processors.sources.stripe.lookup import StripeLookup
from processors.sources.stripe.mapping import map_event


def test_a_coupon_becomes_the_event_that_would_have_carried_it(monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = StripeLookup("rk_test_not_used")
    calls: list[tuple[str, str]] = []

    def retrieve(kind: str, object_id: str) -> Any:
        calls.append((kind, object_id))
        body = {"id": object_id, "object": "coupon", "percent_off": 20.0, "duration": "forever", "created": 5}
        return stripe.StripeObject.construct_from(body, "rk_test_not_used")

    monkeypatch.setattr(lookup, "_retrieve", retrieve)
    found = asyncio.run(lookup("coupon:co_1", {}))
    assert calls == [("coupon", "co_1")] and found is not None
    assert found["type"] == "coupon.created" and found["data"]["object"]["percent_off"] == 20.0
    assert [key for key, _ in map_event(found, {}).writes] == ["coupon:co_1"]


@pytest.mark.parametrize("key", ["discount:di_1", "sub:sub_1", "coupon:", "nonsense"])
def test_what_stripe_cannot_be_asked_for_is_not_asked(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    lookup = StripeLookup("rk_test_not_used")
    monkeypatch.setattr(lookup, "_retrieve", lambda *a: pytest.fail("asked"))
    assert asyncio.run(lookup(key, {})) is None


def test_stripe_unreachable_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = StripeLookup("rk_test_not_used")

    def down(kind: str, object_id: str) -> Any:
        raise stripe.APIConnectionError("no route")  # type: ignore[no-untyped-call]

    monkeypatch.setattr(lookup, "_retrieve", down)
    assert asyncio.run(lookup("price:price_1", {})) is None
    # and Stripe is left alone for a while: the next question is not asked
    monkeypatch.setattr(lookup, "_retrieve", lambda *a: pytest.fail("asked while Stripe was failing"))
    assert asyncio.run(lookup("coupon:co_1", {})) is None


def test_a_discount_is_found_on_the_subscription_of_the_event_waiting_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A discount applied before the webhook endpoint existed never comes as an event."""
    lookup = StripeLookup("rk_test_not_used")
    calls: list[tuple[str, str]] = []
    discount = {
        "id": "di_1",
        "object": "discount",
        "source": {"coupon": "co_1", "type": "coupon"},
        "start": 7,
    }

    def retrieve(kind: str, object_id: str) -> Any:
        calls.append((kind, object_id))
        body = {"id": object_id, "object": "subscription", "discounts": [discount]}
        return stripe.StripeObject.construct_from(body, "rk_test_not_used")

    monkeypatch.setattr(lookup, "_retrieve", retrieve)
    waiting = {"data": {"object": {"id": "sub_1", "object": "subscription"}}}
    found = asyncio.run(lookup("discount:di_1", waiting))
    assert calls == [("discount", "sub_1")] and found is not None
    assert found["type"] == "customer.discount.created" and found["data"]["object"] == discount
    assert asyncio.run(lookup("discount:di_2", waiting)) is None  # not on that subscription
    assert (
        asyncio.run(lookup("discount:di_1", {"data": {"object": {"id": "co_1", "object": "coupon"}}})) is None
    )
