"""What is known about the future: the movements scheduled events will cause, summed over a window.

A scheduled movement is one the fold of the events known now places after now (processors/core/account.py:
as_of). It is a forecast from what is known: a late event before it, or a void, can still change it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from processors.core.fact import utc_of
from processors.core.movement import Movement
from schemas.movement import MOVEMENT_TYPES, MovementRecord, MovementType
from schemas.scheduled import ScheduledChanges, ScheduledTotal

WINDOWS_DAYS = (30, 60, 90)  # the windows the gauges and the page show
MAX_DAYS = 3_660  # the longest window the CLI and the API accept: ten years
MOVEMENTS_LISTED = 1_000  # at most this many movements in one answer (the totals count them all)


def scheduled_changes(
    moves: Iterable[Movement | MovementRecord],
    now: int,
    days: int,
    currency: str | None = None,
    limit: int = MOVEMENTS_LISTED,
) -> ScheduledChanges:
    """The scheduled movements effective by `now` + `days` days (µs since the epoch), per currency and
    type. Movements at or before `now` count too: the stream applies one within a second of its instant,
    and until it has, it is still scheduled."""
    start = utc_of(now)
    until = start + timedelta(days=days)
    listed = sorted(
        (m for m in moves if m.effective_at <= until and (currency is None or m.currency == currency)),
        key=lambda m: (m.effective_at, m.account_id, m.movement_id),
    )
    sums: dict[tuple[str, MovementType], tuple[int, int, set[str]]] = {}
    for m in listed:
        amount, count, accounts = sums.get((m.currency, m.type), (0, 0, set()))
        accounts.add(m.account_id)
        sums[(m.currency, m.type)] = (amount + m.amount, count + 1, accounts)
    order = {t: i for i, t in enumerate(MOVEMENT_TYPES)}
    totals = tuple(
        ScheduledTotal(currency=cur, type=kind, amount=amount, movements=count, accounts=tuple(sorted(accts)))
        for (cur, kind), (amount, count, accts) in sorted(
            sums.items(), key=lambda i: (i[0][0], order[i[0][1]])
        )
    )
    records = tuple(
        m if isinstance(m, MovementRecord) else MovementRecord.model_validate(m._asdict())
        for m in listed[:limit]
    )
    return ScheduledChanges(
        as_of=start, until=until, days=days, totals=totals, movements=records, truncated=len(listed) > limit
    )
