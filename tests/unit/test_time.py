"""Time as an input: scheduled events, as-of figures, months running to now, and void events, in the
core, the replay and the stream's state layer."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from processors.core.account import VOID_OF_VOID, AccountState, apply, as_of
from processors.core.aggregates import MonthTotals, monthly_totals
from processors.core.fact import Fact, fact_of, instant_of, month_of, utc_of
from processors.core.movement import Movement, to_record
from processors.core.scheduled import scheduled_changes
from processors.replay import replay
from processors.sinks.metrics import Metrics
from processors.stream.fold import FoldStage
from processors.stream.intake import Record, partition_for
from processors.stream.memory import MemoryProducer, MemoryTable, MemoryView
from processors.stream.state import (
    Arrival,
    Published,
    Reader,
    chunk_views,
    due_key,
    process,
    record_id,
    scheduled_of,
)
from schemas.billing_event import BillingEvent
from schemas.movement import MovementRecord
from tests.factories import raw
from tests.unit.test_fold_stage import PARTITIONS, TOPICS
from tests.unit.test_state import Table

SOURCE = "events"
START = datetime(2026, 9, 1, tzinfo=UTC)


def render(account_id: str, published: Published) -> str:
    return to_record(published.movement, record_id(account_id, published.seq)).model_dump_json()


def at(days: float) -> str:
    return (START + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def instant(days: float) -> int:
    return instant_of(START + timedelta(days=days))


def account_events(rng: random.Random, account: str, n: int) -> list[dict[str, object]]:
    """A random history over 6 months from START: subscriptions, changes, cancels, pauses, and voids of
    earlier (or later, or unknown) events; some ids reused (duplicates)."""
    events: list[dict[str, object]] = []
    for _ in range(n):
        kind = rng.choice(
            ["subscribe", "upgrade", "downgrade", "cancel", "pause", "resume", "reactivate", "void"]
        )
        when = at(rng.uniform(0, 180))
        sub = f"s{rng.randrange(3)}"
        if kind == "void":
            known = [e["event_id"] for e in events if e["type"] != "void"]
            target = rng.choice(known) if known and rng.random() < 0.8 else f"later-{rng.randrange(5)}"
            events.append(raw("void", account=account, sub=sub, at=when, voids=target))
        elif kind in ("subscribe", "upgrade", "downgrade"):
            amount = f"{rng.randrange(1, 500)}.{rng.randrange(100):02d}"
            events.append(raw(kind, account=account, sub=sub, at=when, amount=amount))
        else:
            events.append(raw(kind, account=account, sub=sub, at=when, amount=None))
        if kind != "void" and rng.random() < 0.1:  # an event whose id a void named before it came
            events[-1]["event_id"] = f"later-{rng.randrange(5)}"
            if any(e["event_id"] == events[-1]["event_id"] for e in events[:-1]):
                events.pop()
    events += [e for e in events if rng.random() < 0.1]  # duplicates
    rng.shuffle(events)
    return events


def lines_of(events: Sequence[dict[str, object]]) -> list[tuple[str, bytes]]:
    return [(str(i), json.dumps(e).encode()) for i, e in enumerate(events)]


def facts_of(events: Sequence[dict[str, object]]) -> list[Fact]:
    return [fact_of(BillingEvent.model_validate_json(json.dumps(e))) for e in events]


def totals(movements: Sequence[Movement | MovementRecord]) -> dict[tuple[str, str], MonthTotals]:
    return {k: t for k, t in monthly_totals(movements).items() if t != MonthTotals()}  # type: ignore[arg-type]


# -- the core and the replay ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), cut=st.floats(-10, 200))
def test_the_replay_as_of_an_instant_equals_the_replay_of_the_events_effective_by_then(
    seed: int, cut: float
) -> None:
    rng = random.Random(seed)
    events = [e for a in range(3) for e in account_events(rng, f"a{a}", 25)]
    t = instant(cut)
    outcome = replay(lines_of(events), at=t)
    # voids act whatever their own time; every other event counts only if effective by `t`
    by_then = [
        e
        for e in events
        if e["type"] == "void" or instant_of(datetime.fromisoformat(str(e["effective_at"]))) <= t
    ]
    alone = replay(lines_of(by_then), at=t)
    assert outcome.months == alone.months
    mrr = {a: o.mrr for a, o in outcome.accounts.items() if o.mrr}  # (an account yet to begin has none)
    assert mrr == {a: o.mrr for a, o in alone.accounts.items() if o.mrr}
    if outcome.months:
        assert outcome.months[-1].month == month_of(t)  # months run to the as-of month
        assert {r.currency for r in outcome.months if r.month == month_of(t)} == {
            r.currency for r in outcome.months
        }
    # the scheduled view lists exactly the later movements of the whole history
    everything = replay(lines_of(events))
    later = sorted(m.movement_id for m in everything.movements if instant_of(m.effective_at) > t)
    assert sorted(m.movement_id for m in outcome.scheduled) == later
    assert alone.scheduled == []


def test_a_scheduled_cancel_changes_nothing_until_its_instant() -> None:
    """The issue's example: 100.00 and 50.00 since 2025-06; a cancel of the first effective 2027-01-02
    and a subscribe of 30.00 effective 2026-12-15; now is 2026-11-23."""
    events = [
        raw("subscribe", account="a", at="2025-06-01T00:00:00Z", amount="100.00"),
        raw("subscribe", account="b", at="2025-06-01T00:00:00Z", amount="50.00"),
        raw("cancel", account="a", at="2027-01-02T00:00:00Z", amount=None),
        raw("subscribe", account="c", at="2026-12-15T00:00:00Z", amount="30.00"),
    ]
    now = instant_of(datetime(2026, 11, 23, tzinfo=UTC))
    outcome = replay(lines_of(events), at=now)
    last = outcome.months[-1]
    assert (last.month, last.closing_mrr, last.customers_closing, last.churn_mrr) == ("2026-11", 15000, 2, 0)
    changes = scheduled_changes(outcome.scheduled, now, 60)
    assert [(t.type, t.amount, t.accounts) for t in changes.totals] == [
        ("new", 3000, ("c",)),
        ("churn", 10000, ("a",)),
    ]
    changes = scheduled_changes(outcome.scheduled, now, 30)
    assert [(t.type, t.amount, t.accounts) for t in changes.totals] == [("new", 3000, ("c",))]
    later = replay(lines_of(events), at=instant_of(datetime(2027, 1, 2, tzinfo=UTC)))
    assert (later.months[-1].month, later.months[-1].closing_mrr, later.months[-1].churn_mrr) == (
        "2027-01",
        8000,
        10000,
    )


def test_void_in_the_core() -> None:
    sub = raw("subscribe", account="a", at="2025-01-01T00:00:00Z", amount="100.00")
    up = raw("upgrade", account="a", at="2025-02-01T00:00:00Z", amount="150.00")
    void = raw("void", account="a", at="2025-03-01T00:00:00Z", voids=up["event_id"])
    with_void = apply(AccountState("a"), facts_of([sub, up, void])).state
    without = apply(AccountState("a"), facts_of([sub])).state
    assert with_void.movements == without.movements and with_void.mrr == without.mrr
    # before the event it voids: the same
    first = apply(AccountState("a"), facts_of([void, sub, up])).state
    assert first.movements == without.movements
    # a void of a void is rejected, naming the field
    again = raw("void", account="a", at="2025-03-02T00:00:00Z", voids=void["event_id"])
    result = apply(AccountState("a"), facts_of([sub, up, void, again]))
    assert [(f.event_id, r) for f, r in result.conflicts] == [(again["event_id"], VOID_OF_VOID)]
    assert result.state.movements == without.movements


# -- the stream's state layer -----------------------------------------------------------------------


def run_stream(
    events: Sequence[dict[str, object]], nows: Sequence[int], rng: random.Random
) -> tuple[Table, list[MovementRecord]]:
    """Feed one account's events in random batches, each at the next of `nows` (ascending), with calls
    without arrivals between (the timer); return the table and every record published."""
    table = Table()
    facts = facts_of(events)
    arrivals = [Arrival(SOURCE, i, f) for i, f in enumerate(facts)]
    published: list[MovementRecord] = []
    confirmed: int | None = None
    account = str(events[0]["account_id"])
    pos = 0
    for n, now in enumerate(nows):
        size = rng.randint(0, 6) if n < len(nows) - 1 else len(arrivals) - pos
        batch = arrivals[pos : pos + size]
        pos += len(batch)
        update = process(Reader(table), account, batch, render, confirmed, now)
        table.apply(update.writes)
        confirmed = update.root.ver
        published += [MovementRecord.model_validate_json(render(account, p)) for p in update.publish]
    return table, published


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), steps=st.integers(1, 12))
def test_the_state_layer_stepping_now_forward_equals_the_core_as_of_the_last_now(
    seed: int, steps: int
) -> None:
    """In any number of steps across scheduled instants (events arriving in between, voids included),
    what was published sums to what the core has in effect at the last `now`; the chunks hold exactly
    that, the root the MRR then, and the scheduled movements are the core's later ones."""
    rng = random.Random(seed)
    events = account_events(rng, "acct", rng.randint(1, 40))
    nows = sorted(instant(rng.uniform(-5, 200)) for _ in range(steps))
    table, published = run_stream(events, [*nows, nows[-1]], rng)
    final = nows[-1]
    expected = as_of(apply(AccountState("acct"), facts_of(events)).state, final)
    assert totals(published) == totals(list(expected.movements))
    reader = Reader(table)
    root = reader.root("acct")
    assert [m for v in chunk_views(reader, "acct", root, None) for m in v.movements] == list(
        expected.movements
    )
    assert {c: v for c, v in root.mrr.items()} == dict(expected.mrr)
    assert list(scheduled_of(reader, "acct", root)) == list(expected.scheduled)
    # one step to the same `now` gives the same
    one_table, one_published = run_stream(events, [final, final], random.Random(seed))
    assert totals(one_published) == totals(published)
    assert one_table.get(b"acct") is not None


