"""The Stripe -> billing event mapping, checked through the real engine: Stripe-shaped events (see
tests/stripe_fixtures.py) go through a Mapper, the contract events through to_json into the replay."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.replay import ReplayOutcome, replay
from processors.sources.stripe import currency
from processors.sources.stripe.mapping import (
    HANDLED,
    PREFIX,
    SKIP_REASONS,
    Mapped,
    Mapper,
    Skip,
    map_event,
    reads,
    to_json,
)
from schemas.billing_event import BillingEvent
from tests.stripe_fixtures import (
    BASIL,
    CLOVER,
    DAY,
    LEGACY,
    VERSIONS,
    Sub,
    at,
    coupon,
    discount,
    event,
    invoice_events,
    micro,
    price,
    random_history,
    stripe_id,
    tier,
)

AT = micro(at(400))  # after every fixture


def feed(
    events: Iterable[dict[str, Any]], mapper: Mapper | None = None
) -> tuple[list[BillingEvent], list[Skip]]:
    mapper = mapper or Mapper()
    out: list[BillingEvent] = []
    skips: list[Skip] = []
    for stripe_event in events:
        mapped = mapper.feed(stripe_event)
        out += mapped.events
        skips += mapped.skips
    return out, skips + list(mapper.finish())


def replayed(events: Sequence[BillingEvent], as_of: int = AT) -> ReplayOutcome:
    lines = [to_json(e) for e in events]
    outcome = replay(((str(i), line.encode()) for i, line in enumerate(lines)), at=as_of)
    assert outcome.rejects == []
    return outcome


def run(events: Iterable[dict[str, Any]], as_of: int = AT) -> tuple[ReplayOutcome, list[Skip]]:
    mapped, skips = feed(events)
    return replayed(mapped, as_of), skips


def movements(outcome: ReplayOutcome, account: str) -> list[tuple[str, int, int]]:
    """(type, amount in cents, day after T0) of an account's movements in effect."""
    return [
        (m.type, m.amount, round((m.effective_at.timestamp() - at(0)) / DAY))
        for m in outcome.accounts[account].movements
    ]


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# -- currency -----------------------------------------------------------------------------------------


def test_currency_exponents() -> None:
    assert currency.exponent("usd") == 2
    assert currency.exponent("JPY") == currency.exponent("krw") == 0
    assert currency.exponent("kwd") == currency.exponent("BHD") == 3
    # Stripe's special cases, two-decimal in the API (see processors/sources/stripe/currency.py)
    assert [currency.exponent(c) for c in ("isk", "huf", "twd", "ugx")] == [2, 2, 2, 2]
    assert len(currency.ZERO_DECIMAL) == 15 and "UGX" not in currency.ZERO_DECIMAL


# -- the basics ---------------------------------------------------------------------------------------


def test_created_subscribes_at_start_date_with_a_compact_contract_line() -> None:
    sub = Sub([(price("price_basic", 2000), 1)], version=LEGACY, start=at(3))
    created = sub.created(at(3) + 5)
    mapped = map_event(created, {})
    [contract] = mapped.events
    assert contract.event_id == f"{PREFIX}{created['id']}"
    assert (contract.type, contract.account_id, contract.subscription_id) == (
        "subscribe",
        sub.customer,
        sub.id,
    )
    assert contract.effective_at == utc(at(3))
    line = json.loads(to_json(contract))
    assert line["items"] == [{"plan_id": "price_basic", "unit_amount": "20", "quantity": 1}]
    assert "discount" not in line and "voids" not in line
    assert BillingEvent.model_validate_json(to_json(contract)) == contract
    assert [key for key, _ in mapped.writes] == [f"sub:{sub.id}"]
    outcome = replayed(mapped.events)
    assert outcome.accounts[sub.customer].mrr == {"USD": 2000}
    assert movements(outcome, sub.customer) == [("new", 2000, 3)]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_renewal_emits_nothing(version: str) -> None:
    sub = Sub([(price("price_basic", 2000), 1)], version=version)
    mapper = Mapper()
    mapper.feed(sub.created())
    renewal = sub.renew()
    assert set(renewal["data"]["previous_attributes"]) <= {
        "current_period_start",
        "current_period_end",
        "latest_invoice",
        "items",
    }
    assert mapper.feed(renewal) == Mapped()
    assert mapper.feed(sub.update(at(31), metadata={"note": "x"})) == Mapped()  # nothing read changed


def test_a_repeated_notification_is_mapped_once_and_its_events_are_stable() -> None:
    sub = Sub([(price("price_basic", 2000), 1)])
    created = sub.created()
    mapper = Mapper()
    first = mapper.feed(created)
    assert mapper.feed(copy.deepcopy(created)).skips[0].reason == "duplicate event"
    # A table-backed caller that maps it again after writing its state: the same contract content.
    again = map_event(created, mapper.state)
    assert [to_json(e) for e in again.events] == [to_json(e) for e in first.events]
    assert again.writes == ()


def test_trial_conversion() -> None:
    sub = Sub([(price("price_basic", 2000), 1)], trial_days=14, version=BASIL)
    created = sub.created()
    converted = sub.convert_trial(at(14) + 3600)  # Stripe reports it an hour after the trial ended
    trial, change = feed([created, converted])[0]
    assert (trial.type, trial.trial, trial.effective_at) == ("subscribe", True, utc(at(0)))
    assert (change.type, change.trial, change.effective_at) == ("change", False, utc(at(14)))
    outcome, _ = run([converted, created])
    assert outcome.accounts[sub.customer].mrr == {"USD": 2000}
    assert movements(outcome, sub.customer) == [("new", 2000, 14)]


def test_quantity_change() -> None:
    sub = Sub([(price("price_seat", 1250), 4)])
    events = [sub.created(), sub.set_quantity(at(10), 6), sub.set_quantity(at(20), 5)]
    outcome, skips = run(events)
    assert skips == []
    assert outcome.accounts[sub.customer].mrr == {"USD": 6250}
    assert movements(outcome, sub.customer) == [
        ("new", 5000, 0),
        ("expansion", 2500, 10),
        ("contraction", 1250, 20),
    ]


def test_price_upgrade_with_proration_invoice_items() -> None:
    basic, pro = price("price_basic", 2000), price("price_pro", 5000)
    sub = Sub([(basic, 1)], version=LEGACY)
    created = sub.created()
    upgrade = sub.set_price(at(10), pro)
    invoices = invoice_events(sub, at(10))
    outcome, skips = run([created, *invoices, upgrade])
    assert [s.reason for s in skips] == ["unsupported event type", "unsupported event type"]
    assert [s.detail for s in skips] == ["invoiceitem.created", "invoice.created"]
    assert outcome.accounts[sub.customer].mrr == {"USD": 5000}
    assert movements(outcome, sub.customer) == [("new", 2000, 0), ("expansion", 3000, 10)]
    [change] = map_event(upgrade, {}).events
    assert change.items is not None and [i.plan_id for i in change.items] == ["price_pro"]


# -- discounts ----------------------------------------------------------------------------------------


def _with_discount(sub: Sub, discount_obj: dict[str, Any]) -> None:
    sub.obj["discounts"] = [discount_obj["id"]]
    if sub.version == LEGACY:
        sub.obj["discount"] = copy.deepcopy(discount_obj)


