"""Reads a source partition's records again from the broker, for the fold stage's position check: a
plain aiokafka consumer outside the consumer group (it commits nothing and joins no rebalance), started for
the read and stopped after it (the consumer skips records only around a rebalance)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from processors.settings import Settings
from processors.stream.intake import Record
from processors.stream.kafka import client_options, topic_bytes

READ_TIMEOUT = 30.0  # seconds to read a range before the batch fails (and the worker retries it)


class BrokerRefetch:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def __call__(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a range starting below the log's start (retention)
            max_partition_fetch_bytes=max(1024 * 1024, topic_bytes(self.settings)),
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            last = (await consumer.end_offsets([tp]))[tp]
            stop = min(end, last)
            out: list[Record] = []
            async with asyncio.timeout(READ_TIMEOUT):
                while await consumer.position(tp) < stop:
                    fetched = await consumer.getmany(tp, timeout_ms=500)
                    for message in fetched.get(tp, []):
                        if start <= message.offset < end:
                            out.append(
                                Record(
                                    topic,
                                    partition,
                                    message.offset,
                                    message.key,
                                    message.value,
                                    message.timestamp / 1000,
                                    {k: bytes(v) for k, v in message.headers},
                                )
                            )
            return out
        finally:
            await consumer.stop()
