"""The replay keeps compact records, not raw lines and Facts: its outcome must still be exactly what the
core gives when applied directly to every line, rejects (with their raw text) included."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import pytest

from processors.core.account import AccountState, apply
from processors.core.aggregates import monthly_aggregates, monthly_totals
from processors.core.fact import Fact, fact_of
from processors.core.intake import Rejection, parse_event
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import ReplayOutcome, _Packer, replay
from schemas.aggregate import MonthlyAggregate
from tests.factories import raw

CONFLICT = Rejection("event_id", "already used by an event with different content")


@dataclass
class Direct:
    """The core applied to every line, holding everything, as the replay did before it was compacted."""

    states: dict[str, AccountState]
    rejects: list[tuple[str, Rejection, bytes]]
    months: list[MonthlyAggregate]
    events: int
    duplicates: int


def direct(lines: list[tuple[str, bytes]]) -> Direct:
    by_account: dict[str, list[tuple[Fact, str, bytes]]] = {}
    rejects: list[tuple[str, Rejection, bytes]] = []
    for source, line in lines:
        if not line.strip():
            continue
        parsed = parse_event(line)
        if isinstance(parsed, Rejection):
            rejects.append((source, parsed, line))
            continue
        fact = fact_of(parsed)
        by_account.setdefault(fact.account_id, []).append((fact, source, line))
    states: dict[str, AccountState] = {}
    events = duplicates = 0
    for account_id, arrivals in by_account.items():
        result = apply(AccountState(account_id), [fact for fact, _, _ in arrivals])
        states[account_id] = result.state
        events += len(result.accepted)
        duplicates += len(result.duplicates)
        for fact, rejection in result.conflicts:
            source, line = next((s, r) for f, s, r in arrivals if f is fact)
            rejects.append((source, rejection, line))
    months = monthly_aggregates(monthly_totals(m for s in states.values() for m in s.movements))
    return Direct(states, rejects, months, events, duplicates)


def assert_same(outcome: ReplayOutcome, expected: Direct) -> None:
    assert outcome.months == expected.months
    assert (outcome.events, outcome.duplicates) == (expected.events, expected.duplicates)
    assert [(r.source, r.rejection, r.raw) for r in outcome.rejects] == expected.rejects
    assert list(outcome.accounts) == list(expected.states)
    for account_id, state in expected.states.items():
        account = outcome.accounts[account_id]
        assert account.account_id == account_id
        assert list(account.mrr.items()) == list(state.mrr.items())
        assert account.movements == state.movements
        assert account.events == len(state.events)
    assert outcome.movements == [m for s in expected.states.values() for m in s.movements]


def with_conflicts(lines: list[str], seed: int, n: int) -> list[str]:
    """Other content under ids already used: written differently (spaces after separators), so that a
    reject's raw text shows which line it came from. Some land before the line they clash with."""
    rng = random.Random(seed)
    out = list(lines)
    for line in rng.sample([x for x in lines if x.startswith('{"event_id"')], n):
        event = json.loads(line)
        if event.get("items"):
            event["items"][0]["quantity"] = event["items"][0].get("quantity", 1) + 1
        else:
            event["effective_at"] = "2025-06-30T12:00:00Z"
        out.insert(rng.randrange(len(out) + 1), json.dumps(event))
    return out


@pytest.mark.parametrize("seed", [1, 7, 2024])
def test_the_replay_equals_the_core_applied_directly(seed: int) -> None:
    events = HistoryGenerator(120, 14, seed, parse_month("2024-11")).events()
    lines = arrange(events, seed, shuffle=True, duplicates=0.1, late=0.2, bad=0.02)
    lines = with_conflicts(lines, seed, 25)
    lines[5:5] = ["", "   ", "\t\r"]  # blank lines are skipped, not rejected
    pairs = [(f"history.jsonl:{i + 1}", f"{line}\n".encode()) for i, line in enumerate(lines)]
    outcome = replay(pairs)
    expected = direct(pairs)
    assert sum(r.rejection == CONFLICT for r in outcome.rejects) >= 25
    assert outcome.duplicates > 0 and any(r.rejection.field != "event_id" for r in outcome.rejects)
    assert_same(outcome, expected)


