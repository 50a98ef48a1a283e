"""End to end on the real servers: hostile records mixed into a valid history. The worker never exits,
the dead-letter topic holds exactly the rejected records with their reasons, and Redis equals the replay."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from processors import clock
from processors.generate import BAD_LINES, HistoryGenerator, arrange, parse_month
from processors.replay import replay
from processors.settings import Settings
from processors.stream.kafka import client_options, ensure_topics
from tests.e2e.harness import Stream, dead_letters, free_port, movements_topic_months

SUBSCRIBE: dict[str, Any] = {
    "event_id": "h-0",
    "type": "subscribe",
    "account_id": "hostile-1",
    "subscription_id": "s-1",
    "effective_at": "2025-03-01T00:00:00Z",
    "currency": "USD",
    "interval": "month",
    "items": [{"plan_id": "p", "unit_amount": "10.00", "quantity": 1}],
}


def hostile(n: int, seed: int) -> list[bytes]:
    """The records that crash-looped the worker before, the size limit, and plain garbage."""

    serial = 0

    def event(**changes: object) -> bytes:
        nonlocal serial
        serial += 1
        return json.dumps({**SUBSCRIBE, "event_id": f"h-{serial}", **changes}).encode()

    item = SUBSCRIBE["items"][0]
    crash_loops = [
        event(effective_at="0001-01-01T00:00:00+01:00"),
        event(effective_at="9999-12-31T23:00:00-05:00"),
        event(effective_at="9999-12-01T00:00:00Z"),
        event(items=[{**item, "quantity": 10**400}]),
        event(items=[{**item, "unit_amount": "999999999999.999999", "quantity": 10**4290}]),
        event(items=[{**item, "unit_amount": "999999999999.999999", "quantity": 2**62}]),
        event(effective_at="0001-01-01T00:00:00Z"),
        event(items=[{**item, "unit_amount": "١٠"}]),
        event(account_id="a\u0000b"),
    ]
    garbage = [
        b"\xff\xfe not utf-8",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"event_id": NaN}',
        event(quantity="3"),
        event(effective_at="2025-03-01T00:00:00"),
        event(effective_at="2025-02-30T00:00:00Z"),
        event(event_id="x" * 10_000),
        event(type="refund"),
        event(currency="usd"),
        b"null",
        b"42",
        *(line.encode() for line in BAD_LINES),
    ]
    rng = random.Random(seed)
    out = list(crash_loops)
    while len(out) < n:
        out.append(rng.choice(garbage))
    return out


def size_limit_records(settings: Settings) -> list[bytes]:
    limit = settings.max_record_bytes
    valid_big = json.dumps({**SUBSCRIBE, "event_id": "big-ok", "account_id": "big-1", "pad": ""}).encode()
    valid_big = valid_big.replace(b'"pad": ""', b'"pad": "' + b"x" * (limit - len(valid_big)) + b'"')
    assert len(valid_big) == limit
    over = valid_big.replace(b'"big-ok"', b'"big-over"').replace(b'"pad": "', b'"pad": "' + b"y" * 60_000)
    invalid_big = b'{"event_id": "big-bad", "pad": "' + b"z" * (limit - 100) + b'"}'
    return [valid_big, over, invalid_big]


async def send_all(settings: Settings, records: list[tuple[bytes | None, bytes]]) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**client_options(settings), acks="all", max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(settings.input_topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def test_hostile_records_never_stop_the_worker(stream: Stream, tmp_path: Path) -> None:
    events = HistoryGenerator(300, 12, 51, parse_month("2025-01")).events()
    valid = [line.encode() for line in arrange(events, 51, shuffle=True, duplicates=0.03, late=0.2)]
    bad = hostile(2_000, 51) + size_limit_records(stream.settings)
    rng = random.Random(51)
    lines = valid + bad
    rng.shuffle(lines)
    tail = [line.encode() for line in arrange(events[:20], 52)]  # after everything: must be processed too
    lines += [json.dumps({**json.loads(t), "event_id": f"tail-{i}"}).encode() for i, t in enumerate(tail)]

    def key(line: bytes) -> bytes | None:
        if rng.random() < 0.3:
            return None
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            return b"garbage"
        account = doc.get("account_id") if isinstance(doc, dict) else None
        return account.encode() if isinstance(account, str) else b"garbage"

    outcome = replay(((str(i), line) for i, line in enumerate(lines)), at=clock.now())
    worker = stream.add_worker(free_port())
    worker.start()
    asyncio.run(send_all(stream.settings, [(key(line), line) for line in lines]))
    stream.wait_until(outcome.months, len(outcome.rejects), timeout=240)
    assert worker.proc is not None and worker.proc.poll() is None, "the worker exited"
    assert worker.starts == 1
    assert movements_topic_months(stream.settings) == outcome.months

    letters = dead_letters(stream.settings)
    limit = stream.settings.max_record_bytes
    expected = sorted(
        r.raw[:1024] if len(r.raw) > limit else r.raw
        for r in outcome.rejects  # an oversized record keeps its first KB
    )
    assert sorted(v or b"" for v, _ in letters.values()) == expected
    reasons = {str(r.rejection) for r in outcome.rejects}
    for value, headers in letters.values():
        message = headers["__connect.errors.exception.message"].decode()
        assert message in reasons and message.startswith(headers["mrr.errors.field"].decode() + ": ")
        if len(value or b"") == 1024 and "mrr.errors.size" in headers:
            assert int(headers["mrr.errors.size"]) > limit
    log = worker.log.read_text(errors="replace")
    assert "Traceback" not in log and "exiting without commit" not in log
