"""The fold stage: a batch of records in; the account state written, then the records it caused sent,
then the Redis view written. Knows nothing of Faust: the table, the producer and the view are passed in
(processors/stream/app.py wires them to Faust; the unit tests to in-memory fakes).

Per batch, in this order:
1. every record is routed (processors/stream/intake.py): dead letters and forwards are sent;
2. each account's arrivals are applied (processors/stream/state.py) and its writes go to the table and its
   changelog, in order, to the account's partition;
3. once every changelog write is acknowledged, the movement records (and any outbox resent after a crash)
   and the conflicts' dead letters are sent;
4. once those are acknowledged, the Redis view is written (or, while Redis is down, the accounts waiting
   for it are marked in the `redis-pending` table, which the refresh stage works off).
A batch that raises has written nothing the next attempt cannot redo: the caller exits without commit.

Before 1, the batch is checked against the position the fold keeps per source partition (the next offset
it expects, in the table): records the consumer skipped are read again and folded first. Faust can skip
records prefetched before a rebalance on a partition the worker keeps (faust-streaming issues #216, #221);
a skipped billing event would be lost for good, since later ones of the partition are applied and committed.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import RedisError

from processors import clock
from processors.core.intake import MAX_RECORD_BYTES, RECORD, Rejection
from processors.core.movement import record_json
from processors.sinks.metrics import Metrics
from processors.sinks.redis_view import AccountView
from processors.stream import deadletter
from processors.stream.deadletter import SOURCE_HEADER
from processors.stream.intake import Fold, Forward, Record, Rejected, partition_for, route
from processors.stream.lag import LagClock
from processors.stream.state import (
    Arrival,
    Published,
    Reader,
    UnknownFormat,
    Update,
    due_key,
    is_due_key,
    process,
    record_id,
)

log = logging.getLogger("mrr_stream")
CONFIRMED_KEPT = 100_000  # accounts whose acknowledged root version is remembered (then forgotten at once)
PENDING_REJECTED = b"rejected"
DEAD = b"\x00dl\x00"  # table key prefix of a dead letter's source: the Redis count can be rebuilt
POSITION = b"\x00pos\x00"  # table key prefix: the next offset the fold expects of a source partition
REFETCH_MAX = 10_000  # a larger hole is taken as deliberate: an offset reset, or records gone by retention

# Records of (topic, partition) at offsets in [start, end), read again from the broker.
Refetch = Callable[[str, int, int, int], Awaitable[list[Record]]]


async def acknowledged(deliveries: Iterable[Awaitable[object]]) -> None:
    """Wait until every delivery is acknowledged; the first failure raises. (In turn, not by gather: they
    complete about in the order sent, most are done when reached, and gather's per-future callbacks cost
    a worker several percent.)"""
    for delivery in deliveries:
        await delivery


def position_key(topic: str, partition: int) -> bytes:
    return POSITION + f"{topic}\x00{partition}".encode()


class Table(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...

    async def write(self, partition: int, key: bytes, value: bytes | None) -> Awaitable[object]:
        """Set (or with None delete) a key in the store and send it to the changelog; the awaitable
        completes when the changelog has it."""
        ...


class Producer(Protocol):
    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> Awaitable[object]:
        """Enqueue a record; the awaitable completes when the broker has it."""
        ...


class View(Protocol):
    async def write(
        self, accounts: Sequence[AccountView], rejected: Iterable[str] = (), latest: Sequence[str] = ()
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Topics:
    input: str
    by_account: str
    movements: str
    dlq: str


def render(account_id: str, published: Published) -> str:
    return record_json(published.movement, record_id(account_id, published.seq))


class FoldStage:
    def __init__(
        self,
        *,
        table: Table,
        pending: Table,
        producer: Producer,
        view: View,
        metrics: Metrics,
        topics: Topics,
        partitions: int,
        input_copartitioned: bool,
        max_record_bytes: int = MAX_RECORD_BYTES,
        refetch: Refetch | None = None,
        now: Callable[[], int] = clock.now,
    ) -> None:
        """`refetch`: how records the consumer skipped are read again; None: no position is kept.
        `now`: the clock (µs since the epoch), the as-of instant of every batch."""
        self.now = now
        # Accounts with scheduled events: account -> the first one's instant, and a heap of the same
        # (entries the dict no longer holds are stale), loaded from the table's due keys per partition.
        self.schedule: dict[str, int] = {}
        self.timeline: list[tuple[int, str]] = []
        self.scheduled_partitions: set[int] = set()
        self.max_record_bytes = max_record_bytes
        self.refetch = refetch
        self.lag = LagClock(0.0)
        self.table, self.pending, self.producer, self.view = table, pending, producer, view
        self.metrics, self.topics, self.partitions = metrics, topics, partitions
        direct = {topics.by_account, topics.input} if input_copartitioned else {topics.by_account}
        self.direct_topics = frozenset(direct)
        self.confirmed: dict[str, int] = {}  # account -> root version written here and acknowledged
        # Held while a batch runs: the refresh stage writes Redis from the table only between batches, when
        # everything in the table is acknowledged (a version read from an unacknowledged write could be
        # reused, after a crash, by a different state).
        self.lock = asyncio.Lock()

    async def _dead_letter(
        self,
        record: Record,
        rejection: Rejection,
        conflict: bool = False,
        error: Exception | None = None,
        oversize: bool = False,
    ) -> Awaitable[object]:
        self.metrics.dead_letters.labels(rejection.field).inc()
        self.metrics.outcome("failed" if error else "conflict" if conflict else "rejected").inc()
        log.warning("dead letter %s: %s", record.source, rejection)
        if error is not None:
            headers = deadletter.headers(rejection, record.source, type(error).__name__, stage="fold")
        else:
            kind = "EventIdConflict" if conflict else "ValidationError"
            headers = deadletter.headers(rejection, record.source, kind)
        key, value = record.key, record.value
        if value is not None and (oversize or len(value) + len(key or b"") > self.max_record_bytes):
            # what the dead-letter topic can carry: the first bytes, the size and a hash of the rest
            headers += deadletter.oversize_headers(value)
            key, value = key and key[: deadletter.OVERSIZE_KEPT], value[: deadletter.OVERSIZE_KEPT]
        return await self.producer.send(self.topics.dlq, key, value, headers)

    async def _apply(
        self,
        now: int,
        reader: Reader,
        account: str,
        partition: int,
        arrivals: list[Arrival],
        originals: list[Record],
        written: list[Awaitable[object]],
        sent: list[Awaitable[object]],
        rejected: list[str],
    ) -> list[tuple[Update, list[Record]]]:
        """Apply an account's arrivals. An unexpected error while applying them (a record the engine cannot
        handle) must not stop the stream, as Kafka Streams' processing-exception handler has it: the
        arrivals are applied one by one, and each that fails is dead-lettered with the error, the
        account's state as if it had never arrived. (Errors writing the table are not record errors: they
        propagate, and the worker exits without commit.)"""
        try:
            update = process(reader, account, arrivals, render, self.confirmed.get(account), now)
        except UnknownFormat:
            raise  # state from a newer version: no record is at fault; stop, and lose none of them
        except Exception:
            log.exception("account %s: a batch failed to apply; applying its records one by one", account)
        else:
            await self._write(partition, update, written)
            return [(update, originals)]
        out: list[tuple[Update, list[Record]]] = []
        for arrival, original in zip(arrivals, originals, strict=True):
            try:
                update = process(reader, account, [arrival], render, self.confirmed.get(account), now)
            except UnknownFormat:
                raise
            except Exception as exc:
                reason = Rejection(RECORD, f"could not be applied: {type(exc).__name__}: {exc}"[:500])
                sent.append(await self._dead_letter(original, reason, error=exc))
                rejected.append(str(original.source))
                continue
            await self._write(partition, update, written)
            out.append((update, [original]))
        return out

    async def _write(self, partition: int, update: Update, written: list[Awaitable[object]]) -> None:
        for key, value in update.writes:
            written.append(await self.table.write(partition, key, value))

    async def batch(self, records: Sequence[Record]) -> None:
        async with self.lock:
            await self._batch(records)

    def _position(self, topic: str, partition: int) -> int | None:
        stored = self.table.get(position_key(topic, partition))
        return None if stored is None else int(stored)

    async def _read_again(
        self, topic: str, partition: int, start: int, end: int, how: str
    ) -> list[Record] | None:
        """The records at offsets [start, end) of a source partition, which the consumer `how` (skipped,
        passed over), read again from the broker; None (not read) past REFETCH_MAX, taken as deliberate."""
        assert self.refetch is not None
        if end - start > REFETCH_MAX:
            # not a prefetch the consumer dropped: the group's offsets were moved on purpose (an
            # operator's reset) or retention deleted the records; follow the consumer
            log.error(
                f"%s:%d: the consumer {how} offsets %d to %d past the fold's position: not read again "
                "(more than %d; an offset reset or retention?)",
                topic,
                partition,
                start,
                end - 1,
                REFETCH_MAX,
            )
            return None
        again = [r for r in await self.refetch(topic, partition, start, end) if start <= r.offset < end]
        if again:
            # `how` in the template: the log rate limit holds back repeats of one template for 30 s
            log.warning(
                f"%s:%d: %d records the consumer {how} (offsets %d to %d) were read again",
                topic,
                partition,
                len(again),
                again[0].offset,
                again[-1].offset,
            )
            self.metrics.refetched.inc(len(again))
        return again

    async def _skipped(self, records: Sequence[Record]) -> list[Record]:
        """The records of the batch's direct partitions between the fold's position and the batch's last
        offset that the batch lacks, read again (offsets without a record, such as transaction markers,
        simply return nothing)."""
        if self.refetch is None:
            return []
        offsets: dict[tuple[str, int], set[int]] = {}
        for record in records:
            if record.topic in self.direct_topics:
                offsets.setdefault((record.topic, record.partition), set()).add(record.offset)
        found: list[Record] = []
        for (topic, partition), present in offsets.items():
            expected = self._position(topic, partition)
            if expected is None:
                continue
            for offset in sorted(present):
                if offset > expected:  # a hole: [expected, offset)
                    found += await self._read_again(topic, partition, expected, offset, "skipped") or []
                expected = max(expected, offset + 1)
        return found

    async def fill(self, ends: dict[tuple[str, int], int]) -> int:
        """Fold what the consumer passed over without delivering: called while the worker is idle, with
        the end offsets of the direct partitions it holds. A partition whose end is past the fold's
        position has records the consumer will not deliver (it resumed at the end, as after a rebalance
        that gave it a partition with no committed offset): they are read again and folded. Returns how
        many records were folded."""
        if self.refetch is None or self.lock.locked():  # a batch is running: not idle after all
            return 0
        found: list[Record] = []
        for (topic, partition), end in ends.items():
            start = self._position(topic, partition) if topic in self.direct_topics else None
            if start is None or start >= end:
                continue
            again = await self._read_again(topic, partition, start, end, "passed over")
            if again is None:
                continue
            if not again:  # offsets without records (transaction markers): the position moves past them
                async with self.lock:
                    if self._position(topic, partition) == start:
                        key = position_key(topic, partition)
                        await (await self.table.write(partition, key, str(end).encode()))
            found += again
        if found:
            await self.batch(found)
        return len(found)

    async def _positions(self, records: Sequence[Record], written: list[Awaitable[object]]) -> None:
        """Move each direct partition's position past the batch: written after the batch's state writes
        to the same changelog partition, so it never lands without them."""
        if self.refetch is None:
            return
        ends: dict[tuple[str, int], int] = {}
        for record in records:
            if record.topic in self.direct_topics:
                tp = (record.topic, record.partition)
                ends[tp] = max(ends.get(tp, 0), record.offset + 1)
        for (topic, partition), end in ends.items():
            stored = self._position(topic, partition)
            if stored is None or stored < end:
                key = position_key(topic, partition)
                written.append(await self.table.write(partition, key, str(end).encode()))

    def load_schedule(self, partitions: set[int]) -> None:
        """Know the scheduled instants of these partitions' accounts (after an assignment or a restart):
        read from the due keys the fold writes beside each root."""
        if partitions == self.scheduled_partitions:
            return
        self.schedule = {}
        for key, value in self.table.items():
            if is_due_key(key):
                account = key[: -len(due_key(""))].decode()
                if partition_for(account, self.partitions) in partitions:
                    self.schedule[account] = int(value)
        self.timeline = [(at, account) for account, at in self.schedule.items()]
        heapq.heapify(self.timeline)
        self.scheduled_partitions = set(partitions)

    def _reschedule(self, account: str, due: int | None) -> None:
        if due is None:
            self.schedule.pop(account, None)
        elif self.schedule.get(account) != due:
            self.schedule[account] = due
            heapq.heappush(self.timeline, (due, account))

    async def apply_due(self, partitions: set[int]) -> int:
        """Apply the scheduled events of these partitions' accounts that fell due: their movements are
        published, Redis and the gauges follow, as for an arriving event. Returns how many accounts."""
        self.load_schedule(partitions)
        now = self.now()
        due: list[str] = []
        while self.timeline and self.timeline[0][0] <= now:
            at, account = heapq.heappop(self.timeline)
            if self.schedule.get(account) == at and partition_for(account, self.partitions) in partitions:
                due.append(account)
        if due:
            async with self.lock:
                await self._batch([], accounts=due)
        return len(due)

    async def _batch(self, batch: Sequence[Record], accounts: Sequence[str] = ()) -> None:
        """`accounts`: accounts to process even without arrivals (their scheduled events fell due)."""
        now = self.now()
        records = [*await self._skipped(batch), *batch]
        sent: list[Awaitable[object]] = []
        rejected: list[str] = []
        by_account: dict[str, tuple[int, list[Arrival], list[Record]]] = {}
        for record in records:
            self.lag.processed_to(record.topic, record.partition, record.offset, record.timestamp)
            routed = route(record, self.partitions, self.direct_topics, self.max_record_bytes)
            if isinstance(routed, Rejected):
                sent.append(await self._dead_letter(record, routed.rejection, oversize=routed.oversize))
                rejected.append(str(record.source))
            elif isinstance(routed, Forward):
                sent.append(
                    await self.producer.send(
                        self.topics.by_account,
                        routed.account_id.encode(),
                        record.value,
                        [(SOURCE_HEADER, str(record.source).encode())],
                        partition_for(routed.account_id, self.partitions),
                    )
                )
            else:
                assert isinstance(routed, Fold)
                entry = by_account.setdefault(routed.fact.account_id, (routed.partition, [], []))
                entry[1].append(Arrival(record.topic, record.offset, routed.fact))
                entry[2].append(record)
        for account in accounts:
            by_account.setdefault(account, (partition_for(account, self.partitions), [], []))

        reader = Reader(self.table)
        written: list[Awaitable[object]] = []
        updates: list[tuple[str, Update, list[Record]]] = []
        for account, (partition, arrivals, originals) in by_account.items():
            applied = await self._apply(
                now, reader, account, partition, arrivals, originals, written, sent, rejected
            )
            updates += [(account, update, originals) for update, originals in applied]
        await self._positions(records, written)
        await acknowledged(written)  # the state is durable before anything it caused leaves

        views: list[AccountView] = []
        latest: list[str] = []
        for account, update, originals in updates:
            key = account.encode()
            for published in update.publish:
                sent.append(await self.producer.send(self.topics.movements, key, published.text.encode()))
                latest.append(published.text)
                self.metrics.published(published.movement)
            for raw in update.resend:
                sent.append(await self.producer.send(self.topics.movements, key, raw))
            for i, reason in update.conflicts:
                sent.append(await self._dead_letter(originals[i], reason, conflict=True))
                rejected.append(str(originals[i].source))
            self.metrics.outcome("applied").inc(update.applied)
            self.metrics.outcome("duplicate").inc(update.duplicates)
            self.metrics.outcome("replayed").inc(update.replayed)
            if update.replayed:
                log.info(
                    "account %s: %d arrivals redelivered after a restart, %d records sent again",
                    account,
                    update.replayed,
                    len(update.resend),
                )
            if update.writes or update.replayed or update.chunks or update.scheduled is not None:
                views.append(
                    AccountView(account, update.root.ver, update.root.mrr, update.chunks, update.scheduled)
                )
        for source in rejected:
            where = partition_for(source, self.partitions)
            sent.append(await self.table.write(where, DEAD + source.encode(), b""))
        await acknowledged(sent)
        # The due key changes only once what the root's commit published is acknowledged: a crash before
        # leaves the old instant, so the account is processed again after the restart, and the records of
        # a scheduled event applied by the timer (no input record to redeliver) are sent again.
        marked: list[Awaitable[object]] = []
        for account, update, _ in updates:
            key = due_key(account)
            stored = self.table.get(key)
            at = update.root.due
            value = None if at is None else str(at).encode()
            if stored != value:
                where = partition_for(account, self.partitions)
                marked.append(await self.table.write(where, key, value))
            self._reschedule(account, at)
        await acknowledged(marked)
        for account, update, _ in updates:
            self.confirmed[account] = update.root.ver
        if len(self.confirmed) > CONFIRMED_KEPT:
            self.confirmed.clear()
        await self.write_view(views, rejected, latest)

    async def write_view(self, views: list[AccountView], rejected: list[str], latest: list[str]) -> None:
        try:
            await self.view.write(views, rejected=rejected, latest=latest)
        except (RedisError, OSError) as exc:
            log.warning("Redis unavailable (%s); %d accounts wait for it", exc, len(views))
            marks: list[Awaitable[object]] = []
            for v in views:
                key = v.account_id.encode()
                since = min((c.start for c in v.chunks), default=None)
                old = self.pending.get(key)
                if old is not None and old != PENDING_REJECTED and old != b"-":
                    since = int(old) if since is None else min(since, int(old))
                value = b"-" if since is None else str(since).encode()
                where = partition_for(v.account_id, self.partitions)
                marks.append(await self.pending.write(where, key, value))
            for source in rejected:
                where = partition_for(source, self.partitions)
                marks.append(await self.pending.write(where, source.encode(), PENDING_REJECTED))
            await acknowledged(marks)
            self.metrics.redis_pending.set(sum(1 for _ in self.pending.items()))
