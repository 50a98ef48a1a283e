"""The read API's parameters: ASCII only, a 400 naming the parameter for anything else, never a 500.

The parsers are pure functions; the HTTP tests run the real app against a Redis that is not there (port 1):
validation happens before Redis is asked, so a bad parameter is a 400 and a good one reaches Redis (503).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.api.app import (
    DEFAULT_DAYS,
    DEFAULT_LIMIT,
    BadRequest,
    create_api,
    parse_account_id,
    parse_currency,
    parse_days,
    parse_limit,
    parse_month,
)
from processors.core.scheduled import MAX_DAYS
from processors.settings import Settings
from processors.sinks.redis_view import LATEST_KEPT

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
NON_ASCII_DIGITS = ["²", "١٢", "１２", "۵", "१२", "𝟏𝟐", "½"]


def bad_request(call: Any, *args: Any) -> dict[str, Any]:
    with pytest.raises(BadRequest) as caught:
        call(*args)
    assert caught.value.status == 400
    body: dict[str, Any] = json.loads(caught.value.text or "")
    return body


# --- the parsers, as pure functions --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["2025-01", "2025-12", "1970-01", "2999-12", "0000-01"])
def test_month_accepts_ascii_months(value: str) -> None:
    assert parse_month("from", value) == value
    assert parse_month("from", None) is None


@pytest.mark.parametrize(
    "value",
    ["2025-13", "2025-00", "2025-1", "25-01", "", "2025-01\n", "\n2025-01", " 2025-01", "٢٠٢٥-01", "2025-٠١",
     "２０２５-01", "2025-01-01", "2025_01"],
)  # fmt: skip
def test_month_rejects_everything_else(value: str) -> None:
    body = bad_request(parse_month, "to", value)
    assert body["parameter"] == "to" and body["error"].startswith("to: ")


@pytest.mark.parametrize("value", ["usd", "US", "USDX", "", "USD\n", "ÜSD", "ＵＳＤ", "U$D"])
def test_currency_rejects_all_but_three_ascii_capitals(value: str) -> None:
    assert bad_request(parse_currency, value)["parameter"] == "currency"
    assert parse_currency("USD") == "USD" and parse_currency(None) is None


def test_limit_is_a_whole_ascii_number_in_range() -> None:
    assert parse_limit(None) == DEFAULT_LIMIT
    assert parse_limit("1") == 1 and parse_limit(str(LATEST_KEPT)) == LATEST_KEPT
    assert parse_limit("007") == 7
    for value in [*NON_ASCII_DIGITS, "0", str(LATEST_KEPT + 1), "-1", "+5", "1.0", "1e2", " 5", "5\n", "",
                  "9" * 5000, "0x10"]:  # fmt: skip
        body = bad_request(parse_limit, value)
        assert body["parameter"] == "limit", value
        assert len(body["error"]) < 200  # a huge value is not echoed back whole


def test_days_is_a_whole_ascii_number_of_days_in_range() -> None:
    assert parse_days(None) == DEFAULT_DAYS == 30
    assert parse_days("1") == 1 and parse_days("90") == 90 and parse_days(str(MAX_DAYS)) == MAX_DAYS == 3660
    assert parse_days("030") == 30
    for value in [*NON_ASCII_DIGITS, "0", str(MAX_DAYS + 1), "-1", "+5", "30.0", "1e2", " 30", "30\n", "",
                  "9" * 5000, "0x10", "30d"]:  # fmt: skip
        body = bad_request(parse_days, value)
        assert body["parameter"] == "days" and body["error"].startswith("days: "), value
        assert len(body["error"]) < 200


def test_account_id_is_any_contract_id() -> None:
    for value in ["acct-1", "账户-7", "a" * 128, "x y"]:
        assert parse_account_id(value) == value
    for value in ["", "a" * 129, "bad\ud800surrogate"]:
        assert bad_request(parse_account_id, value)["parameter"] == "account_id"


def _answer(call: Any, *args: Any) -> Any:
    """The parsed value, or the parameter a BadRequest names; any other exception fails the test."""
    try:
        return call(*args)
    except BadRequest as exc:
        return BadRequest, json.loads(exc.text or "")["parameter"]


@given(st.text(max_size=12))
@settings(max_examples=300, deadline=None)
def test_parsers_answer_a_value_or_a_400_for_any_text(text: str) -> None:
    month = _answer(parse_month, "month", text)
    assert month == (BadRequest, "month") or re.fullmatch(r"[0-9]{4}-[0-9]{2}", month, re.ASCII)
    currency = _answer(parse_currency, text)
    assert currency == (BadRequest, "currency") or re.fullmatch(r"[A-Z]{3}", currency, re.ASCII)
    limit = _answer(parse_limit, text)
    assert limit == (BadRequest, "limit") or (text.isascii() and 1 <= limit <= LATEST_KEPT)
    days = _answer(parse_days, text)
    assert days == (BadRequest, "days") or (text.isascii() and 1 <= days <= MAX_DAYS)
    account_id = _answer(parse_account_id, text)
    assert account_id in ((BadRequest, "account_id"), text)


# --- over HTTP, against the real app --------------------------------------------------------------------


async def _get_all(paths: list[str]) -> list[tuple[int, Any]]:
    app = create_api(Settings(redis_url=UNREACHABLE_REDIS))
    out: list[tuple[int, Any]] = []
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for path in paths:
            response = await client.get(path)
            text = await response.text()
            out.append((response.status, json.loads(text) if text.startswith("{") else text))
    return out


def get_all(paths: list[str]) -> list[tuple[int, Any]]:
    return asyncio.run(_get_all(paths))


BAD = {
    "/api/movements/latest?limit=²": "limit",
    "/api/movements/latest?limit=١٢": "limit",
    "/api/movements/latest?limit=%EF%BC%91%EF%BC%92": "limit",  # fullwidth １２
    "/api/movements/latest?limit=" + "9" * 5000: "limit",
    "/api/movements/latest?limit=0": "limit",
    "/api/movements/latest?limit=501": "limit",
    "/api/movements/latest?limit=": "limit",
    "/api/movements/latest?limit=%FF": "limit",
    "/api/months?from=٢٠٢٥-01": "from",
    "/api/months?from=2025-01%0A": "from",
    "/api/months?to=2025-13": "to",
    "/api/months?from=2025-06&to=2025-01": "from",
    "/api/months?currency=USD%0A": "currency",
    "/api/months?currency=%EF%BC%B5SD": "currency",
    "/api/periods?month=2025-%D9%A1%D9%A2": "month",
    "/api/periods?currency=usd": "currency",
    "/api/accounts/" + "a" * 129: "account_id",
    "/api/scheduled?days=0": "days",
    "/api/scheduled?days=3661": "days",
    "/api/scheduled?days=%D9%A3%D9%A0": "days",  # ٣٠
    "/api/scheduled?days=": "days",
    "/api/scheduled?days=30%0A": "days",
    "/api/scheduled?days=-30": "days",
    "/api/scheduled?days=30&currency=usd": "currency",
    "/api/scheduled?currency=EURO": "currency",
}


def test_bad_parameters_answer_400_naming_them_never_500() -> None:
    for (status, body), (path, parameter) in zip(get_all(list(BAD)), BAD.items(), strict=True):
        assert status == 400, (path[:80], status, body)
        assert body["parameter"] == parameter and body["error"].startswith(f"{parameter}: "), body


def test_good_parameters_pass_validation_and_reach_redis() -> None:
    paths = [
        "/api/movements/latest",
        "/api/movements/latest?limit=500",
        "/api/months?from=2025-01&to=2025-06&currency=USD",
        "/api/periods?currency=EUR&month=2025-03",
        "/api/accounts/acct-1",
        "/api/accounts/%E8%B4%A6%E6%88%B7",  # 账户: any script, as in the contract
        "/api/accounts/%FF",
        "/api/accounts/%ED%A0%80",  # not UTF-8 (a surrogate): the URL decoder keeps it percent-encoded
        "/api/scheduled",
        "/api/scheduled?days=3660&currency=USD",
        "/api/scheduled?days=1",
    ]
    for path, (status, body) in zip(paths, get_all(paths), strict=True):
        assert status == 503 and "Redis" in body["error"], (path, status, body)


def test_static_names_are_checked_too() -> None:
    paths = ["/static/%00.js", "/static/..%2Fapp.py", "/static/app.js%0A", "/static/%E2%80%AE.js"]
    for path, (status, _) in zip(paths, get_all(paths), strict=True):
        assert status == 404, path
    [(status, _)] = get_all(["/static/app.js"])
    assert status == 200
