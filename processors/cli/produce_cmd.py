"""`mrr-stream produce FILE`: publish JSON Lines to the input topic as they are, bad lines too.

Each line that is a JSON object with a string `account_id` is keyed by it (UTF-8 bytes) and partitioned by
Kafka's default partitioner (murmur2 of the key), as the Java client and aiokafka do: the worker then folds
it in the partition it arrived in. Unkeyed lines (`--unkeyed`, and the bad ones) are re-keyed by the
worker through its by-account topic; the result is the same either way."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TransferSpeedColumn

from processors.settings import Settings
from processors.stream.kafka import client_options, ensure_topics


def register(sub: Any) -> None:
    p = sub.add_parser("produce", help="publish a JSON Lines file to the input topic, as is")
    p.add_argument("file", type=Path)
    p.add_argument("--rate", type=float, default=0, help="events per second (0: as fast as possible)")
    p.add_argument("--unkeyed", action="store_true", help="send every line without a key")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def account_key(line: bytes) -> bytes | None:
    """The key a producer should give a billing event: its account id."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, or nested too deep for Python's parser
        return None
    account = doc.get("account_id") if isinstance(doc, dict) else None
    return account.encode() if isinstance(account, str) else None


async def produce(
    settings: Settings,
    lines: list[bytes],
    rate: float = 0,
    progress: Progress | None = None,
    keyed: float = 1.0,
    topic: str | None = None,
) -> int:
    """`keyed`: the share of lines keyed by account (the rest unkeyed, chosen reproducibly).
    `topic`: where to (default: the input topic)."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", linger_ms=10, max_batch_size=256 * 1024
    )
    await producer.start()
    task = progress.add_task("produce", total=len(lines)) if progress else None
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        rng = random.Random(len(lines))
        for n, line in enumerate(lines, start=1):
            key = account_key(line) if keyed >= 1 or rng.random() < keyed else None
            await producer.send(topic or settings.input_topic, line, key=key)
            if rate:
                delay = started + n / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if progress and task is not None and n % 1000 == 0:
                progress.update(task, completed=n)
        await producer.flush()
        if progress and task is not None:
            progress.update(task, completed=len(lines))
    finally:
        await producer.stop()
    return len(lines)


def read_lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\n") if line.strip()]


def run(args: argparse.Namespace) -> int:
    # A topic just created may still be electing leaders: aiokafka retries, and says so loudly.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    lines = read_lines(args.file)
    show = not args.no_progress and os.isatty(2)
    columns = (TextColumn("produce"), BarColumn(), MofNCompleteColumn(), TransferSpeedColumn())
    with Progress(*columns, disable=not show, transient=True) as progress:
        sent = asyncio.run(produce(Settings(), lines, args.rate, progress, keyed=0 if args.unkeyed else 1))
    print(f"{sent:,} records sent to {Settings().input_topic}")
    return 0
