"""The real Redis: plain writes and a transactional pipeline, read back; the view's refresh under a race."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import replay
from processors.sinks.redis_view import AccountView, RedisView
from schemas.money import format_cents


def test_write_and_read(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset(f"{redis_prefix}h", mapping={"a": "1.00", "b": "2.50"})
    assert client.hgetall(f"{redis_prefix}h") == {"a": "1.00", "b": "2.50"}


def test_transactional_pipeline_is_all_or_nothing(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    key = f"{redis_prefix}counter"
    with client.pipeline(transaction=True) as pipe:
        pipe.set(key, 10)
        pipe.incrby(key, 5)
        pipe.hset(f"{redis_prefix}other", "x", "y")
        assert pipe.execute() == [True, 15, 1]
    # A watched key changed by someone else aborts the whole transaction.
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(key)
        client.set(key, 99)
        pipe.multi()
        pipe.set(key, 0)
        try:
            pipe.execute()
            raised = False
        except redis.WatchError:
            raised = True
    assert raised and client.get(key) == "99"


def test_refresh_gives_way_to_a_concurrent_change(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """refresh_rows() WATCHes the version, reads the totals, then rewrites the rows in one MULTI/EXEC. A
    batch landing after the WATCH (another worker's) makes the EXEC fail: refresh_rows() says None and
    leaves the rows alone, and the next refresh writes them from the new totals."""
    events = HistoryGenerator(60, 8, 23, parse_month("2025-01")).events()
    outcome = replay((str(i), line.encode()) for i, line in enumerate(arrange(events, 23)))
    views = [AccountView.of(s.account_id, s.events, s.mrr, s.movements) for s in outcome.accounts.values()]
    first, second = views[:30], views[30:]

    async def go() -> None:
        view, other = RedisView(redis_url, redis_prefix), RedisView(redis_url, redis_prefix)
        try:
            await view.write(first)
            version = await view.version()
            read_totals = view._totals
            races = 0

            async def totals_then_a_concurrent_batch() -> Any:
                nonlocal races
                totals = await read_totals()  # after the WATCH, before the MULTI/EXEC
                if races == 0:
                    races += 1
                    await other.write(second)  # another connection: bumps {prefix}version
                return totals

            monkeypatch.setattr(view, "_totals", totals_then_a_concurrent_batch)
            assert await view.refresh_rows() is None
            assert races == 1 and await view.version() > version  # the change really came in between
            client = view.client
            assert await client.exists(view.key("months"), view.key("current")) == 0
            assert await client.exists(*(view.key("month", r.month, r.currency) for r in outcome.months)) == 0

            assert await view.refresh_rows() is not None  # nothing in the way now: the rows of both batches
            assert await view.months() == outcome.months
            latest = {row.currency: row for row in outcome.months}  # by month within a currency
            assert await view.current() == {
                field: value
                for cur, row in latest.items()
                for field, value in (
                    (f"{cur}:mrr", format_cents(row.closing_mrr)),
                    (f"{cur}:customers", str(row.customers_closing)),
                )
            }
        finally:
            await view.close()
            await other.close()

    asyncio.run(go())
