"""Bearer tokens: the check itself (any header other than a configured token is refused), the API's
routes behind it, and the worker's /metrics server behind its own token."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from processors.api.app import create_api
from processors.auth import authorized, serve_metrics, tokens
from processors.settings import Settings

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: a request that passes is a 503


def test_tokens_are_comma_separated_and_trimmed() -> None:
    assert tokens(None) == ()
    assert tokens(SecretStr("")) == ()
    assert tokens(SecretStr(" first , second,,")) == (b"first", b"second")


def test_nothing_configured_is_open() -> None:
    assert authorized(None, ())
    assert authorized("Bearer anything", ())


def test_only_a_configured_token_passes() -> None:
    allowed = tokens(SecretStr("old-token,new-token"))
    assert authorized("Bearer old-token", allowed)
    assert authorized("Bearer new-token", allowed)
    assert authorized("bearer   new-token  ", allowed)  # the scheme is case-insensitive
    for header in (
        None,
        "",
        "Bearer",
        "Bearer ",
        "new-token",
        "Basic new-token",
        "Bearer new-token2",
        "Bearer new-toke",
        "Bearer old-token,new-token",
        "Bearer nëw-token",
        "Bearer " + "x" * 10_000,
    ):
        assert not authorized(header, allowed), header


@given(st.text(max_size=200))
def test_no_header_but_the_token_passes(header: str) -> None:
    allowed = tokens(SecretStr("s3cret-Token"))
    assert authorized(header, allowed) == (
        header.strip().partition(" ")[0].lower() == "bearer"
        and header.strip().partition(" ")[2].strip() == "s3cret-Token"
    )


async def _statuses(settings: Settings, requests: list[tuple[str, str | None]]) -> list[tuple[int, Any]]:
    app = create_api(settings)
    out: list[tuple[int, Any]] = []
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for path, token in requests:
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            response = await client.get(path, headers=headers)
            body = await response.json() if response.content_type == "application/json" else None
            out.append((response.status, (body, response.headers.get("WWW-Authenticate"))))
    return out


def test_the_api_needs_a_configured_token_and_the_page_does_not() -> None:
    settings = Settings(
        redis_url=UNREACHABLE_REDIS, api_token=SecretStr("t-one,t-two"), metrics_token=SecretStr("m-tok")
    )
    answers = asyncio.run(
        _statuses(
            settings,
            [
                ("/api/current", None),
                ("/api/months?from=2025-01", "wrong"),
                ("/api/accounts/a1", "m-tok"),  # the metrics token opens no revenue data
                ("/api/current", "t-two"),
                ("/api/nowhere", "t-one"),
                ("/metrics", None),
                ("/metrics", "t-one"),
                ("/metrics", "m-tok"),
                ("/", None),
                ("/static/app.js", None),
                ("/api/openapi.json", None),
            ],
        )
    )
    statuses = [status for status, _ in answers]
    assert statuses == [401, 401, 401, 503, 404, 401, 401, 200, 200, 200, 200]
    body, challenge = answers[0][1]
    assert body["parameter"] == "authorization" and body["error"].startswith("authorization:")
    assert "MRR_API_TOKEN" in body["error"] and "t-one" not in body["error"]
    assert challenge is not None and challenge.startswith("Bearer")


def test_without_tokens_the_api_is_open_as_before() -> None:
    answers = asyncio.run(
        _statuses(Settings(redis_url=UNREACHABLE_REDIS), [("/api/current", None), ("/metrics", None)])
    )
    assert [status for status, _ in answers] == [503, 200]


def test_the_openapi_description_declares_the_bearer_scheme() -> None:
    from processors.api.openapi import openapi

    document = openapi()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert "401" in operation["responses"], path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("token", [None, "scrape-me"])
def test_the_worker_metrics_server_checks_its_token(token: str | None) -> None:
    port = _free_port()
    server = serve_metrics("127.0.0.1", port, None if token is None else SecretStr(token))
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        status, text = _get(url, token)
        assert status == 200 and "python_info" in text
        if token is not None:
            assert _get(url, None)[0] == 401
            assert _get(url, token + "x")[0] == 401
    finally:
        server.shutdown()
        server.server_close()
