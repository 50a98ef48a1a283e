"""GET /api/scheduled over HTTP against the real app, Redis's answer stubbed (RedisView.scheduled) and the
clock fixed: the window it asks Redis for, the figures it answers, and that the answer matches the schema
the OpenAPI document declares for it (the one schemathesis fuzzes against in tests/integration)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient, TestServer

from processors import clock
from processors.api.app import create_api
from processors.api.openapi import openapi
from processors.clock import parse_instant
from processors.core.movement import Movement
from processors.replay import replay
from processors.settings import Settings
from processors.sinks.redis_view import RedisView
from schemas.movement import MovementRecord
from tests.factories import raw

NOW = parse_instant("2026-01-01T00:00:00Z")
DAY_US = 86_400_000_000


def _records() -> list[MovementRecord]:
    """As the worker would store them: replayed as of NOW, the movements after it."""
    events = [
        raw("subscribe", account="a", at="2025-06-01T00:00:00Z", amount="100.00"),
        raw("cancel", account="a", at="2026-01-11T00:00:00Z", amount=None),  # churn 100.00, day 10
        raw("subscribe", account="b", at="2026-02-15T00:00:00Z", amount="50.00"),  # new 50.00, day 45
        raw("subscribe", account="c", at="2026-01-20T00:00:00Z", amount="9.99", currency="EUR"),  # day 19
    ]
    outcome = replay(((str(i), json.dumps(e).encode()) for i, e in enumerate(events)), at=NOW)
    moves: list[Movement] = outcome.scheduled
    return [MovementRecord.model_validate(m._asdict()) for m in moves]


def _get(monkeypatch: pytest.MonkeyPatch, path: str) -> tuple[int, Any, list[tuple[int, str | None]]]:
    asked: list[tuple[int, str | None]] = []
    records = _records()

    async def scheduled(self: RedisView, until: int, currency: str | None = None) -> list[MovementRecord]:
        asked.append((until, currency))  # as Redis would: the window's records, of the currency asked
        return [
            r
            for r in records
            if parse_instant(r.effective_at.isoformat()) <= until and currency in (None, r.currency)
        ]

    monkeypatch.setattr(RedisView, "scheduled", scheduled)
    monkeypatch.setattr(clock, "now", lambda: NOW)

    async def go() -> tuple[int, Any]:
        app = create_api(Settings(redis_url="redis://127.0.0.1:1/0"))  # never reached
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            response = await client.get(path)
            assert response.content_type == "application/json"
            return response.status, json.loads(await response.text())

    status, body = asyncio.run(go())
    return status, body, asked


def _matches_the_document(body: Any) -> None:
    doc = openapi()
    response = doc["paths"]["/api/scheduled"]["get"]["responses"]["200"]
    schema = {**response["content"]["application/json"]["schema"], "components": doc["components"]}
    errors = [e.message for e in jsonschema_rs.validator_for(schema, validate_formats=True).iter_errors(body)]
    assert errors == []


def test_default_window_is_30_days(monkeypatch: pytest.MonkeyPatch) -> None:
    status, body, asked = _get(monkeypatch, "/api/scheduled")
    assert status == 200
    assert asked == [(NOW + 30 * DAY_US, None)]
    assert (body["as_of"], body["until"], body["days"]) == (
        "2026-01-01T00:00:00Z",
        "2026-01-31T00:00:00Z",
        30,
    )
    assert body["totals"] == [
        {"currency": "EUR", "type": "new", "amount": "9.99", "movements": 1, "accounts": ["c"]},
        {"currency": "USD", "type": "churn", "amount": "100.00", "movements": 1, "accounts": ["a"]},
    ]
    assert [(m["account_id"], m["type"], m["effective_at"]) for m in body["movements"]] == [
        ("a", "churn", "2026-01-11T00:00:00Z"),
        ("c", "new", "2026-01-20T00:00:00Z"),
    ]
    assert body["truncated"] is False
    _matches_the_document(body)


def test_days_and_currency(monkeypatch: pytest.MonkeyPatch) -> None:
    status, body, asked = _get(monkeypatch, "/api/scheduled?days=60&currency=USD")
    assert status == 200
    assert asked == [(NOW + 60 * DAY_US, "USD")]
    assert body["days"] == 60 and body["until"] == "2026-03-02T00:00:00Z"
    assert body["totals"] == [
        {"currency": "USD", "type": "new", "amount": "50.00", "movements": 1, "accounts": ["b"]},
        {"currency": "USD", "type": "churn", "amount": "100.00", "movements": 1, "accounts": ["a"]},
    ]
    _matches_the_document(body)
    status, body, _ = _get(monkeypatch, "/api/scheduled?days=5")
    assert status == 200 and body["totals"] == [] and body["movements"] == []
    _matches_the_document(body)


def test_a_bad_window_is_a_400_before_redis_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    status, body, asked = _get(monkeypatch, "/api/scheduled?days=3661")
    assert status == 400 and body["parameter"] == "days" and asked == []
    assert body["error"] == "days: '3661' is not a whole number of days from 1 to 3660"
