"""The Stripe webhook receiver: `POST /stripe/webhook` verifies the `Stripe-Signature` header with the
endpoint's secret (the official `stripe` library's verification) and answers 2xx only once the raw event
is durably in the `stripe-events` topic (acks=all). Nothing is mapped here: the worker's Stripe agent
(processors/stream/stripe.py) does that, so a receiver that answered has lost nothing, and Stripe retries
whatever it did not answer with 2xx.

Answers: 200 stored; 400 a missing or bad signature, a timestamp outside the tolerance, or a body that is
not one Stripe Event object (nothing is produced for any of them); 413 a body over the record limit;
503 Kafka did not take it (Stripe retries).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import stripe
from aiohttp import web

log = logging.getLogger("mrr_stream")

PATH = "/stripe/webhook"
# (key, value): the raw event stored; completes once the broker has it
Send = Callable[[bytes | None, bytes], Awaitable[None]]


def record_key(event: dict[str, Any]) -> bytes | None:
    """The customer the event concerns (its account), or the event's object id for catalog objects."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return None
    customer = obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    if obj.get("object") == "customer":
        customer = obj.get("id")
    found = customer if isinstance(customer, str) else obj.get("id")
    return found.encode() if isinstance(found, str) else None


def _bad(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=400)


def create_webhook_app(secret: str, send: Send, tolerance: int, max_bytes: int) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            log.warning("stripe webhook: a body over %d bytes refused", max_bytes)
            raise
        header = request.headers.get("Stripe-Signature")
        try:
            payload = body.decode("utf-8")
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
        except UnicodeDecodeError:
            return _bad("the body is not UTF-8")
        except stripe.SignatureVerificationError as exc:
            # (the library's message names what failed: no header, no match, or the timestamp; never the
            # secret)
            log.warning("stripe webhook: signature refused: %s", exc.user_message or exc)
            return _bad(f"signature: {exc.user_message or exc}")
        try:
            event = json.loads(payload)
        except ValueError:
            return _bad("the body is not JSON")
        except RecursionError:
            return _bad("the body is nested deeper than JSON is read here")
        if not (
            isinstance(event, dict)
            and event.get("object") == "event"
            and isinstance(event.get("id"), str)
            and isinstance(event.get("type"), str)
        ):
            return _bad("the body is not a Stripe Event object (object 'event' with an id and a type)")
        try:
            await send(record_key(event), body)
        except Exception as exc:  # the broker down or refusing: Stripe retries a non-2xx answer
            log.warning("stripe webhook: %s not stored (%s: %s)", event["id"], type(exc).__name__, exc)
            return web.json_response({"error": "not stored; retry"}, status=503)
        return web.json_response({"received": True, "id": event["id"]})

    app = web.Application(client_max_size=max_bytes)
    app.router.add_post(PATH, receive)
    return app
