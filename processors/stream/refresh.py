"""The refresh stage, run on a timer: brings Redis up to date after an outage (the accounts and dead
letters the fold stage marked in `redis-pending`), and keeps the monthly rows and the gauges fresh."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from redis.exceptions import RedisError

from processors.sinks.metrics import Metrics
from processors.sinks.redis_view import AccountView, RedisView
from processors.stream.fold import PENDING_REJECTED, Table
from processors.stream.intake import partition_for
from processors.stream.state import Reader, chunk_views

log = logging.getLogger("mrr_stream")


class RefreshStage:
    def __init__(
        self, *, table: Table, pending: Table, view: RedisView, metrics: Metrics, partitions: int
    ) -> None:
        self.table, self.pending, self.view, self.metrics = table, pending, view, metrics
        self.partitions = partitions
        self.rows_version = -1

    async def catch_up(self) -> None:
        marked = dict(self.pending.items())
        if not marked:
            return
        reader = Reader(self.table)
        views: list[AccountView] = []
        rejected: list[str] = []
        for key, mark in marked.items():
            if mark == PENDING_REJECTED:
                rejected.append(key.decode())
                continue
            account = key.decode()
            root = reader.root(account)
            since = None if mark == b"-" else int(mark)
            chunks = chunk_views(reader, account, root, since) if since is not None else []
            views.append(AccountView(account, root.ver, root.mrr, chunks))
        await self.view.write(views, rejected=rejected)
        cleared: list[Awaitable[object]] = []
        for key, mark in marked.items():
            # fold may have marked it again meanwhile (for an earlier chunk): that mark stays
            if self.pending.get(key) == mark:
                where = partition_for(key.decode(), self.partitions)
                cleared.append(await self.pending.write(where, key, None))
        await asyncio.gather(*cleared)
        log.info("Redis is back: %d accounts and %d dead letters up to date", len(views), len(rejected))

    async def tick(self) -> None:
        try:
            await self.catch_up()
            version = await self.view.version()
            if version != self.rows_version and await self.view.refresh_rows():
                self.rows_version = version
                self.metrics.rows(await self.view.months())
        except (RedisError, OSError) as exc:
            log.debug("refresh skipped: %s", exc)
        finally:
            self.metrics.redis_pending.set(sum(1 for _ in self.pending.items()))
