import json
from typing import Any

import pytest

from processors.core.intake import RECORD, Rejection, parse_event
from schemas.billing_event import BillingEvent
from tests.factories import raw


def reject(event: dict[str, Any] | str) -> Rejection:
    result = parse_event(event if isinstance(event, str) else json.dumps(event))
    assert isinstance(result, Rejection), result
    return result


def test_valid_event_parses() -> None:
    event = parse_event(json.dumps(raw("subscribe", at="2025-03-01T12:00:00+02:00")))
    assert isinstance(event, BillingEvent)
    assert event.effective_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda e: e.pop("event_id"), "event_id", "required"),
        (lambda e: e.update(event_id=""), "event_id", "at least 1"),
        (lambda e: e.update(event_id="x" * 129), "event_id", "at most 128"),
        (lambda e: e.pop("type"), "type", "required"),
        (lambda e: e.update(type="refund"), "type", "subscribe"),
        (lambda e: e.update(account_id=""), "account_id", "at least 1"),
        (lambda e: e.update(subscription_id=7), "subscription_id", "string"),
        (lambda e: e.update(effective_at="2025-01-01T00:00:00"), "effective_at", "timezone"),
        (lambda e: e.update(effective_at=1735689600), "effective_at", ""),
        (lambda e: e.update(effective_at="yesterday"), "effective_at", ""),
        (lambda e: e.update(currency="usd"), "currency", "ISO 4217"),
        (lambda e: e.update(currency="USDX"), "currency", "ISO 4217"),
        (lambda e: e.update(interval="fortnight"), "interval", "month"),
        (lambda e: e.update(interval_count=0), "interval_count", "greater than or equal to 1"),
        (lambda e: e.update(interval_count="2"), "interval_count", "integer"),
        (lambda e: e.update(items=[]), "items", "at least 1"),
        (lambda e: e.pop("items"), "items", "required for a subscribe event"),
        (lambda e: e.pop("currency"), "currency", "required for a subscribe event"),
        (lambda e: e["items"][0].update(unit_amount=49.99), "items.0.unit_amount", "never a JSON number"),
        (lambda e: e["items"][0].update(unit_amount="-10.00"), "items.0.unit_amount", "non-negative"),
        (lambda e: e["items"][0].update(unit_amount="1.1234567"), "items.0.unit_amount", "up to 6 places"),
        (lambda e: e["items"][0].update(unit_amount="1e3"), "items.0.unit_amount", "decimal string"),
        (lambda e: e["items"][0].update(quantity=-1), "items.0.quantity", "greater than or equal to 0"),
        (lambda e: e["items"][0].pop("plan_id"), "items.0.plan_id", "required"),
        (lambda e: e.update(discount={"percent_off": "120"}), "discount.percent_off", "between 0 and 100"),
        (lambda e: e.update(discount={"percent_off": 10}), "discount.percent_off", "never a JSON number"),
        (lambda e: e.update(discount={"amount_off": "-1"}), "discount.amount_off", "non-negative"),
        (lambda e: e.update(trial="yes"), "trial", "boolean"),
        # Bounds (the crash records of the hostile-input issue among them)
        (lambda e: e.update(effective_at="0001-01-01T00:00:00+01:00"), "effective_at", "1970"),
        (lambda e: e.update(effective_at="9999-12-31T23:00:00-05:00"), "effective_at", "3000"),
        (lambda e: e.update(effective_at="9999-12-15T00:00:00Z"), "effective_at", "2999"),
        (lambda e: e.update(effective_at="1969-12-31T23:59:59.999999Z"), "effective_at", "in UTC"),
        (lambda e: e.update(effective_at="1970-01-01T00:30:00+01:00"), "effective_at", "in UTC"),
        (lambda e: e.update(effective_at="2999-12-31T23:00:00-05:00"), "effective_at", "in UTC"),
        (lambda e: e.update(interval_count=1001), "interval_count", "less than or equal to 1000"),
        (lambda e: e.update(interval_count=10**400), "interval_count", "less than or equal to 1000"),
        (lambda e: e.update(items=[{"plan_id": "p", "unit_amount": "1"}] * 101), "items", "at most 100"),
        (lambda e: e["items"][0].update(quantity=10**9 + 1), "items.0.quantity", "less than or equal to"),
        (lambda e: e["items"][0].update(quantity=10**400), "items.0.quantity", "less than or equal to"),
        (lambda e: e["items"][0].update(quantity=10**4290), "items.0.quantity", "less than or equal to"),
        (lambda e: e["items"][0].update(quantity=2**62), "items.0.quantity", "less than or equal to"),
        (lambda e: e["items"][0].update(unit_amount="١٠"), "items.0.unit_amount", "ASCII digits"),
        (lambda e: e["items"][0].update(unit_amount="１０"), "items.0.unit_amount", "ASCII digits"),
        (lambda e: e["items"][0].update(unit_amount="10\n"), "items.0.unit_amount", "decimal string"),
        (lambda e: e["items"][0].update(unit_amount="1234567890123"), "items.0.unit_amount", "up to 12"),
        (lambda e: e.update(discount={"percent_off": "١٠"}), "discount.percent_off", "ASCII digits"),
        (lambda e: e.update(discount={"amount_off": "٥"}), "discount.amount_off", "ASCII digits"),
        (lambda e: e["items"][0].update(unit_amount="10000000.000001"), "items", "maximum of 10,000,000.00"),
        (lambda e: e["items"][0].update(unit_amount="999999999999.999999"), "items", "gross MRR"),
        (lambda e: e["items"][0].update(quantity=10**9, unit_amount="1"), "items", "gross MRR"),
        (
            lambda e: e.update(interval="day", items=[{"plan_id": "p", "unit_amount": "328767.123288"}]),
            "items",
            "gross MRR",
        ),
    ],
)
def test_bad_field_is_named(mutate: Any, field: str, words: str) -> None:
    event = raw("subscribe")
    mutate(event)
    rejection = reject(event)
    assert rejection.field == field
    assert words in rejection.reason
    assert str(rejection).startswith(f"{field}: ")


