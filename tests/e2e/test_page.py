"""The live revenue page in headless Chromium: no console errors, nothing leaves 127.0.0.1, it shows what
Redis holds, and it changes by itself soon after a new subscribe event produced to Kafka: pushed by the
event stream, not the page's 10-second slow poll. It reads as a finance reader needs it to: money in the
currency's format, charts with round-number ticks and gridlines (closing MRR on an axis of its own), ratios
that say their period, the latest movements newest effective first with a late event's correction on one
line, the dead-letter count, and account ids that open the account's movements. A subscribe effective in
10 days shows in the scheduled changes panel (within the slow poll at worst) and changes no current figure.

With MRR_API_TOKEN set, the page asks for the token in a form, keeps it for the tab and sends it with every
request, the event stream's too."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from processors import clock
from processors.cli.produce_cmd import produce, read_lines
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import ReplayOutcome, replay
from processors.settings import REPO_ROOT
from schemas.aggregate import MonthlyAggregate
from tests.e2e.browser import Page, chromium
from tests.e2e.harness import Stream, api_process, free_port

SCREENSHOT = REPO_ROOT / "build" / "screenshots" / "revenue-page.png"
KPI = "document.querySelector('[data-kpi={label}]')?.textContent"
CURRENT = KPI.format(label='"Current MRR"')
# A money figure as Intl.NumberFormat('en-US', {style: 'currency'}) writes it (signed or not), in any of the
# generated currencies.
MONEY = re.compile(r"[+-]?[$€£](0|[1-9][0-9]{0,2}(,[0-9]{3})*)\.[0-9]{2}")


def shown(cents: int, sign: bool = False) -> str:
    """What the page shows for an amount in USD: Intl.NumberFormat('en-US', {style: 'currency', currency:
    'USD'}), e.g. "$1,234.56" and "-$1,234.56"; with `sign`, "+$1,234.56" (signDisplay: 'exceptZero')."""
    whole, frac = divmod(abs(cents), 100)
    prefix = "-" if cents < 0 else "+" if sign and cents > 0 else ""
    return f"{prefix}${whole:,}.{frac:02d}"


def percent(ratio: Decimal | None) -> str:
    """Intl's percent with one place (rounding half away from zero): 1.0116 -> "101.2%"."""
    if ratio is None:
        return "–"
    return f"{(Decimal(ratio) * 100).quantize(Decimal('0.1'), ROUND_HALF_UP):,}%"


