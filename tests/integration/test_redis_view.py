"""The Redis view against the real Redis: idempotent writes, rows equal to the replay."""

from __future__ import annotations

import asyncio
import random

import pytest

from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import AccountOutcome, replay
from processors.sinks.redis_view import REPLACE_CALL_BYTES, AccountView, RedisView


def _replayed(seed: int) -> tuple[list[str], object]:
    events = HistoryGenerator(150, 10, seed, parse_month("2025-01")).events()
    lines = arrange(events, seed, shuffle=True, duplicates=0.05)
    return lines, replay((str(i), line.encode()) for i, line in enumerate(lines))


def view(state: AccountOutcome) -> AccountView:
    return AccountView.of(state.account_id, state.events, state.mrr, state.movements)


@pytest.mark.parametrize("call_bytes", [REPLACE_CALL_BYTES, 1])  # 1: one script call per account
def test_rows_equal_the_replay_whatever_the_write_order(
    redis_url: str, redis_prefix: str, call_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("processors.sinks.redis_view.REPLACE_CALL_BYTES", call_bytes)
    _, outcome = _replayed(11)
    assert hasattr(outcome, "accounts")
    states = list(outcome.accounts.values())
    rng = random.Random(3)

    async def go() -> None:
        redis_view = RedisView(redis_url, redis_prefix)
        try:
            # An older version of some accounts first, then everything in random batches, some twice.
            stale = [AccountView.of(s.account_id, 0, {}, s.movements[:1]) for s in states[:20]]
            await redis_view.write(stale)
            views = [view(s) for s in states]
            shuffled = views + rng.sample(views, 40)
            rng.shuffle(shuffled)
            for i in range(0, len(shuffled), 17):
                await redis_view.write(shuffled[i : i + 17], rejected=[f"t:0:{i}"])
            version = await redis_view.version()
            await redis_view.write(views)  # a full redelivery changes nothing
            await redis_view.write(stale)  # nor does an old version arriving late
            assert await redis_view.version() == version
            assert await redis_view.rows_version() == 0  # the readers' figures are not there yet
            assert await redis_view.refresh_rows() is not None
            assert await redis_view.rows_version() == version > 0
            assert await redis_view.months() == outcome.months  # type: ignore[attr-defined]
            assert await redis_view.rejected() == len(range(0, len(shuffled), 17))
            sample = states[0]
            assert await redis_view.account_mrr(sample.account_id) == dict(sample.mrr)
        finally:
            await redis_view.close()

    asyncio.run(go())


def test_a_later_refresh_includes_another_writers_batch(redis_url: str, redis_prefix: str) -> None:
    _, outcome = _replayed(5)
    states = list(outcome.accounts.values())  # type: ignore[attr-defined]

    async def go() -> None:
        a, b = RedisView(redis_url, redis_prefix), RedisView(redis_url, redis_prefix)
        try:
            await a.write([view(s) for s in states[:50]])
            assert await a.refresh_rows() is not None
            first = await a.months()
            await b.write([view(s) for s in states[50:]])
            assert await a.refresh_rows() is not None
            assert await a.months() == outcome.months  # type: ignore[attr-defined]
            assert first != outcome.months  # type: ignore[attr-defined]
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_at_midnight_on_the_first_the_new_month_row_appears_and_month_to_date_restarts(
    redis_url: str, redis_prefix: str
) -> None:
    """An injected clock crosses a month boundary with no event: the refresh stage writes the new month's
    row (opening = the previous closing, nothing moved) and the month-to-date gauges restart."""
    from datetime import UTC, datetime

    from prometheus_client import CollectorRegistry

    from processors.core.fact import instant_of
    from processors.sinks.metrics import Metrics
    from processors.stream.memory import MemoryTable
    from processors.stream.refresh import RefreshStage
    from tests.factories import fx

    now = [instant_of(datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC))]
    registry = CollectorRegistry()

    async def go() -> None:
        redis_view = RedisView(redis_url, redis_prefix)
        try:
            facts = [fx("subscribe", account="m1", at="2026-10-05T00:00:00Z", amount="120.00")]
            from processors.core.account import AccountState, apply

            state = apply(AccountState("m1"), facts).state
            await redis_view.write([AccountView.of("m1", 1, state.mrr, state.movements)])
            stage = RefreshStage(
                table=MemoryTable(),
                pending=MemoryTable(),
                view=redis_view,
                metrics=Metrics(registry),
                partitions=4,
                now=lambda: now[0],
            )
            await stage.tick()
            assert [(r.month, r.net_new_mrr) for r in await redis_view.months()] == [("2026-10", 12000)]
            assert registry.get_sample_value("mrr_net_new_mrr_month_to_date", {"currency": "USD"}) == 120.0
            now[0] = instant_of(datetime(2026, 11, 1, tzinfo=UTC))
            await stage.tick()
            rows = await redis_view.months()
            assert [(r.month, r.opening_mrr, r.net_new_mrr, r.closing_mrr) for r in rows] == [
                ("2026-10", 0, 12000, 12000),
                ("2026-11", 12000, 0, 12000),
            ]
            assert registry.get_sample_value("mrr_net_new_mrr_month_to_date", {"currency": "USD"}) == 0.0
            assert registry.get_sample_value("mrr_current_mrr", {"currency": "USD"}) == 120.0
            assert await redis_view.current() == {"USD:mrr": "120.00", "USD:customers": "1"}
        finally:
            await redis_view.close()

    asyncio.run(go())
