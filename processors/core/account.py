"""One account's history folded into its current MRR and its movements.

apply(state, events) -> Applied(state, added, retracted, ...) is the whole engine for an account. The
result depends only on the *set* of events, never on the order they arrived in: events are applied in
(effective_at, event_id) order, all events of one instant together, and a late event rewinds the fold
and reports which movements it invalidated (retracted) and which replace them (added).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import NamedTuple

from processors.core.intake import Rejection
from processors.core.movement import Movement, retraction_of
from processors.core.mrr import subscription_mrr
from schemas.billing_event import BillingEvent
from schemas.movement import MovementType

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Keyed = tuple[int, str, BillingEvent]  # (instant, event_id, event): sorts in application order


def instant_of(event: BillingEvent) -> int:
    """effective_at as exact microseconds since the epoch (timestamp() would go through a float)."""
    return (event.effective_at - _EPOCH) // _MICROSECOND


def keyed(events: Iterable[BillingEvent]) -> list[Keyed]:
    return sorted((instant_of(e), e.event_id, e) for e in events)


class Subscription(NamedTuple):
    currency: str
    terms_mrr: int  # MRR in cents of its last stated terms, what resume/reactivate bring back
    active: bool

    @property
    def mrr(self) -> int:
        return self.terms_mrr if self.active else 0


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything the engine knows of one account. Never mutated: apply returns a new one."""

    account_id: str
    events: tuple[Keyed, ...] = ()  # unique by event_id, in application order
    movements: tuple[Movement, ...] = ()  # the movements in effect, in order
    subscriptions: Mapping[str, Subscription] = field(default_factory=dict)
    mrr: Mapping[str, int] = field(default_factory=dict)  # currency -> cents, after the last instant
    ever_active: frozenset[str] = frozenset()  # currencies that have had MRR: 'reactivation', not 'new'

    @property
    def last_instant(self) -> int | None:
        return self.events[-1][0] if self.events else None


@dataclass(frozen=True, slots=True)
class Applied:
    state: AccountState
    added: tuple[Movement, ...] = ()
    retracted: tuple[Movement, ...] = ()
    accepted: tuple[BillingEvent, ...] = ()
    duplicates: tuple[BillingEvent, ...] = ()
    conflicts: tuple[tuple[BillingEvent, Rejection], ...] = ()


def movement_id(
    account_id: str, currency: str, instant: int, kind: str, before: int, after: int, event_ids: Sequence[str]
) -> str:
    key = "\x1f".join((account_id, currency, str(instant), kind, str(before), str(after), *event_ids))
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def classify(before: int, after: int, ever_active: bool) -> MovementType | None:
    if after == before:
        return None
    if before == 0:
        return "reactivation" if ever_active else "new"
    if after == 0:
        return "churn"
    return "expansion" if after > before else "contraction"


def _fold(
    account_id: str,
    events: Iterable[Keyed],
    subscriptions: dict[str, Subscription],
    mrr: dict[str, int],
    ever_active: set[str],
) -> list[Movement]:
    """Apply sorted events onto mutable copies of the end state; return the movements they cause."""
    movements: list[Movement] = []
    for instant, group in groupby(events, key=itemgetter(0)):
        before = dict(mrr)
        causes: dict[str, list[str]] = {}
        at: datetime | None = None
        for _, event_id, event in group:
            at = event.effective_at
            old = subscriptions.get(event.subscription_id)
            if event.has_terms:
                assert event.currency is not None
                new: Subscription | None = Subscription(event.currency, subscription_mrr(event), True)
            elif old is None:
                new = None  # cancel, pause or resume of a subscription not seen yet: nothing changes
            else:
                new = Subscription(old.currency, old.terms_mrr, event.type in ("reactivate", "resume"))
            if new is None:
                continue
            subscriptions[event.subscription_id] = new
            if old is not None:
                mrr[old.currency] -= old.mrr
                causes.setdefault(old.currency, []).append(event_id)
            mrr[new.currency] = mrr.get(new.currency, 0) + new.mrr
            if old is None or old.currency != new.currency:
                causes.setdefault(new.currency, []).append(event_id)
        assert at is not None
        for currency in sorted(causes):
            prior, now = before.get(currency, 0), mrr[currency]
            kind = classify(prior, now, currency in ever_active)
            if kind is None:
                continue
            if now > 0:
                ever_active.add(currency)
            utc = at.astimezone(UTC)
            ids = tuple(causes[currency])
            movements.append(
                Movement(
                    movement_id=movement_id(account_id, currency, instant, kind, prior, now, ids),
                    account_id=account_id,
                    currency=currency,
                    type=kind,
                    amount=abs(now - prior),
                    mrr_before=prior,
                    mrr_after=now,
                    effective_at=utc,
                    month=f"{utc.year:04d}-{utc.month:02d}",
                    event_ids=ids,
                )
            )
    return movements


def apply(state: AccountState, events: Iterable[BillingEvent]) -> Applied:
    """Fold new events (any order, duplicates allowed) into an account's state."""
    known = {e.event_id: e for _, _, e in state.events}
    fresh: dict[str, BillingEvent] = {}
    duplicates: list[BillingEvent] = []
    conflicts: list[tuple[BillingEvent, Rejection]] = []
    for event in events:
        if event.account_id != state.account_id:
            raise ValueError(f"event {event.event_id} belongs to {event.account_id}, not {state.account_id}")
        seen = known.get(event.event_id) or fresh.get(event.event_id)
        if seen is None:
            fresh[event.event_id] = event
        elif seen == event:
            duplicates.append(event)
        else:
            reason = Rejection("event_id", "already used by an event with different content")
            conflicts.append((event, reason))
    if not fresh:
        return Applied(state, duplicates=tuple(duplicates), conflicts=tuple(conflicts))

    new_events = keyed(fresh.values())
    last = state.last_instant
    retracted: list[Movement] = []
    if last is None or new_events[0][0] > last:
        # On time: continue the fold from the end state; nothing already published changes.
        subscriptions, mrr, ever = dict(state.subscriptions), dict(state.mrr), set(state.ever_active)
        added = _fold(state.account_id, new_events, subscriptions, mrr, ever)
        all_events = state.events + tuple(new_events)
        movements = state.movements + tuple(added)
    else:
        # Late: refold the whole history and publish the difference as a correction.
        all_events = tuple(sorted((*state.events, *new_events)))
        subscriptions, mrr, ever = {}, {}, set()
        movements = tuple(_fold(state.account_id, all_events, subscriptions, mrr, ever))
        old_ids = {m.movement_id for m in state.movements}
        new_ids = {m.movement_id for m in movements}
        retracted = [m for m in state.movements if m.movement_id not in new_ids]
        replaced: dict[str, tuple[str, ...]] = {}
        for m in retracted:
            replaced[m.currency] = (*replaced.get(m.currency, ()), m.movement_id)
        added = [
            m._replace(corrects=replaced.get(m.currency, ()))
            for m in movements
            if m.movement_id not in old_ids
        ]
    new_state = AccountState(
        account_id=state.account_id,
        events=all_events,
        movements=movements,
        subscriptions=subscriptions,
        mrr=mrr,
        ever_active=frozenset(ever),
    )
    return Applied(
        new_state,
        added=tuple(added),
        retracted=tuple(retraction_of(m) for m in retracted),
        accepted=tuple(e for _, _, e in new_events),
        duplicates=tuple(duplicates),
        conflicts=tuple(conflicts),
    )