def _catalog(version: str, coupon_obj: dict[str, Any], discount_obj: dict[str, Any]) -> list[dict[str, Any]]:
    """What state needs for a discount by API version: nothing before basil (embedded), the discount
    (coupon embedded) on basil, the coupon and the discount on clover."""
    events = []
    if version == CLOVER:
        events.append(event("coupon.created", coupon_obj, at(-1)))
    if version != LEGACY:
        events.append(event("customer.discount.created", discount_obj, at(0), version=version))
    return events


@pytest.mark.parametrize("version", VERSIONS)
def test_forever_coupon_20_percent_in_each_api_version(version: str) -> None:
    twenty = coupon(stripe_id("co"), percent_off=20.0)
    sub = Sub([(price("price_pro", 10000), 1)], version=version)
    di = discount(
        stripe_id("di"),
        twenty,
        customer=sub.customer,
        subscription=sub.id,
        start=at(0),
        end=None,
        version=version,
    )
    _with_discount(sub, di)
    created = sub.created()
    assert ("discount" in created["data"]["object"]) == (version == LEGACY)
    events = [created, sub.set_quantity(at(5), 2), *_catalog(version, twenty, di)]
    mapped, skips = feed(events)
    assert skips == []
    assert mapped[0].discount is not None and mapped[0].discount.percent_off == "20"
    outcome = replayed(mapped)
    assert outcome.accounts[sub.customer].mrr == {"USD": 16000}
    assert movements(outcome, sub.customer) == [("new", 8000, 0), ("expansion", 8000, 5)]


def _repeating(version: str, months: int = 3) -> tuple[Sub, dict[str, Any], dict[str, Any], int]:
    half = coupon(stripe_id("co"), percent_off=50.0, duration="repeating", duration_in_months=months)
    sub = Sub([(price("price_pro", 10000), 1)], version=version)
    end = at(10 + 30 * months)
    di = discount(
        stripe_id("di"),
        half,
        customer=sub.customer,
        subscription=sub.id,
        start=at(10),
        end=end,
        version=version,
    )
    return sub, half, di, end


def test_repeating_coupon_expiry() -> None:
    sub, half, di, end = _repeating(CLOVER)
    created, applied = sub.created(), sub.set_discount(at(10), di)
    events = [*_catalog(CLOVER, half, di), created, applied]
    mapped, _ = feed(events)
    expiry = [e for e in mapped if e.effective_at == utc(end)]
    assert [(e.event_id, e.type, e.discount) for e in expiry] == [
        (f"{PREFIX}{applied['id']}:discount-end@{end}", "change", None)
    ]
    during = replayed(mapped, micro(at(50)))
    assert during.accounts[sub.customer].mrr == {"USD": 5000}
    assert [m.type for m in during.accounts[sub.customer].scheduled] == ["expansion"]
    after = replayed(mapped)
    assert after.accounts[sub.customer].mrr == {"USD": 10000}
    assert movements(after, sub.customer) == [
        ("new", 10000, 0),
        ("contraction", 5000, 10),
        ("expansion", 5000, 100),
    ]


def test_a_change_during_a_repeating_discount_moves_its_expiry_terms() -> None:
    sub, half, di, end = _repeating(BASIL)
    created, applied, more = sub.created(), sub.set_discount(at(10), di), sub.set_quantity(at(50), 2)
    events = [*_catalog(BASIL, half, di), created, applied, more]
    in_order = feed(events)[0]
    voids = [e for e in in_order if e.type == "void"]
    assert [e.voids for e in voids] == [f"{PREFIX}{applied['id']}:discount-end@{end}"]
    # the other way round: the older event, arriving last, schedules nothing
    late = feed([*_catalog(BASIL, half, di), more, created, applied])[0]
    assert not [e for e in late if e.type == "void"]
    for mapped in (in_order, late):
        outcome = replayed(mapped)
        assert outcome.accounts[sub.customer].mrr == {"USD": 20000}
        assert movements(outcome, sub.customer) == [
            ("new", 10000, 0),
            ("contraction", 5000, 10),
            ("expansion", 5000, 50),
            ("expansion", 10000, 100),
        ]


def test_a_discount_removed_after_its_end_restates_the_terms_at_the_end() -> None:
    """Stripe drops an ended discount lazily (at the next invoice): that event, seen on its own (its
    predecessors' discount-end withdrawn or never scheduled), restates the terms at the end."""
    sub, _half, di, end = _repeating(LEGACY)
    created, applied = sub.created(), sub.set_discount(at(10), di)
    removed = sub.set_discount(at(115), None)
    for order in ([created, applied, removed], [removed, applied, created], [applied, removed, created]):
        mapped, _ = feed(order)
        outcome = replayed(mapped)
        assert movements(outcome, sub.customer) == [
            ("new", 10000, 0),
            ("contraction", 5000, 10),
            ("expansion", 5000, 100),
        ]
    [backward] = [e for e in map_event(removed, {}).events if e.effective_at == utc(end)]
    assert backward.event_id.startswith(f"{PREFIX}{sub.id}:discount-end@{end}:")


def test_a_deletion_after_a_discount_end_keeps_that_end() -> None:
    """The deletion has no previous state to restate an end from: it withdraws only the discount ends
    from its instant on, whichever arrives first."""
    sub, half, di, end = _repeating(BASIL)
    created, applied = sub.created(), sub.set_discount(at(10), di)
    deleted = sub.delete(end + 20 * DAY)
    for order in ([created, applied, deleted], [deleted, applied, created], [applied, deleted, created]):
        outcome, _ = run([*_catalog(BASIL, half, di), *order])
        assert movements(outcome, sub.customer) == [
            ("new", 10000, 0),
            ("contraction", 5000, 10),
            ("expansion", 5000, 100),
            ("churn", 10000, 120),
        ]
    early = Sub([(price("price_pro", 10000), 1)], version=BASIL)
    early_di = discount(
        "di_early", half, customer=early.customer, subscription=early.id, start=at(10), end=end, version=BASIL
    )
    events = [early.created(), early.set_discount(at(10), early_di), early.delete(at(50))]
    for order in (events, events[::-1]):
        outcome, _ = run([*_catalog(BASIL, half, early_di), *order])
        assert movements(outcome, early.customer) == [
            ("new", 10000, 0),
            ("contraction", 5000, 10),
            ("churn", 5000, 50),
        ]


def test_a_discount_that_ends_while_paused_stays_paused() -> None:
    """The first update after the end (the resume) restates a pause at the end; a later update's
    restatement of its own previous state (active) does not win."""
    sub, half, di, _end = _repeating(CLOVER)
    events = [
        *_catalog(CLOVER, half, di),
        sub.created(),
        sub.set_discount(at(10), di),
        sub.update(at(40), status="paused"),
        sub.update(at(110), status="active"),  # after the end on day 100
        sub.pause_collection(at(130)),
    ]
    for order in (events, events[::-1]):
        outcome, _ = run(order)
        assert movements(outcome, sub.customer) == [
            ("new", 10000, 0),
            ("contraction", 5000, 10),
            ("churn", 5000, 40),
            ("reactivation", 10000, 110),
            ("churn", 10000, 130),
        ]


def test_a_discount_dropped_at_the_instant_it_ends() -> None:
    sub, _half, di, end = _repeating(LEGACY)
    events = [
        sub.created(),
        sub.set_discount(at(10), di),
        sub.set_discount(end, None),
        sub.set_quantity(at(120), 2),
    ]
    for order in (events, events[::-1], [events[1], events[3], events[0], events[2]]):
        outcome, _ = run(order)
        assert movements(outcome, sub.customer) == [
            ("new", 10000, 0),
            ("contraction", 5000, 10),
            ("expansion", 5000, 100),
            ("expansion", 10000, 120),
        ]


def test_once_coupons_are_left_out_and_amount_off_uses_the_subscriptions_currency() -> None:
    once = coupon("co_once", percent_off=50.0, duration="once")
    five = coupon("co_five", amount_off=500, currency="eur", currency_options={"usd": 600})
    sub = Sub([(price("price_pro", 10000), 1)])
    for c in (once, five):
        sub.obj["discounts"].append(f"di_{c['id']}")
    events = [event("coupon.created", c, at(-1)) for c in (once, five)]
    events += [
        event(
            "customer.discount.created",
            discount(
                f"di_{c['id']}",
                c,
                customer=sub.customer,
                subscription=sub.id,
                start=0,
                end=None,
                version=CLOVER,
            ),
            at(0),
        )
        for c in (once, five)
    ]
    [contract], _ = feed([*events, sub.created()])
    assert contract.discount is not None and contract.discount.model_dump(exclude_none=True) == {
        "amount_off": "6"
    }
    assert replayed([contract]).accounts[sub.customer].mrr == {"USD": 9400}


@pytest.mark.parametrize(
    ("coupons", "expected"),
    [
        ([{"percent_off": 10.0}, {"amount_off": 500, "currency": "usd"}], ("10", "5")),
        ([{"amount_off": 300, "currency": "usd"}, {"amount_off": 200, "currency": "usd"}], (None, "5")),
        ([{"amount_off": 500, "currency": "usd"}, {"percent_off": 10.0}], "unsupported discount"),
        ([{"percent_off": 10.0}, {"percent_off": 5.0}], "unsupported discount"),
        ([{"percent_off": 12.34567}], "unsupported discount"),
        ([{"amount_off": 500, "currency": "eur"}], "unsupported discount"),
    ],
)
def test_several_discounts_combine_only_when_exact(
    coupons: list[dict[str, Any]], expected: tuple[str | None, str | None] | str
) -> None:
    sub = Sub([(price("price_pro", 10000), 1)], version=LEGACY)
    entries = [
        discount(
            stripe_id("di"),
            coupon(stripe_id("co"), **c),
            customer=sub.customer,
            subscription=sub.id,
            start=at(0),
            end=None,
            version=LEGACY,
        )
        for c in coupons
    ]
    sub.obj["discounts"] = entries  # expanded, as an API read would give them
    mapped = map_event(sub.created(), {})
    if isinstance(expected, str):
        assert [s.reason for s in mapped.skips] == [expected] and mapped.events == ()
        return
    [contract] = mapped.events
    assert contract.discount is not None
    assert (contract.discount.percent_off, contract.discount.amount_off) == expected


# -- cancels, pauses ------------------------------------------------------------------------------------


def test_cancel_scheduled_at_period_end_then_deleted() -> None:
    sub = Sub([(price("price_basic", 2000), 1)], version=LEGACY)
    created = sub.created()
    scheduled = sub.schedule_cancel(at(10))
    [cancel] = map_event(scheduled, {}).events
    assert (cancel.type, cancel.effective_at) == ("cancel", utc(at(30)))
    assert cancel.event_id == f"{PREFIX}{sub.id}:cancel@{at(30)}:{at(10)}"
    before_end, _ = run([created, scheduled], micro(at(20)))
    assert before_end.accounts[sub.customer].mrr == {"USD": 2000}
    assert [(m.type, m.effective_at) for m in before_end.scheduled] == [("churn", utc(at(30)))]
    deleted = sub.delete(at(30))
    outcome, _ = run([deleted, scheduled, created])
    assert outcome.accounts[sub.customer].mrr == {"USD": 0}
    assert movements(outcome, sub.customer) == [("new", 2000, 0), ("churn", 2000, 30)]


def test_cancel_scheduled_then_withdrawn_then_set_again_to_the_same_instant() -> None:
    sub = Sub([(price("price_basic", 2000), 1)], version=CLOVER)
    created, first = sub.created(), sub.schedule_cancel(at(10))
    withdrawn = sub.withdraw_cancel(at(12))
    [void] = map_event(withdrawn, {}).events
    [cancel] = map_event(first, {}).events
    assert (void.type, void.voids, void.event_id) == (
        "void",
        cancel.event_id,
        f"{PREFIX}{withdrawn['id']}:uncancel",
    )
    for order in ([created, first, withdrawn], [withdrawn, first, created]):
        outcome, _ = run(order)
        assert outcome.accounts[sub.customer].mrr == {"USD": 2000}
        assert movements(outcome, sub.customer) == [("new", 2000, 0)]
    again = sub.schedule_cancel(at(15))  # the same instant, a new request
    [cancel_again] = map_event(again, {}).events
    assert cancel_again.effective_at == cancel.effective_at and cancel_again.event_id != cancel.event_id
    outcome, _ = run([again, withdrawn, created, first])
    assert movements(outcome, sub.customer) == [("new", 2000, 0), ("churn", 2000, 30)]


def test_a_moved_cancel_voids_the_old_instant() -> None:
    sub = Sub([(price("price_basic", 2000), 1)])
    created, first = sub.created(), sub.schedule_cancel(at(10), at_period_end=False, cancel_at=at(45))
    moved = sub.update(at(12), cancel_at=at(60), canceled_at=at(12))
    kinds = sorted((e.type, e.effective_at) for e in map_event(moved, {}).events)
    assert kinds == [("cancel", utc(at(60))), ("void", utc(at(12)))]
    outcome, _ = run([moved, created, first])
    assert movements(outcome, sub.customer) == [("new", 2000, 0), ("churn", 2000, 60)]


def test_immediate_delete_cancels_at_ended_at() -> None:
    sub = Sub([(price("price_basic", 2000), 1)], version=BASIL)
    created = sub.created()
    sub.obj["canceled_at"] = at(14)  # requested earlier than it ended
    deleted = sub.delete(at(15), ended_at=at(15))
    [cancel] = map_event(deleted, {}).events
    assert (cancel.type, cancel.effective_at, cancel.event_id) == (
        "cancel",
        utc(at(15)),
        f"{PREFIX}{deleted['id']}",
    )
    outcome, _ = run([created, deleted])
    assert movements(outcome, sub.customer) == [("new", 2000, 0), ("churn", 2000, 15)]


def test_pause_collection_and_resume() -> None:
    sub = Sub([(price("price_basic", 2000), 1)])
    events = [sub.created(), sub.pause_collection(at(10)), sub.resume_collection(at(20))]
    mapped, _ = feed(events)
    assert [(e.type, e.items is not None) for e in mapped] == [
        ("subscribe", True),
        ("pause", False),
        ("resume", True),
    ]
    outcome = replayed(mapped)
    assert outcome.accounts[sub.customer].mrr == {"USD": 2000}
    assert movements(outcome, sub.customer) == [
        ("new", 2000, 0),
        ("churn", 2000, 10),
        ("reactivation", 2000, 20),
    ]


def test_status_paused_and_resumed_with_their_own_events() -> None:
    sub = Sub([(price("price_basic", 2000), 1)], version=BASIL)
    created = sub.created()
    paused = sub.update(at(10), status="paused")
    paused_event = sub.status_event("customer.subscription.paused", at(10))
    resumed = sub.update(at(20), status="active")
    resumed_event = sub.status_event("customer.subscription.resumed", at(20))
    for events in (
        [created, paused, paused_event, resumed, resumed_event],
        [created, paused_event, resumed_event],
    ):
        outcome, _ = run(events)
        assert movements(outcome, sub.customer) == [
            ("new", 2000, 0),
            ("churn", 2000, 10),
            ("reactivation", 2000, 20),
        ]


def test_unpaid_is_a_pause_and_past_due_still_counts() -> None:
    sub = Sub([(price("price_basic", 2000), 1)])
    past_due = sub.update(at(31), status="past_due")
    assert map_event(past_due, {}) == Mapped()
    events = [
        sub.created(),
        past_due,
        sub.update(at(45), status="unpaid"),
        sub.update(at(60), status="active"),
    ]
    mapped, _ = feed(events)
    assert [e.type for e in mapped] == ["subscribe", "pause", "resume"]
    outcome = replayed(mapped)
    assert movements(outcome, sub.customer) == [
        ("new", 2000, 0),
        ("churn", 2000, 45),
        ("reactivation", 2000, 60),
    ]


def test_incomplete_until_it_becomes_active() -> None:
    sub = Sub([(price("price_basic", 2000), 1)], status="incomplete")
    created = sub.created()
    assert [s.reason for s in map_event(created, {}).skips] == ["incomplete subscription"]
    active = sub.update(at(0) + 3600, status="active")
    outcome, _ = run([active, created])
    [contract] = map_event(active, {}).events
    assert (contract.type, contract.effective_at) == ("subscribe", utc(at(0) + 3600))
    assert outcome.accounts[sub.customer].mrr == {"USD": 2000}
    expired = Sub([(price("price_basic", 2000), 1)], status="incomplete")
    expired.created()
    assert map_event(expired.update(at(1), status="incomplete_expired"), {}).events == ()


# -- prices -------------------------------------------------------------------------------------------


def test_jpy_and_kwd_prices() -> None:
    yen = Sub([(price("price_jp", 1500, "jpy"), 2)])
    dinar = Sub([(price("price_kw", 12345, "kwd"), 1)])
    [jp], _ = feed([yen.created()])
    [kw], _ = feed([dinar.created()])
    assert jp.items is not None and kw.items is not None
    assert (jp.currency, jp.items[0].unit_amount) == ("JPY", "1500")
    assert (kw.currency, kw.items[0].unit_amount) == ("KWD", "12.345")
    outcome = replayed([jp, kw])
    assert outcome.accounts[yen.customer].mrr == {"JPY": 300000}  # cents of a yen, as the engine counts
    assert outcome.accounts[dinar.customer].mrr == {"KWD": 1234}  # 1234.5 cents, half-even once


def test_sub_cent_decimal_amounts_round_half_even_to_six_places() -> None:
    sub = Sub([(price("price_tiny", "0.12345"), 1), (price("price_tiny2", "0.12355"), 1)])
    [contract] = map_event(sub.created(), {}).events
    assert contract.items is not None
    assert [i.unit_amount for i in contract.items] == ["0.001234", "0.001236"]  # ties to even


def test_a_metered_item_beside_a_licensed_one() -> None:
    metered = price("price_calls", 2, usage_type="metered")
    sub = Sub([(price("price_basic", 1000), 1), (metered, None)])
    mapped = map_event(sub.created(), {})
    [contract] = mapped.events
    assert contract.items is not None and [i.plan_id for i in contract.items] == ["price_basic"]
    assert [s.reason for s in mapped.skips] == ["metered price"]
    assert replayed([contract]).accounts[sub.customer].mrr == {"USD": 1000}
    only = Sub([(metered, None)])
    mapped = map_event(only.created(), {})
    assert mapped.events == () and [s.reason for s in mapped.skips] == ["metered price"]


_TIERS = [tier(5, 1000), tier(10, 800, 500), tier(None, 500)]


@pytest.mark.parametrize(
    ("mode", "quantity", "cents"), [("graduated", 12, 10500), ("volume", 12, 6000), ("volume", 7, 6100)]
)
def test_a_tiered_price(mode: str, quantity: int, cents: int) -> None:
    expanded = price("price_tiered", None, tiers=_TIERS, tiers_mode=mode)
    embedded = Sub([(expanded, quantity)])
    [contract] = map_event(embedded.created(), {}).events
    assert contract.items is not None and [(i.quantity) for i in contract.items] == [1]
    assert replayed([contract]).accounts[embedded.customer].mrr == {"USD": cents}
    # As in real events: tiers not in the subscription's price, so it waits for a price.* event with them.
    sub = Sub([(price("price_tiered", None, tiers=_TIERS, tiers_mode=mode, include_tiers=False), quantity)])
    created = sub.created()
    assert reads(created) == (f"sub:{sub.id}", "price:price_tiered")
    assert map_event(created, {}).waits_for == "price:price_tiered"
    mapper = Mapper()
    assert mapper.feed(created).waits_for == "price:price_tiered"
    released = mapper.feed(event("price.created", expanded, at(-1)))
    assert [k for k, _ in released.writes] == ["price:price_tiered", f"sub:{sub.id}"]
    assert replayed(released.events).accounts[sub.customer].mrr == {"USD": cents}


def test_a_price_event_without_tiers_is_skipped() -> None:
    bare = price("price_tiered", None, tiers=_TIERS, tiers_mode="graduated", include_tiers=False)
    assert [s.reason for s in map_event(event("price.created", bare, at(0)), {}).skips] == [
        "unsupported price"
    ]


@pytest.mark.parametrize(("rounding", "cents"), [("up", 3000), ("down", 2000)])
def test_transform_quantity(rounding: str, cents: int) -> None:
    packs = price("price_pack", 1000, transform_quantity={"divide_by": 10, "round": rounding})
    sub = Sub([(packs, 25)])
    [contract] = map_event(sub.created(), {}).events
    assert contract.items is not None and contract.items[0].quantity == 1
    assert replayed([contract]).accounts[sub.customer].mrr == {"USD": cents}


@pytest.mark.parametrize(
    ("lines", "count", "cents"),
    [
        ([("month", 1, 1000), ("year", 1, 12000)], 1, 2000),
        ([("week", 1, 700), ("month", 1, 1000)], 1, 4033),
        ([("month", 3, 3000), ("month", 1, 1000)], 1, 2000),
        ([("day", 1095, 100000)], 3, 2778),  # 1095 days > the contract's 1000: restated as 3 years
    ],
)
def test_mixed_intervals(lines: list[tuple[str, int, int]], count: int, cents: int) -> None:
    sub = Sub(
        [
            (price(f"price_{i}", amount, "usd", interval, n), 1)
            for i, (interval, n, amount) in enumerate(lines)
        ]
    )
    [contract] = map_event(sub.created(), {}).events
    assert (contract.interval, contract.interval_count) == ("year", count)
    assert replayed([contract]).accounts[sub.customer].mrr == {"USD": cents}


def test_mixed_intervals_that_do_not_restate_exactly_are_skipped() -> None:
    sub = Sub(
        [
            (price("price_a", "0.0001", "usd", "day", 997), 1),
            (price("price_b", "0.0001", "usd", "week", 151), 1),
        ]
    )
    assert [s.reason for s in map_event(sub.created(), {}).skips] == ["unsupported intervals"]
    five = coupon("co_five", amount_off=500, currency="usd")
    mixed = Sub([(price("price_m", 1000), 1), (price("price_y", 12000, interval="year"), 1)], version=LEGACY)
    _with_discount(
        mixed,
        discount(
            "di_five", five, customer=mixed.customer, subscription=mixed.id, start=0, end=None, version=LEGACY
        ),
    )
    assert [s.reason for s in map_event(mixed.created(), {}).skips] == ["unsupported discount"]


def test_mrr_above_the_contract_cap_is_skipped() -> None:
    sub = Sub([(price("price_whale", 2_000_000_000), 1)])
    assert [s.reason for s in map_event(sub.created(), {}).skips] == ["mrr above contract cap"]


# -- waiting, reads, state ----------------------------------------------------------------------------


def test_clover_waits_for_the_discount_then_its_coupon() -> None:
    twenty = coupon("co_twenty", percent_off=20.0)
    sub = Sub([(price("price_pro", 10000), 1)], version=CLOVER)
    di = discount(
        "di_1", twenty, customer=sub.customer, subscription=sub.id, start=at(0), end=None, version=CLOVER
    )
    _with_discount(sub, di)
    created = sub.created()
    assert reads(created) == (f"sub:{sub.id}", "discount:di_1")
    discount_event = event("customer.discount.created", di, at(0))
    assert reads(discount_event) == ("coupon:co_twenty",)
    mapper = Mapper()
    assert mapper.feed(created) == Mapped(waits_for="discount:di_1")
    assert mapper.feed(discount_event) == Mapped(waits_for="coupon:co_twenty")
    released = mapper.feed(event("coupon.created", twenty, at(-1)))
    assert [k for k, _ in released.writes] == ["coupon:co_twenty", "discount:di_1", f"sub:{sub.id}"]
    assert [e.type for e in released.events] == ["subscribe"]
    assert mapper.finish() == ()


def test_finish_reports_what_never_came() -> None:
    sub = Sub([(price("price_pro", 10000), 1)], version=BASIL)
    sub.obj["discounts"] = ["di_gone"]
    created = sub.created()
    mapper = Mapper()
    mapper.feed(created)
    assert mapper.finish() == (Skip(created["id"], "unknown discount", "waited for discount:di_gone"),)


class _Recording(dict[str, str]):
    """State that notes every key the mapping looks up."""

    def __init__(self, items: dict[str, str]) -> None:
        super().__init__(items)
        self.looked_up: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.looked_up.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.looked_up.add(key)
        return super().__getitem__(key)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), version=st.sampled_from(VERSIONS))
def test_reads_names_every_key_map_event_looks_up(seed: int, version: str) -> None:
    """A table-backed caller fetches just reads(event): a key looked up beyond them would look missing."""
    catalog, life = random_history(random.Random(seed), version)
    legacy_plan = Sub([(price("price_t", None, tiers=_TIERS, tiers_mode="volume", include_tiers=False), 2)])
    plan_item = legacy_plan.obj["items"]["data"][0]
    plan_item["plan"] = {**plan_item.pop("price"), "object": "plan", "interval": "month", "interval_count": 1}
    mapper = Mapper()
    for stripe_event in [*catalog, *life, legacy_plan.created()]:
        state = _Recording(mapper.state)
        map_event(stripe_event, state)
        assert state.looked_up <= set(reads(stripe_event))
        mapper.feed(stripe_event)


def test_state_stays_bounded_whatever_the_subscriptions_age() -> None:
    half = coupon("co_half", percent_off=50.0, duration="repeating", duration_in_months=120)
    sub = Sub([(price("price_seat", 1000), 1)], version=LEGACY)
    mapper = Mapper()
    mapper.feed(sub.created())
    sizes = []
    for month in range(1, 241):
        if month % 4 == 0:
            end = at(30 * month + 3000)
            di = discount(
                stripe_id("di"),
                half,
                customer=sub.customer,
                subscription=sub.id,
                start=0,
                end=end,
                version=LEGACY,
            )
            mapper.feed(sub.set_discount(at(30 * month - 1), di))
        mapper.feed(sub.renew())
        mapper.feed(sub.set_quantity(at(30 * month + 1), 1 + month % 7))
        sizes.append(len(mapper.state[f"sub:{sub.id}"]))
    assert max(sizes) < 64 * 1024
    assert max(sizes[200:]) <= max(sizes[:40]) + 10  # no growth with age (digits of a bigger quantity aside)


def test_catalog_records_never_depend_on_which_event_said_it() -> None:
    twenty = coupon("co_twenty", percent_off=20.0)
    renamed = dict(twenty, name="Twenty", metadata={"a": "b"}, times_redeemed=9)
    writes = [
        map_event(event(t, c, at(0)), {}).writes
        for t, c in (("coupon.created", twenty), ("coupon.updated", renamed), ("coupon.deleted", renamed))
    ]
    assert writes[0] == writes[1] == writes[2]


# -- hostile input: bounded state, valid UTF-8 ----------------------------------------------------------

_KB = 1024
_MAX_INT = 10**15 - 1  # the largest integer the mapping keeps
_EMOJI = "\U0001f600"  # 4 bytes in UTF-8
_CODES = [a + b + c for a in "ABCDEFGHIJ" for b in "ABCDEFGHIJ" for c in "AB"]  # 200 currencies


def _quoted(n: int, length: int = 255) -> str:
    """The n-th id of `length` characters that JSON doubles (`"` and `\\` only): the largest ids kept."""
    return "".join('"' if (n >> bit) & 1 else "\\" for bit in range(length))


def _sizes(mapped: Mapped) -> list[int]:
    return [len(text.encode()) for _, text in mapped.writes if text is not None]


def _skipped(mapped: Mapped) -> list[str]:
    """The reasons of an event skipped whole: no events, no writes, nothing waited for."""
    assert mapped.events == () and mapped.writes == () and mapped.waits_for is None
    for skip in mapped.skips:
        skip.stripe_event_id.encode()
        skip.detail.encode()
    return [s.reason for s in mapped.skips]


def _largest_coupon(ident: Any) -> dict[str, Any]:
    big = coupon(
        ident(200),
        amount_off=_MAX_INT,
        currency="usd",
        duration="repeating",
        duration_in_months=1,
        currency_options=dict.fromkeys(_CODES, _MAX_INT),
    )
    big["applies_to"] = {"products": [ident(n) for n in range(100)]}
    return big


def _largest_sub(event_id: str) -> int:
    """sub:{id} after a deletion and then a creation that schedules 20 discount ends, with this event id."""
    sub = Sub([(price("price_a", 1000), 1)], version=LEGACY, sub_id="sub_1", customer="cus_1")
    sub.obj["discounts"] = [
        discount(
            f"di_{n}",
            coupon(f"co_{n}", amount_off=1, currency="usd", duration="repeating", duration_in_months=3),
            customer="cus_1",
            subscription="sub_1",
            start=0,
            end=at(100 + n),
            version=LEGACY,
        )
        for n in range(20)
    ]
    created = dict(sub.created(-_MAX_INT), id=event_id)
    mapper = Mapper()
    mapper.feed(sub.delete(at(500)))
    assert mapper.feed(created).skips == ()
    stored = json.loads(mapper.state["sub:sub_1"])
    assert set(stored) == {"hw", "fwd", "ended"} and len(stored["fwd"]) == 20
    return len(mapper.state["sub:sub_1"].encode())


def test_the_largest_state_values_are_within_the_documented_bounds() -> None:
    """The module docstring's bounds per key, from the largest values the caps allow: ids of 255 bytes that
    JSON doubles, 15-digit integers, 32-character decimals, every list at its cap."""
    sizes: dict[str, int] = {}
    big = _largest_coupon(_quoted)
    sizes["coupon"] = max(_sizes(map_event(event("coupon.created", big, at(0)), {})))
    di = discount(
        _quoted(300), big, customer="cus_1", subscription="sub_1", start=0, end=-_MAX_INT, version=LEGACY
    )
    sizes["discount"] = max(_sizes(map_event(event("customer.discount.created", di, at(0)), {})))
    decimal = "0.00" + "7" * 28  # 28 significant digits, as many as the mapping keeps
    tiers = [
        {"up_to": _MAX_INT - n, "unit_amount_decimal": decimal, "flat_amount_decimal": decimal}
        for n in range(100)
    ]
    tiered = price(
        _quoted(1), None, interval_count=_MAX_INT, tiers=tiers, tiers_mode="graduated", product=_quoted(2)
    )
    sizes["price"] = max(_sizes(map_event(event("price.created", tiered, at(0)), {})))
    # the hw id JSON doubles, or discount-end ids of 128 characters with the most bytes
    sizes["sub"] = max(_largest_sub(i) for i in (_quoted(3), _EMOJI * 53 + '"' * 43, "e" * 97))
    bounds = {"coupon": 56 * _KB, "discount": 56 * _KB, "price": 10 * _KB, "sub": 8 * _KB}
    assert all(sizes[key] < bounds[key] for key in bounds), sizes
    # plain ids take about half
    plain = _largest_coupon(lambda n: f"{n:03d}".rjust(255, "a"))
    assert max(_sizes(map_event(event("coupon.created", plain, at(0)), {}))) < 31 * _KB


@pytest.mark.parametrize(
    ("products", "kept"),
    [
        ([f"prod_{n}" + _EMOJI * 2400 for n in range(100)], None),  # 961 KB of emoji: ids too long
        (["p" * 256], None),
        ([_EMOJI * 64], None),  # 64 characters, 256 bytes
        ([_EMOJI * 63, "prod_b"], ["prod_b", _EMOJI * 63]),
        ([f"prod_{n}" + _EMOJI * 2400 for n in range(101)], []),  # over the cap: restricted, none kept
    ],
)
def test_a_huge_coupon_is_kept_small_or_skipped(products: list[str], kept: list[str] | None) -> None:
    restricted = coupon("co_huge", percent_off=10.0)
    restricted["applies_to"] = {"products": products}
    mapped = map_event(event("coupon.created", restricted, at(0)), {})
    if kept is None:
        assert _skipped(mapped) == ["malformed event"]
        return
    [(key, value)] = mapped.writes
    assert key == "coupon:co_huge" and value is not None and len(value.encode()) < 2 * _KB
    assert json.loads(value)["applies_to"] == (kept or None)
    assert _EMOJI in value or not kept  # written as UTF-8, not \\u escapes


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"amount_off": 10**15}, "amount out of range"),
        ({"currency_options": {"eur": {"amount_off": 10**4000}}}, "amount out of range"),
        ({"currency_options": {"eur": {"amount_off": 10**15}}}, "amount out of range"),
        (
            {
                "currency_options": {
                    f"{a}{b}{c}": {"amount_off": _MAX_INT}
                    for a in "abc"
                    for b in "abc"
                    for c in "abcdefghijklmnopqrstuvwxyz"
                }
            },
            None,
        ),
    ],
)
def test_huge_coupon_amounts_are_skipped(changes: dict[str, Any], reason: str | None) -> None:
    five = dict(coupon("co_five", amount_off=500, currency="usd"), **changes)
    mapped = map_event(event("coupon.created", five, at(0)), {})
    if reason is not None:
        assert _skipped(mapped) == [reason]
        return
    [(_, value)] = mapped.writes
    assert value is not None and len(value.encode()) < 5 * _KB
    assert len(json.loads(value)["currency_options"]) == 200  # the cap


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"tiers": [tier(10**15, 100), tier(None, 50)]}, "amount out of range"),
        ({"tiers": [tier(10**4000, 100), tier(None, 50)]}, "amount out of range"),
        ({"tiers": [tier(5, 10**40), tier(None, 50)]}, "malformed event"),  # beyond 30 digits
        ({"tiers": [tier(n + 1, 100) for n in range(100)] + [tier(None, 50)]}, "unsupported price"),
        ({"tiers": [tier(_MAX_INT - n, 10**29, 10**29) for n in range(100)]}, None),
        ({"product": "prod_" + _EMOJI * 63}, "malformed event"),
        (
            {"recurring": {"interval": "day", "interval_count": 10**15, "usage_type": "licensed"}},
            "amount out of range",
        ),
    ],
)
def test_huge_prices_are_capped_or_skipped(changes: dict[str, Any], reason: str | None) -> None:
    tiered = dict(price("price_t", None, tiers=_TIERS, tiers_mode="graduated"), **changes)
    mapped = map_event(event("price.created", tiered, at(0)), {})
    if reason is not None:
        assert _skipped(mapped) == [reason]
        return
    [size] = _sizes(mapped)
    assert size < 10 * _KB


def test_huge_transform_quantity_end_and_created_are_skipped() -> None:
    packs = price("price_pack", 1000, transform_quantity={"divide_by": 10**15, "round": "up"})
    assert _skipped(map_event(event("price.created", packs, at(0)), {})) == ["amount out of range"]
    late = discount(
        "di_1",
        coupon("co_1", percent_off=5.0),
        customer="c",
        subscription="s",
        start=0,
        end=10**15,
        version=LEGACY,
    )
    assert _skipped(map_event(event("customer.discount.created", late, at(0)), {})) == ["malformed event"]
    sub = Sub([(price("price_basic", 2000), 1)])
    assert _skipped(map_event(sub.created(10**15), {})) == ["malformed event"]


def test_an_oversized_record_from_an_earlier_version_is_a_skip_not_a_write() -> None:
    """Earlier versions kept product ids of any length, \\u-escaped: a discount embedding such a coupon
    would be over 64 KB, so the event is skipped whole (the final guard)."""
    products = [f"prod_{n}" + _EMOJI * 2400 for n in range(100)]
    old = {"id": "co_old", "duration": "forever", "percent_off": "10", "restricted": True}
    state = {"coupon:co_old": json.dumps(dict(old, applies_to=products))}  # 2.88 MB
    di = discount(
        "di_1",
        coupon("co_old", percent_off=10.0),
        customer="c",
        subscription="s",
        start=0,
        end=None,
        version=CLOVER,
    )
    mapped = map_event(event("customer.discount.created", di, at(0)), state)
    assert _skipped(mapped) == ["state too large"]
    assert "state too large" in SKIP_REASONS


def test_sub_state_keeps_only_what_is_read() -> None:
    """ "kind" and "terms" were written and never read: no longer written, and old values are harmless."""
    sub = Sub([(price("price_basic", 2000), 1)])
    created = sub.created()
    fresh = map_event(created, {})
    old: dict[str, Any] = {"hw": None, "kind": "paused", "terms": {"items": []}, "fwd": [], "ended": None}
    again = map_event(created, {f"sub:{sub.id}": json.dumps(old)})
    assert again == fresh
    [(_, value)] = fresh.writes
    assert value is not None and set(json.loads(value)) == {"hw", "fwd", "ended"}


def test_a_product_restriction_applies_only_when_applies_to_is_present() -> None:
    """Webhook events never include `applies_to` (expandable): the coupon counts as unrestricted there.
    A coupon retrieved with it expanded (the stage's lookup) has its restriction applied."""
    items: list[tuple[dict[str, Any], int | None]] = [
        (price("price_a", 1000, product="prod_a"), 1),
        (price("price_b", 3000, product="prod_b"), 1),
    ]
    as_sent = coupon("co_a", percent_off=50.0)  # restricted to prod_a in Stripe: the event does not say so
    for applies_to, expected in [
        (None, "50"),
        ({"products": ["prod_a"]}, "unsupported discount"),
        ({"products": ["prod_b", "prod_a"]}, "50"),
    ]:
        sub = Sub(items, version=CLOVER)
        sub.obj["discounts"] = ["di_1"]
        known = as_sent if applies_to is None else dict(as_sent, applies_to=applies_to)
        di = discount(
            "di_1", known, customer=sub.customer, subscription=sub.id, start=0, end=None, version=CLOVER
        )
        catalog = [event("coupon.created", known, at(-1)), event("customer.discount.created", di, at(0))]
        mapped, skips = feed([*catalog, sub.created()])
        if expected == "unsupported discount":
            assert mapped == [] and [s.reason for s in skips] == [expected]
        else:
            [contract] = mapped
            assert contract.discount is not None and contract.discount.percent_off == expected


_LONE = "\ud800"


def _with_lone_surrogate(position: str) -> dict[str, Any]:
    """A Stripe event with a lone surrogate (not UTF-8) in one id, or elsewhere."""
    if position == "coupon":
        return event("coupon.created", coupon(f"co_{_LONE}", percent_off=10.0), at(0))
    if position == "applies_to product":
        restricted = dict(coupon("co_1", percent_off=10.0), applies_to={"products": [f"prod_{_LONE}"]})
        return event("coupon.created", restricted, at(0))
    if position in ("clover coupon", "discount event"):
        di_id = f"di_{_LONE}" if position == "discount event" else "di_1"
        co_id = f"co_{_LONE}" if position == "clover coupon" else "co_1"
        di = discount(
            di_id,
            coupon(co_id, percent_off=10.0),
            customer="c",
            subscription="s",
            start=0,
            end=None,
            version=CLOVER,
        )
        return event("customer.discount.created", di, at(0))
    plain = price(f"price_{_LONE}" if position == "price" else "price_a", 1000)
    if position == "product":
        plain["product"] = f"prod_{_LONE}"
    sub = Sub(
        [(plain, 1)],
        version=LEGACY,
        sub_id=f"sub_{_LONE}" if position == "subscription" else None,
        customer=f"cus_{_LONE}" if position == "customer" else None,
    )
    if position == "embedded coupon":
        _with_discount(
            sub,
            discount(
                "di_1",
                coupon(f"co_{_LONE}", percent_off=5.0),
                customer=sub.customer,
                subscription=sub.id,
                start=0,
                end=None,
                version=LEGACY,
            ),
        )
    if position == "discount":
        sub.obj["discounts"] = [f"di_{_LONE}"]
    if position == "status":
        sub.obj["status"] = _LONE
    if position == "metadata":
        sub.obj["metadata"] = {_LONE: _LONE}
    created = sub.created()
    if position == "event":
        created["id"] = f"evt_{_LONE}"
    if position == "type":
        created["type"] = _LONE
    return created


@pytest.mark.parametrize(
    "position",
    [
        "event",
        "subscription",
        "customer",
        "price",
        "product",
        "coupon",
        "applies_to product",
        "embedded coupon",
        "clover coupon",
        "discount",
        "discount event",
        "status",
        "type",
        "metadata",
    ],
)
def test_text_that_is_not_utf8_never_reaches_an_output_or_a_state_key(position: str) -> None:
    stripe_event = _with_lone_surrogate(position)
    for key in reads(stripe_event):
        key.encode()
    mapped = map_event(stripe_event, {})
    fed = Mapper().feed(stripe_event)
    if position == "metadata":  # not read: mapped as usual
        assert [e.type for e in mapped.events] == ["subscribe"] and fed.events == mapped.events
    else:
        reason = "unsupported event type" if position == "type" else "malformed event"
        assert _skipped(mapped) == _skipped(fed) == [reason]
    for contract in mapped.events:
        to_json(contract).encode()
    for key, text in mapped.writes:
        key.encode()
        (text or "").encode()
    if position == "event":
        assert mapped.skips[0].stripe_event_id == ""


# -- never raises -------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def _check(mapped: Mapped) -> None:
    assert isinstance(mapped, Mapped)
    assert all(s.reason in SKIP_REASONS for s in mapped.skips)
    if mapped.waits_for is not None:
        assert not (mapped.events or mapped.skips or mapped.writes)


@settings(max_examples=200, deadline=None)
@given(value=_json, kind=st.sampled_from(sorted(HANDLED)))
def test_any_json_is_a_skip_never_an_exception(value: Any, kind: str) -> None:
    _check(map_event(value, {}))
    _check(map_event({"id": "evt_x", "type": kind, "created": 1, "data": {"object": value}}, {}))
    assert isinstance(reads(value), tuple)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            out += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += _paths(inner, (*prefix, index))
    return out


def _sample_events() -> list[dict[str, Any]]:
    half = coupon("co_half", percent_off=50.0, duration="repeating", duration_in_months=3)
    tiered = price("price_t", None, tiers=_TIERS, tiers_mode="graduated")
    sub = Sub([(price("price_a", 1000), 2), (tiered, 3)], version=LEGACY, trial_days=7)
    di = discount(
        "di_h", half, customer=sub.customer, subscription=sub.id, start=at(1), end=at(90), version=LEGACY
    )
    return [
        sub.created(),
        sub.convert_trial(at(8)),
        sub.set_discount(at(9), di),
        sub.schedule_cancel(at(12)),
        event("coupon.created", half, at(0)),
        event("customer.discount.created", di, at(0)),
        event("price.created", tiered, at(0)),
    ]


_SAMPLES = _sample_events()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), replacement=_json)
def test_damaged_stripe_events_are_skips_never_exceptions(data: st.DataObject, replacement: Any) -> None:
    damaged = copy.deepcopy(data.draw(st.sampled_from(_SAMPLES)))
    path = data.draw(st.sampled_from(_paths(damaged)))
    parent: Any = damaged
    for step in path[:-1]:
        parent = parent[step]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement
    state = {"sub:x": "not json", "discount:di_h": "[1]"}
    _check(map_event(damaged, state))
    assert isinstance(reads(damaged), tuple)


