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
    found = asyncio.run(lookup("coupon:co_1"))
    assert calls == [("coupon", "co_1")] and found is not None
    assert found["type"] == "coupon.created" and found["data"]["object"]["percent_off"] == 20.0
    assert [key for key, _ in map_event(found, {}).writes] == ["coupon:co_1"]


@pytest.mark.parametrize("key", ["discount:di_1", "sub:sub_1", "coupon:", "nonsense"])
def test_what_stripe_cannot_be_asked_for_is_not_asked(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    lookup = StripeLookup("rk_test_not_used")
    monkeypatch.setattr(lookup, "_retrieve", lambda *a: pytest.fail("asked"))
    assert asyncio.run(lookup(key)) is None


def test_stripe_unreachable_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    lookup = StripeLookup("rk_test_not_used")

    def down(kind: str, object_id: str) -> Any:
        raise stripe.APIConnectionError("no route")  # type: ignore[no-untyped-call]

    monkeypatch.setattr(lookup, "_retrieve", down)
    assert asyncio.run(lookup("price:price_1")) is None
