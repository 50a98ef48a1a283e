"""The read API against Redis filled by the real stream: every figure equals the replay."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from processors.core.aggregates import period_months, rollup
from processors.replay import ReplayOutcome
from schemas.money import format_cents
from schemas.movement import MovementRecord
from tests.e2e.harness import Stream


def fetch(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_every_figure_equals_the_replay(filled: tuple[str, ReplayOutcome, Stream]) -> None:
    base, outcome, _ = filled
    expected = [m.model_dump(mode="json") for m in outcome.months]
    assert fetch(f"{base}/api/months") == (200, {"months": expected})
    usd = [m for m in expected if m["currency"] == "USD" and "2025-02" <= m["month"] <= "2025-06"]
    assert fetch(f"{base}/api/months?currency=USD&from=2025-02&to=2025-06") == (200, {"months": usd})

    status, current = fetch(f"{base}/api/current")
    latest = {m.currency: m.model_dump(mode="json") for m in outcome.months}
    assert status == 200 and current["rejected"] == len(outcome.rejects)
    assert {c["currency"]: c for c in current["currencies"]} == latest
    assert current["as_of"] == max(m.month for m in outcome.months)

    status, periods = fetch(f"{base}/api/periods")
    assert status == 200
    for currency, entry in periods["currencies"].items():
        rows = [m for m in outcome.months if m.currency == currency]
        for period in ("qtd", "ytd"):
            now, before = period_months(periods["as_of"], period)
            for key, months in (("current", now), ("previous_year", before)):
                want = rollup([r for r in rows if r.month in months])
                assert entry[period][key] == (want.model_dump(mode="json") if want else None)
    assert periods["currencies"]["USD"]["ytd"]["previous_year"] is not None  # 14 months: 2024 is there

    for account_id, state in list(outcome.accounts.items())[:25]:
        status, body = fetch(f"{base}/api/accounts/{account_id}")
        assert status == 200
        assert body["mrr"] == {c: format_cents(v) for c, v in sorted(state.mrr.items())}
        records = [
            MovementRecord.model_validate(m, from_attributes=True).model_dump(mode="json")
            for m in state.movements
        ]
        got = [{**m, "corrects": [], "record_id": None} for m in body["movements"]]
        assert got == [{**m, "corrects": [], "record_id": None} for m in records]
        assert body["next_before"] is None

    # pages of two, walked back from the latest, give the same movements
    busiest, state = max(outcome.accounts.items(), key=lambda item: len(item[1].movements))
    assert len(state.movements) > 4
    pages: list[list[dict[str, object]]] = []
    url = f"{base}/api/accounts/{busiest}?limit=2"
    while url:
        status, body = fetch(url)
        assert status == 200
        assert len(body["movements"]) >= 2 or body["next_before"] is None
        pages.insert(0, body["movements"])
        cursor = body["next_before"]
        url = f"{base}/api/accounts/{busiest}?limit=2&before={cursor}" if cursor else ""
    walked = [m["movement_id"] for page in pages for m in page]
    assert walked == [m.movement_id for m in state.movements]


def test_latest_movements_and_bad_parameters(filled: tuple[str, ReplayOutcome, Stream]) -> None:
    base, _, _ = filled
    status, body = fetch(f"{base}/api/movements/latest?limit=20")
    assert status == 200 and len(body["movements"]) == 20
    assert len({m["record_id"] for m in body["movements"]}) == 20
    for url, parameter in [
        ("/api/months?from=2025-13", "from"),
        ("/api/months?to=25-01", "to"),
        ("/api/months?from=2025-05&to=2025-01", "from"),
        ("/api/months?currency=usd", "currency"),
        ("/api/periods?month=may", "month"),
        ("/api/movements/latest?limit=0", "limit"),
        ("/api/movements/latest?limit=abc", "limit"),
        ("/api/movements/latest?limit=501", "limit"),
        ("/api/accounts/a?limit=5001", "limit"),
        ("/api/accounts/a?before=yesterday", "before"),
    ]:
        status, body = fetch(base + url)
        assert status == 400 and body["parameter"] == parameter and body["error"].startswith(parameter + ": ")
    assert fetch(f"{base}/api/accounts/no-such-account")[0] == 404
    assert fetch(f"{base}/api/nothing-here")[0] == 404
    status, spec = fetch(f"{base}/api/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {
        "/api/current",
        "/api/months",
        "/api/periods",
        "/api/accounts/{account_id}",
        "/api/movements/latest",
    } <= set(spec["paths"])


def test_api_exports_its_own_metrics(filled: tuple[str, ReplayOutcome, Stream]) -> None:
    base, _, _ = filled
    fetch(f"{base}/api/current")
    fetch(f"{base}/api/months?from=bad")
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'mrr_api_requests_total{route="/api/current",status="200"} 1.0' in text
    assert 'mrr_api_requests_total{route="/api/months",status="400"} 1.0' in text
