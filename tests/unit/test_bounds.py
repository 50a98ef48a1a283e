"""The contract's bounds: hostile but well-formed records are rejected naming the field, never crash, and
whatever is accepted keeps every derived figure exact (Python, Redis Lua doubles, Prometheus float64)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from processors.core.account import AccountState, apply
from processors.core.aggregates import monthly_aggregates, monthly_totals
from processors.core.fact import fact_of, utc_of
from processors.core.intake import Rejection, parse_event
from schemas.billing_event import (
    MAX_INTERVAL_COUNT,
    MAX_ITEMS,
    MAX_MRR,
    MAX_QUANTITY,
    MONTHLY_FACTOR,
    BillingEvent,
)
from tests.factories import fx, raw

MAX_MRR_CENTS = MAX_MRR * 100
SUBSCRIPTIONS = 10**6  # the "generous count" the bounds are chosen for
_US_PER_DAY = 86_400 * 10**6
_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()
_EARLIEST_US = 0
_END_US = (datetime(3000, 1, 1).toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY
_AMOUNT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?", re.ASCII)
_PERCENT = re.compile(r"[0-9]{1,3}(\.[0-9]{1,4})?", re.ASCII)
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])", re.ASCII)


def test_the_stated_arithmetic_holds() -> None:
    # The largest MRR of one subscription, in cents, times 10**6 subscriptions stays below 2**53 (Lua
    # doubles), and so does the worst single item without the cap: the cap is what makes it hold.
    assert MAX_MRR_CENTS == 10**9
    assert MAX_MRR_CENTS * SUBSCRIPTIONS == 10**15 < 2**53
    num, den = MONTHLY_FACTOR["day"]
    uncapped_item = Decimal("999999999999.99") * num / den * 100  # one item a day, quantity 1, in cents
    assert uncapped_item * 3 > 2**53


# --- an independent oracle of the bounds -----------------------------------------------------------------


def _local(at: datetime, offset_minutes: int) -> str:
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{at.isoformat()}{sign}{hours:02d}:{minutes:02d}"


def _utc_us(at: datetime, offset_minutes: int) -> int:
    """The UTC instant of a local time and offset, in integer microseconds: no datetime, so no overflow."""
    local = (at.toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY + (
        (at.hour * 3600 + at.minute * 60 + at.second) * 10**6 + at.microsecond
    )
    return local - offset_minutes * 60 * 10**6


def _micro(amount: str) -> int:
    return int(Decimal(amount) * 10**6)


def expected_bad_fields(event: dict[str, Any], utc_us: int) -> set[str]:
    bad: set[str] = set()
    if not _EARLIEST_US <= utc_us < _END_US:
        bad.add("effective_at")
    if not 1 <= event.get("interval_count", 1) <= MAX_INTERVAL_COUNT:
        bad.add("interval_count")
    items = event["items"]
    if not 1 <= len(items) <= MAX_ITEMS:
        bad.add("items")
    for i, item in enumerate(items):
        if not 0 <= item["quantity"] <= MAX_QUANTITY:
            bad.add(f"items.{i}.quantity")
        if not _AMOUNT.fullmatch(item["unit_amount"]):
            bad.add(f"items.{i}.unit_amount")
    discount = event.get("discount") or {}
    if "percent_off" in discount and not (
        _PERCENT.fullmatch(discount["percent_off"]) and Decimal(discount["percent_off"]) <= 100
    ):
        bad.add("discount.percent_off")
    if "amount_off" in discount and not _AMOUNT.fullmatch(discount["amount_off"]):
        bad.add("discount.amount_off")
    if not bad:  # the cross-field cap runs once every field is valid
        num, den = MONTHLY_FACTOR[event["interval"]]
        gross = sum(_micro(it["unit_amount"]) * it["quantity"] for it in items)
        if Fraction(gross * num, den * event.get("interval_count", 1)) > MAX_MRR * 10**6:
            bad.add("items")
    return bad


# --- strategies: values at, near and beyond every bound -------------------------------------------------

_NON_ASCII_DIGITS = ["١٠", "１０", "²", "۵", "१", "𝟗", "10\n", "1٠.00", "0.٥"]


def _around(bound: int, spread: int = 2) -> st.SearchStrategy[int]:
    return st.integers(bound - spread, bound + spread)


# Each strategy mixes ordinary values (most draws, so that records with one bad field are common) with
# values at, next to and far beyond each bound.
quantities = st.one_of(
    st.integers(0, 50),
    st.integers(0, 50),
    st.integers(0, 50),
    _around(0),
    _around(MAX_QUANTITY),
    st.integers(0, MAX_QUANTITY),
    st.sampled_from([2**53, 2**62, 10**400, 10**4290]),
)
amounts = st.one_of(
    st.decimals(0, 1000, places=2).map(str),
    st.decimals(0, 1000, places=2).map(str),
    st.decimals(0, 1000, places=6).map(str),
    st.integers(0, 10**12 - 1).map(str),
    st.integers(0, 10**18 - 1).map(lambda n: f"{n // 10**6}.{n % 10**6:06d}"),
    st.sampled_from(["999999999999.999999", "1000000000000", "10000000", "10000000.000001", "1e3", "-1"]),
    st.sampled_from(_NON_ASCII_DIGITS),
)
percents = st.one_of(
    st.decimals(0, 100, places=4).map(str),
    st.sampled_from(["100", "100.0001", "101", "١٠", "12.5\n"]),
)
items_lists = st.one_of(
    st.lists(
        st.fixed_dictionaries({"plan_id": st.just("p"), "unit_amount": amounts, "quantity": quantities}),
        min_size=1,
        max_size=3,
    ),
    st.lists(
        st.fixed_dictionaries({"plan_id": st.just("p"), "unit_amount": amounts, "quantity": quantities}),
        min_size=1,
        max_size=3,
    ),
    st.integers(MAX_ITEMS - 1, MAX_ITEMS + 1).map(
        lambda n: [{"plan_id": "p", "unit_amount": "1.00", "quantity": 1}] * n
    ),
    st.just([]),
)
_ordinary = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2999, 12, 30))
edge_times = st.one_of(
    st.datetimes(min_value=datetime(1969, 12, 31), max_value=datetime(1970, 1, 1, 23, 59, 59)),
    st.datetimes(min_value=datetime(2999, 12, 31), max_value=datetime(3000, 1, 1, 23, 59, 59)),
    st.sampled_from([datetime(1970, 1, 1), datetime(3000, 1, 1), datetime(2999, 12, 31, 23, 59, 59, 999999)]),
    st.datetimes(min_value=datetime(9999, 12, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 2)),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)),
)
offsets = st.one_of(st.sampled_from([0, 60, -60, -300, 1439, -1439]), st.integers(-1439, 1439))
edge_interval_counts = st.one_of(
    _around(1),
    _around(MAX_INTERVAL_COUNT),
    st.sampled_from([2**63, 10**400]),
)


@st.composite
def records(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    # Four times in five an ordinary value, so that the later fields are often the first bad one.
    at = draw(_ordinary if draw(st.integers(0, 4)) else edge_times)
    offset = draw(offsets)
    event = raw(
        "subscribe",
        at=_local(at, offset),
        interval=draw(st.sampled_from(list(MONTHLY_FACTOR))),
        interval_count=draw(st.integers(1, 12) if draw(st.integers(0, 4)) else edge_interval_counts),
        items=draw(items_lists),
    )
    if draw(st.booleans()):
        discount: dict[str, str] = {}
        if draw(st.booleans()):
            discount["percent_off"] = draw(percents)
        if draw(st.booleans()):
            discount["amount_off"] = draw(amounts)
        event["discount"] = discount
    return event, _utc_us(at, offset)


def _check_accepted(event: BillingEvent) -> None:
    fact = fact_of(event)
    at = utc_of(fact.instant)
    month = f"{at.year:04d}-{at.month:02d}"
    assert "1970-01" <= month <= "2999-12" and _MONTH.fullmatch(month)
    assert 0 <= fact.mrr <= MAX_MRR_CENTS
    assert fact.mrr * SUBSCRIPTIONS < 2**53  # summed in Redis' Lua doubles, still exact
    assert Decimal(fact.mrr / 100).quantize(Decimal("0.01")) * 100 == fact.mrr  # Prometheus' float64


# The records of the hostile-input issue that crashed the worker and the replay, and the field each names.
_CRASH_RECORDS: list[tuple[dict[str, Any], str]] = [
    ({"effective_at": "0001-01-01T00:00:00+01:00"}, "effective_at"),
    ({"effective_at": "9999-12-31T23:00:00-05:00"}, "effective_at"),
    ({"effective_at": "9999-12-15T12:00:00Z"}, "effective_at"),
    ({"effective_at": "0001-01-01T00:00:00Z"}, "effective_at"),
    ({"items": [{"plan_id": "p", "unit_amount": "1.00", "quantity": 10**400}]}, "items.0.quantity"),
    (
        {"items": [{"plan_id": "p", "unit_amount": "999999999999.999999", "quantity": 10**4290}]},
        "items.0.quantity",
    ),
    (
        {"items": [{"plan_id": "p", "unit_amount": "999999999999.999999", "quantity": 2**62}]},
        "items.0.quantity",
    ),
    ({"items": [{"plan_id": "p", "unit_amount": "999999999999.999999", "quantity": 1}]}, "items"),
    ({"items": [{"plan_id": "p", "unit_amount": "١٠", "quantity": 1}]}, "items.0.unit_amount"),
]


@given(records())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(
    (raw("subscribe", at="1970-01-01T00:00:00Z"), 0),
)
def test_parse_event_accepts_within_the_bounds_and_names_the_field_beyond(
    case: tuple[dict[str, Any], int],
) -> None:
    record, utc_us = case
    bad = expected_bad_fields(record, utc_us)
    result = parse_event(json.dumps(record, ensure_ascii=False).encode())
    if bad:
        assert isinstance(result, Rejection), (bad, record)
        assert result.field in bad, (result, bad)
        assert str(result).startswith(f"{result.field}: ")
        event(f"rejected: {re.sub(r'[0-9]+', 'N', result.field)}")
    else:
        event("accepted")
        assert isinstance(result, BillingEvent), (result, record)
        _check_accepted(result)


def test_the_crash_records_are_rejected_naming_the_field_in_the_replay_too() -> None:
    lines = []
    for n, (change, field) in enumerate(_CRASH_RECORDS):
        event = raw("subscribe")
        event.update(change)
        text = json.dumps(event, ensure_ascii=False).encode()
        result = parse_event(text)
        assert isinstance(result, Rejection) and result.field == field, (change, result)
        lines.append((f"hostile:{n + 1}", text))
    lines.append(("hostile:ok", json.dumps(raw("subscribe", at="2025-01-15T00:00:00Z")).encode()))
    from processors.replay import replay  # here: the stream's intake calls the same parse_event

    outcome = replay(lines)
    assert [r.rejection.field for r in outcome.rejects] == [field for _, field in _CRASH_RECORDS]
    assert [m.month for m in outcome.months] == ["2025-01"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["acct-1", "acct-2"]),
            st.sampled_from(["subscribe", "upgrade", "cancel"]),
            st.datetimes(
                min_value=datetime(2999, 10, 1), max_value=datetime(2999, 12, 31, 23, 59, 59, 999999)
            ),
            st.sampled_from(["USD", "EUR"]),
            st.sampled_from(["0.00", "100.00", "10000000"]),
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=100, deadline=None)
def test_monthly_aggregates_at_the_end_of_2999_stay_within_the_bound(
    changes: list[tuple[str, str, datetime, str, str]],
) -> None:
    by_account: dict[str, list[Any]] = {}
    for account, kind, at, currency, amount in changes:
        at_text = at.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        fact = fx(kind, account=account, at=at_text, currency=currency, amount=amount)
        by_account.setdefault(account, []).append(fact)
    movements = [m for a, facts in by_account.items() for m in apply(AccountState(a), facts).state.movements]
    rows = monthly_aggregates(monthly_totals(movements))
    for row in rows:
        assert _MONTH.fullmatch(row.month) and "2999-10" <= row.month <= "2999-12", row.month
    for m in movements:
        assert m.effective_at < datetime(3000, 1, 1, tzinfo=UTC)


def test_the_last_instant_of_2999_folds_into_december() -> None:
    last = "2999-12-31T23:59:59.999999Z"
    facts = [fx("subscribe", at="2999-11-01T00:00:00Z"), fx("upgrade", at=last, amount="200.00")]
    movements = apply(AccountState("acct-1"), facts).state.movements
    assert [m.month for m in movements] == ["2999-11", "2999-12"]
    rows = monthly_aggregates(monthly_totals(movements))
    assert [r.month for r in rows] == ["2999-11", "2999-12"]
    assert rows[-1].closing_mrr == 20000
    assert utc_of(facts[-1].instant) == datetime(3000, 1, 1, tzinfo=UTC) - timedelta(microseconds=1)
