"""The read-only HTTP API and live revenue page, served from Redis. Stateless: run as many as you like.

Bad parameters get a 400 with a message naming the parameter; an unknown account a 404; Redis being
unreachable a 503. Never a 500 for anything a client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from redis.exceptions import RedisError

from processors import clock
from processors.api.openapi import openapi
from processors.auth import CHALLENGE, authorized, tokens
from processors.core.aggregates import period_months, rollup
from processors.core.fact import DAY_US
from processors.core.scheduled import MAX_DAYS, scheduled_changes
from processors.settings import Settings
from processors.sinks.redis_view import ACCOUNT_MOVEMENTS_KEPT, LATEST_KEPT, RedisView
from schemas.aggregate import MonthlyAggregate
from schemas.billing_event import MAX_ID_LENGTH
from schemas.money import format_cents

# Parameters are ASCII: [0-9], never \d or str.isdigit() (true for "²" and "١٢"); matched with fullmatch,
# never ^...$ ($ also matches before a final newline).
MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])", re.ASCII)
CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
LIMIT = re.compile(r"[0-9]{1,9}", re.ASCII)  # at most 9 digits: int() never sees a huge string
STATIC_NAME = re.compile(r"[A-Za-z0-9_-]+\.(js|css)", re.ASCII)
DEFAULT_LIMIT = 50
ACCOUNT_PAGE = 500  # an account's movements per page by default
CURSOR = re.compile(r"[0-9]{1,17}", re.ASCII)
DEFAULT_DAYS = 30  # the scheduled changes' window by default
VIEW: web.AppKey[RedisView] = web.AppKey("view", RedisView)
TOKENS: web.AppKey[tuple[bytes, ...]] = web.AppKey("tokens", tuple)
METRICS_TOKENS: web.AppKey[tuple[bytes, ...]] = web.AppKey("metrics_tokens", tuple)
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
REQUESTS: web.AppKey[Counter] = web.AppKey("requests", Counter)
STATIC = resources.files("processors.api") / "static"


class BadRequest(web.HTTPBadRequest):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(
            text=json.dumps({"error": f"{parameter}: {message}", "parameter": parameter}),
            content_type="application/json",
        )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")), status=status, content_type="application/json"
    )


def _dump(rows: list[MonthlyAggregate]) -> list[dict[str, Any]]:
    return [row.model_dump(mode="json") for row in rows]


# The parsers: pure functions of the raw text (None when absent), raising BadRequest naming the parameter.


def _shown(value: str) -> str:
    """The value as quoted in a message, cut short: a client's megabyte is not echoed back."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def parse_month(name: str, value: str | None) -> str | None:
    if value is not None and not MONTH.fullmatch(value):
        raise BadRequest(name, f"{_shown(value)} is not a month; use YYYY-MM")
    return value


def parse_currency(value: str | None) -> str | None:
    if value is not None and not CURRENCY.fullmatch(value):
        raise BadRequest("currency", f"{_shown(value)} is not an ISO 4217 code such as USD")
    return value


def parse_limit(value: str | None, default: int = DEFAULT_LIMIT, largest: int = LATEST_KEPT) -> int:
    if value is None:
        return default
    if not LIMIT.fullmatch(value) or not 1 <= int(value) <= largest:
        raise BadRequest("limit", f"{_shown(value)} is not a whole number from 1 to {largest}")
    return int(value)


def parse_days(value: str | None) -> int:
    if value is None:
        return DEFAULT_DAYS
    if not LIMIT.fullmatch(value) or not 1 <= int(value) <= MAX_DAYS:
        raise BadRequest("days", f"{_shown(value)} is not a whole number of days from 1 to {MAX_DAYS}")
    return int(value)


