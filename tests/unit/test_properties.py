"""Properties of the engine over random event sets and generated histories."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.core.account import AccountState, Subscription, apply, fold
from processors.core.aggregates import MonthTotals, merge, monthly_aggregates, monthly_totals
from processors.core.fact import Fact, fact_of
from processors.core.intake import parse_event
from processors.core.movement import Movement
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import AccountOutcome, replay
from schemas.aggregate import MonthlyAggregate
from schemas.billing_event import BillingEvent

TYPES = ("subscribe", "upgrade", "downgrade", "change", "cancel", "reactivate", "pause", "resume")
# Few instants, so that events often share one and must be applied together.
INSTANTS = (
    "2025-01-01T00:00:00Z",
    "2025-01-20T05:00:00+05:00",
    "2025-02-01T00:00:00Z",
    "2025-03-31T23:00:00-02:00",
    "2025-05-15T12:00:00Z",
)


@st.composite
def event_sets(draw: st.DrawFn) -> list[Fact]:
    n = draw(st.integers(min_value=1, max_value=25))
    events = []
    for i in range(n):
        kind = draw(st.sampled_from(TYPES))
        event: dict[str, object] = {
            "event_id": f"e{i}",
            "type": kind,
            "account_id": draw(st.sampled_from(["a", "b", "c"])),
            "subscription_id": draw(st.sampled_from(["s1", "s2", "s3"])),
            "effective_at": draw(st.sampled_from(INSTANTS)),
        }
        if kind in ("subscribe", "upgrade", "downgrade", "change") or (
            kind in ("reactivate", "resume") and draw(st.booleans())
        ):
            event.update(
                currency=draw(st.sampled_from(["USD", "EUR"])),
                interval=draw(st.sampled_from(["day", "week", "month", "quarter", "year"])),
                interval_count=draw(st.integers(1, 3)),
                items=[
                    {
                        "plan_id": "p",
                        "unit_amount": f"{draw(st.integers(0, 50000)) / 100:.2f}",
                        "quantity": draw(st.integers(0, 5)),
                    }
                ],
                trial=draw(st.booleans()) and draw(st.booleans()),
            )
        parsed = parse_event(json.dumps(event))
        assert isinstance(parsed, BillingEvent), parsed
        events.append(fact_of(parsed))
    return events


def fold_all(events: Sequence[Fact]) -> dict[str, AccountState]:
    by_account: dict[str, list[Fact]] = {}
    for e in events:
        by_account.setdefault(e.account_id, []).append(e)
    return {a: apply(AccountState(a), evs).state for a, evs in by_account.items()}


def aggregates_of(states: dict[str, AccountState]) -> list[MonthlyAggregate]:
    return monthly_aggregates(monthly_totals(m for s in states.values() for m in s.movements))


def check_identities(
    rows: list[MonthlyAggregate], states: Mapping[str, AccountState | AccountOutcome]
) -> None:
    by_currency: dict[str, list[MonthlyAggregate]] = {}
    for r in rows:
        by_currency.setdefault(r.currency, []).append(r)
    for currency, months in by_currency.items():
        assert months[0].opening_mrr == 0 and months[0].customers_opening == 0
        for r in months:
            assert r.closing_mrr == (
                r.opening_mrr
                + r.new_mrr
                + r.expansion_mrr
                + r.reactivation_mrr
                - r.contraction_mrr
                - r.churn_mrr
            )
            assert r.net_new_mrr == r.closing_mrr - r.opening_mrr
            assert r.customers_closing == (
                r.customers_opening + r.new_customers + r.reactivated_customers - r.churned_customers
            )
            assert min(r.new_mrr, r.expansion_mrr, r.contraction_mrr, r.churn_mrr, r.reactivation_mrr) >= 0
        for prev, nxt in itertools.pairwise(months):
            assert nxt.opening_mrr == prev.closing_mrr
            assert nxt.customers_opening == prev.customers_closing
        assert months[-1].closing_mrr == sum(s.mrr.get(currency, 0) for s in states.values())
        assert months[-1].customers_closing == sum(1 for s in states.values() if s.mrr.get(currency, 0) > 0)


@settings(max_examples=300, deadline=None)
@given(event_sets(), st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_result(events: list[Fact], rnd: object) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = fold_all(events), fold_all(shuffled)
    assert {k: s.mrr for k, s in a.items()} == {k: s.mrr for k, s in b.items()}
    assert {k: s.movements for k, s in a.items()} == {k: s.movements for k, s in b.items()}
    assert aggregates_of(a) == aggregates_of(b)
    check_identities(aggregates_of(a), a)


@settings(max_examples=300, deadline=None)
@given(event_sets())
def test_a_quiet_fold_leaves_the_state_a_full_fold_leaves(events: list[Fact]) -> None:
    """The stream's on-time path folds the chunks before a new event quietly (state only)."""
    ordered = sorted(f for f in events if f.account_id == events[0].account_id)
    full: tuple[dict[str, Subscription], dict[str, int], set[str]] = ({}, {}, set())
    quiet: tuple[dict[str, Subscription], dict[str, int], set[str]] = ({}, {}, set())
    moved = fold("a", ordered, *full)
    assert fold("a", ordered, *quiet, quiet=True) == []
    assert quiet == full
    assert bool(moved) == bool(quiet[2])  # (a fold that moved MRR made some currency ever active)


