"""The in-process replay: JSON Lines in, the same core as the stream, monthly aggregates out."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from processors.core.account import AccountState, apply
from processors.core.aggregates import monthly_aggregates, monthly_totals
from processors.core.fact import Fact, fact_of
from processors.core.intake import Rejection, parse_event
from processors.core.movement import Movement
from schemas.aggregate import MonthlyAggregate


@dataclass(frozen=True, slots=True)
class Reject:
    source: str  # where the line came from: "file:line"
    rejection: Rejection
    raw: bytes


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    accounts: dict[str, AccountState]
    rejects: list[Reject]
    months: list[MonthlyAggregate]
    events: int  # valid events applied, duplicates not counted
    duplicates: int

    @property
    def movements(self) -> list[Movement]:
        return [m for state in self.accounts.values() for m in state.movements]


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    # The replay holds every event until all are read; the cyclic collector would rescan that growing,
    # acyclic heap again and again (measured: validation 12x slower). Reference counting still frees.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def replay(lines: Iterable[tuple[str, bytes]], on_line: Callable[[], None] | None = None) -> ReplayOutcome:
    """Replay (source, raw line) pairs; blank lines are skipped, bad ones rejected, the rest applied."""
    with _no_cyclic_gc():
        return _replay(lines, on_line)


def _replay(lines: Iterable[tuple[str, bytes]], on_line: Callable[[], None] | None) -> ReplayOutcome:
    by_account: dict[str, list[Fact]] = {}
    source_of: dict[int, tuple[str, bytes]] = {}
    rejects: list[Reject] = []
    for source, raw in lines:
        if on_line is not None:
            on_line()
        if not raw.strip():
            continue
        parsed = parse_event(raw)
        if isinstance(parsed, Rejection):
            rejects.append(Reject(source, parsed, raw))
            continue
        fact = fact_of(parsed)
        by_account.setdefault(fact.account_id, []).append(fact)
        source_of[id(fact)] = (source, raw)
    accounts: dict[str, AccountState] = {}
    applied_events = duplicates = 0
    for account_id, facts in by_account.items():
        result = apply(AccountState(account_id), facts)
        accounts[account_id] = result.state
        applied_events += len(result.accepted)
        duplicates += len(result.duplicates)
        for fact, rejection in result.conflicts:
            source, raw = source_of[id(fact)]
            rejects.append(Reject(source, rejection, raw))
    months = monthly_aggregates(monthly_totals(m for s in accounts.values() for m in s.movements))
    return ReplayOutcome(accounts, rejects, months, applied_events, duplicates)
