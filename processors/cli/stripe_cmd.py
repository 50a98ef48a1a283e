"""`mrr-stream stripe`: Stripe as a source.

`stripe import FILE... [-o OUT]` maps Stripe Event objects (JSON Lines, a JSON array, or a list page as the
Events API returns it: `{"object": "list", "data": [...]}`) to contract billing events, one JSON line each,
so that a history can be replayed (`mrr-stream stripe import events.jsonl | mrr-stream replay -`) or
produced to Kafka. `stripe webhook` runs the verified webhook receiver (processors/sources/stripe/webhook.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from processors.settings import Settings


class Mistake(Exception):
    """An ordinary mistake: one line, exit 2."""


def register(sub: Any) -> None:
    p = sub.add_parser("stripe", help="Stripe as a source: import a history, or receive webhooks")
    stripe_sub = p.add_subparsers(dest="stripe_command", required=True)
    imp = stripe_sub.add_parser(
        "import",
        help="map Stripe Event objects (JSON Lines, a JSON array or an Events API list page) to billing "
        "events, one JSON line each",
    )
    imp.add_argument("files", nargs="+", metavar="FILE", help="files of Stripe events; - for standard input")
    imp.add_argument("-o", "--output", help="where the billing events go (default: standard output)")
    imp.set_defaults(run=run_import)
    hook = stripe_sub.add_parser(
        "webhook",
        help="receive Stripe webhooks on POST /stripe/webhook (MRR_STRIPE_WEBHOOK_SECRET), verify them and "
        "store them in the stripe-events topic",
    )
    hook.set_defaults(run=run_webhook)


def _parse(text: str, where: str) -> Iterator[tuple[str, Any]]:
    """(where, parsed value) of each Stripe event in a file's text, in its order."""
    stripped = text.lstrip()
    if not stripped:
        return
    whole: Any = None
    if stripped[0] == "[" or "\n" not in stripped.rstrip():
        try:
            whole = json.loads(stripped)
        except ValueError:
            whole = None
    elif stripped[0] == "{":
        first = stripped.split("\n", 1)[0]
        try:
            json.loads(first)
        except ValueError:  # not one object per line: a pretty-printed document
            try:
                whole = json.loads(stripped)
            except ValueError as exc:
                raise Mistake(f"{where}: not JSON Lines, a JSON array or a list page ({exc})") from None
    if isinstance(whole, list):
        yield from ((f"{where}[{i}]", value) for i, value in enumerate(whole))
        return
    if isinstance(whole, dict):
        data = whole.get("data")
        if whole.get("object") == "list" and isinstance(data, list):
            yield from ((f"{where}:data[{i}]", value) for i, value in enumerate(data))
        else:
            yield where, whole
        return
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield f"{where}:{number}", json.loads(line)
            except ValueError:
                yield f"{where}:{number}", None


def _read(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Mistake(f"cannot read {name}: {reason}") from None


def run_import(args: argparse.Namespace) -> int:
    from processors.sources.stripe.mapping import Mapper, to_json

    mapper = Mapper()
    reasons: Counter[str] = Counter()
    read = written = 0
    out: IO[str] = sys.stdout
    try:
        if args.output:
            try:
                out = open(args.output, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
            except OSError as exc:
                raise Mistake(f"cannot write {args.output}: {exc.strerror or exc}") from None
        try:
            for name in args.files:
                for where, value in _parse(_read(name), name):
                    read += 1
                    if not isinstance(value, dict):
                        reasons["not a JSON object"] += 1
                        print(f"{where}: not a JSON object: skipped", file=sys.stderr)
                        continue
                    mapped = mapper.feed(value)
                    for event in mapped.events:
                        out.write(to_json(event) + "\n")
                        written += 1
                    reasons.update(skip.reason for skip in mapped.skips)
            reasons.update(skip.reason for skip in mapper.finish())
        finally:
            if out is not sys.stdout:
                out.close()
    except Mistake as exc:
        print(f"mrr-stream stripe import: {exc}", file=sys.stderr)
        return 2
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) or "none"
    print(
        f"mrr-stream stripe import: {read} Stripe events read, {written} billing events written; "
        f"skipped: {skipped}",
        file=sys.stderr,
    )
    return 0


def run_webhook(args: argparse.Namespace) -> int:
    from aiohttp import web
    from aiokafka import AIOKafkaProducer

    from processors.sources.stripe.webhook import PATH, create_webhook_app
    from processors.stream.kafka import client_options, ensure_topics, topic_bytes

    settings = Settings()
    if settings.stripe_webhook_secret is None or not settings.stripe_webhook_secret.get_secret_value():
        print(
            "mrr-stream stripe webhook: set MRR_STRIPE_WEBHOOK_SECRET to the endpoint's signing secret "
            "(whsec_..., shown in Stripe's dashboard under Developers > Webhooks)",
            file=sys.stderr,
        )
        return 2
    secret = settings.stripe_webhook_secret.get_secret_value()

    async def serve() -> None:
        await ensure_topics(settings)
        producer = AIOKafkaProducer(
            **client_options(settings),
            acks="all",
            enable_idempotence=True,
            max_request_size=topic_bytes(settings),
        )
        await producer.start()

        async def send(key: bytes | None, value: bytes) -> None:
            await producer.send_and_wait(settings.stripe_events_topic, value, key=key)

        app = create_webhook_app(secret, send, settings.stripe_webhook_tolerance, settings.max_record_bytes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.stripe_webhook_addr, settings.stripe_webhook_port)
        await site.start()
        url = f"http://{settings.stripe_webhook_addr}:{settings.stripe_webhook_port}{PATH}"
        print(f"mrr-stream Stripe webhook receiver on {url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await producer.stop()

    from aiokafka.errors import KafkaError

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    except (KafkaError, OSError) as exc:
        print(f"mrr-stream stripe webhook: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