@settings(max_examples=200, deadline=None)
@given(event_sets(), st.lists(st.integers(0, 24), max_size=15))
def test_duplicates_change_nothing(events: list[Fact], picks: list[int]) -> None:
    dupes = [events[i % len(events)] for i in picks]
    assert aggregates_of(fold_all(events + dupes)) == aggregates_of(fold_all(dupes + events))
    assert aggregates_of(fold_all(events + dupes)) == aggregates_of(fold_all(events))


@settings(max_examples=300, deadline=None)
@given(event_sets(), st.randoms(use_true_random=False), st.integers(1, 6))
def test_batches_in_any_order_publish_what_the_replay_holds(
    events: list[Fact], rnd: object, batch: int
) -> None:
    """What the stream does: apply arrivals batch by batch and publish added and retracted movements."""
    arrivals = [*list(events), events[0]]
    rnd.shuffle(arrivals)  # type: ignore[attr-defined]
    states: dict[str, AccountState] = {}
    published: list[Movement] = []
    for start in range(0, len(arrivals), batch):
        for e in arrivals[start : start + batch]:
            result = apply(states.get(e.account_id, AccountState(e.account_id)), [e])
            states[e.account_id] = result.state
            published += [*result.retracted, *result.added]
    expected = fold_all(events)
    assert {k: s.movements for k, s in states.items()} == {k: s.movements for k, s in expected.items()}
    summed = monthly_totals(published)
    assert {k: t for k, t in summed.items() if t != MonthTotals()} == monthly_totals(
        m for s in expected.values() for m in s.movements
    )
    assert monthly_aggregates(summed) == aggregates_of(expected)
    # Merging per-batch totals is the same as totalling everything at once.
    merged: dict[tuple[str, str], MonthTotals] = {}
    for i in range(0, len(published), 3):
        merged = merge(merged, monthly_totals(published[i : i + 3]))
    assert monthly_aggregates(merged) == monthly_aggregates(summed)


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000))
def test_generated_histories_hold_every_identity(seed: int) -> None:
    events = HistoryGenerator(120, 14, seed, parse_month("2024-11")).events()
    ordered = arrange(events, seed)
    messy = arrange(events, seed, shuffle=True, duplicates=0.1, late=0.2, bad=0.02)
    clean = replay((str(i), line.encode()) for i, line in enumerate(ordered))
    noisy = replay((str(i), line.encode()) for i, line in enumerate(messy))
    assert clean.months == noisy.months
    assert clean.events == noisy.events == len(events)
    assert len(noisy.rejects) == max(1, round(len(events) * 0.02))
    check_identities(clean.months, clean.accounts)
