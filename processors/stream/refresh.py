"""The refresh stage, run on a timer: brings Redis up to date after an outage (the accounts and dead
letters the fold stage marked in `redis-pending`), and keeps the monthly rows and the gauges fresh."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from processors import clock
from processors.core.fact import DAY_US, month_of
from processors.core.scheduled import WINDOWS_DAYS, scheduled_changes
from processors.sinks.metrics import Metrics
from processors.sinks.redis_view import AccountView, RedisView
from processors.stream.fold import DEAD, PENDING_REJECTED, Table, acknowledged
from processors.stream.intake import partition_for
from processors.stream.state import SEP, Reader, chunk_views, scheduled_of

log = logging.getLogger("mrr_stream")
REBUILD_BATCH = 200  # accounts per Redis pipeline while rebuilding
SCHEDULED_SECONDS = 60  # the scheduled gauges' windows move with time: recomputed at least this often


class RefreshStage:
    def __init__(
        self,
        *,
        table: Table,
        pending: Table,
        view: RedisView,
        metrics: Metrics,
        partitions: int,
        owned: Callable[[], set[int] | None] = lambda: None,
        lock: asyncio.Lock | None = None,
        now: Callable[[], int] = clock.now,
    ) -> None:
        """`owned`: the partitions this worker holds now, None while it rebalances or recovers.
        `now`: the clock (µs since the epoch): the monthly rows run through its month."""
        self.now = now
        self.rows_month = ""
        self.scheduled_at = (-1, 0.0)  # (version, monotonic time) the scheduled gauges were set at
        self.table, self.pending, self.view, self.metrics = table, pending, view, metrics
        self.partitions = partitions
        self.owned = owned
        self.lock = (
            lock or asyncio.Lock()
        )  # the fold stage's: Redis is written from the table between batches
        self.rows_version = -1

    async def rebuild_if_lost(self) -> None:
        owned = self.owned()
        if not owned:
            return
        missing = await self.view.missing_markers(owned)
        if not missing:
            return
        self.metrics.view_rebuilding.set(1)
        started = time.monotonic()
        log.warning(
            "the Redis view of partitions %s is missing: rebuilding it from the tables", sorted(missing)
        )
        accounts, letters = await self.rebuild(missing)
        for partition in missing:
            await self.view.set_marker(partition)
        self.metrics.view_rebuilding.set(0)
        self.metrics.view_rebuilds.inc()
        self.rows_version = -1  # the version counter restarted with the view: rewrite the rows anyway
        log.warning(
            "Redis view rebuilt: %d accounts, %d dead letters in %.1f s",
            accounts,
            letters,
            time.monotonic() - started,
        )

    async def rebuild(self, partitions: set[int]) -> tuple[int, int]:
        """Write every account and dead letter of these partitions to Redis again (idempotent)."""
        reader = Reader(self.table)
        views: list[AccountView] = []
        rejected: list[str] = []
        accounts = letters = 0
        for key, _ in self.table.items():
            if key.startswith(DEAD):
                source = key[len(DEAD) :].decode()
                if partition_for(source, self.partitions) in partitions:
                    rejected.append(source)
            elif SEP not in key:
                account = key.decode()
                if partition_for(account, self.partitions) in partitions:
                    root = reader.root(account)
                    chunks = chunk_views(reader, account, root, None)
                    scheduled = scheduled_of(reader, account, root)
                    views.append(AccountView(account, root.ver, root.mrr, chunks, scheduled))
            if len(views) >= REBUILD_BATCH or len(rejected) >= 10 * REBUILD_BATCH:
                await self.view.write(views, rejected=rejected)
                accounts, letters = accounts + len(views), letters + len(rejected)
                views, rejected = [], []
        await self.view.write(views, rejected=rejected)
        return accounts + len(views), letters + len(rejected)

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
            scheduled = scheduled_of(reader, account, root)
            views.append(AccountView(account, root.ver, root.mrr, chunks, scheduled))
        await self.view.write(views, rejected=rejected)
        cleared: list[Awaitable[object]] = []
        for key, mark in marked.items():
            # fold may have marked it again meanwhile (for an earlier chunk): that mark stays
            if self.pending.get(key) == mark:
                where = partition_for(key.decode(), self.partitions)
                cleared.append(await self.pending.write(where, key, None))
        await acknowledged(cleared)
        log.info("Redis is back: %d accounts and %d dead letters up to date", len(views), len(rejected))

    async def scheduled_gauges(self, now: int) -> None:
        horizon = now + max(WINDOWS_DAYS) * DAY_US
        moves = await self.view.scheduled(horizon)
        self.metrics.scheduled([scheduled_changes(moves, now, days) for days in WINDOWS_DAYS])

    async def tick(self) -> None:
        try:
            async with self.lock:
                await self.rebuild_if_lost()
                await self.catch_up()
            version = await self.view.version()
            now = self.now()
            month = month_of(now)  # at 00:00 UTC on the 1st, the new month's rows appear, events or not
            stale = version != self.rows_version or month != self.rows_month
            if stale and (rows := await self.view.refresh_rows(month)) is not None:
                self.rows_version, self.rows_month = version, month
                self.metrics.rows(rows)
            last_version, last_time = self.scheduled_at
            if version != last_version or time.monotonic() - last_time > SCHEDULED_SECONDS:
                await self.scheduled_gauges(now)
                self.scheduled_at = (version, time.monotonic())
        except (RedisError, OSError) as exc:
            log.debug("refresh skipped: %s", exc)
        finally:
            self.metrics.redis_pending.set(sum(1 for _ in self.pending.items()))