# -- order independence -------------------------------------------------------------------------------


def _scenario(version: str) -> tuple[list[dict[str, Any]], str]:
    """One subscription's life and the catalog it reads, in Stripe's order."""
    quarter = coupon("co_quarter", percent_off=25.0, duration="repeating", duration_in_months=3)
    seat, seat_pro = price("price_seat", 2000), price("price_seat_pro", 3000)
    tiers = [tier(5, 1000), tier(10, 800, 500), tier(None, 500)]
    tiered = price("price_usage_tiers", None, tiers=tiers, tiers_mode="graduated", include_tiers=False)
    sub = Sub([(seat, 2), (tiered, 12)], version=version, trial_days=14)
    di = discount(
        "di_quarter",
        quarter,
        customer=sub.customer,
        subscription=sub.id,
        start=at(20),
        end=at(110),
        version=version,
    )
    catalog = [
        event("coupon.created", quarter, at(-5)),
        event("price.created", price("price_usage_tiers", None, tiers=tiers, tiers_mode="graduated"), at(-5)),
        event("customer.discount.created", di, at(20), version=version),
    ]
    life = [
        sub.created(),
        sub.convert_trial(at(14.5)),
        sub.set_discount(at(20), di),
        sub.renew(),  # day 44
        sub.set_quantity(at(60), 5),
        sub.renew(),  # day 74
        sub.pause_collection(at(90)),
        sub.resume_collection(at(95)),
        sub.set_price(at(100), seat_pro),
        sub.renew(),  # day 104
        sub.set_discount(at(115), None),  # Stripe drops the ended discount
        sub.schedule_cancel(at(120)),  # at the period end, day 134
        sub.withdraw_cancel(at(125)),
        sub.schedule_cancel(at(128)),
        sub.delete(at(134)),
    ]
    return catalog[:2] + life[:2] + [catalog[2]] + life[2:], sub.customer


_SCENARIOS = {version: _scenario(version) for version in (LEGACY, CLOVER)}
_AS_OF = (micro(at(50)), micro(at(105)), AT)


def _summary(events: Sequence[dict[str, Any]]) -> list[Any]:
    mapped, _ = feed(events)
    out: list[Any] = []
    for as_of in _AS_OF:
        outcome = replayed(mapped, as_of)
        out.append(
            (
                outcome.months,
                {a: o.mrr for a, o in outcome.accounts.items()},
                {a: o.movements for a, o in outcome.accounts.items()},
                sorted(outcome.scheduled),
            )
        )
    return out


_EXPECTED: dict[tuple[str, int], list[Any]] = {}


def test_the_scenario_in_order() -> None:
    events, customer = _SCENARIOS[CLOVER]
    mapped, skips = feed(events)
    assert skips == []
    outcome = replayed(mapped, micro(at(133)))
    # seats 5 x 30.00 + tiers for 12 (105.00), the 25% ended on day 110
    assert outcome.accounts[customer].mrr == {"USD": 25500}
    assert movements(outcome, customer) == [
        ("new", 14500, 14),  # 2 x 20.00 + 105.00 after a 14-day trial
        ("contraction", 3625, 20),  # 25% off
        ("expansion", 4500, 60),  # 3 more seats, discounted
        ("churn", 15375, 90),
        ("reactivation", 15375, 95),
        ("expansion", 3750, 100),  # seats at 30.00, discounted
        ("expansion", 6375, 110),  # the discount ends
    ]
    assert [(m.type, m.amount) for m in outcome.scheduled] == [("churn", 25500)]
    assert _summary(events) == _summary(list(reversed(events)))


@pytest.mark.parametrize("version", [LEGACY, CLOVER])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_order_and_duplication_replays_the_same(version: str, data: st.DataObject) -> None:
    events, _ = _SCENARIOS[version]
    count = data.draw(st.integers(min_value=1, max_value=len(events)), label="first n events")
    known = events[:count]
    expected = _EXPECTED.get((version, count))
    if expected is None:
        expected = _EXPECTED[(version, count)] = _summary(known)
    shuffled = list(data.draw(st.permutations(known), label="order"))
    for copy_of in data.draw(st.lists(st.sampled_from(known), max_size=4), label="duplicates"):
        shuffled.insert(data.draw(st.integers(0, len(shuffled))), copy.deepcopy(copy_of))
    assert _summary(shuffled) == expected


def _stripe_mrr(catalog: Sequence[dict[str, Any]], life: Sequence[dict[str, Any]], instant: int) -> int:
    """An independent reading of what the subscription was billing a month at `instant` (cents), from the
    Stripe objects alone: the object of the last event effective by then, its discounts while not ended
    (monthly prices only, as random_history makes them)."""
    objects = {e["data"]["object"]["id"]: e["data"]["object"] for e in catalog}
    timeline = []
    for e in life:
        obj, previous = e["data"]["object"], e["data"].get("previous_attributes") or {}
        effective = e["created"]
        if e["type"] == "customer.subscription.created":
            effective = obj["start_date"]
        elif e["type"] == "customer.subscription.deleted":
            effective = obj["ended_at"]
        elif previous.get("status") == "trialing" and obj["status"] == "active":
            effective = min(obj["trial_end"], e["created"])
        timeline.append((effective, obj))
    current = None
    for effective, obj in sorted(timeline, key=lambda pair: pair[0]):
        if effective <= instant:
            current = obj
    if current is None or current["status"] not in ("active", "past_due") or current["pause_collection"]:
        return 0
    if current["cancel_at"] is not None and current["cancel_at"] <= instant:
        return 0
    gross = sum(
        (Fraction(i["price"]["unit_amount"], 100) * i["quantity"] for i in current["items"]["data"]),
        Fraction(0),
    )
    percent, amount = Fraction(0), Fraction(0)
    for entry in current["discounts"]:
        found = objects[entry]
        coupon_obj = found.get("coupon") or objects[found["source"]["coupon"]]
        if coupon_obj["duration"] == "once" or (found["end"] is not None and found["end"] <= instant):
            continue
        if coupon_obj["percent_off"] is not None:
            percent += Fraction(str(coupon_obj["percent_off"])) / 100
        else:
            amount += Fraction(coupon_obj["amount_off"], 100)
    net: Fraction = max(Fraction(0), gross * (1 - percent) - amount)
    return round(net * 100)  # half-even, as the engine rounds


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), version=st.sampled_from(VERSIONS), data=st.data())
def test_random_histories_replay_as_stripe_billed_them_in_any_order(
    seed: int, version: str, data: st.DataObject
) -> None:
    catalog, life = random_history(random.Random(seed), version)
    events = catalog + life
    mapped, skips = feed(events)
    assert skips == []
    customer = life[0]["data"]["object"]["customer"]
    for day in range(0, 260, 5):
        instant = at(day) + 7
        outcome = replayed(mapped, micro(instant))
        assert outcome.accounts[customer].mrr.get("USD", 0) == _stripe_mrr(catalog, life, instant), day
    shuffled = list(data.draw(st.permutations(events), label="order"))
    for copy_of in data.draw(st.lists(st.sampled_from(events), max_size=3), label="duplicates"):
        shuffled.insert(data.draw(st.integers(0, len(shuffled))), copy.deepcopy(copy_of))
    assert _summary(shuffled) == _summary(events)