def at(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def subscribe(event_id: str, account: str, when: datetime, amount: str, sub: str = "s1") -> bytes:
    event = {
        "event_id": event_id,
        "type": "subscribe",
        "account_id": account,
        "subscription_id": sub,
        "effective_at": at(when),
        "currency": "USD",
        "interval": "month",
        "items": [{"plan_id": "pro", "unit_amount": amount}],
    }
    return json.dumps(event).encode()


async def send(stream: Stream, *values: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stream.settings.kafka_bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(stream.settings.input_topic, value)
    finally:
        await producer.stop()


async def ticks(page: Page, chart: str) -> list[Decimal]:
    """The y-axis ticks of a chart: several, evenly spaced by 1, 2 or 5 times a power of ten, each on a
    multiple of that step, each with its gridline and a currency label."""
    found = await page.evaluate(
        f"[...document.querySelectorAll('{chart} .tick')].map(t => [t.getAttribute('data-value'),"
        " t.querySelectorAll('line.grid').length, t.textContent])"
    )
    assert len(found) >= 3, found
    values = [Decimal(value) for value, _, _ in found]
    steps = {b - a for a, b in pairwise(values)}
    assert len(steps) == 1, found
    step = steps.pop()
    assert step.scaleb(-step.adjusted()).normalize() in {Decimal(1), Decimal(2), Decimal(5)}, found
    assert all(v % step == 0 for v in values), found
    assert all(grid == 1 for _, grid, _ in found), found
    assert all(re.fullmatch(r"-?\$[0-9.,]+[KMB]?", label) for _, _, label in found), found
    return values


def test_page_shows_redis_and_follows_the_stream(filled: tuple[str, ReplayOutcome, Stream]) -> None:
    base, outcome, stream = filled
    months = [m for m in outcome.months if m.currency == "USD"]
    usd = months[-1]

    async def go() -> float:
        async with chromium() as page:
            await page.call("Page.navigate", url=base + "/")
            await page.wait_for(f"{CURRENT} === {json.dumps(shown(usd.closing_mrr))}")
            await page.wait_for("document.querySelectorAll('#chart rect').length > 10")
            await page.wait_for("document.querySelectorAll('#latest tr').length > 1")
            await check_figures(page, usd, len(outcome.rejects))
            await check_axes(page, months)

            # a subscribe a minute ago: in effect at once (a date later this month would be scheduled)
            first = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
            scheduled = subscribe("page-test-2", "page-test-scheduled", first + timedelta(days=10), "777.00")
            await send(stream, scheduled)
            sent = time.monotonic()
            await send(stream, subscribe("page-test-1", "page-test-account", first, "1234.56"))
            await page.wait_for(f"{CURRENT} === {json.dumps(shown(usd.closing_mrr + 123456))}", timeout=30)
            elapsed = time.monotonic() - sent
            await page.wait_for("document.querySelector('#latest').textContent.includes('page-test-account')")

            # a late event: a second subscription of the same account a minute before the first. The new
            # $1,234.56 becomes an expansion: retracted and corrected, shown as one line.
            await send(
                stream,
                subscribe("page-test-3", "page-test-account", first - timedelta(minutes=1), "100.00", "s2"),
            )
            await page.wait_for(f"{CURRENT} === {json.dumps(shown(usd.closing_mrr + 123456 + 10000))}", 30)
            await check_feed(page)
            await check_account_view(page)

            panel = "document.querySelector('#scheduled')"
            await page.wait_for(f"{panel}.getAttribute('data-days') === '30'")
            listed = "document.querySelector('#scheduled-next').textContent"
            await page.wait_for(
                f"{listed}.includes('page-test-scheduled') && {listed}.includes('$777.00')", 30
            )
            await page.evaluate(
                "(() => { const s = document.querySelector('#scheduled-days'); s.value = '90';"
                " s.dispatchEvent(new Event('change')); })()"
            )
            await page.wait_for(
                f"{panel}.getAttribute('data-days') === '90' && {listed}.includes('page-test-scheduled')"
            )
            # the scheduled subscribe changed no current figure
            assert await page.evaluate(CURRENT) == shown(usd.closing_mrr + 123456 + 10000)
            cells = await page.evaluate(
                "[...document.querySelectorAll('main td.money, main .kpi .value')].map(e => e.textContent)"
                ".filter(t => t !== '–' && !/^[0-9.,]+%?$/.test(t))"
            )
            assert len(cells) > 20 and all(MONEY.fullmatch(c) for c in cells), cells
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


async def check_figures(page: Page, usd: MonthlyAggregate, rejected: int) -> None:
    """The key figures: money in dollars (the exact cents beside it), ratios labelled with their period,
    and the dead-letter count with what it means."""
    cents = "document.querySelector('[data-kpi=\"Current MRR\"]').getAttribute('data-cents')"
    assert await page.evaluate(cents) == str(usd.closing_mrr)
    assert usd.arpa is not None
    assert await page.evaluate(KPI.format(label='"ARPA"')) == shown(usd.arpa)
    assert await page.evaluate(KPI.format(label='"Net new MRR"')) == shown(usd.net_new_mrr, sign=True)
    labels = await page.evaluate("[...document.querySelectorAll('.kpi .label')].map(e => e.textContent)")
    assert {"Monthly NRR", "Monthly GRR", "Monthly quick ratio"} <= set(labels), labels
    assert not {"NRR", "GRR", "Quick ratio"} & set(labels), labels
    assert await page.evaluate(KPI.format(label='"Monthly NRR"')) == percent(usd.nrr)
    assert await page.evaluate(KPI.format(label='"Monthly GRR"')) == percent(usd.grr)
    assert await page.evaluate(KPI.format(label='"Rejected events"')) == f"{rejected:,}"
    assert rejected > 0  # the fixture's history has bad lines
    await page.evaluate("document.querySelector('#rejected-help').click()")
    await page.wait_for("document.querySelector('#about-rejected').open")
    about = await page.evaluate("document.querySelector('#about-rejected').textContent")
    assert "dead-letter topic" in about and "billing-events-dlq" in about


async def check_axes(page: Page, months: list[MonthlyAggregate]) -> None:
    """Both charts have round ticks that cover the figures: closing MRR from 0 on its own axis, and the
    movements (up and down) on theirs."""
    closing = await ticks(page, "#closing")
    assert closing[0] == 0 and closing[-1] * 100 >= max(m.closing_mrr for m in months)
    movements = await ticks(page, "#chart")
    up = max(m.new_mrr + m.expansion_mrr + m.reactivation_mrr for m in months)
    down = max(m.contraction_mrr + m.churn_mrr for m in months)
    assert movements[0] * 100 <= -down and movements[-1] * 100 >= up and 0 in movements
    titles = await page.evaluate("[...document.querySelectorAll('svg .axis-title')].map(e => e.textContent)")
    assert titles == ["Closing MRR (USD)", "Movements (USD)"]


async def check_feed(page: Page) -> None:
    """Newest effective first, the late event's correction one line on top, its own movement under it."""
    rows = "[...document.querySelectorAll('#latest tr[data-effective]')]"
    await page.wait_for(f"{rows}[0]?.getAttribute('data-kind') === 'corrected'")
    instants = await page.evaluate(f"{rows}.map(r => r.getAttribute('data-effective'))")
    assert len(instants) > 5 and instants == sorted(instants, reverse=True), instants
    assert await page.evaluate("document.querySelector('#latest th').textContent") == "Effective (UTC)"
    top = await page.evaluate(f"{rows}.slice(0, 2).map(r => r.textContent)")
    assert top[0].endswith(
        "page-test-accountcorrected: new $1,234.56 → expansion $1,234.56, late event page-test-3"
    ), top
    assert top[1].endswith("page-test-accountnew late+$100.00$100.00"), top
    # the movement the correction replaced is not listed again beside it
    assert await page.evaluate(f"{rows}.filter(r => r.textContent.includes('page-test-account')).length") == 2


async def check_account_view(page: Page) -> None:
    """An account id opens the account's movements (from /api/accounts/{id}) in the page."""
    await page.evaluate("document.querySelector('#latest tr.corrected a.account').click()")
    await page.wait_for("document.querySelector('#account').open")
    assert await page.evaluate("location.hash") == "#account=page-test-account"
    moves = "[...document.querySelectorAll('#account-moves tr[data-effective]')].map(r => r.textContent)"
    await page.wait_for(f"{moves}.length === 2")
    assert (
        await page.evaluate("document.querySelector('#account-mrr').textContent") == "Current MRR: $1,334.56"
    )
    listed = await page.evaluate(moves)
    assert listed[0].endswith("expansion+$1,234.56$100.00 → $1,334.56"), listed
    assert listed[1].endswith("new+$100.00$0.00 → $100.00"), listed
    await page.evaluate("document.querySelector('#account-close').click()")
    await page.wait_for("!document.querySelector('#account').open && location.hash === ''")


TOKENS = ("page-token-6b1f0e", "page-token-rotated-2c7d")


@pytest.fixture
def protected(stream: Stream, tmp_path: Path) -> Iterator[tuple[str, ReplayOutcome, Stream]]:
    """A small history in the stream, and the API with two tokens (MRR_API_TOKEN)."""
    events = HistoryGenerator(40, 3, 11, parse_month("2025-03")).events()
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(arrange(events, 11, shuffle=True, bad=0.02)) + "\n")
    outcome = replay(((str(i), line) for i, line in enumerate(read_lines(path))), at=clock.now())
    stream.add_worker(free_port()).start()
    asyncio.run(produce(stream.settings, read_lines(path)))
    stream.wait_until(outcome.months, len(outcome.rejects), timeout=120)
    with api_process(stream, MRR_API_TOKEN=",".join(TOKENS)) as base:
        yield base, outcome, stream


def test_page_asks_for_the_api_token_once(protected: tuple[str, ReplayOutcome, Stream]) -> None:
    base, outcome, stream = protected
    usd = [m for m in outcome.months if m.currency == "USD"][-1]
    token = TOKENS[1]

    async def go() -> None:
        async with chromium() as page:
            await page.call("Page.navigate", url=base + "/")
            form = "!document.querySelector('#auth').hidden"
            await page.wait_for(form)
            assert await page.evaluate(CURRENT) is None  # no figure without the token
            assert await page.evaluate("document.querySelector('#dashboard').offsetParent") is None

            await page.type_into("#auth-token", "not-the-token")
            await page.evaluate("document.querySelector('#auth-form button').click()")
            await page.wait_for(
                "document.querySelector('#auth-error').textContent.includes('did not accept')"
            )
            assert await page.evaluate(form)

            asked = len(page.console_errors), len(page.request_headers)
            await page.type_into("#auth-token", token)
            await page.evaluate("document.querySelector('#auth-form button').click()")
            await page.wait_for(f"{CURRENT} === {json.dumps(shown(usd.closing_mrr))}")
            assert not await page.evaluate(form)
            assert await page.evaluate(
                f"sessionStorage.getItem('mrr-stream.api-token') === {json.dumps(token)}"
            )
            assert await page.evaluate("localStorage.length") == 0  # kept for the tab only

            # the event stream, read with the token, pushes a change
            await page.wait_for("document.querySelector('#status').classList.contains('live')")
            await send(
                stream,
                subscribe(
                    "token-page-1", "token-page-account", datetime.now(UTC) - timedelta(minutes=1), "250.00"
                ),
            )
            sent = time.monotonic()
            await page.wait_for(f"{CURRENT} === {json.dumps(shown(usd.closing_mrr + 25000))}", 30)
            assert time.monotonic() - sent < 9.0  # pushed: the slow poll alone would take 10 s

            # asked once: a reload of the tab shows the figures without the form
            await page.call("Page.reload")
            await page.wait_for(f"{CURRENT} === {json.dumps(shown(usd.closing_mrr + 25000))}")
            assert not await page.evaluate(form)

            after = [(u, h) for u, h in page.request_headers[asked[1] :] if "/api/" in u]
            assert any(u.endswith("/api/events") for u, _ in after)
            assert all(h.get("Authorization") == f"Bearer {token}" for _, h in after), after
            # the only console errors: the browser's own lines for the 401s that asked for the token
            assert page.console_errors[asked[0] :] == []
            assert page.console_errors and all(
                "status of 401" in e and "/api/" in e for e in page.console_errors
            ), page.console_errors
            hosts = {urllib.parse.urlsplit(u).hostname for u in page.requests if not u.startswith("data:")}
            assert hosts == {"127.0.0.1"}, hosts

    asyncio.run(go())
