"""A driver that knows the expected result: worker processes to start and kill -9, and readers of
everything the stream wrote (Redis, the movements topic, the dead-letter topic, /metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from processors import clock
from processors.core.aggregates import MonthTotals, monthly_aggregates, monthly_totals
from processors.core.fact import month_of
from processors.settings import Settings
from processors.sinks.redis_view import read_months
from schemas.aggregate import MonthlyAggregate
from schemas.movement import MovementRecord


@dataclass
class Worker:
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processors.cli", "worker", "--loglevel", "info"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:  # a Faust worker sometimes hangs on SIGTERM
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        return (
            "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
        )


@dataclass
class Stream:
    """One isolated deployment of the app: its own topics, consumer group, Redis prefix and ports."""

    settings: Settings
    workdir: Path
    workers: list[Worker] = field(default_factory=list)

    def env(self, metrics_port: int) -> dict[str, str]:
        s = self.settings
        secrets = {
            f"MRR_{name.upper()}": value.get_secret_value()
            for name in ("api_token", "metrics_token")
            if (value := getattr(s, name)) is not None
        }
        return {
            **secrets,
            **os.environ,
            "MRR_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "MRR_REDIS_URL": s.redis_url.get_secret_value(),
            "MRR_REDIS_PREFIX": s.redis_prefix,
            "MRR_APP_ID": s.app_id,
            "MRR_INPUT_TOPIC": s.input_topic,
            "MRR_MOVEMENTS_TOPIC": s.movements_topic,
            "MRR_DLQ_TOPIC": s.dlq_topic,
            "MRR_STRIPE_EVENTS_TOPIC": s.stripe_events_topic,
            "MRR_PARTITIONS": str(s.partitions),
            "MRR_METRICS_PORT": str(metrics_port),
            "MRR_METRICS_ADDR": "127.0.0.1",
        }

    def add_worker(self, metrics_port: int) -> Worker:
        worker = Worker(self.env(metrics_port), self.workdir / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for w in self.workers:
            w.stop()

    def logs(self) -> str:
        return "\n".join(f"--- worker {i}\n{w.tail()}" for i, w in enumerate(self.workers))

    def wait_until(
        self,
        expected: list[MonthlyAggregate],
        rejected: int,
        timeout: float,
        while_waiting: Callable[[], None] = lambda: None,
    ) -> None:
        deadline = time.monotonic() + timeout
        months: list[MonthlyAggregate] = []
        seen = -1
        while time.monotonic() < deadline:
            while_waiting()
            months, seen = asyncio.run(
                read_months(self.settings.redis_url.get_secret_value(), self.settings.redis_prefix)
            )
            if months == expected and seen == rejected:
                return
            time.sleep(1)
        wrong = [(m.month, m.currency) for m, e in zip(months, expected, strict=False) if m != e]
        raise AssertionError(
            f"Redis never matched the replay: {len(months)} rows vs {len(expected)}, "
            f"rejected {seen} vs {rejected}, first differing rows {wrong[:5]}\n"
            f"{self.diagnosis(months, expected)}\n{self.logs()}"
        )

    def diagnosis(self, months: list[MonthlyAggregate], expected: list[MonthlyAggregate]) -> str:
        """What tells a wrong state (the movements topic differs too) from a wrong Redis view, and the
        worker's own reports of unusual paths, for a failure seen only in CI."""
        lines = []
        for m, e in zip(months, expected, strict=False):
            if m != e:
                fields = {k: (v, getattr(e, k)) for k, v in m if v != getattr(e, k)}
                lines.append(f"first differing row {m.month} {m.currency}: (Redis, replay) {fields}")
                break
        try:
            topic = movements_topic_months(self.settings)
            lines.append(f"the movements topic equals the replay: {topic == expected}")
        except Exception as exc:  # (a diagnosis must not hide the failure)
            lines.append(f"the movements topic could not be read: {exc!r}")
        for i, w in enumerate(self.workers):
            text = w.log.read_text(errors="replace") if w.log.exists() else ""
            marks = ("passed over", "skipped", "read again", "ERROR", "Traceback", "failed", "rebuil")
            counts = {mark: text.count(mark) for mark in marks if mark in text}
            lines.append(f"worker {i}: {w.starts} starts, log mentions {counts}")
            lines += [
                f"  {line[:300]}" for line in text.splitlines() if "read again" in line or "ERROR" in line
            ][:20]
        return "\n".join(lines)


