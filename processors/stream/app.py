"""The Faust application: thin wiring of the stages to Kafka.

One agent reads the input topic and the by-account topic together; the fold stage
(processors/stream/fold.py) routes each record (a dead letter, a forward to the by-account topic, or
folded where it is: an input record keyed by its account in its account's partition crosses Kafka once)
and keeps each account's state in the `accounts` table in bounded pieces (processors/stream/state.py).
A timer runs the refresh stage (processors/stream/refresh.py).

Delivery is at-least-once (Faust's exactly-once mode is not used): correctness comes from the state
layout and from idempotent Redis writes, not from the commit protocol. A batch never raises: Faust acks a
batch's events when its body ends, even through an exception, so on an unexpected error the worker exits
without commit and the batch is redelivered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import weakref
from collections.abc import Awaitable, Iterable, Iterator
from types import SimpleNamespace
from typing import Any, NoReturn

import faust
from faust.streams import _current_event
from faust.types import TP

from processors.settings import Settings
from processors.sinks.metrics import Metrics
from processors.sinks.redis_view import RedisView
from processors.sources.stripe.lookup import StripeLookup
from processors.stream.fold import FoldStage, Topics
from processors.stream.intake import Record
from processors.stream.kafka import by_account_topic, faust_broker, topic_bytes
from processors.stream.lag import READ_SECONDS
from processors.stream.refetch import BrokerRefetch
from processors.stream.refresh import RefreshStage
from processors.stream.state import UnknownFormat
from processors.stream.stripe import StripeStage

log = logging.getLogger("mrr_stream")


IDLE_SECONDS = 5.0  # no batch for this long: look for records the consumer passed over
DUE_SECONDS = 0.5  # how often scheduled events are looked for: applied within this of their instant
# The producer's batch per partition. aiokafka's default, 16 KB, holds about 8 roots: a batch's ~500
# changelog writes then fill ~60 batches, each a produce request of its own, and a write to a partition
# whose last batch is full waits until the sender takes that batch. Larger batches: fewer requests and
# waits (README, Benchmarks). Never more than a topic accepts: the worker creates its topics with
# max.message.bytes = topic_bytes(settings); the changelogs have Kafka's default, 1 MB.
PRODUCER_BATCH_BYTES = 512 * 1024


def crash(stage: str) -> NoReturn:
    """Die like a kill -9: nothing of the batch is acked or committed, so all of it is redelivered.
    (Raising would not do: take_events() acks a batch's events even when its body raises.)"""
    error = sys.exc_info()[1]
    if isinstance(error, UnknownFormat):  # an ordinary deployment mistake: one clear line
        log.error(
            "the accounts table holds state written by a newer mrr-stream (%s): run one version on every "
            "worker; exiting without commit, nothing is lost",
            error,
        )
    else:
        log.exception("%s batch failed: exiting without commit so that the batch is processed again", stage)
    logging.shutdown()
    os._exit(70)


class _At:
    """What Faust's store reads of "the current event": the partition."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


@contextlib.contextmanager
def _in_partition(partition: int) -> Iterator[None]:
    # Faust's rocksdict store files a key under the partition of "the current event"; a batch spans
    # partitions, so each write names its account's partition this way.
    event = _At(partition)
    token = _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


class FaustTable:
    """A Faust table as the stages use it: the store written directly, the changelog record sent to the
    partition the stage names (the account's), delivery awaited by the stage."""

    def __init__(self, app: faust.App, table: Any) -> None:
        self.app, self.table = app, table
        # The memory store keeps raw bytes in a dict: read it directly. Its Mapping.get encodes the key
        # and raises and catches a KeyError on every miss (most index lookups), a tenth of a worker's time.
        store = table.data
        self.raw: dict[bytes, bytes] | None = (
            store.data if type(store).__module__ == "faust.stores.memory" else None
        )

    def get(self, key: bytes) -> bytes | None:
        if self.raw is not None:
            return self.raw.get(key)
        value: bytes | None = self.table.data.get(key)
        return value

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        return list(self.table.data.items())

    async def write(self, partition: int, key: bytes, value: bytes | None) -> Awaitable[object]:
        data = self.table.data
        if self.raw is not None:  # the memory store files no key under a partition: its dict directly
            if value is None:
                self.raw.pop(key, None)
            else:
                self.raw[key] = value
        elif value is None:
            with contextlib.suppress(KeyError):
                del data[key]
        else:
            with _in_partition(partition):
                data[key] = value
        topic = self.table.changelog_topic.get_topic_name()
        sent: Any = await self.app.producer.send(
            topic, key, value, partition=partition, timestamp=None, headers=None
        )

        def persisted(fut: Any) -> None:
            # what rocksdict remembers so that a restart reads only the changelog's newer records
            if not fut.cancelled() and fut.exception() is None:
                data.set_persisted_offset(TP(topic, partition), fut.result().offset)

        if self.raw is None:  # (the memory store has no offsets to remember)
            sent.add_done_callback(persisted)
        return sent  # type: ignore[no-any-return]


class FaustProducer:
    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> Awaitable[object]:
        # Faust's producer directly, without Topic.send's per-message machinery.
        sent: Awaitable[object] = await self.app.producer.send(
            topic, key, value, partition=partition, timestamp=None, headers=headers
        )
        return sent


def faust_store(url: str) -> str:
    """Faust names its RocksDB store `rocksdb://` and drives it with rocksdict when installed (it is a
    dependency here); `rocksdict://` is accepted as the name users look for."""
    return "rocksdb://" + url.removeprefix("rocksdict://") if url.startswith("rocksdict://") else url


def _datadir(settings: Settings) -> dict[str, Any]:
    return {"datadir": str(settings.data_dir)} if settings.data_dir else {}


def _record(event: Any) -> Record:
    msg = event.message
    headers = event.headers or {}
    if not isinstance(headers, dict):
        headers = dict(headers)
    return Record(msg.topic, msg.partition, msg.offset, event.key, event.value, msg.timestamp, headers)


def create_app(
    settings: Settings, metrics: Metrics | None = None, input_partitions: int | None = None
) -> faust.App:
    """`input_partitions`: the input topic's partition count, when known (the worker looks it up); with as
    many partitions as the app, account-keyed input records are folded without the by-account hop."""
    metrics = metrics or Metrics()
    broker, credentials = faust_broker(settings)
    app = faust.App(
        settings.app_id,
        broker=broker,
        broker_credentials=credentials,
        store=faust_store(settings.table_store),
        topic_partitions=settings.partitions,
        processing_guarantee="at_least_once",
        broker_session_timeout=10,  # a restarted worker rejoins in seconds, not a minute
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        web_enabled=False,
        producer_acks=-1,
        producer_max_batch_size=min(PRODUCER_BATCH_BYTES, topic_bytes(settings)),
        # what the input allows, forwarded with a key and a header, or dead-lettered with the reason
        producer_max_request_size=topic_bytes(settings),
        consumer_max_fetch_size=max(4 * 1024 * 1024, 2 * topic_bytes(settings)),
        **_datadir(settings),
    )
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    topics = Topics(
        input=settings.input_topic,
        by_account=by_account_topic(settings),
        movements=settings.movements_topic,
        dlq=settings.dlq_topic,
    )
    # use_partitioner: Faust then never files a key under "the current event's" partition on its own.
    table_options: dict[str, Any] = {
        "partitions": settings.partitions,
        "use_partitioner": True,
        "key_type": bytes,
        "value_type": bytes,
    }
    accounts = FaustTable(app, app.Table("accounts", default=None, **table_options))
    pending = FaustTable(app, app.Table("redis-pending", default=None, **table_options))
    view = RedisView(settings.redis_url.get_secret_value(), settings.redis_prefix)
    fold_stage = FoldStage(
        table=accounts,
        pending=pending,
        producer=FaustProducer(app),
        view=view,
        metrics=metrics,
        topics=topics,
        partitions=settings.partitions,
        input_copartitioned=input_partitions == settings.partitions,
        max_record_bytes=settings.max_record_bytes,
        refetch=BrokerRefetch(settings),
    )

    # Stripe as a source: one partition, its table beside it (processors/stream/stripe.py)
    stripe_table = FaustTable(app, app.Table("stripe", default=None, **{**table_options, "partitions": 1}))
    stripe_stage = StripeStage(
        table=stripe_table,
        producer=FaustProducer(app),
        metrics=metrics,
        input_topic=settings.input_topic,
        dlq_topic=settings.dlq_topic,
        max_record_bytes=settings.max_record_bytes,
        lookup=StripeLookup(settings.stripe_api_key.get_secret_value()) if settings.stripe_api_key else None,
    )

    def owned() -> set[int] | None:
        if app.rebalancing or app.in_recovery:
            return None
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.by_account}

    refresh_stage = RefreshStage(
        table=accounts,
        pending=pending,
        view=view,
        metrics=metrics,
        partitions=settings.partitions,
        owned=owned,
        lock=fold_stage.lock,
    )

    @app.agent(app.topic(topics.input, topics.by_account, **raw))
    async def fold(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            started = time.perf_counter()
            try:
                await fold_stage.batch([_record(e) for e in events])
            except Exception:
                crash("fold")
            finally:
                last_batch[0] = time.monotonic()
                metrics.batch_seconds.labels("fold").observe(time.perf_counter() - started)

    @app.agent(app.topic(settings.stripe_events_topic, partitions=1, **raw))
    async def stripe(stream: Any) -> None:
        async for events in stream.take_events(200, within=0.2):
            started = time.perf_counter()
            try:
                await stripe_stage.batch([_record(e) for e in events])
            except Exception:
                crash("stripe")
            finally:
                metrics.batch_seconds.labels("stripe").observe(time.perf_counter() - started)

    @app.timer(interval=settings.refresh_seconds)  # type: ignore[untyped-decorator]
    async def refresh() -> None:
        await refresh_stage.tick()

    sources = {topics.input, topics.by_account}
    fold_stage.lag.caught_up_at = fold_stage.lag.last_timestamp = time.time()
    last_batch = [time.monotonic()]

    @app.timer(interval=IDLE_SECONDS)  # type: ignore[untyped-decorator]
    async def passed_over() -> None:
        """While no batch has run for a while, fold what the consumer passed over (fold.py: fill)."""
        if app.rebalancing or app.in_recovery or time.monotonic() - last_batch[0] < IDLE_SECONDS:
            return
        consumer = app.consumer
        ends = {
            (tp.topic, tp.partition): end
            for tp in consumer.assignment()
            if (end := consumer.highwater(tp)) is not None
        }
        try:
            await fold_stage.fill(ends)  # (it keeps to the partitions it folds from)
        except Exception as exc:  # the broker unreachable, most likely: the next idle tick tries again
            log.warning("reading passed-over records failed (%s: %s); trying again", type(exc).__name__, exc)

    @app.timer(interval=DUE_SECONDS)  # type: ignore[untyped-decorator]
    async def scheduled() -> None:
        """Apply the scheduled events that fell due (fold.py: apply_due), within a second of their time."""
        partitions = owned()
        if partitions is None:
            return
        try:
            await fold_stage.apply_due(partitions)
        except Exception:
            crash("scheduled")

    @app.timer(interval=READ_SECONDS)  # type: ignore[untyped-decorator]
    async def lag() -> None:
        """Lag from the partitions' end offsets, on a timer: a stuck worker shows it rising."""
        consumer = app.consumer
        ends = {
            (tp.topic, tp.partition): consumer.highwater(tp)
            for tp in consumer.assignment()
            if tp.topic in sources
        }
        metrics.lag.labels("fold").set(fold_stage.lag.seconds(time.time(), ends))
        metrics.records_behind.set(fold_stage.lag.records_behind(ends))

    return app
