"""The wall clock, read only at the edges (the worker's timers, the CLI, the API) and passed to the core
as "now": the core never reads it, so the replay can reproduce the stream at any instant."""

from __future__ import annotations

import time
from datetime import datetime

from processors.core.fact import instant_of
from schemas.billing_event import EARLIEST, END


def now() -> int:
    """Now, in µs since the epoch (the core's instants)."""
    return time.time_ns() // 1_000


def parse_instant(text: str) -> int:
    """An RFC 3339 instant given on a command line or in a query ("2026-11-23T00:00:00Z") in µs; a date
    alone ("2026-11-23") is its 00:00 UTC. ValueError names what is wrong."""
    value = text.strip()
    if len(value) == 10:
        value += "T00:00:00Z"
    try:
        at = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 instant such as 2026-11-23T00:00:00Z") from None
    if at.tzinfo is None:
        raise ValueError(f"{text!r} has no offset: add Z (UTC) or +hh:mm")
    if not EARLIEST <= at < END:
        raise ValueError(f"{text!r} is outside the years 1970 to 2999 that events can have")
    return instant_of(at)
