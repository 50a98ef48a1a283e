"""End to end on the real servers: events effective a few seconds in the future change nothing until
their instant, are listed as scheduled meanwhile, and take effect at their instant, also across a kill -9
of the worker one second before it; then Redis equals `replay --as-of` of the same events."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from processors import clock
from processors.cli.produce_cmd import produce
from processors.core.fact import utc_of
from processors.replay import replay
from processors.sinks.redis_view import RedisView
from tests.e2e.harness import (
    Stream,
    api_process,
    free_port,
    movements_topic_months,
    scrape,
    status_and_replay_json,
    wait_for_metrics,
)
from tests.factories import raw

BOUND = 3.0  # seconds after an instant by which it must show (the goal is 2 s; the figure is printed)


def stamp(seconds_from_now: float) -> str:
    at = utc_of(clock.now()) + timedelta(seconds=seconds_from_now)
    return at.isoformat(timespec="microseconds").replace("+00:00", "Z")


def current(stream: Stream) -> dict[str, str]:
    async def read() -> dict[str, str]:
        view = RedisView(stream.settings.redis_url.get_secret_value(), stream.settings.redis_prefix)
        try:
            return await view.current()
        finally:
            await view.close()

    return asyncio.run(read())


def wait_for(stream: Stream, mrr: str, customers: str, timeout: float) -> float:
    """Seconds until Redis says this current USD MRR and customer count."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        now = current(stream)
        if now.get("USD:mrr") == mrr and now.get("USD:customers") == customers:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(
        f"Redis never said USD {mrr} with {customers} customers: {current(stream)}\n{stream.logs()}"
    )


@pytest.fixture
def api(stream: Stream) -> Iterator[str]:
    with api_process(stream) as base:
        yield base


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def lines(events: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e).encode() for e in events]


def test_scheduled_events_take_effect_at_their_instant_even_across_a_kill(
    stream: Stream, api: str, tmp_path: Path
) -> None:
    port = free_port()
    worker = stream.add_worker(port)
    worker.start()
    wait_for_metrics(port)
    history = [
        raw("subscribe", account="sa", sub="sa1", at="2025-06-01T00:00:00Z", amount="100.00"),
        raw("subscribe", account="sb", sub="sb1", at="2025-06-01T00:00:00Z", amount="50.00"),
    ]
    asyncio.run(produce(stream.settings, lines(history)))
    wait_for(stream, "150.00", "2", timeout=120)

    # A cancel, a subscribe and an upgrade, a few seconds ahead.
    soon = [
        raw("cancel", account="sa", sub="sa1", at=stamp(8), amount=None),
        raw("subscribe", account="sc", sub="sc1", at=stamp(12), amount="30.00"),
        raw("upgrade", account="sb", sub="sb1", at=stamp(16), amount="70.00"),
    ]
    asyncio.run(produce(stream.settings, lines(soon)))
    deadline = time.monotonic() + 6
    listed: list[str] = []
    while time.monotonic() < deadline and len(listed) < 3:
        listed = [m["account_id"] for m in get(f"{api}/api/scheduled?days=1&currency=USD")["movements"]]
        time.sleep(0.2)
    assert listed == ["sa", "sc", "sb"]
    assert current(stream) == {"USD:mrr": "150.00", "USD:customers": "2"}
    assert get(f"{api}/api/current")["currencies"][0]["closing_mrr"] == "150.00"
    # the gauges follow Redis on the worker's next refresh tick (every 0.5 s; later on a loaded machine)
    first = utc_of(clock.parse_instant(str(soon[0]["effective_at"]))).timestamp()
    gauges = {
        'mrr_current_mrr{currency="USD"}': 150.0,
        'mrr_scheduled_mrr{currency="USD",type="churn",window="30d"}': 100.0,
    }
    while time.time() < first - 1 and any(scrape(port).get(k) != v for k, v in gauges.items()):
        time.sleep(0.1)
    assert {k: scrape(port).get(k) for k in gauges} == gauges

    latencies = []
    for event, mrr, customers in ((soon[0], "50.00", "1"), (soon[1], "80.00", "2"), (soon[2], "100.00", "2")):
        instant = utc_of(clock.parse_instant(str(event["effective_at"]))).timestamp()
        while time.time() < instant - 0.3:  # nothing changes before its instant
            assert current(stream)["USD:mrr"] != mrr
            time.sleep(0.1)
        wait_for(stream, mrr, customers, timeout=60)
        latencies.append(round(time.time() - instant, 2))
    print(f"scheduled events took effect {latencies} s after their instants")
    assert max(latencies) < BOUND, latencies
    assert get(f"{api}/api/scheduled?days=1")["movements"] == []
    deadline = time.monotonic() + 5
    while scrape(port)['mrr_current_mrr{currency="USD"}'] != 100.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert scrape(port)['mrr_current_mrr{currency="USD"}'] == 100.0

    # The worker killed one second before an instant, restarted after it: applied once.
    later = raw("downgrade", account="sc", sub="sc1", at=stamp(10), amount="20.00")
    asyncio.run(produce(stream.settings, lines([later])))
    instant = utc_of(clock.parse_instant(str(later["effective_at"]))).timestamp()
    time.sleep(max(0.0, instant - 1 - time.time()))
    assert current(stream)["USD:mrr"] == "100.00"
    worker.kill9()
    time.sleep(max(0.0, instant + 1 - time.time()))
    worker.start()
    wait_for(stream, "90.00", "2", timeout=120)

    everything = lines(history + soon + [later])
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(everything) + b"\n")
    outcome = replay(((str(i), line) for i, line in enumerate(everything)), at=clock.now())
    stream.wait_until(outcome.months, len(outcome.rejects), timeout=60)
    assert movements_topic_months(stream.settings) == outcome.months
    # and the CLI's status prints exactly what `replay --as-of` prints
    status, replayed = status_and_replay_json(stream, path, "--as-of", stamp(0))
    assert status == replayed