def test_a_void_of_a_scheduled_event_removes_it_from_the_schedule_and_a_void_of_a_past_one_corrects() -> None:
    table = Table()
    now = instant(10)
    sub = raw("subscribe", account="a", at=at(0), amount="100.00")
    cancel = raw("cancel", account="a", at=at(40), amount=None)
    first = process(
        Reader(table),
        "a",
        [Arrival(SOURCE, i, f) for i, f in enumerate(facts_of([sub, cancel]))],
        render,
        None,
        now,
    )
    table.apply(first.writes)
    assert [p.movement.type for p in first.publish] == ["new"]
    assert first.scheduled is not None and [m.type for m in first.scheduled] == ["churn"]
    assert first.root.due == instant(40)
    withdraw = raw("void", account="a", at=at(11), voids=cancel["event_id"])
    second = process(
        Reader(table), "a", [Arrival(SOURCE, 2, facts_of([withdraw])[0])], render, first.root.ver, instant(11)
    )
    table.apply(second.writes)
    assert second.publish == () and second.scheduled == () and second.root.due is None
    # past the cancel's instant nothing happens: it was withdrawn
    third = process(Reader(table), "a", [], render, second.root.ver, instant(50))
    assert third.publish == () and third.writes == ()
    # a void of the (past) subscribe: its movement is retracted
    gone = raw("void", account="a", at=at(51), voids=sub["event_id"])
    fourth = process(
        Reader(table), "a", [Arrival(SOURCE, 3, facts_of([gone])[0])], render, second.root.ver, instant(51)
    )
    table.apply(fourth.writes)
    assert [(p.movement.record, p.movement.type) for p in fourth.publish] == [("retraction", "new")]
    assert dict(fourth.root.mrr) == {} and [v.movements for v in fourth.chunks] == [()]
    # a void of a void is a conflict with its reason
    twice = raw("void", account="a", at=at(52), voids=gone["event_id"])
    fifth = process(
        Reader(table), "a", [Arrival(SOURCE, 4, facts_of([twice])[0])], render, fourth.root.ver, instant(52)
    )
    assert fifth.conflicts == ((0, VOID_OF_VOID),)


