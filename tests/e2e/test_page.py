"""The live revenue page in headless Chromium: no console errors, nothing leaves 127.0.0.1, it shows what
Redis holds, and it changes by itself soon after a new subscribe event produced to Kafka: pushed by the
event stream, not the page's 10-second slow poll. A subscribe effective in 10 days shows in the scheduled
changes panel (within the slow poll at worst) and changes no current figure."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer

from processors.replay import ReplayOutcome
from processors.settings import REPO_ROOT
from schemas.money import format_cents
from tests.e2e.browser import chromium
from tests.e2e.harness import Stream

SCREENSHOT = REPO_ROOT / "build" / "screenshots" / "revenue-page.png"


def shown(cents: int) -> str:
    whole, frac = format_cents(cents).split(".")
    return f"{int(whole):,}.{frac}"


def test_page_shows_redis_and_follows_the_stream(filled: tuple[str, ReplayOutcome, Stream]) -> None:
    base, outcome, stream = filled
    usd = [m for m in outcome.months if m.currency == "USD"][-1]

    async def go() -> float:
        async with chromium() as page:
            await page.call("Page.navigate", url=base + "/")
            kpi = "document.querySelector('[data-kpi=\"Current MRR\"]')?.textContent"
            await page.wait_for(f"{kpi} === {json.dumps(shown(usd.closing_mrr))}")
            await page.wait_for("document.querySelectorAll('#chart rect').length > 10")
            await page.wait_for("document.querySelectorAll('#latest tr').length > 1")

            producer = AIOKafkaProducer(bootstrap_servers=stream.settings.kafka_bootstrap)
            await producer.start()
            event = {
                "event_id": "page-test-1",
                "type": "subscribe",
                "account_id": "page-test-account",
                "subscription_id": "s1",
                # a minute ago: in effect at once (a date later this month would be scheduled)
                "effective_at": (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "currency": "USD",
                "interval": "month",
                "items": [{"plan_id": "pro", "unit_amount": "1234.56"}],
            }
            in_10_days = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
            scheduled = {
                **event,
                "event_id": "page-test-2",
                "account_id": "page-test-scheduled",
                "effective_at": in_10_days,
                "items": [{"plan_id": "pro", "unit_amount": "777.00"}],
            }
            await producer.send_and_wait(stream.settings.input_topic, json.dumps(scheduled).encode())
            sent = time.monotonic()
            await producer.send_and_wait(stream.settings.input_topic, json.dumps(event).encode())
            await producer.stop()
            await page.wait_for(f"{kpi} === {json.dumps(shown(usd.closing_mrr + 123456))}", timeout=30)
            elapsed = time.monotonic() - sent
            await page.wait_for("document.querySelector('#latest').textContent.includes('page-test-account')")

            panel = "document.querySelector('#scheduled')"
            await page.wait_for(f"{panel}.getAttribute('data-days') === '30'")
            listed = "document.querySelector('#scheduled-next').textContent"
            await page.wait_for(
                f"{listed}.includes('page-test-scheduled') && {listed}.includes('777.00')", 30
            )
            await page.evaluate(
                "(() => { const s = document.querySelector('#scheduled-days'); s.value = '90';"
                " s.dispatchEvent(new Event('change')); })()"
            )
            await page.wait_for(
                f"{panel}.getAttribute('data-days') === '90' && {listed}.includes('page-test-scheduled')"
            )
            # the scheduled subscribe changed no current figure
            assert await page.evaluate(kpi) == shown(usd.closing_mrr + 123456)
            await page.screenshot(SCREENSHOT)
            assert page.console_errors == []
            hosts = {
                urllib.parse.urlsplit(url).hostname for url in page.requests if not url.startswith("data:")
            }
            assert hosts == {"127.0.0.1"}, hosts
            return elapsed

    elapsed = asyncio.run(go())
    print(f"the page showed the new subscription {elapsed:.2f}s after it was produced")
    # The latency goal (within 5 s; under 1 s on an idle machine) is a figure, not a timed assertion; what
    # must hold is that the push arrived: the slow poll alone would take 10 s.
    assert elapsed < 9.0
    assert SCREENSHOT.stat().st_size > 10_000
    assert Path(SCREENSHOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
