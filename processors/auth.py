"""Bearer tokens: the one check the API, the page's data and every /metrics endpoint use.

A token is configured as a SecretStr (MRR_API_TOKEN: several, comma-separated, so one can be rotated out
while the other still works; MRR_METRICS_TOKEN: the scraper's). Nothing configured: open, as before.
Comparison is constant-time, and every configured token is compared, so neither the time taken nor an
early exit tells a caller how much of a guess was right or which token it was near.
"""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from pydantic import SecretStr

CHALLENGE = 'Bearer realm="mrr-stream"'
MAX_TOKEN_BYTES = 4096  # a longer header is not a token of ours, and is not compared


def tokens(secret: SecretStr | None) -> tuple[bytes, ...]:
    """The configured tokens; empty when none (then nothing is protected)."""
    if secret is None:
        return ()
    return tuple(t.strip().encode() for t in secret.get_secret_value().split(",") if t.strip())


def presented(header: str | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if header is None or len(header) > MAX_TOKEN_BYTES:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        return token.strip().encode("ascii")
    except UnicodeEncodeError:
        return None


def authorized(header: str | None, allowed: Iterable[bytes]) -> bool:
    """True when nothing is configured, or the header carries one of the configured tokens."""
    allowed = tuple(allowed)
    if not allowed:
        return True
    token = presented(header)
    if token is None:
        return False
    matched = False
    for candidate in allowed:
        matched |= hmac.compare_digest(token, candidate)
    return matched


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # A scrape every few seconds is not worth a log line; and a request line can carry a token.
        pass


def serve_metrics(addr: str, port: int, token: SecretStr | None) -> WSGIServer:
    """Prometheus' text exposition of the default registry on a daemon thread (so it answers while the
    worker's event loop is busy), behind the metrics token when one is configured."""
    allowed = tokens(token)
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not authorized(environ.get("HTTP_AUTHORIZATION"), allowed):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain; charset=utf-8"), ("WWW-Authenticate", CHALLENGE)],
            )
            return [b"a bearer token is required: set the scraper's to MRR_METRICS_TOKEN\n"]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    httpd = make_server(addr, port, app, Server, handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd
