"""Stream throughput against a bare Faust agent, and latency, on the local broker, measured in one run.

    python bench/stream.py [--events 200000] [--rate 1000] [--seconds 15]

1. `--events` events (a generated history: late events, duplicates) are produced to a fresh 4-partition
   topic, keyed by account as `mrr-stream produce` does, then one worker process drains them: its
   sustained events/s, from its first processed event to its last (start-up excluded), polled from its
   `/metrics` (`mrr_events_total`).
2. New events at a steady `--rate` (1,000/s), keyed by account: p50/p99 from the produce call to the
   account's view appearing in Redis. When that rate is more than half the worker's, the same again at
   half the worker's rate (the pipeline's own latency, without a backlog).
3. The worker is stopped; a bare aiokafka consumer reads the topic and validates every record (extra
   information: Kafka's read floor).
4. The Faust floor, measured twice, before the worker and after it (this shared machine's speed drifts
   over minutes: the ratio takes the mean of the two runs): a bare Faust agent in a process of its own
   (`--floor-agent`, this file), its own app id and consumer group per run, reads the same topic:
   `take_events(5000, within=<the worker's MRR_BATCH_SECONDS>)`, per batch one `table[key] = value`
   per touched account (a memory-store Table of bytes, 4 partitions, use_partitioner=True: its
   changelog goes through Faust's producer buffer) and one `app.producer.send` per event to an output
   topic, the batch's deliveries gathered once per batch; Faust's default producer batch (16 KB), or
   `--floor-producer-batch` bytes (the worker's is larger: processors/stream/app.py). Its sustained
   events/s is measured like the worker's: from its first processed event until it has processed every
   partition up to where the history ended (the same events as the worker's), polled from its own
   Prometheus counter.

On a shared 2-core machine events/s move with whatever else runs: each process' CPU time over its timed
window is printed too (CPU µs per event, and their ratio), and so is the benchmark's own CPU share
while it produces the latency events (it competes with the worker for the same cores).

Goals (issue): worker / Faust floor >= 0.8, p99 produce -> Redis < 250 ms at 1,000 events/s. Printed
whether or not met. The last line is one JSON object (`worker_per_s`, `faust_floor_per_s`,
`ratio_to_faust_floor`, `p99_ms`, ...). Every Redis key of the run (its own prefix) and every temporary
directory is deleted at the end; the topics (`bench-stream-*`) are left to Kafka.
Needs the local servers (`mrr-stream servers start`), or MRR_KAFKA_BOOTSTRAP / MRR_REDIS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from common import clean_redis, free_port, progress_bar
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from processors.cli.produce_cmd import produce
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.settings import Settings
from processors.stream.kafka import client_options
from schemas.billing_event import BillingEvent

PARTITIONS = 4
FLOOR_BATCH = 5000
RATIO_GOAL = 0.8
P99_GOAL_MS = 250.0
DRAIN_TIMEOUT = 3600.0
POLL = 0.5  # seconds between polls of a drained process's counter
WATCH_CHUNK = 64  # accounts asked about at once per partition by the latency watcher


# --------------------------------------------------------------------------------------------------------
# The Faust floor: a process of its own, started by the benchmark with --floor-agent.


def run_floor_agent(args: argparse.Namespace) -> int:
    import faust
    from prometheus_client import Counter, Gauge, start_http_server

    from processors.stream.kafka import faust_broker

    settings = Settings(kafka_bootstrap=args.bootstrap)
    ends = {int(p): int(o) for p, o in (pair.split(":") for pair in args.history_ends.split(","))}
    left = {p for p, end in ends.items() if end > 0}  # partitions not yet read up to the history's end
    processed = Counter("bench_floor_events", "events the floor agent has processed")
    batches = Counter("bench_floor_batches", "batches the floor agent has processed")
    history_left = Gauge("bench_floor_history_left", "partitions not yet processed to the history's end")
    history_left.set(len(left))
    broker, credentials = faust_broker(settings)
    app = faust.App(
        args.app_id,
        broker=broker,
        broker_credentials=credentials,
        store="memory://",
        topic_partitions=args.partitions,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        web_enabled=False,
        producer_acks=-1,
        datadir=args.datadir,
        **({"producer_max_batch_size": args.producer_batch} if args.producer_batch else {}),
    )
    table: Any = app.Table(
        "latest",
        default=None,
        partitions=args.partitions,
        use_partitioner=True,
        key_type=bytes,
        value_type=bytes,
    )
    table.key_serializer = table.value_serializer = "raw"  # bytes as they are, as the worker's table
    out: str = args.out_topic
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }

    @app.agent(app.topic(args.topic, **raw))
    async def floor(stream: Any) -> None:
        async for events in stream.take_events(FLOOR_BATCH, within=args.within):
            latest: dict[bytes, bytes] = {}
            for event in events:
                if event.key is not None:
                    latest[event.key] = event.value
            for key, value in latest.items():  # one table write per touched account
                table[key] = value
            sent = []
            for event in events:  # one send per event, deliveries awaited once per batch
                sent.append(
                    await app.producer.send(
                        out, event.key, event.value, partition=None, timestamp=None, headers=None
                    )
                )
                message = event.message
                if message.partition in left and message.offset >= ends[message.partition] - 1:
                    left.discard(message.partition)
            await asyncio.gather(*sent)
            processed.inc(len(events))
            batches.inc()
            history_left.set(len(left))

    start_http_server(args.metrics_port, addr="127.0.0.1")
    worker = faust.Worker(app, loglevel="warning", quiet=True, override_logging=True)
    worker.spinner = None  # as the stream worker: the spinner would set the root logger to DEBUG
    worker.execute_from_commandline()
    return 0


# --------------------------------------------------------------------------------------------------------
# Helpers of the benchmark itself.


# The worker's series the benchmark reads. Asked for by name: the worker's whole page (every month's rows,
# histograms) costs it far more to render than the floor agent's one counter, twice a second.
WORKER_SERIES = ("mrr_events_total", "mrr_batch_seconds_count")


def scrape(port: int, names: tuple[str, ...] = ()) -> dict[str, float]:
    """The samples of a /metrics page (with `names`, only those series); {} while it does not answer."""
    query = "?" + "&".join(f"name[]={name}" for name in names) if names else ""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics{query}", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def worker_processed(sample: dict[str, float]) -> float:
    """Records the worker is done with: every outcome of mrr_events_total."""
    return sum(v for k, v in sample.items() if k.startswith("mrr_events_total{"))


def worker_batches(sample: dict[str, float]) -> float:
    return sample.get('mrr_batch_seconds_count{stage="fold"}', 0.0)


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM, then SIGKILL after 20 s. Says which it took."""
    if proc.poll() is not None:
        return f"had exited ({proc.returncode})"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
        return "SIGTERM"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return "SIGKILL (SIGTERM not obeyed in 20 s)"


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