def test_partial_terms_on_reactivate_names_the_missing_field() -> None:
    event = raw("reactivate", amount=None, currency="USD")
    event.update(currency="USD", interval="month")
    rejection = reject(event)
    assert rejection.field == "items"
    assert "restates the terms" in rejection.reason


def test_terms_are_optional_on_resume_and_ignored_on_cancel() -> None:
    assert isinstance(parse_event(json.dumps(raw("resume", amount=None))), BillingEvent)
    cancel = raw("cancel")
    cancel.update(currency="USD", interval="month", items=[{"plan_id": "p", "unit_amount": "1.00"}])
    parsed = parse_event(json.dumps(cancel))
    assert isinstance(parsed, BillingEvent) and not parsed.has_terms


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", "null", '"event"'])
def test_whole_record_errors(text: str) -> None:
    rejection = reject(text)
    assert rejection.field == RECORD


def test_every_error_is_reported() -> None:
    event = raw("subscribe", currency="usd")
    event["items"][0]["quantity"] = -3
    rejection = reject(event)
    assert rejection.field == "currency"
    assert "items.0.quantity" in rejection.reason


def test_unknown_fields_are_ignored() -> None:
    event = raw("subscribe", tax_amount="9.99", one_time_fees=[{"amount": "100"}], metadata={"x": 1})
    assert isinstance(parse_event(json.dumps(event)), BillingEvent)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.update(effective_at="1970-01-01T00:00:00Z"),
        lambda e: e.update(effective_at="1970-01-01T01:00:00+01:00"),
        lambda e: e.update(effective_at="2999-12-31T23:59:59.999999Z"),
        lambda e: e.update(effective_at="3000-01-01T00:59:59+01:00"),
        lambda e: e.update(interval_count=1000),
        lambda e: e.update(items=[{"plan_id": "p", "unit_amount": "1"}] * 100),
        lambda e: e["items"][0].update(quantity=10**9, unit_amount="0.01"),
        lambda e: e["items"][0].update(unit_amount="10000000"),  # exactly the MRR cap
        lambda e: e.update(interval="year", items=[{"plan_id": "p", "unit_amount": "120000000.00"}]),
        lambda e: e.update(interval="day", items=[{"plan_id": "p", "unit_amount": "328767.123287"}]),
        lambda e: e.update(
            interval="year",
            interval_count=1000,
            items=[{"plan_id": "p", "unit_amount": "120000000000"}],
        ),
    ],
)
def test_values_at_the_bounds_are_accepted(mutate: Any) -> None:
    event = raw("subscribe")
    mutate(event)
    assert isinstance(parse_event(json.dumps(event)), BillingEvent)


def test_the_mrr_cap_applies_before_discounts() -> None:
    event = raw("subscribe", amount="20000000.00", discount={"percent_off": "60"})
    rejection = reject(event)
    assert rejection.field == "items"
    assert "20,000,000.00 a month" in rejection.reason
