"""A billing event reduced to what the engine folds: small, immutable, cheap to store and to sort.

Facts sort in application order, (instant, event_id), because those are their first two fields and
event ids are unique within an account.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from processors.core.mrr import subscription_mrr
from schemas.billing_event import BillingEvent

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000  # a day in the engine's unit (µs); a UTC day starts at a multiple of it
_MICROSECOND = timedelta(microseconds=1)


class Fact(NamedTuple):
    instant: int  # effective_at in microseconds since the epoch, UTC
    event_id: str
    account_id: str
    subscription_id: str
    kind: str  # the event type
    currency: str | None  # the terms' currency; None when the event states no terms
    mrr: int  # the terms' MRR in cents; 0 when the event states no terms
    fingerprint: str  # hash of the event's contract content: same id + other fingerprint = conflict
    voids: str | None = None  # a void event's target event_id; None for every other kind


def instant_of(at: datetime) -> int:
    """Exact microseconds since the epoch (datetime.timestamp() would go through a float)."""
    return (at - _EPOCH) // _MICROSECOND


def utc_of(instant: int) -> datetime:
    return _EPOCH + timedelta(microseconds=instant)


def month_of(instant: int) -> str:
    """The month "YYYY-MM" (UTC) of an instant: the one definition of a month."""
    at = utc_of(instant)
    return f"{at.year:04d}-{at.month:02d}"


def fact_of(event: BillingEvent) -> Fact:
    content = event.model_dump_json().encode()
    terms = event.has_terms
    return Fact(
        instant=instant_of(event.effective_at),
        event_id=event.event_id,
        account_id=event.account_id,
        subscription_id=event.subscription_id,
        kind=event.type,
        currency=event.currency if terms else None,
        mrr=subscription_mrr(event) if terms else 0,
        fingerprint=hashlib.blake2b(content, digest_size=10).hexdigest(),
        voids=event.voids,
    )