def test_a_void_before_the_event_it_voids_waits_for_it() -> None:
    table = Table()
    sub = raw("subscribe", account="a", at=at(0), amount="100.00")
    up = raw("upgrade", account="a", at=at(5), amount="200.00")
    void = raw("void", account="a", at=at(1), voids=up["event_id"])
    now = instant(30)
    u1 = process(
        Reader(table),
        "a",
        [Arrival(SOURCE, 0, facts_of([sub])[0]), Arrival(SOURCE, 1, facts_of([void])[0])],
        render,
        None,
        now,
    )
    table.apply(u1.writes)
    u2 = process(Reader(table), "a", [Arrival(SOURCE, 2, facts_of([up])[0])], render, u1.root.ver, now)
    table.apply(u2.writes)
    assert u2.publish == () and u2.applied == 1
    # and a redelivered copy of it is a duplicate, not a conflict
    u3 = process(Reader(table), "a", [Arrival(SOURCE, 3, facts_of([up])[0])], render, u2.root.ver, now)
    assert u3.duplicates == 1 and u3.conflicts == () and u3.publish == ()
    expected = as_of(apply(AccountState("a"), facts_of([sub, void, up])).state, now)
    assert dict(u2.root.mrr) == dict(expected.mrr) == {"USD": 10000}