def parse_account_id(value: str) -> str:
    # Any account id the contract accepts (non-empty, at most MAX_ID_LENGTH characters, any script);
    # nothing else can name an account, and a lone surrogate could not even be sent to Redis.
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise BadRequest("account_id", f"has {len(value)} characters; an account id has 1 to {MAX_ID_LENGTH}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("account_id", "is not valid UTF-8 text") from None
    return value


def _month_param(request: web.Request, name: str) -> str | None:
    return parse_month(name, request.query.get(name))


def _currency_param(request: web.Request) -> str | None:
    return parse_currency(request.query.get("currency"))


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response: web.StreamResponse
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.content_type != "application/json" and request.path.startswith("/api/"):
            response = _json({"error": exc.reason}, exc.status)
        else:
            response = exc
    except (RedisError, OSError):
        response = _json({"error": "Redis is unavailable; try again shortly"}, 503)
    resource = request.match_info.route.resource
    request.app[REQUESTS].labels(resource.canonical if resource else "other", str(response.status)).inc()
    if isinstance(response, web.HTTPException):
        raise response
    return response


@web.middleware
async def bearer(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The revenue data (everything under /api/) needs MRR_API_TOKEN and /metrics MRR_METRICS_TOKEN, when
    configured. The page, its scripts and the API's description hold no revenue data and stay open: the
    page can ask for the token, and a health check needs none."""
    if request.path == "/api/openapi.json":  # the description of the API, no revenue in it
        return await handler(request)
    if request.path.startswith("/api/"):
        allowed, setting = request.app[TOKENS], "MRR_API_TOKEN"
    elif request.path == "/metrics":
        allowed, setting = request.app[METRICS_TOKENS], "MRR_METRICS_TOKEN"
    else:
        return await handler(request)
    if not authorized(request.headers.get("Authorization"), allowed):
        raise web.HTTPUnauthorized(
            text=json.dumps(
                {
                    "error": f"authorization: a bearer token is required (one of {setting})",
                    "parameter": "authorization",
                }
            ),
            content_type="application/json",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    return await handler(request)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(request.app[REGISTRY]), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def current(request: web.Request) -> web.Response:
    rows = await request.app[VIEW].months()
    latest: dict[str, MonthlyAggregate] = {}
    for row in rows:
        latest[row.currency] = row
    return _json(
        {
            "as_of": max((r.month for r in latest.values()), default=None),
            "rejected": await request.app[VIEW].rejected(),
            "currencies": [row.model_dump(mode="json") for row in latest.values()],
        }
    )


async def months(request: web.Request) -> web.Response:
    start, end = _month_param(request, "from"), _month_param(request, "to")
    if start and end and start > end:
        raise BadRequest("from", f"{start} is after to={end}")
    currency = _currency_param(request)
    rows = [
        r
        for r in await request.app[VIEW].months()
        if (currency is None or r.currency == currency)
        and (start is None or r.month >= start)
        and (end is None or r.month <= end)
    ]
    return _json({"months": _dump(rows)})


async def periods(request: web.Request) -> web.Response:
    currency = _currency_param(request)
    month = _month_param(request, "month")
    rows = await request.app[VIEW].months()
    latest = month or max((r.month for r in rows), default=None)
    out: dict[str, Any] = {"as_of": latest, "currencies": {}}
    if latest is None:
        return _json(out)
    for cur in sorted({r.currency for r in rows} if currency is None else {currency}):
        mine = [r for r in rows if r.currency == cur]
        entry: dict[str, Any] = {}
        for period in ("qtd", "ytd"):
            this_year, last_year = period_months(latest, period)
            now = rollup([r for r in mine if r.month in this_year])
            before = rollup([r for r in mine if r.month in last_year])
            entry[period] = {
                "current": now.model_dump(mode="json") if now else None,
                "previous_year": before.model_dump(mode="json") if before else None,
            }
        out["currencies"][cur] = entry
    return _json(out)


def parse_before(value: str | None) -> int | None:
    """The paging cursor of an account's movements: an instant in µs since the epoch, as `next_before`."""
    if value is None:
        return None
    if not CURSOR.fullmatch(value):
        raise BadRequest("before", f"{_shown(value)} is not a cursor; use the next_before of the last page")
    return int(value)


async def account(request: web.Request) -> web.Response:
    account_id = parse_account_id(request.match_info["account_id"])
    limit = parse_limit(request.query.get("limit"), default=ACCOUNT_PAGE, largest=ACCOUNT_MOVEMENTS_KEPT)
    before = parse_before(request.query.get("before"))
    view = request.app[VIEW]
    found = await view.account_movements(account_id, limit, before)
    if found is None:
        return _json({"error": f"account_id: no account {account_id!r}"}, 404)
    movements, next_before = found
    mrr = await view.account_mrr(account_id)
    return _json(
        {
            "account_id": account_id,
            "mrr": {c: format_cents(v) for c, v in sorted(mrr.items())},
            "movements": [m.model_dump(mode="json") for m in movements],
            "next_before": None if next_before is None else str(next_before),
        }
    )


async def latest_movements(request: web.Request) -> web.Response:
    limit = parse_limit(request.query.get("limit"))
    records = await request.app[VIEW].latest(limit)
    return _json({"movements": [m.model_dump(mode="json") for m in records]})


async def scheduled(request: web.Request) -> web.Response:
    """What the events known now will do to MRR in the next `days` days (processors/core/scheduled.py)."""
    days = parse_days(request.query.get("days"))
    currency = _currency_param(request)
    now = clock.now()
    records = await request.app[VIEW].scheduled(now + days * DAY_US, currency)
    changes = scheduled_changes(records, now, days, currency)
    return web.Response(text=changes.model_dump_json(), content_type="application/json")


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `update` whenever the figures in Redis change (checked every half second).
    The stamp is the rows' version, not the totals': the rows are rewritten a moment after the totals
    change, and a page told on the totals' change could read the old rows and then hear nothing more."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    view = request.app[VIEW]
    last: tuple[int, int] | None = None
    # ends when the server shuts down: aiohttp waits for open handlers, and a page left open would hold a
    # stop (SIGTERM) for a minute or more
    while not request.app[STOPPING].is_set():
        try:
            head = await view.client.lindex(view.key("latest"), 0)
            stamp = (await view.rows_version(), hash(head))
        except (RedisError, OSError):
            stamp = last or (0, 0)
        message = (
            f"event: update\ndata: {json.dumps({'version': stamp[0]})}\n\n".encode()
            if stamp != last
            else b": keep-alive\n\n"
        )
        try:
            await response.write(message)
        except (ConnectionResetError, RuntimeError):  # the browser went away
            return response
        last = stamp
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(request.app[STOPPING].wait(), 0.5)
    return response


async def openapi_doc(_: web.Request) -> web.Response:
    return _json(openapi())


async def page(_: web.Request) -> web.Response:
    return web.Response(text=(STATIC / "index.html").read_text(), content_type="text/html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {"js": "application/javascript", "css": "text/css"}
    if not STATIC_NAME.fullmatch(name) or not (STATIC / name).is_file():
        raise web.HTTPNotFound()
    return web.Response(text=(STATIC / name).read_text(), content_type=types[name.rsplit(".", 1)[-1]])


async def not_found(_: web.Request) -> web.Response:
    return _json({"error": "no such endpoint; see /api/openapi.json"}, 404)


def create_api(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors, bearer])
    app[TOKENS] = tokens(settings.api_token)
    app[METRICS_TOKENS] = tokens(settings.metrics_token)
    app[REGISTRY] = CollectorRegistry()
    app[REQUESTS] = Counter(
        "mrr_api_requests_total",
        "API requests by route and status",
        ["route", "status"],
        registry=app[REGISTRY],
    )

    async def open_view(app: web.Application) -> Any:
        app[VIEW] = RedisView(settings.redis_url.get_secret_value(), settings.redis_prefix)
        yield
        await app[VIEW].close()

    app[STOPPING] = asyncio.Event()

    async def stop_streams(app: web.Application) -> None:
        app[STOPPING].set()

    app.on_shutdown.append(stop_streams)
    app.cleanup_ctx.append(open_view)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/current", current)
    app.router.add_get("/api/months", months)
    app.router.add_get("/api/periods", periods)
    app.router.add_get("/api/accounts/{account_id}", account)
    app.router.add_get("/api/movements/latest", latest_movements)
    app.router.add_get("/api/scheduled", scheduled)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/openapi.json", openapi_doc)
    app.router.add_get("/api/{tail:.*}", not_found)
    app.router.add_get("/metrics", metrics)
    return app
