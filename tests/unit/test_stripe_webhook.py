"""The webhook receiver in process: Stripe's signature scheme checked by the official library, and nothing
stored unless the request is signed, recent and one Stripe Event object (the send is an in-process fake;
tests/e2e/test_stripe.py runs the receiver against the real Kafka)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import stripe
from aiohttp.test_utils import TestClient, TestServer

from processors.sources.stripe.webhook import PATH, create_webhook_app, record_key

SECRET = "whsec_test_0123456789abcdef"
EVENT = {
    "id": "evt_1",
    "object": "event",
    "type": "customer.subscription.created",
    "created": 1735689600,
    "data": {"object": {"id": "sub_1", "object": "subscription", "customer": "cus_1"}},
}


def signed(body: str, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=at)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


Post = Callable[[bytes | str, dict[str, str]], Awaitable[tuple[int, Any]]]


def run(
    check: Callable[[Post, list[tuple[bytes | None, bytes]]], Awaitable[None]],
    fail: Exception | None = None,
    max_bytes: int = 1024 * 1024,
) -> list[tuple[bytes | None, bytes]]:
    stored: list[tuple[bytes | None, bytes]] = []

    async def send(key: bytes | None, value: bytes) -> None:
        if fail is not None:
            raise fail
        stored.append((key, value))

    async def main() -> None:
        client = TestClient(TestServer(create_webhook_app(SECRET, send, 300, max_bytes)))
        await client.start_server()
        try:

            async def post(body: bytes | str, headers: dict[str, str]) -> tuple[int, Any]:
                response = await client.post(PATH, data=body, headers=headers)
                text = await response.text()
                return response.status, json.loads(
                    text
                ) if response.content_type == "application/json" else text

            await check(post, stored)
        finally:
            await client.close()

    asyncio.run(main())
    return stored


def test_a_signed_event_is_stored_raw_keyed_by_its_customer_then_answered() -> None:
    body = json.dumps(EVENT, indent=2)  # the signature is over the exact bytes: stored as they came

    async def check(post: Post, stored: list[tuple[bytes | None, bytes]]) -> None:
        status, answer = await post(body, signed(body))
        assert (status, answer) == (200, {"received": True, "id": "evt_1"})
        assert stored == [(b"cus_1", body.encode())]

    run(check)


@pytest.mark.parametrize(
    ("name", "tamper"),
    [
        ("tampered body", lambda body: (body.replace("sub_1", "sub_2"), signed(body))),
        ("wrong secret", lambda body: (body, signed(body, secret="whsec_someone_else"))),
        ("stale timestamp", lambda body: (body, signed(body, at=int(time.time()) - 301))),
        ("no header", lambda body: (body, {"Content-Type": "application/json"})),
        ("garbled header", lambda body: (body, {"Stripe-Signature": "t=abc,v1"})),
    ],
)
def test_a_bad_signature_is_400_and_stores_nothing(
    name: str, tamper: Callable[[str], tuple[str, dict[str, str]]]
) -> None:
    body, headers = tamper(json.dumps(EVENT))

    async def check(post: Post, stored: list[tuple[bytes | None, bytes]]) -> None:
        status, answer = await post(body, headers)
        assert status == 400 and answer["error"].startswith("signature: "), (name, answer)
        assert SECRET not in answer["error"]
        assert stored == []

    run(check)


def test_a_timestamp_inside_the_tolerance_is_taken() -> None:
    body = json.dumps(EVENT)

    async def check(post: Post, stored: list[tuple[bytes | None, bytes]]) -> None:
        assert (await post(body, signed(body, at=int(time.time()) - 240)))[0] == 200
        assert len(stored) == 1

    run(check)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "the body is not JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper"),
        ("[1, 2]", "not a Stripe Event object"),
        (json.dumps({**EVENT, "object": "subscription"}), "not a Stripe Event object"),
        (json.dumps({k: v for k, v in EVENT.items() if k != "id"}), "not a Stripe Event object"),
    ],
)
def test_a_signed_body_that_is_not_an_event_is_400(body: str, reason: str) -> None:
    async def check(post: Post, stored: list[tuple[bytes | None, bytes]]) -> None:
        status, answer = await post(body, signed(body))
        assert status == 400 and reason in answer["error"]
        assert stored == []

    run(check)


def test_a_body_that_is_not_utf8_is_400() -> None:
    body = b'{"id": "evt_\xff"}'
    header = stripe.WebhookSignature.generate_signature_header("x", SECRET)

    async def check(post: Post, stored: list[tuple[bytes | None, bytes]]) -> None:
        status, answer = await post(body, {"Stripe-Signature": header})
        assert (status, answer) == (400, {"error": "the body is not UTF-8"})

    run(check)


def test_a_body_over_the_limit_is_413() -> None:
    body = json.dumps({**EVENT, "pad": "x" * 5000})

    async def check(post: Post, stored: list[tuple[bytes | None, bytes]]) -> None:
        assert (await post(body, signed(body)))[0] == 413
        assert stored == []

    run(check, max_bytes=1000)


def test_kafka_not_taking_the_event_is_503_so_that_stripe_retries() -> None:
    body = json.dumps(EVENT)

    async def check(post: Post, stored: list[tuple[bytes | None, bytes]]) -> None:
        status, answer = await post(body, signed(body))
        assert (status, answer) == (503, {"error": "not stored; retry"})

    run(check, fail=ConnectionError("broker down"))


@pytest.mark.parametrize(
    ("obj", "key"),
    [
        ({"object": "subscription", "id": "sub_1", "customer": "cus_9"}, b"cus_9"),
        ({"object": "subscription", "id": "sub_1", "customer": {"id": "cus_8"}}, b"cus_8"),
        ({"object": "customer", "id": "cus_7"}, b"cus_7"),
        ({"object": "coupon", "id": "co_1"}, b"co_1"),
        ({"object": "coupon"}, None),
    ],
)
def test_the_record_key_is_the_customer_or_else_the_object(obj: dict[str, Any], key: bytes | None) -> None:
    assert record_key({"data": {"object": obj}}) == key