async def create_topic(settings: Settings, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # until its leaders are elected
            described = await admin.describe_topics([name])
            if all(t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for t in described for p in t["partitions"]]
    if not partitions:
        raise SystemExit(f"topic {topic} not found")
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Drain:
    """A process draining a topic, timed from the first poll that saw a processed event to the first
    that saw it done: the events in between, the seconds, and the process' CPU seconds meanwhile."""

    events: float
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu / self.events * 1e6


def drain(
    label: str,
    total: int,
    proc: subprocess.Popen[bytes],
    log: Path,
    count: Callable[[], float],
    done: Callable[[float], bool],
) -> Drain:
    """Poll a process' counter every POLL seconds until `done`. Not faster: serving a page costs the
    process CPU (the worker's whole page, at 0.1 s, took about 7% of it; the worker is now asked for the
    two series the benchmark reads, WORKER_SERIES)."""
    first: tuple[float, float, float] | None = None
    with progress_bar() as bar:
        task = bar.add_task(label, total=total)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{label}: the process exited ({proc.returncode}); see {log}:\n{tail(log)}")
            n = count()
            now, cpu = time.perf_counter(), cpu_seconds(proc.pid)
            if n and first is None:
                first = (now, n, cpu)
            if first is not None and done(n):
                if now == first[0]:
                    raise SystemExit(f"{label}: done at the first poll; too few events to time")
                return Drain(n - first[1], now - first[0], cpu - first[2])
            bar.update(task, completed=min(n, total))
            time.sleep(POLL)
    raise SystemExit(f"{label}: not done in {DRAIN_TIMEOUT:.0f} s; see {log}:\n{tail(log)}")


async def bare_consumer_rate(settings: Settings, total: int) -> float:
    consumer = AIOKafkaConsumer(
        settings.input_topic,
        **client_options(settings),
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


async def latency(settings: Settings, rate: float, seconds: float, tag: str) -> tuple[list[float], int]:
    """Each event subscribes a new account, keyed by it (Kafka's default partitioner, as `produce`); its
    latency ends when the account's hash exists in Redis.

    The watcher must not load the 2 cores the worker runs on: it does not ask Redis about every account
    still waiting (thousands when the worker has a backlog) every few ms. A partition's records are
    folded in offset order and each batch's view written in one transaction after the previous one, so
    its accounts appear in Redis in the order they were delivered: every 5 ms it asks about the oldest
    waiting account of each partition, and while all it asked about were there, about the next
    WATCH_CHUNK of those partitions at once."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=0)
    client = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
    await producer.start()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    waiting: dict[int, deque[str]] = defaultdict(deque)  # per partition, in delivery order
    done = asyncio.Event()
    last_send = time.perf_counter()

    async def watch() -> None:
        while not done.is_set() or len(seen) < len(sent):
            ask = dict.fromkeys(waiting, 1)  # per partition, how many of its oldest to ask about
            while ask:
                asked = [(p, a) for p, n in ask.items() for a in islice(waiting[p], n)]
                if not asked:
                    break
                async with client.pipeline(transaction=False) as pipe:
                    for _, a in asked:
                        pipe.exists(f"{settings.redis_prefix}account:{a}")
                    found = await pipe.execute()
                now = time.perf_counter()
                for (_, a), hit in zip(asked, found, strict=True):
                    if hit and a not in seen:
                        seen[a] = now
                more: dict[int, int] = {}
                for p, n in ask.items():
                    queue, before = waiting[p], len(waiting[p])
                    while queue and queue[0] in seen:
                        queue.popleft()
                    if queue and before - len(queue) == n:  # all there: ask about the next ones now
                        more[p] = WATCH_CHUNK
                ask = more
            await asyncio.sleep(0.005)
            if done.is_set() and time.perf_counter() - last_send > 180:
                break  # whatever is still unseen is reported as missing, not silently dropped

    def delivered(account: str) -> Callable[[asyncio.Future[Any]], None]:
        def on_delivery(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                waiting[fut.result().partition].append(account)

        return on_delivery

    watcher = asyncio.create_task(watch())
    start_at = time.perf_counter()
    n = 0
    try:
        while time.perf_counter() - start_at < seconds:
            account = f"lat-{tag}-{n}"
            event = {
                "event_id": f"lat-{tag}-{n}",
                "type": "subscribe",
                "account_id": account,
                "subscription_id": "s",
                "effective_at": datetime.now(UTC).isoformat(),
                "currency": "USD",
                "interval": "month",
                "items": [{"plan_id": "p", "unit_amount": "10.00"}],
            }
            fut = await producer.send(settings.input_topic, json.dumps(event).encode(), key=account.encode())
            last_send = sent[account] = time.perf_counter()
            fut.add_done_callback(delivered(account))
            n += 1
            delay = start_at + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await producer.flush()
        done.set()
        await watcher
    finally:
        watcher.cancel()
        await producer.stop()
        await client.aclose()
    return sorted((seen[a] - sent[a]) * 1000 for a in sent if a in seen), len(sent)


@dataclass
class FloorRun:
    drain: Drain
    batch_mean: float
    log_problems: list[str]
    buffer_full: int


def run_floor(
    settings: Settings,
    run: str,
    tmp: Path,
    history_ends: dict[int, int],
    total: int,
    tag: str,
    producer_batch: int = 0,
) -> FloorRun:
    """The Faust floor agent over the same topic, with an app id, consumer group and output topic of its
    own (`tag` tells the runs apart). `producer_batch`: its producer's batch size in bytes (0: Faust's
    default, the bare agent of the issue)."""
    floor_out = f"{run}-floor-{tag}-out"
    floor_port = free_port()
    asyncio.run(create_topic(settings, floor_out, PARTITIONS))
    floor_log = tmp / f"floor-{tag}.log"
    floor_cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--floor-agent",
        "--app-id",
        f"{run}-floor-{tag}",
        "--bootstrap",
        settings.kafka_bootstrap,
        "--topic",
        settings.input_topic,
        "--out-topic",
        floor_out,
        "--partitions",
        str(PARTITIONS),
        "--metrics-port",
        str(floor_port),
        "--datadir",
        str(tmp / f"floor-{tag}-data"),
        "--history-ends",
        ",".join(f"{p}:{o}" for p, o in sorted(history_ends.items())),
        "--within",
        str(settings.batch_seconds),  # the worker's take_events timeout
        "--producer-batch",
        str(producer_batch),
    ]
    floor = start(floor_cmd, dict(os.environ), floor_log)
    try:
        sample: dict[str, float] = {}

        def floor_count() -> float:
            sample.clear()
            sample.update(scrape(floor_port))
            return sample.get("bench_floor_events_total", 0.0)

        drained = drain(
            f"Faust floor agent on the same topic ({tag})",
            total,
            floor,
            floor_log,
            floor_count,
            lambda n: sample.get("bench_floor_history_left", 1.0) == 0,
        )
        batch_mean = sample.get("bench_floor_events_total", 0.0) / max(
            1.0, sample.get("bench_floor_batches_total", 0.0)
        )
    finally:
        how = stop(floor)
    floor_lines = floor_log.read_text(errors="replace").splitlines()
    errors = [line for line in floor_lines if "ERROR" in line]
    if how != "SIGTERM":
        errors.append(f"floor {tag} stopped by {how}")
    full = sum("producer buffer full" in line for line in floor_lines)
    return FloorRun(drained, batch_mean, errors, full)


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def rounded(x: float, places: int = 1) -> float | None:
    return None if x != x else round(x, places)  # NaN (no sample) -> null


# --------------------------------------------------------------------------------------------------------


def bench(args: argparse.Namespace, run: str, tmp: Path, console: Console) -> dict[str, Any]:
    settings = Settings(
        app_id=run,
        input_topic=f"{run}-in",
        movements_topic=f"{run}-movements",
        dlq_topic=f"{run}-dlq",
        redis_prefix=f"{run}:",
        partitions=PARTITIONS,
        metrics_port=free_port(),
        metrics_addr="127.0.0.1",
        table_store="memory://",
        data_dir=tmp / "worker-data",
    )
    r: dict[str, Any] = {"run": run, "floor_producer_batch": args.floor_producer_batch}

    with console.status("generating the history"):
        events = HistoryGenerator(max(10, args.events // 5), 24, 7, parse_month("2024-01")).events()
        lines = [line.encode() for line in arrange(events, 7, late=0.05, duplicates=0.01)[: args.events]]
    with progress_bar() as bar:
        asyncio.run(produce(settings, lines, progress=bar))  # keyed by account
    history_ends = asyncio.run(end_offsets(settings, settings.input_topic))
    if sum(history_ends.values()) != len(lines):
        raise SystemExit(f"the topic holds {sum(history_ends.values())} records, not {len(lines)}")

    floor_batch = args.floor_producer_batch
    # the floor runs before the worker and after it
    r["floors"] = [run_floor(settings, run, tmp, history_ends, len(lines), "a", floor_batch)]
    env = {
        **os.environ,
        **{
            f"MRR_{k.upper()}": str(v.get_secret_value() if isinstance(v, SecretStr) else v)
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
                "metrics_addr",
                "kafka_bootstrap",
                "redis_url",
                "table_store",
                "data_dir",
            )
        },
    }
    worker_log = tmp / "worker.log"
    worker = start([sys.executable, "-m", "processors.cli", "worker"], env, worker_log)
    try:
        r["worker"] = drain(
            "worker draining the topic",
            len(lines),
            worker,
            worker_log,
            lambda: worker_processed(scrape(settings.metrics_port, WORKER_SERIES)),
            lambda n: n >= len(lines),
        )
        drained = scrape(settings.metrics_port, WORKER_SERIES)
        r["worker_batch_mean"] = worker_processed(drained) / max(1.0, worker_batches(drained))
        with console.status(f"latency at {args.rate:,.0f} events/s for {args.seconds:.0f} s"):
            cpu = time.process_time()
            lat, sent = asyncio.run(latency(settings, args.rate, args.seconds, f"{os.getpid()}a"))
        r["rate"], r["latencies"], r["sent"] = args.rate, lat, sent
        r["latency_cpu_share"] = (time.process_time() - cpu) / args.seconds
        calm_rate = max(50.0, round(r["worker"].rate / 2))
        r["calm_rate"] = None
        if calm_rate < args.rate:  # the rate above is more than half the worker's: its backlog shows
            with console.status("waiting for the latency run's backlog to drain"):
                while worker_processed(scrape(settings.metrics_port, WORKER_SERIES)) < len(lines) + sent:
                    if worker.poll() is not None:
                        raise SystemExit(f"the worker exited; see {worker_log}:\n{tail(worker_log)}")
                    time.sleep(0.5)
            with console.status(f"latency at {calm_rate:,.0f} events/s for {args.seconds:.0f} s"):
                calm, calm_sent = asyncio.run(latency(settings, calm_rate, args.seconds, f"{os.getpid()}b"))
            r["calm_rate"], r["calm"], r["calm_sent"] = calm_rate, calm, calm_sent
    finally:
        r["worker_stop"] = stop(worker)
    worker_lines = worker_log.read_text(errors="replace").splitlines()
    r["worker_log_problems"] = [line for line in worker_lines if "ERROR" in line]
    r["worker_warnings"] = sum("WARNING" in line for line in worker_lines)
    r["worker_refresh_overlaps"] = sum("refresh is overlapping" in line for line in worker_lines)

    total = sum(asyncio.run(end_offsets(settings, settings.input_topic)).values())
    with console.status("bare aiokafka consumer + validation"):
        r["bare_per_s"] = asyncio.run(bare_consumer_rate(settings, total))

    r["floors"].append(run_floor(settings, run, tmp, history_ends, len(lines), "b", floor_batch))
    r["events"] = len(lines)
    return r


def problems(r: dict[str, Any]) -> list[str]:
    """ERROR lines of the worker's and the floor runs' logs (and a floor run not stopped by SIGTERM)."""
    return [*r["worker_log_problems"], *(line for f in r["floors"] for line in f.log_problems)]


def report(r: dict[str, Any]) -> tuple[Table, dict[str, Any]]:
    worker: Drain = r["worker"]
    floors: list[FloorRun] = r["floors"]
    # The machine's speed drifts: the floor is measured before and after the worker, and their mean taken.
    floor_rate = statistics.mean(f.drain.rate for f in floors)
    floor_cpu = statistics.mean(f.drain.cpu_us_per_event for f in floors)
    ratio = worker.rate / floor_rate
    cpu_ratio = floor_cpu / worker.cpu_us_per_event
    lat: list[float] = r["latencies"]
    p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
    table = Table(title=f"bench/stream.py — {r['events']:,} events keyed by account, 4 partitions")
    for col in ("measure", "value", "goal", "met"):
        table.add_column(col, justify="left" if col == "measure" else "right")

    def row(measure: str, value: str, goal: str = "", met: bool | None = None) -> None:
        table.add_row(measure, value, goal, "" if met is None else "yes" if met else "no")

    def timed(d: Drain) -> str:
        return f"{d.events:,.0f} / {d.seconds:.1f} / {d.cpu:.1f}"

    row("worker sustained events/s", f"{worker.rate:,.0f}")
    row("  events / seconds / CPU seconds timed", timed(worker))
    row("  mean events per worker batch", f"{r['worker_batch_mean']:,.0f}")
    row("Faust floor agent sustained events/s (mean of its runs)", f"{floor_rate:,.0f}")
    batch = r["floor_producer_batch"]
    row("  its producer batch (bytes)", f"{batch:,}" if batch else "Faust's default")
    for f, when in zip(floors, ("before", "after"), strict=False):
        row(f"  run {when} the worker: events/s", f"{f.drain.rate:,.0f}")
        row("    events / seconds / CPU seconds timed", timed(f.drain))
        row("    mean events per floor batch", f"{f.batch_mean:,.0f}")
    row("ratio worker / Faust floor", f"{ratio:.3f}", f">= {RATIO_GOAL}", ratio >= RATIO_GOAL)
    row("CPU µs per event: worker / floor", f"{worker.cpu_us_per_event:,.0f} / {floor_cpu:,.0f}")
    row("  ratio floor / worker CPU per event (load-independent)", f"{cpu_ratio:.3f}")
    row("bare aiokafka consumer + validation events/s", f"{r['bare_per_s']:,.0f}")
    row("ratio worker / bare consumer", f"{worker.rate / r['bare_per_s']:.4f}")
    at = f"at {r['rate']:,.0f}/s, keyed (ms)"
    p99_met = p99 < P99_GOAL_MS
    row(f"produce -> Redis p50 {at}", f"{p50:.0f}")
    row(f"produce -> Redis p99 {at}", f"{p99:.0f}", f"< {P99_GOAL_MS:g}", p99_met)
    row("  latency samples seen / sent", f"{len(lat):,} / {r['sent']:,}")
    row("  the benchmark's own CPU share meanwhile", f"{r['latency_cpu_share']:.0%}")
    out: dict[str, Any] = {
        "events": r["events"],
        "keyed": True,
        "worker_per_s": round(worker.rate),
        "faust_floor_per_s": round(floor_rate),
        "faust_floor_runs_per_s": [round(f.drain.rate) for f in floors],
        "floor_producer_batch": r["floor_producer_batch"] or None,
        "ratio_to_faust_floor": round(ratio, 3),
        "ratio_goal_met": ratio >= RATIO_GOAL,
        "worker_cpu_us_per_event": round(worker.cpu_us_per_event),
        "floor_cpu_us_per_event": round(floor_cpu),
        "cpu_ratio_to_faust_floor": round(cpu_ratio, 3),
        "rate": r["rate"],
        "p50_ms": rounded(p50),
        "p99_ms": rounded(p99),
        "p99_goal_met": p99_met,
        "samples": len(lat),
        "sent": r["sent"],
        "bare_per_s": round(r["bare_per_s"]),
        "ratio_to_bare": round(worker.rate / r["bare_per_s"], 4),
        "calm_rate": r["calm_rate"],
        "calm_p50_ms": None,
        "calm_p99_ms": None,
    }
    if r["calm_rate"] is not None:
        calm: list[float] = r["calm"]
        c50, c99 = percentile(calm, 0.50), percentile(calm, 0.99)
        row(f"produce -> Redis p50 at {r['calm_rate']:,.0f}/s, half the worker's rate (ms)", f"{c50:.0f}")
        row(f"produce -> Redis p99 at {r['calm_rate']:,.0f}/s, half the worker's rate (ms)", f"{c99:.0f}")
        row("  latency samples seen / sent", f"{len(calm):,} / {r['calm_sent']:,}")
        out.update(calm_p50_ms=rounded(c50), calm_p99_ms=rounded(c99))
    row("worker stopped by", r["worker_stop"])
    errors = len(problems(r))
    row("ERROR lines in the worker's and the floor's log", f"{errors}", "0", not errors)
    row(
        "worker WARNING lines (of which 'refresh is overlapping')",
        f"{r['worker_warnings']:,} ({r['worker_refresh_overlaps']:,})",
    )
    row("floor's Faust 'producer buffer full' warnings", f"{sum(f.buffer_full for f in floors):,}")
    out["log_errors"] = errors
    out["worker_warnings"] = r["worker_warnings"]
    out["floor_batch_mean"] = round(statistics.mean(f.batch_mean for f in floors))
    out["worker_batch_mean"] = round(r["worker_batch_mean"])
    return table, out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=1000, help="events/s of the steady latency run")
    parser.add_argument("--seconds", type=float, default=15, help="length of each latency run")
    parser.add_argument("--keep", action="store_true", help="keep the logs (their folder is printed)")
    parser.add_argument(
        "--floor-producer-batch",
        type=int,
        default=0,
        metavar="BYTES",
        help="the floor agent's producer batch size (default: Faust's, 16 KB; the worker's is "
        "processors/stream/app.py's PRODUCER_BATCH_BYTES)",
    )
    floor = parser.add_argument_group("the Faust floor agent (started by the benchmark itself)")
    floor.add_argument("--floor-agent", action="store_true", help=argparse.SUPPRESS)
    floor.add_argument("--app-id", help=argparse.SUPPRESS)
    floor.add_argument("--bootstrap", help=argparse.SUPPRESS)
    floor.add_argument("--topic", help=argparse.SUPPRESS)
    floor.add_argument("--out-topic", help=argparse.SUPPRESS)
    floor.add_argument("--partitions", type=int, default=PARTITIONS, help=argparse.SUPPRESS)
    floor.add_argument("--metrics-port", type=int, help=argparse.SUPPRESS)
    floor.add_argument("--datadir", help=argparse.SUPPRESS)
    floor.add_argument("--history-ends", help=argparse.SUPPRESS)
    floor.add_argument("--within", type=float, default=0.05, help=argparse.SUPPRESS)
    floor.add_argument("--producer-batch", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_agent:
        return run_floor_agent(args)

    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a new topic's leader elections are retried
    console = Console(stderr=True)
    run = f"bench-stream-{os.getpid()}-{int(time.time())}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    try:
        r = bench(args, run, tmp, console)
    finally:
        try:
            asyncio.run(clean_redis(Settings().redis_url.get_secret_value(), f"{run}:"))
        except Exception as e:  # the figures are still worth printing
            console.print(f"could not delete the Redis keys {run}:*: {e!r}")
        if args.keep:
            console.print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    for line in problems(r):
        console.print(f"[red]log:[/red] {line}", markup=True, highlight=False)
    table, out = report(r)
    Console(width=130).print(table)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