def test_an_instant_is_applied_once_whatever_the_steps() -> None:
    """A scheduled upgrade: calls before, at and after its instant publish its movement exactly once."""
    table = Table()
    sub = raw("subscribe", account="a", at=at(0), amount="100.00")
    up = raw("upgrade", account="a", at=at(20), amount="130.00")
    arrivals = [Arrival(SOURCE, i, f) for i, f in enumerate(facts_of([sub, up]))]
    types: list[str] = []
    confirmed = None
    for now in (instant(1), instant(19.99), instant(20), instant(20), instant(25)):
        update = process(Reader(table), "a", arrivals if confirmed is None else [], render, confirmed, now)
        table.apply(update.writes)
        confirmed = update.root.ver
        types += [p.movement.type for p in update.publish]
        assert all(instant_of(p.movement.effective_at) <= now for p in update.publish)
    assert types == ["new", "expansion"]
    # (the root moves its as-of instant only when something falls due: nothing changed after day 20)
    assert utc_of(Reader(table).root("a").asof) == START + timedelta(days=20)


# -- the fold stage's timer ------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class FailingProducer(MemoryProducer):
    """Fails every send to the movements topic while `failing`: a worker killed before it sent them."""

    failing = False

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any = None,
        partition: int | None = None,
    ) -> Any:
        if self.failing and topic == TOPICS.movements:
            raise ConnectionError("killed")
        return await super().send(topic, key, value, headers, partition)


def stage_on(table: MemoryTable, producer: MemoryProducer, clock: Clock) -> FoldStage:
    return FoldStage(
        table=table,
        pending=MemoryTable(),
        producer=producer,
        view=MemoryView(),
        metrics=Metrics(CollectorRegistry()),
        topics=TOPICS,
        partitions=PARTITIONS,
        input_copartitioned=True,
        now=clock,
    )


def published_types(producer: MemoryProducer) -> list[tuple[str, str]]:
    """(record_id, type) of each record once: what a consumer deduplicating by record_id sees."""
    seen: dict[str, str] = {}
    for sent in producer.on(TOPICS.movements):
        record = MovementRecord.model_validate_json(sent.value or b"")
        assert record.record_id is not None
        seen.setdefault(record.record_id, record.type)
    return sorted(seen.items())


