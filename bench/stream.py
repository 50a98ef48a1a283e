"""Stream throughput and latency on the local broker, measured in one run.

    python bench/stream.py [--events 200000] [--rate 2000] [--seconds 15]

1. 200,000 events are produced to a fresh 4-partition topic, then one worker process drains them: its
   sustained events/s (from its first processed event to its last, start-up excluded).
2. A bare aiokafka consumer reads the same topic and validates every record: the rate of the floor
   below which the stream cannot go, and the ratio worker / bare.
3. New events at a steady rate: p50/p99 from the produce call to the account's view appearing in Redis.

Goals (issue 5): >= 20,000 events/s per worker process, p99 < 250 ms. Printed whether or not met.
Needs the local servers (`mrr-stream servers start`), or MRR_KAFKA_BOOTSTRAP / MRR_REDIS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from processors.cli.produce_cmd import produce
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.settings import Settings
from schemas.billing_event import BillingEvent


def metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mrr_events_total"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def processed(sample: dict[str, float]) -> float:
    return sum(sample.values())


async def bare_consumer_rate(settings: Settings, total: int) -> float:
    consumer = AIOKafkaConsumer(
        settings.input_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_poll_records=5000,
    )
    await consumer.start()
    seen = 0
    validate = BillingEvent.model_validate_json
    try:
        started = time.perf_counter()
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                for record in records:
                    try:  # noqa: SIM105 - a with-block per record would slow the very loop measured
                        validate(record.value)
                    except ValueError:
                        pass
                    seen += 1
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def latency(settings: Settings, rate: float, seconds: float) -> tuple[list[float], int]:
    """Each event subscribes a new account; its latency ends when the account's hash exists in Redis."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=0)
    client = aioredis.Redis.from_url(settings.redis_url)
    await producer.start()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set() or len(seen) < len(sent):
            waiting = [a for a in list(sent) if a not in seen]
            if waiting:
                async with client.pipeline(transaction=False) as pipe:
                    for a in waiting:
                        pipe.exists(f"{settings.redis_prefix}account:{a}")
                    found = await pipe.execute()
                now = time.perf_counter()
                for a, hit in zip(waiting, found, strict=True):
                    if hit:
                        seen[a] = now
            await asyncio.sleep(0.005)
            if done.is_set() and time.perf_counter() - last_send > 180:
                break  # whatever is still unseen is reported as missing, not silently dropped

    watcher = asyncio.create_task(watch())
    last_send = time.perf_counter()
    start = time.perf_counter()
    n = 0
    try:
        while time.perf_counter() - start < seconds:
            account = f"lat-{os.getpid()}-{n}"
            event = {
                "event_id": f"lat-{os.getpid()}-{n}",
                "type": "subscribe",
                "account_id": account,
                "subscription_id": "s",
                "effective_at": datetime.now(UTC).isoformat(),
                "currency": "USD",
                "interval": "month",
                "items": [{"plan_id": "p", "unit_amount": "10.00"}],
            }
            await producer.send(settings.input_topic, json.dumps(event).encode())
            last_send = sent[account] = time.perf_counter()
            n += 1
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.flush()
        done.set()
        await watcher
    finally:
        await producer.stop()
        await client.aclose()
    return sorted((seen[a] - sent[a]) * 1000 for a in sent if a in seen), len(sent)


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a new topic's leader elections are retried
    console = Console(stderr=True)
    run = f"bench{int(time.time())}"
    settings = Settings(
        app_id=run,
        input_topic=f"{run}-in",
        movements_topic=f"{run}-movements",
        dlq_topic=f"{run}-dlq",
        redis_prefix=f"{run}:",
        partitions=4,
        metrics_port=19350,
    )

    with console.status("generating and producing the history"):
        events = HistoryGenerator(max(10, args.events // 5), 24, 7, parse_month("2024-01")).events()
        lines = [line.encode() for line in arrange(events, 7, late=0.05, duplicates=0.01)[: args.events]]
        asyncio.run(produce(settings, lines))

    env = {
        **os.environ,
        **{
            f"MRR_{k.upper()}": str(v)
            for k, v in settings.model_dump().items()
            if k
            in (
                "app_id",
                "input_topic",
                "movements_topic",
                "dlq_topic",
                "redis_prefix",
                "partitions",
                "metrics_port",
                "kafka_bootstrap",
                "redis_url",
            )
        },
    }
    log = Path(tempfile.mkstemp(prefix="bench-worker-", suffix=".log")[1])
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "processors.cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        first = last = None
        with console.status("worker draining the topic") as status:
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                count = processed(metrics(settings.metrics_port))
                now = time.perf_counter()
                if count and first is None:
                    first = (now, count)
                if count >= len(lines):
                    last = (now, count)
                    break
                status.update(f"worker draining the topic: {count:,.0f} of {len(lines):,}")
                time.sleep(0.1)
        if first is None or last is None:
            raise SystemExit(f"the worker did not drain the topic; see {log}")
        worker_rate = (last[1] - first[1]) / (last[0] - first[0])
        with console.status("bare aiokafka consumer + validation"):
            bare_rate = asyncio.run(bare_consumer_rate(settings, len(lines)))
        with console.status(f"latency at {args.rate:,.0f} events/s for {args.seconds:.0f}s"):
            latencies, sent = asyncio.run(latency(settings, args.rate, args.seconds))
        # Above the worker's rate the latency above is its backlog; at half its rate it is the pipeline's.
        calm_rate = max(50.0, round(worker_rate / 2))
        with console.status("waiting for the backlog to drain"):
            while processed(metrics(settings.metrics_port)) < len(lines) + sent:
                time.sleep(0.5)
        with console.status(f"latency at {calm_rate:,.0f} events/s for {args.seconds:.0f}s"):
            calm, calm_sent = asyncio.run(latency(settings, calm_rate, args.seconds))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()

    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    table = Table(title=f"bench/stream.py — {len(lines):,} events, 4 partitions, one worker process")
    for col in ("measure", "value", "goal", "met"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row(
        "worker sustained events/s",
        f"{worker_rate:,.0f}",
        ">= 20,000",
        "yes" if worker_rate >= 20000 else "no",
    )
    table.add_row("bare aiokafka consumer + validation events/s", f"{bare_rate:,.0f}", "", "")
    table.add_row("ratio worker / bare", f"{worker_rate / bare_rate:.3f}", "", "")
    table.add_row(f"produce -> Redis p50 at {args.rate:,.0f}/s (ms)", f"{p50:.0f}", "", "")
    table.add_row(
        f"produce -> Redis p99 at {args.rate:,.0f}/s (ms)",
        f"{p99:.0f}",
        "< 250",
        "yes" if p99 < 250 else "no",
    )
    table.add_row("latency samples seen / sent", f"{len(latencies):,} / {sent:,}", "", "")
    c50, c99 = percentile(calm, 0.50), percentile(calm, 0.99)
    table.add_row(
        f"produce -> Redis p50 at {calm_rate:,.0f}/s, half the worker's rate (ms)", f"{c50:.0f}", "", ""
    )
    table.add_row(
        f"produce -> Redis p99 at {calm_rate:,.0f}/s, half the worker's rate (ms)", f"{c99:.0f}", "", ""
    )
    table.add_row("latency samples seen / sent at that rate", f"{len(calm):,} / {calm_sent:,}", "", "")
    Console(width=120).print(table)
    print(
        json.dumps(
            {
                "events": len(lines),
                "worker_per_s": round(worker_rate),
                "bare_per_s": round(bare_rate),
                "ratio": round(worker_rate / bare_rate, 3),
                "p50_ms": round(p50, 1),
                "p99_ms": round(p99, 1),
                "calm_rate": calm_rate,
                "calm_p50_ms": round(c50, 1),
                "calm_p99_ms": round(c99, 1),
                "samples": len(latencies),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
