"""Billing events for tests, written as producers would write them: JSON text through the contract."""

from __future__ import annotations

import json
from typing import Any

from processors.core.fact import Fact, fact_of
from schemas.billing_event import BillingEvent

_counter = 0


def raw(
    type: str = "subscribe",
    *,
    account: str = "acct-1",
    sub: str = "sub-1",
    at: str = "2025-01-15T10:00:00Z",
    amount: str | None = "100.00",
    quantity: int = 1,
    currency: str = "USD",
    interval: str = "month",
    event_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    global _counter
    _counter += 1
    event: dict[str, Any] = {
        "event_id": event_id or f"e{_counter:06d}",
        "type": type,
        "account_id": account,
        "subscription_id": sub,
        "effective_at": at,
    }
    if type in ("subscribe", "upgrade", "downgrade", "change") or (
        amount is not None and type in ("reactivate", "resume")
    ):
        event.update(
            currency=currency,
            interval=interval,
            items=[{"plan_id": "plan", "unit_amount": amount, "quantity": quantity}],
        )
    event.update(extra)
    return event


def ev(type: str = "subscribe", **kwargs: Any) -> BillingEvent:
    return BillingEvent.model_validate_json(json.dumps(raw(type, **kwargs)))


def fx(type: str = "subscribe", **kwargs: Any) -> Fact:
    """The engine's view of an event built like ev()."""
    return fact_of(ev(type, **kwargs))