def test_the_timer_applies_a_scheduled_event_once_even_when_the_worker_dies_at_its_instant() -> None:
    clock = Clock(instant(0))
    table, producer = MemoryTable(), FailingProducer()
    stage = stage_on(table, producer, clock)
    events = [
        raw("subscribe", account="a", at=at(0), amount="100.00"),
        raw("cancel", account="a", at=at(3), amount=None),
    ]
    records = [
        Record(TOPICS.input, partition_for("a", PARTITIONS), i, b"a", json.dumps(e).encode())
        for i, e in enumerate(events)
    ]
    asyncio.run(stage.batch(records))
    assert published_types(producer) == [("a:0", "new")]
    assert stage.schedule == {"a": instant(3)} and table.get(due_key("a")) == str(instant(3)).encode()
    clock.now = instant(2.9)
    assert asyncio.run(stage.apply_due({partition_for("a", PARTITIONS)})) == 0
    # at the instant, the worker dies after the state is written, before the churn is sent
    clock.now = instant(3)
    producer.failing = True
    with pytest.raises(ConnectionError):
        asyncio.run(stage.apply_due({partition_for("a", PARTITIONS)}))
    assert published_types(producer) == [("a:0", "new")]
    assert table.get(due_key("a")) == str(instant(3)).encode(), "kept until what it published is sent"
    # a new worker on the same table (the changelog) finds it due and sends the churn, once
    producer.failing = False
    clock.now = instant(4)
    restarted = stage_on(table, producer, clock)
    assert asyncio.run(restarted.apply_due({partition_for("a", PARTITIONS)})) == 1
    assert published_types(producer) == [("a:0", "new"), ("a:1", "churn")]
    assert table.get(due_key("a")) is None and restarted.schedule == {}
    assert asyncio.run(restarted.apply_due({partition_for("a", PARTITIONS)})) == 0
    assert published_types(producer) == [("a:0", "new"), ("a:1", "churn")]


def test_a_worker_down_across_the_instant_applies_it_when_it_comes_back() -> None:
    clock = Clock(instant(0))
    table, producer = MemoryTable(), MemoryProducer()
    events = [
        raw("subscribe", account="b", at=at(0), amount="80.00"),
        raw("upgrade", account="b", at=at(2), amount="90.00"),
    ]
    records = [
        Record(TOPICS.input, partition_for("b", PARTITIONS), i, b"b", json.dumps(e).encode())
        for i, e in enumerate(events)
    ]
    asyncio.run(stage_on(table, producer, clock).batch(records))
    clock.now = instant(9)  # down from day 0 to day 9
    back = stage_on(table, producer, clock)
    assert asyncio.run(back.apply_due(set(range(PARTITIONS)))) == 1
    assert [t for _, t in published_types(producer)] == ["new", "expansion"]


def test_a_root_from_before_scheduling_keeps_its_events_in_effect_and_schedules_later_ones() -> None:
    table = Table()
    sub = raw("subscribe", account="old", at=at(0), amount="100.00")
    first = process(Reader(table), "old", [Arrival(SOURCE, 0, facts_of([sub])[0])], render, None, instant(1))
    table.apply(first.writes)
    new = json.loads(table[b"old"])
    doc = {"t": new["t"], "h": new["h"], "v": 3, **new["r"]}  # as the release before scheduling wrote it
    del doc["ao"], doc["due"]
    table[b"old"] = json.dumps(doc).encode()
    assert Reader(table).root("old").asof == instant(0)
    cancel = raw("cancel", account="old", at=at(30), amount=None)
    second = process(
        Reader(table), "old", [Arrival(SOURCE, 1, facts_of([cancel])[0])], render, None, instant(2)
    )
    assert [p.movement.type for p in second.publish] == [] and second.root.due == instant(30)
