from collections.abc import Iterable

import pytest

from processors.core.account import AccountState, Applied, apply, movement_id
from processors.core.aggregates import monthly_totals
from processors.core.fact import Fact
from processors.core.movement import Movement
from tests.factories import fx


def run(events: Iterable[Fact], account: str = "acct-1") -> Applied:
    return apply(AccountState(account), events)


def kinds(movements: Iterable[Movement]) -> list[tuple[str, int]]:
    return [(m.type, m.amount) for m in movements]


def test_lifecycle_classification() -> None:
    events = [
        fx("subscribe", at="2025-01-10T00:00:00Z", amount="100.00"),
        fx("upgrade", at="2025-02-10T00:00:00Z", amount="150.00"),
        fx("downgrade", at="2025-03-10T00:00:00Z", amount="120.00"),
        fx("cancel", at="2025-04-10T00:00:00Z"),
        fx("reactivate", at="2025-06-10T00:00:00Z", amount=None),
        fx("pause", at="2025-07-10T00:00:00Z"),
        fx("resume", at="2025-08-10T00:00:00Z", amount="80.00"),
    ]
    result = run(events)
    assert kinds(result.added) == [
        ("new", 10000),
        ("expansion", 5000),
        ("contraction", 3000),
        ("churn", 12000),
        ("reactivation", 12000),
        ("churn", 12000),
        ("reactivation", 8000),
    ]
    assert result.state.mrr == {"USD": 8000}
    assert [m.month for m in result.added] == [
        "2025-01",
        "2025-02",
        "2025-03",
        "2025-04",
        "2025-06",
        "2025-07",
        "2025-08",
    ]


def test_label_does_not_decide_the_movement() -> None:
    # An "upgrade" that lowers the price is a contraction; a "change" with the same price is nothing.
    result = run(
        [
            fx("subscribe", at="2025-01-01T00:00:00Z", amount="100.00"),
            fx("upgrade", at="2025-02-01T00:00:00Z", amount="90.00"),
            fx("change", at="2025-03-01T00:00:00Z", amount="90.00"),
        ]
    )
    assert kinds(result.added) == [("new", 10000), ("contraction", 1000)]


def test_plan_switch_at_one_instant_is_one_movement() -> None:
    # cancel + subscribe at the same instant: an expansion, not churn + new
    at = "2025-02-01T00:00:00Z"
    result = run(
        [
            fx("subscribe", sub="a", at="2025-01-01T00:00:00Z", amount="50.00"),
            fx("cancel", sub="a", at=at),
            fx("subscribe", sub="b", at=at, amount="200.00"),
            fx("subscribe", sub="addon", at=at, amount="25.00"),
        ]
    )
    assert kinds(result.added) == [("new", 5000), ("expansion", 17500)]
    assert len(result.added[1].event_ids) == 3


def test_instant_is_the_same_whatever_the_offset() -> None:
    result = run(
        [
            fx("subscribe", sub="a", at="2025-01-01T00:00:00Z", amount="50.00"),
            fx("cancel", sub="a", at="2025-02-01T02:00:00+02:00"),
            fx("subscribe", sub="b", at="2025-02-01T00:00:00Z", amount="60.00"),
        ]
    )
    assert kinds(result.added) == [("new", 5000), ("expansion", 1000)]


def test_movement_month_is_the_utc_month() -> None:
    result = run([fx("subscribe", at="2025-01-31T23:30:00-05:00")])
    assert result.added[0].month == "2025-02"
    assert result.added[0].effective_at.isoformat() == "2025-02-01T04:30:00+00:00"


def test_trial_then_conversion_is_new_at_conversion() -> None:
    result = run(
        [
            fx("subscribe", at="2025-01-01T00:00:00Z", trial=True),
            fx("change", at="2025-01-15T00:00:00Z", amount="100.00"),
        ]
    )
    assert kinds(result.added) == [("new", 10000)]
    assert result.added[0].month == "2025-01"


def test_currencies_are_never_added() -> None:
    result = run(
        [
            fx("subscribe", sub="a", currency="USD", amount="100.00", at="2025-01-01T00:00:00Z"),
            fx("subscribe", sub="b", currency="EUR", amount="80.00", at="2025-01-01T00:00:00Z"),
            fx("cancel", sub="a", at="2025-02-01T00:00:00Z"),
        ]
    )
    assert [(m.currency, m.type, m.amount) for m in result.added] == [
        ("EUR", "new", 8000),
        ("USD", "new", 10000),
        ("USD", "churn", 10000),
    ]
    assert result.state.mrr == {"USD": 0, "EUR": 8000}


