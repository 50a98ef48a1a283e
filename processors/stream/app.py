"""The Faust application: two agents around the pure core.

billing-events --intake--> {app}-events-by-account --fold--> mrr-movements, Redis, Prometheus
       \\--> billing-events-dlq (bad records)           \\--> billing-events-dlq (event_id conflicts)

* intake validates each record and re-keys it by account, so each account's state lives in exactly one
  partition of the by-account topic and of the `accounts` table, whatever the producer's keys were;
* fold applies each account's arrivals with the ledger (processors/stream/ledger.py), writes the account's
  table entry once per batch, publishes its movement records, and replaces its Redis view.

Delivery is at-least-once (Faust's exactly-once mode is not used): correctness comes from the ledger's
replay detection and from idempotent Redis writes, not from the commit protocol. Both agents take batches
with take_events() and never raise out of a batch: Faust acks a batch's events when its body ends, even
through an exception.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any, NoReturn

import faust
from redis.exceptions import RedisError

from processors.core.account import AccountState
from processors.core.fact import Fact, fact_of
from processors.core.intake import RECORD, Rejection, parse_event
from processors.core.movement import to_record
from processors.settings import Settings
from processors.sinks.metrics import Metrics
from processors.sinks.redis_view import AccountView, RedisView
from processors.stream import codec, deadletter
from processors.stream.deadletter import REJECTED_HEADER, SOURCE_HEADER, Source
from processors.stream.kafka import by_account_topic, faust_broker
from processors.stream.ledger import Ledger, Published, record_id, step

log = logging.getLogger("mrr_stream")
_LEDGER_CACHE = 200_000  # decoded ledgers kept in memory


def movement_bytes(account_id: str, published: Published) -> bytes:
    return to_record(published.movement, record_id(account_id, published.seq)).model_dump_json().encode()


def crash(stage: str) -> NoReturn:
    """Die like a kill -9: nothing of the batch is acked or committed, so all of it is redelivered.
    (Raising would not do: take_events() acks a batch's events even when its body raises.)"""
    log.exception("%s batch failed: exiting without commit so that the batch is processed again", stage)
    logging.shutdown()
    os._exit(70)


def _header(event: Any, name: str) -> str | None:
    value = (event.headers or {}).get(name)
    return value.decode() if isinstance(value, bytes) else value


def create_app(settings: Settings, metrics: Metrics | None = None) -> faust.App:
    metrics = metrics or Metrics()
    broker, credentials = faust_broker(settings)
    app = faust.App(
        settings.app_id,
        broker=broker,
        broker_credentials=credentials,
        store=settings.table_store,
        topic_partitions=settings.partitions,
        processing_guarantee="at_least_once",
        broker_session_timeout=10,  # a restarted worker rejoins in seconds, not a minute
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        web_enabled=False,
        producer_acks=-1,
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    source = app.topic(settings.input_topic, **raw)
    # internal=True: Faust creates it with the app's partition count; auto-creation would give it one.
    by_account = app.topic(by_account_topic(settings), internal=True, partitions=settings.partitions, **raw)
    # use_partitioner: the changelog partition follows the key, as in the by-account topic. Faust's default
    # (the partition of the "current event") would misplace accounts when a batch spans partitions.
    table_options: dict[str, Any] = {
        "partitions": settings.partitions,
        "use_partitioner": True,
        "key_type": bytes,
        "value_type": bytes,
    }
    accounts = app.Table("accounts", default=None, **table_options)
    redis_pending = app.Table("redis-pending", default=None, **table_options)
    view = RedisView(settings.redis_url, settings.redis_prefix)
    # Decoded ledgers by account, with the exact bytes they were decoded from: reused only while the
    # table still holds those very bytes, so the table stays the only source of truth.
    decoded: dict[bytes, tuple[bytes, Ledger]] = {}
    rows_version = -1

    async def send(
        topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        # Faust's producer directly, without Topic.send's per-message machinery. A commit flushes this
        # producer before it commits offsets, so at-least-once holds as for Topic.send.
        await app.producer.send(topic, key, value, partition=None, timestamp=None, headers=headers)

    def ledger_of(key: bytes, account_id: str) -> Ledger:
        stored = accounts.get(key)
        if stored is None:
            return Ledger(AccountState(account_id))
        cached = decoded.get(key)
        if cached is not None and cached[0] is stored:
            return cached[1]
        ledger = codec.decode(stored)
        decoded[key] = (stored, ledger)
        return ledger

    def view_of(ledger: Ledger) -> AccountView:
        state = ledger.state
        return AccountView.of(state.account_id, ledger.version, state.mrr, state.movements)

    def store(key: bytes, ledger: Ledger) -> None:
        data = codec.encode(ledger)
        accounts[key] = data
        if len(decoded) >= _LEDGER_CACHE:
            decoded.clear()  # crude but bounded: the hot accounts come back at once
        decoded[key] = (data, ledger)

    async def dead_letter(
        value: bytes | None, key: bytes | None, rejection: Rejection, source: Source, conflict: bool = False
    ) -> None:
        await send(settings.dlq_topic, key, value, deadletter.headers(rejection, source, conflict))
        metrics.dead_letters.labels(rejection.field).inc()
        metrics.events.labels("conflict" if conflict else "rejected").inc()
        log.warning("dead letter %s: %s", source, rejection)

    @app.agent(source)
    async def intake(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            started = time.perf_counter()
            try:
                for event in events:
                    msg = event.message
                    where = Source(msg.topic, msg.partition, msg.offset)
                    value = event.value
                    parsed = parse_event(value) if value else Rejection(RECORD, "empty record")
                    if isinstance(parsed, Rejection):
                        await dead_letter(value, event.key, parsed, where)
                        # Counted in Redis by fold, where every Redis write is replay-safe.
                        await send(
                            by_account.get_topic_name(),
                            str(where).encode(),
                            b"",
                            [(SOURCE_HEADER, str(where).encode()), (REJECTED_HEADER, b"1")],
                        )
                        continue
                    await send(
                        by_account.get_topic_name(),
                        parsed.account_id.encode(),
                        value,
                        [(SOURCE_HEADER, str(where).encode())],
                    )
                metrics.lag.labels("intake").set(max(0.0, time.time() - events[-1].message.timestamp / 1000))
            except Exception:
                crash("intake")
            finally:
                metrics.batch_seconds.labels("intake").observe(time.perf_counter() - started)

    async def write_views(views: list[AccountView], rejected: list[str], latest: list[str]) -> None:
        try:
            await view.write(views, rejected=rejected, latest=latest)
        except (RedisError, OSError) as exc:
            log.warning("Redis unavailable (%s); %d accounts wait for it", exc, len(views))
            for v in views:
                redis_pending[v.account_id.encode()] = f"account:{v.version}".encode()
            for source in rejected:
                redis_pending[source.encode()] = b"rejected"
        metrics.redis_pending.set(len(redis_pending))

    async def fold_batch(events: Sequence[Any]) -> None:
        arrivals: dict[str, list[tuple[int, Fact, Any]]] = {}
        rejected: list[str] = []
        for event in events:
            source_text = _header(event, SOURCE_HEADER)
            msg = event.message
            where = Source.parse(source_text) if source_text else Source(msg.topic, msg.partition, msg.offset)
            if _header(event, REJECTED_HEADER):
                rejected.append(str(where))
                continue
            parsed = parse_event(event.value)
            if isinstance(parsed, Rejection):  # only if someone wrote to the internal topic directly
                await dead_letter(event.value, event.key, parsed, where)
                rejected.append(str(where))
                continue
            fact = fact_of(parsed)
            arrivals.setdefault(fact.account_id, []).append((event.message.offset, fact, (event, where)))
        views: list[AccountView] = []
        latest: list[str] = []
        for account_id, items in arrivals.items():
            key = account_id.encode()
            ledger = ledger_of(key, account_id)
            result = step(ledger, [(offset, fact) for offset, fact, _ in items])
            if result.changed or result.ledger.last_offset != ledger.last_offset:
                store(key, result.ledger)
            for published in result.publish:
                record = movement_bytes(account_id, published)
                await send(settings.movements_topic, key, record)
                latest.append(record.decode())
                metrics.published(published.movement)
            by_offset = {offset: extra for offset, _, extra in items}
            for offset, _, rejection in result.conflicts:
                event, where = by_offset[offset]
                await dead_letter(event.value, event.key, rejection, where, conflict=True)
                rejected.append(str(where))
            metrics.events.labels("applied").inc(result.applied)
            metrics.events.labels("duplicate").inc(result.duplicates)
            metrics.events.labels("replayed").inc(result.replayed)
            if result.replayed:
                log.info(
                    "account %s: %d arrivals redelivered after a restart, %d records sent again",
                    account_id,
                    result.replayed,
                    len(result.publish) - (len(result.ledger.log) - len(ledger.log)),
                )
            if result.changed or result.resync:
                views.append(view_of(result.ledger))
        await write_views(views, rejected, latest)

    @app.agent(by_account)
    async def fold(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            started = time.perf_counter()
            try:
                await fold_batch(events)
                metrics.lag.labels("fold").set(max(0.0, time.time() - events[-1].message.timestamp / 1000))
            except Exception:
                crash("fold")
            finally:
                metrics.batch_seconds.labels("fold").observe(time.perf_counter() - started)

    @app.timer(interval=settings.refresh_seconds)  # type: ignore[untyped-decorator]
    async def refresh() -> None:
        """Bring Redis up to date after an outage, and keep rows and gauges fresh."""
        try:
            if len(redis_pending):
                marked = dict(redis_pending.items())
                views, rejected = [], []
                for key, mark in marked.items():
                    if mark == b"rejected":
                        rejected.append(key.decode())
                    elif accounts.get(key) is not None:
                        views.append(view_of(ledger_of(key, key.decode())))
                await view.write(views, rejected=rejected)
                for key, mark in marked.items():
                    # fold may have marked the account again meanwhile, for a newer version whose write
                    # failed: that mark stays for the next round.
                    if redis_pending.get(key) == mark:
                        del redis_pending[key]
                log.info(
                    "Redis is back: %d accounts and %d dead letters brought up to date",
                    len(views),
                    len(rejected),
                )
            nonlocal rows_version
            version = await view.version()
            if version != rows_version and await view.refresh_rows():
                rows_version = version
                metrics.rows(await view.months())
            metrics.redis_pending.set(len(redis_pending))
        except (RedisError, OSError) as exc:
            log.debug("refresh skipped: %s", exc)

    return app
