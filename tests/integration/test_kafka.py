"""The real broker: plain and transactional produce, consumed back."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def _create(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def _consume(
    bootstrap: str, topic: str, expected: int, isolation: str = "read_uncommitted", timeout: float = 20.0
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(values) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            values += [r.value for records in batch.values() for r in records if r.value is not None]
        # One more poll: nothing beyond what was expected may arrive.
        batch = await consumer.getmany(timeout_ms=1000)
        values += [r.value for records in batch.values() for r in records if r.value is not None]
    finally:
        await consumer.stop()
    return values


def test_produce_and_consume(kafka_bootstrap: str, unique: str) -> None:
    async def go() -> list[bytes]:
        await _create(kafka_bootstrap, unique, partitions=4)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(100):
                await producer.send(unique, f"m{i}".encode(), key=f"k{i % 7}".encode())
            await producer.flush()
        finally:
            await producer.stop()
        return await _consume(kafka_bootstrap, unique, 100)

    values = asyncio.run(go())
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(100))


def test_transactional_produce(kafka_bootstrap: str, unique: str) -> None:
    async def go() -> tuple[list[bytes], list[bytes]]:
        await _create(kafka_bootstrap, unique)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{unique}-tx")
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send(unique, b"committed-1")
                await producer.send(unique, b"committed-2")
            await producer.begin_transaction()
            await producer.send(unique, b"aborted")
            await producer.abort_transaction()
        finally:
            await producer.stop()
        committed = await _consume(kafka_bootstrap, unique, 2, isolation="read_committed")
        everything = await _consume(kafka_bootstrap, unique, 3)
        return committed, everything

    committed, everything = asyncio.run(go())
    assert committed == [b"committed-1", b"committed-2"]
    assert b"aborted" in everything  # the broker did store it; read_committed is what hid it


def test_refetch_reads_a_range_again_across_transaction_markers(kafka_bootstrap: str, unique: str) -> None:
    """What the fold stage reads again when the consumer skipped records: the range's records with their
    keys, values and headers; offsets holding a transaction marker have none, and a range reaching past
    the partition's end returns what there is."""
    from processors.settings import Settings
    from processors.stream.refetch import BrokerRefetch

    async def go() -> tuple[
        list[tuple[int, bytes | None, bytes | None]], list[int], list[int], dict[str, bytes]
    ]:
        await _create(kafka_bootstrap, unique)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{unique}-tx")
        await producer.start()
        try:
            for batch in range(2):
                async with producer.transaction():
                    for i in range(3):
                        await producer.send(unique, f"v{batch}{i}".encode(), key=b"k", headers=[("h", b"x")])
        finally:
            await producer.stop()
        refetch = BrokerRefetch(Settings(kafka_bootstrap=kafka_bootstrap))
        everything = await refetch(unique, 0, 0, 8)
        middle = await refetch(unique, 0, 2, 5)
        past = await refetch(unique, 0, 5, 100)
        return (
            [(r.offset, r.key, r.value) for r in everything],
            [r.offset for r in middle],
            [r.offset for r in past],
            dict(everything[0].headers),
        )

    everything, middle, past, headers = asyncio.run(go())
    assert everything == [
        (0, b"k", b"v00"), (1, b"k", b"v01"), (2, b"k", b"v02"),
        (4, b"k", b"v10"), (5, b"k", b"v11"), (6, b"k", b"v12"),
    ]  # fmt: skip
    assert middle == [2, 4] and past == [5, 6] and headers == {"h": b"x"}
