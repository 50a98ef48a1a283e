"""The stream's per-account ledger: replays after a crash, duplicates, and the codec."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.core.account import AccountState, apply
from processors.core.aggregates import MonthTotals, monthly_totals
from processors.core.fact import Fact, fact_of
from processors.core.intake import parse_event
from processors.core.movement import Movement
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.stream.codec import decode, encode
from processors.stream.ledger import Ledger, record_id, step
from schemas.billing_event import BillingEvent
from tests.factories import fx


def facts_of(lines: list[str]) -> list[Fact]:
    out = []
    for line in lines:
        parsed = parse_event(line)
        if isinstance(parsed, BillingEvent):
            out.append(fact_of(parsed))
    return out


def history(seed: int, accounts: int = 25) -> list[Fact]:
    events = HistoryGenerator(accounts, 8, seed, parse_month("2025-01")).events()
    return facts_of(arrange(events, seed, shuffle=True, duplicates=0.15, late=0.3))


def test_new_arrivals_publish_their_movements_once() -> None:
    ledger = Ledger(AccountState("acct-1"))
    s1 = step(ledger, [(0, fx("subscribe", at="2025-01-01T00:00:00Z"))])
    assert [(p.seq, p.offset, p.movement.type) for p in s1.publish] == [(0, 0, "new")]
    s2 = step(s1.ledger, [(5, fx("upgrade", at="2025-02-01T00:00:00Z", amount="150.00"))])
    assert [(p.seq, p.offset) for p in s2.publish] == [(1, 5)]
    assert s2.ledger.last_offset == 5 and s2.ledger.version == 2 and s2.changed and not s2.resync


def test_producer_duplicate_at_a_new_offset_publishes_nothing() -> None:
    event = fx("subscribe", at="2025-01-01T00:00:00Z")
    s1 = step(Ledger(AccountState("acct-1")), [(0, event)])
    s2 = step(s1.ledger, [(9, event)])
    assert s2.publish == () and s2.duplicates == 1 and not s2.changed and not s2.resync
    assert s2.ledger.last_offset == 9


def test_replay_resends_what_its_offsets_produced() -> None:
    a = fx("subscribe", at="2025-01-01T00:00:00Z")
    b = fx("upgrade", at="2025-02-01T00:00:00Z", amount="120.00")
    c = fx("downgrade", at="2025-01-15T00:00:00Z", amount="90.00")  # late: a correction
    s = step(Ledger(AccountState("acct-1")), [(0, a), (1, b), (2, c)])
    assert len(s.ledger.log) == 5  # new, expansion, then retraction + 2 corrected
    again = step(s.ledger, [(1, b), (2, c)])
    assert again.replayed == 2 and again.resync and not again.changed
    assert [p.seq for p in again.publish] == [1, 2, 3, 4]
    assert again.ledger == s.ledger


def test_conflict_is_reported_with_its_offset_even_in_a_replay() -> None:
    a = fx("subscribe", event_id="same", at="2025-01-01T00:00:00Z")
    clash = fx("subscribe", event_id="same", at="2025-01-01T00:00:00Z", amount="1.00")
    s = step(Ledger(AccountState("acct-1")), [(0, a), (1, clash)])
    assert [(o, r.field) for o, _, r in s.conflicts] == [(1, "event_id")]
    assert [(o, r.field) for o, _, r in step(s.ledger, [(1, clash)]).conflicts] == [(1, "event_id")]


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 1000))
def test_codec_round_trip(seed: int) -> None:
    by_account: dict[str, Ledger] = {}
    for offset, fact in enumerate(history(seed)):
        ledger = by_account.get(fact.account_id, Ledger(AccountState(fact.account_id)))
        by_account[fact.account_id] = step(ledger, [(offset, fact)]).ledger
    for ledger in by_account.values():
        assert decode(encode(ledger)) == ledger


def _run_with_crashes(
    facts: list[Fact], rng: random.Random, crashes: int
) -> tuple[dict[str, Ledger], list[tuple[str, Movement]]]:
    """One partition, consumed in random batches with random commits; each crash loses whatever the
    changelog and the movements topic had not made durable at the last commit, in any combination the
    broker allows: a suffix of each account's changelog writes, any subset of sent records."""
    durable_table: dict[str, Ledger] = {}
    durable_records: list[tuple[str, Movement]] = []
    committed = 0
    crash_points = sorted(rng.sample(range(1, len(facts)), min(crashes, len(facts) - 1)))
    while True:
        table = dict(durable_table)
        pending_writes: dict[str, list[Ledger]] = {}
        pending_records: list[tuple[str, Movement]] = []
        offset = committed
        crash_at = crash_points.pop(0) if crash_points else None
        while offset < len(facts) and (crash_at is None or offset < crash_at):
            batch = list(range(offset, min(len(facts), offset + rng.randint(1, 7))))
            grouped: dict[str, list[tuple[int, Fact]]] = {}
            for o in batch:
                grouped.setdefault(facts[o].account_id, []).append((o, facts[o]))
            for account, arrivals in grouped.items():
                result = step(table.get(account, Ledger(AccountState(account))), arrivals)
                table[account] = result.ledger
                pending_writes.setdefault(account, []).append(result.ledger)
                pending_records += [(record_id(account, p.seq), p.movement) for p in result.publish]
            offset = batch[-1] + 1
            if rng.random() < 0.4 or offset == len(facts):  # commit: the producer is flushed first
                for account, writes in pending_writes.items():
                    durable_table[account] = writes[-1]
                durable_records += pending_records
                pending_writes, pending_records = {}, []
                committed = offset
        if crash_at is None:
            return durable_table, durable_records
        for account, writes in pending_writes.items():  # kill -9: some of it had left, some had not
            landed = rng.randint(0, len(writes))
            if landed:
                durable_table[account] = writes[landed - 1]
        durable_records += [r for r in pending_records if rng.random() < 0.5]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_crashes_at_any_instant_neither_lose_nor_double_count(seed: int, crashes: int) -> None:
    facts = history(seed, accounts=12)
    table, records = _run_with_crashes(facts, random.Random(seed), crashes)
    seen: dict[str, Movement] = {}
    for rid, movement in records:
        assert seen.setdefault(rid, movement) == movement, f"{rid} was published with two contents"
    by_account: dict[str, list[Fact]] = {}
    for f in facts:
        by_account.setdefault(f.account_id, []).append(f)
    expected = {a: apply(AccountState(a), fs).state for a, fs in by_account.items()}
    assert {a: led.state for a, led in table.items()} == expected
    totals = {k: t for k, t in monthly_totals(seen.values()).items() if t != MonthTotals()}
    assert totals == monthly_totals(m for s in expected.values() for m in s.movements)