def test_a_conflict_is_rejected_with_the_raw_text_of_its_own_line() -> None:
    first = raw("subscribe", account="a", event_id="e1", at="2025-01-05T00:00:00Z", amount="100.00")
    clash = raw("subscribe", account="a", event_id="e1", at="2025-01-05T00:00:00Z", amount="120.00")
    lines = [
        ("f:1", json.dumps(first).encode()),
        ("f:2", json.dumps(first, indent=1).encode()),  # same content, other text: a duplicate
        ("f:3", json.dumps(clash, separators=(",", ":")).encode() + b"\r\n"),
        ("f:4", json.dumps(clash).encode()),
        # Another account may use the same id: no conflict there, but its raw text is kept in case.
        ("f:5", json.dumps({**clash, "account_id": "b"}).encode()),
    ]
    outcome = replay(lines)
    assert [(r.source, r.rejection, r.raw) for r in outcome.rejects] == [
        ("f:3", CONFLICT, lines[2][1]),
        ("f:4", CONFLICT, lines[3][1]),
    ]
    assert (outcome.events, outcome.duplicates) == (2, 1)
    assert outcome.accounts["a"].mrr == {"USD": 10000} and outcome.accounts["b"].mrr == {"USD": 12000}
    assert_same(outcome, direct(lines))


def test_ids_outside_ascii_survive_packing() -> None:
    lines = [
        raw("subscribe", account="compte-é", sub="Abo-Ü", event_id="évt-1 ✓", at="2025-01-05T00:00:00Z"),
        raw(
            "upgrade",
            account="compte-é",
            sub="Abo-Ü",
            event_id="évt-2 😀",
            at="2025-02-05T00:00:00Z",
            amount="150.00",
        ),
        raw("cancel", account="compte-é", sub="Abo-Ü", event_id="évt-3", at="2025-03-05T00:00:00Z"),
    ]
    pairs = [(str(i), json.dumps(e, ensure_ascii=i % 2 == 0).encode()) for i, e in enumerate(lines)]
    outcome = replay(pairs)
    assert [m.event_ids for m in outcome.accounts["compte-é"].movements] == [
        ("évt-1 ✓",),
        ("évt-2 😀",),
        ("évt-3",),
    ]
    assert_same(outcome, direct(pairs))


def test_packed_records_give_back_equal_facts() -> None:
    facts = [
        Fact(0, "e", "a", "s", "cancel", None, 0, "00" * 10),
        Fact(1_735_689_600_000_000, "é" * 128, "a", "Ü" * 128, "subscribe", "EUR", 10**9, "ab" * 10),
        Fact(-(2**62), "big", "a", "s", "subscribe", "USD", 2**70, "cd" * 10),  # MRR kept aside
    ]
    packer, packed = _Packer(), bytearray()
    for seq, fact in enumerate(facts):
        packer.pack(packed, seq * 7, fact)
    assert packer.unpack("a", packed) == (facts, [0, 7, 14])


def test_a_line_over_the_size_limit_is_rejected_as_the_stream_rejects_it() -> None:
    from processors.replay import replay as run

    line = b'{"event_id": "e", "pad": "' + b"x" * 200 + b'"}'
    outcome = run([("f:1", line + b"\n")], max_record_bytes=100)
    [reject] = outcome.rejects
    assert reject.rejection.field == "(record)" and "above the limit of 100" in reject.rejection.reason


def test_an_event_the_engine_fails_on_is_rejected_and_the_rest_replayed(monkeypatch: Any) -> None:
    import processors.replay as replay_module
    from processors.core.account import apply as real_apply

    def poisoned(state: Any, facts: Any) -> Any:
        facts = list(facts)
        if any(f.event_id == "poison" for f in facts):
            raise RuntimeError("boom")
        return real_apply(state, facts)

    lines = [
        json.dumps(raw("subscribe", account="a1", at="2025-01-01T00:00:00Z")).encode(),
        json.dumps(
            raw("upgrade", account="a1", at="2025-02-01T00:00:00Z", amount="150.00", event_id="poison")
        ).encode(),
        json.dumps(raw("upgrade", account="a1", at="2025-03-01T00:00:00Z", amount="120.00")).encode(),
    ]
    clean = replay_module.replay([("f:1", lines[0]), ("f:3", lines[2])])
    monkeypatch.setattr(replay_module, "apply", poisoned)
    outcome = replay_module.replay([(f"f:{i + 1}", line) for i, line in enumerate(lines)])
    [reject] = outcome.rejects
    assert reject.source == "line 2" and "RuntimeError: boom" in reject.rejection.reason
    assert outcome.months == clean.months
    assert outcome.accounts["a1"].movements == clean.accounts["a1"].movements