def test_subscription_changing_currency_moves_both() -> None:
    result = run(
        [
            fx("subscribe", currency="USD", amount="100.00", at="2025-01-01T00:00:00Z"),
            fx("change", currency="EUR", amount="90.00", at="2025-02-01T00:00:00Z"),
        ]
    )
    assert [(m.currency, m.type) for m in result.added] == [("USD", "new"), ("EUR", "new"), ("USD", "churn")]


def test_resume_of_an_unknown_subscription_changes_nothing() -> None:
    result = run([fx("resume", amount=None), fx("cancel", sub="nope")])
    assert result.added == ()
    assert len(result.accepted) == 2


def test_reactivation_after_full_churn_not_new() -> None:
    result = run(
        [
            fx("subscribe", sub="a", at="2025-01-01T00:00:00Z"),
            fx("cancel", sub="a", at="2025-02-01T00:00:00Z"),
            fx("subscribe", sub="b", at="2025-03-01T00:00:00Z", amount="70.00"),
        ]
    )
    assert kinds(result.added)[-1] == ("reactivation", 7000)


def test_order_is_effective_at_then_event_id() -> None:
    events = [
        fx("subscribe", at="2025-01-01T00:00:00Z", amount="100.00"),
        fx("upgrade", at="2025-02-01T00:00:00Z", amount="200.00"),
        fx("downgrade", at="2025-03-01T00:00:00Z", amount="150.00"),
    ]
    forward, backward = run(events), run(reversed(events))
    assert forward.state.movements == backward.state.movements
    assert forward.state.events == backward.state.events


def test_duplicate_changes_nothing_and_conflict_is_rejected() -> None:
    first = fx("subscribe", event_id="x1")
    state = run([first]).state
    again = apply(state, [fx("subscribe", event_id="x1")])
    assert again.state is state and again.added == () and len(again.duplicates) == 1
    other = apply(state, [fx("subscribe", event_id="x1", amount="999.00")])
    assert other.state is state
    assert [(r.field, "different content" in r.reason) for _, r in other.conflicts] == [("event_id", True)]
    within = run([fx("subscribe", event_id="y"), fx("subscribe", event_id="y")])
    assert len(within.duplicates) == 1 and len(within.state.events) == 1


def test_event_for_another_account_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="belongs to"):
        run([fx("subscribe", account="other")])


def test_late_event_is_corrected_with_retractions() -> None:
    jan = fx("subscribe", at="2025-01-01T00:00:00Z", amount="100.00")
    mar = fx("upgrade", at="2025-03-01T00:00:00Z", amount="150.00")
    feb = fx("upgrade", at="2025-02-01T00:00:00Z", amount="120.00")
    step1 = run([jan, mar])
    step2 = apply(step1.state, [feb])
    assert kinds(step2.retracted) == [("expansion", -5000)]
    assert step2.retracted[0].retracts == step1.added[1].movement_id
    assert step2.retracted[0].sign == -1 and step2.retracted[0].record == "retraction"
    assert sorted(kinds(step2.added)) == [("expansion", 2000), ("expansion", 3000)]
    assert all(m.corrects == (step1.added[1].movement_id,) for m in step2.added)
    # A consumer that sums everything it was sent gets the same totals as a replay of all three.
    published = [*step1.added, *step2.retracted, *step2.added]
    assert monthly_totals(published) == monthly_totals(run([jan, mar, feb]).state.movements)
    assert step2.state.movements == run([feb, jan, mar]).state.movements


def test_event_at_the_last_instant_replaces_that_instants_movement() -> None:
    at = "2025-02-01T00:00:00Z"
    base = run(
        [fx("subscribe", sub="a", at="2025-01-01T00:00:00Z", amount="50.00"), fx("cancel", sub="a", at=at)]
    )
    assert kinds(base.added)[-1] == ("churn", 5000)
    joined = apply(base.state, [fx("subscribe", sub="b", at=at, amount="80.00")])
    assert kinds(joined.retracted) == [("churn", -5000)]
    assert kinds(joined.added) == [("expansion", 3000)]


def test_on_time_events_do_not_touch_the_past() -> None:
    step1 = run([fx("subscribe", at="2025-01-01T00:00:00Z")])
    step2 = apply(step1.state, [fx("upgrade", at="2025-02-01T00:00:00Z", amount="130.00")])
    assert step2.retracted == ()
    assert kinds(step2.added) == [("expansion", 3000)]


def test_movement_ids_are_deterministic_and_carry_the_audit_trail() -> None:
    e = fx("subscribe", at="2025-01-01T00:00:00Z", event_id="audit-1")
    a, b = run([e]), run([e])
    assert a.added[0].movement_id == b.added[0].movement_id
    assert a.added[0].event_ids == ("audit-1",)
    assert a.added[0].movement_id == movement_id(
        "acct-1", "USD", a.state.last_instant or 0, "new", 0, 10000, ["audit-1"]
    )