async def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every record of a topic, up to its end offsets now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        partitions = [TopicPartition(topic, p["partition"]) for t in described for p in t["partitions"]]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000)
            for items in batch.values():
                records += items
        return records
    finally:
        await consumer.stop()


def movements_topic_months(settings: Settings) -> list[MonthlyAggregate]:
    """What a consumer of the movements topic computes: each record_id once, amounts and signs summed."""
    records = asyncio.run(read_topic(settings, settings.movements_topic))
    by_id: dict[str, MovementRecord] = {}
    for r in records:
        movement = MovementRecord.model_validate_json(r.value)
        assert movement.record_id is not None
        first = by_id.setdefault(movement.record_id, movement)
        assert first == movement, f"{movement.record_id} delivered with two contents"
    totals = {k: t for k, t in monthly_totals(by_id.values()).items() if t != MonthTotals()}  # type: ignore[arg-type]
    return monthly_aggregates(totals, month_of(clock.now()))  # the stream's months run to now


def dead_letters(settings: Settings) -> dict[str, tuple[bytes, dict[str, bytes]]]:
    """Dead letters by source coordinates (a redelivery after a crash repeats the same coordinates)."""
    out: dict[str, tuple[bytes, dict[str, bytes]]] = {}
    for r in asyncio.run(read_topic(settings, settings.dlq_topic)):
        headers = dict(r.headers)
        where = b":".join(headers[f"__connect.errors.{k}"] for k in ("topic", "partition", "offset")).decode()
        out[where] = (r.value, headers)
    return out


def wait_for_metrics(port: int, timeout: float = 60, token: str | None = None) -> None:
    """Until a worker's /metrics answers (a loaded machine can take a while to start one)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            scrape(port, token)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def scrape(port: int, token: str | None = None) -> dict[str, float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def expected_json(months: list[MonthlyAggregate]) -> list[dict[str, Any]]:
    return [json.loads(m.model_dump_json()) for m in months]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def api_process(stream: Stream, log: Path | None = None, **env_extra: str) -> Iterator[str]:
    """The read API on a free port, from the stream's Redis: yields its base URL once it answers.
    `env_extra` overrides the environment (MRR_REDIS_URL=... for another Redis user)."""
    port = free_port()
    env = {**stream.env(free_port()), "MRR_API_PORT": str(port), **env_extra}
    with contextlib.ExitStack() as files:
        out = files.enter_context(log.open("ab")) if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(
            [sys.executable, "-m", "processors.cli", "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/openapi.json", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def webhook_process(stream: Stream, secret: str, log: Path) -> Iterator[str]:
    """`mrr-stream stripe webhook` on a free port, storing into the stream's Stripe topic: yields its URL
    once it listens."""
    port = free_port()
    env = {
        **stream.env(free_port()),
        "MRR_STRIPE_WEBHOOK_PORT": str(port),
        "MRR_STRIPE_WEBHOOK_SECRET": secret,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "processors.cli", "stripe", "webhook"], env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        assert proc.poll() is None, log.read_text(errors="replace")
        time.sleep(0.2)
    try:
        yield f"http://127.0.0.1:{port}/stripe/webhook"
    finally:
        proc.terminate()
        proc.wait(10)


def status_and_replay_json(stream: Stream, path: Path, *replay_options: str) -> tuple[bytes, bytes]:
    """What `mrr-stream status --format json` prints from the stream's Redis, and what
    `mrr-stream replay --format json` prints for the file (with these options)."""
    env = stream.env(free_port())
    cli = [sys.executable, "-m", "processors.cli"]
    status = subprocess.run([*cli, "status", "--format", "json"], env=env, capture_output=True, check=True)
    replayed = subprocess.run(
        [*cli, "replay", str(path), "--format", "json", *replay_options],
        env=env,
        capture_output=True,
        check=True,
    )
    return status.stdout, replayed.stdout
