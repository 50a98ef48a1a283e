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
from itertools import groupby
from operator import attrgetter
from typing import NamedTuple

from processors.core.fact import Fact, utc_of
from processors.core.intake import Rejection
from processors.core.movement import Movement, retraction_of
from schemas.movement import MovementType


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
    events: tuple[Fact, ...] = ()  # unique by event_id, in application order
    movements: tuple[Movement, ...] = ()  # the movements in effect, in order
    subscriptions: Mapping[str, Subscription] = field(default_factory=dict)
    mrr: Mapping[str, int] = field(default_factory=dict)  # currency -> cents, after the last instant
    ever_active: frozenset[str] = frozenset()  # currencies that have had MRR: 'reactivation', not 'new'

    @property
    def last_instant(self) -> int | None:
        return self.events[-1].instant if self.events else None


@dataclass(frozen=True, slots=True)
class Applied:
    state: AccountState
    added: tuple[Movement, ...] = ()
    retracted: tuple[Movement, ...] = ()
    accepted: tuple[Fact, ...] = ()
    duplicates: tuple[Fact, ...] = ()
    conflicts: tuple[tuple[Fact, Rejection], ...] = ()


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


def fold(
    account_id: str,
    events: Iterable[Fact],
    subscriptions: dict[str, Subscription],
    mrr: dict[str, int],
    ever_active: set[str],
    quiet: bool = False,
) -> list[Movement]:
    """Apply sorted events onto the given state (mutated in place); return the movements they cause.
    The stream folds from a checkpoint in the middle of an account's history, the replay from empty.
    `quiet`: the state only, no movements (the stream's on-time path, for the chunks before a new event:
    their movements are known, only the state after them is needed)."""
    movements: list[Movement] = []
    for instant, group in groupby(events, key=attrgetter("instant")):
        before = dict(mrr)
        causes: dict[str, list[str]] = {}
        for fact in group:
            old = subscriptions.get(fact.subscription_id)
            if fact.currency is not None:
                new: Subscription | None = Subscription(fact.currency, fact.mrr, True)
            elif old is None:
                new = None  # cancel, pause or resume of a subscription not seen yet: nothing changes
            else:
                new = Subscription(old.currency, old.terms_mrr, fact.kind in ("reactivate", "resume"))
            if new is None:
                continue
            subscriptions[fact.subscription_id] = new
            if old is not None:
                mrr[old.currency] -= old.mrr
                causes.setdefault(old.currency, []).append(fact.event_id)
            mrr[new.currency] = mrr.get(new.currency, 0) + new.mrr
            if old is None or old.currency != new.currency:
                causes.setdefault(new.currency, []).append(fact.event_id)
        for currency in sorted(causes):
            prior, now = before.get(currency, 0), mrr[currency]
            kind = classify(prior, now, currency in ever_active)
            if kind is None:
                continue
            if now > 0:
                ever_active.add(currency)
            if quiet:
                continue
            ids = tuple(causes[currency])
            utc = utc_of(instant)
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


def correction(old: Sequence[Movement], new: Sequence[Movement]) -> tuple[list[Movement], list[Movement]]:
    """What changes when the movements in effect `old` become `new`: the movements to retract, and the
    movements to add, each naming (in `corrects`) the retracted ids of its currency."""
    old_ids = {m.movement_id for m in old}
    new_ids = {m.movement_id for m in new}
    retracted = [m for m in old if m.movement_id not in new_ids]
    replaced: dict[str, tuple[str, ...]] = {}
    for m in retracted:
        replaced[m.currency] = (*replaced.get(m.currency, ()), m.movement_id)
    added = [m._replace(corrects=replaced.get(m.currency, ())) for m in new if m.movement_id not in old_ids]
    return retracted, added


VOID_OF_VOID = Rejection("voids", "names a void event; a void cannot be voided")


def in_effect(events: Iterable[Fact]) -> list[Fact]:
    """The events the fold applies: every event but the voids and the events they withdraw. A void of an
    event not seen yet withdraws it when it comes; a void never withdraws a void."""
    events = list(events)
    voided = {f.voids for f in events if f.kind == "void"}
    return [f for f in events if f.kind != "void" and f.event_id not in voided]


def apply(state: AccountState, facts: Iterable[Fact]) -> Applied:
    """Fold new facts (any order, duplicates allowed) into an account's state."""
    known = {f.event_id: f for f in state.events}
    fresh: dict[str, Fact] = {}
    duplicates: list[Fact] = []
    conflicts: list[tuple[Fact, Rejection]] = []
    for fact in facts:
        if fact.account_id != state.account_id:
            raise ValueError(f"event {fact.event_id} belongs to {fact.account_id}, not {state.account_id}")
        seen = known.get(fact.event_id) or fresh.get(fact.event_id)
        if seen is None:
            target = None if fact.voids is None else known.get(fact.voids) or fresh.get(fact.voids)
            # (a void of a void that comes before it has no effect: it withdraws only non-voids)
            if target is not None and target.kind == "void":
                conflicts.append((fact, VOID_OF_VOID))
            else:
                fresh[fact.event_id] = fact
        elif seen.fingerprint == fact.fingerprint:
            duplicates.append(fact)
        else:
            reason = Rejection("event_id", "already used by an event with different content")
            conflicts.append((fact, reason))
    if not fresh:
        return Applied(state, duplicates=tuple(duplicates), conflicts=tuple(conflicts))

    new_events = sorted(fresh.values())
    last = state.last_instant
    retracted: list[Movement] = []
    voiding = any(f.kind == "void" for f in (*state.events, *new_events))
    if not voiding and (last is None or new_events[0].instant > last):
        # On time: continue the fold from the end state; nothing already published changes.
        subscriptions, mrr, ever = dict(state.subscriptions), dict(state.mrr), set(state.ever_active)
        added = fold(state.account_id, new_events, subscriptions, mrr, ever)
        all_events = state.events + tuple(new_events)
        movements = state.movements + tuple(added)
    else:
        # Late, or a void: refold the whole history and publish the difference as a correction.
        all_events = tuple(sorted((*state.events, *new_events)))
        subscriptions, mrr, ever = {}, {}, set()
        movements = tuple(fold(state.account_id, in_effect(all_events), subscriptions, mrr, ever))
        retracted, added = correction(state.movements, movements)
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
        accepted=tuple(new_events),
        duplicates=tuple(duplicates),
        conflicts=tuple(conflicts),
    )


@dataclass(frozen=True, slots=True)
class AsOf:
    """An account as of an instant: what is in effect then, and what is scheduled after it."""

    movements: tuple[Movement, ...]  # in effect: those effective at or before the instant
    mrr: Mapping[str, int]  # currency -> cents at the instant
    scheduled: tuple[Movement, ...]  # what the events known now will do after the instant


def as_of(state: AccountState, instant: int | None) -> AsOf:
    """The account at `instant` (µs since the epoch; None: after every event). The fold is causal (an
    event never changes a movement before its own instant), so what is in effect at the instant is a
    prefix of the movements, equal to folding only the events effective by then."""
    if instant is None or state.last_instant is None or state.last_instant <= instant:
        return AsOf(state.movements, state.mrr, ())
    cut = utc_of(instant)
    due = tuple(m for m in state.movements if m.effective_at <= cut)
    later = tuple(m for m in state.movements if m.effective_at > cut)
    subscriptions: dict[str, Subscription] = {}
    mrr: dict[str, int] = {}
    events = [f for f in in_effect(state.events) if f.instant <= instant]
    fold(state.account_id, events, subscriptions, mrr, set())
    return AsOf(due, mrr, later)
