r"""The Redis view of the stream: idempotent, so at-least-once delivery never double counts.

Key layout (every key starts with the configured prefix, `mrr:` by default; money as decimal strings):

| key | type | content |
|---|---|---|
| `mrr:month:{YYYY-MM}:{CUR}` | hash | every monthly aggregate field; ratios "" when null |
| `mrr:months` | set | `{CUR}:{YYYY-MM}` of every row above |
| `mrr:current` | hash | `{CUR}:mrr` current MRR, `{CUR}:customers` |
| `mrr:account:{account_id}` | hash | `{CUR}` current MRR of the account; `_version` |
| `mrr:totals:{YYYY-MM}:{CUR}` | hash | integer sums behind the rows: cents by movement type, counts |
| `mrr:buckets` | set | `{YYYY-MM}:{CUR}` of every totals hash |
| `mrr:contrib:{account_id}:{start}` | hash | one chunk's share of the totals (`{CUR}|{field}`), `_v` |
| `mrr:moves:{account_id}:{start}` | string | JSON array of one chunk's movements in effect |
| `mrr:chunks:{account_id}` | sorted set | the account's chunk starts (score: the start, µs since the epoch) |
| `mrr:version` | string | bumped on every change of the totals or of the scheduled movements |
| `mrr:rows_version` | string | the `mrr:version` the monthly rows and `mrr:current` were computed from |
| `mrr:view:{partition}` | string | the view holds all of that partition; if missing, the worker rebuilds |
| `mrr:rejected` | set | `topic:partition:offset` of every dead letter (SCARD counts them once) |
| `mrr:latest` | list | latest movement records, newest first (500 at most; a crash may repeat one) |
| `mrr:sched:{account_id}` | hash | `moves`: JSON array of the account's scheduled movements; `_v` |
| `mrr:scheduled` | sorted set | accounts with scheduled movements (score: the first one's instant, µs) |

A chunk is a piece of one account's history within one month (processors/stream/state.py): a batch writes
only the chunks whose movements changed, so what a batch writes never grows with the account's age. Each
chunk's contribution to the totals is *replaced*, never added: a Lua script swaps the stored contribution
for the new one and applies the difference, and ignores a version older than the stored one. Writing the
same chunk twice (a redelivery, a replay after a crash, a resync) changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, cast

import redis.asyncio as aioredis
from pydantic_core import to_json
from redis.exceptions import WatchError

from processors.core.aggregates import MonthKey, MonthTotals, monthly_aggregates, monthly_totals
from processors.core.fact import instant_of
from processors.core.movement import Movement, record_json
from processors.stream.state import ChunkView, month_start
from schemas.aggregate import MonthlyAggregate
from schemas.money import format_cents
from schemas.movement import MovementRecord

_TOTAL_FIELDS = tuple(f.name for f in fields(MonthTotals))
LATEST_KEPT = 500
ACCOUNT_MOVEMENTS_KEPT = 5_000  # at most this many of an account's movements in one API answer
# accounts per script call, by size: a rebuild's 200 accounts with all their chunks may be large, and one
# script runs without a break (other clients get BUSY past 5 s), so long ones are cut
REPLACE_CALL_BYTES = 1 << 20

# A batch's accounts in one call (one command to send and one reply to read, not one per account; a call
# per REPLACE_CALL_BYTES of them). ARGV: prefix, then a JSON array with per account [account_id, version,
# [[CUR, "12.34"], ...], chunks], per chunk [start, month, movements JSON, [["CUR|field", "integer"],
# ...]]. Instants and sums travel as strings: Lua concatenation (`..`, the chunk keys) writes a number
# with 14 significant digits, and a µs instant has 16.
# A chunk whose stored version is not older is left alone; so is the account's MRR.
_REPLACE = """
local p = ARGV[1]
local changed = 0
for _, a in ipairs(cjson.decode(ARGV[2])) do
  local acct, version = a[1], a[2]
  local akey = p .. 'account:' .. acct
  if tonumber(redis.call('HGET', akey, '_version') or '-1') < version then
    redis.call('DEL', akey)
    redis.call('HSET', akey, '_version', string.format('%d', version))
    for _, pair in ipairs(a[3]) do redis.call('HSET', akey, pair[1], pair[2]) end
  end
  for _, c in ipairs(a[4]) do
    local start, month, moves = c[1], c[2], c[3]
    local ckey = p .. 'contrib:' .. acct .. ':' .. start
    if tonumber(redis.call('HGET', ckey, '_v') or '-1') < version then
      redis.call('SET', p .. 'moves:' .. acct .. ':' .. start, moves)
      redis.call('ZADD', p .. 'chunks:' .. acct, tonumber(start), start)
      local delta = {}
      local old = redis.call('HGETALL', ckey)
      for j = 1, #old, 2 do
        if old[j] ~= '_v' then delta[old[j]] = -tonumber(old[j + 1]) end
      end
      redis.call('DEL', ckey)
      redis.call('HSET', ckey, '_v', string.format('%d', version))
      for _, pair in ipairs(c[4]) do
        local f = pair[1]
        delta[f] = (delta[f] or 0) + tonumber(pair[2])
        redis.call('HSET', ckey, f, pair[2])
      end
      for f, d in pairs(delta) do
        if d ~= 0 then
          local cur, name = string.match(f, '^([^|]+)|(.+)$')
          redis.call('HINCRBY', p .. 'totals:' .. month .. ':' .. cur, name, string.format('%d', d))
          redis.call('SADD', p .. 'buckets', month .. ':' .. cur)
          changed = 1
        end
      end
    end
  end
end
if changed == 1 then redis.call('INCR', p .. 'version') end
return changed
"""


# One account's scheduled movements, replaced whole. ARGV: prefix, account_id, version, first instant ("" for
# none), movements JSON. Left alone when the stored version is not older.
_SCHEDULE = """
local p, acct, version = ARGV[1], ARGV[2], tonumber(ARGV[3])
local skey = p .. 'sched:' .. acct
local stored = redis.call('HGET', skey, '_v')
if ARGV[4] == '' and not stored then return 0 end  -- none, and never any: no key for it
if tonumber(stored or '-1') >= version then return 0 end
redis.call('HSET', skey, '_v', version, 'moves', ARGV[5])
if ARGV[4] == '' then
  redis.call('ZREM', p .. 'scheduled', acct)
else
  redis.call('ZADD', p .. 'scheduled', tonumber(ARGV[4]), acct)
end
redis.call('INCR', p .. 'version')
return 1
"""

_CLEAR = """
local cursor, deleted = '0', 0
repeat
  local found = redis.call('SCAN', cursor, 'MATCH', ARGV[1] .. '*', 'COUNT', 1000)
  cursor = found[1]
  for _, key in ipairs(found[2]) do deleted = deleted + redis.call('DEL', key) end
until cursor == '0'
return deleted
"""


def contribution(movements: Iterable[Movement]) -> dict[str, int]:
    """A chunk's share of the totals: "CUR|field" -> integer (its movements are all in one month)."""
    return {
        f"{cur}|{name}": value
        for (_, cur), totals in monthly_totals(movements).items()
        for name in _TOTAL_FIELDS
        if (value := getattr(totals, name))
    }


@dataclass(frozen=True, slots=True)
class AccountView:
    """What one batch changed of one account: its current MRR and the chunks whose movements changed."""

    account_id: str
    version: int
    mrr: Mapping[str, int]
    chunks: Sequence[ChunkView] = ()
    scheduled: Sequence[Movement] | None = None  # the account's scheduled movements; None: unchanged

    @classmethod
    def of(
        cls, account_id: str, version: int, mrr: Mapping[str, int], movements: Iterable[Movement]
    ) -> AccountView:
        """A whole account at once, one chunk per month (for tests and tools; the stream writes chunks)."""
        by_month: dict[int, list[Movement]] = {}
        for m in movements:
            by_month.setdefault(month_start(instant_of(m.effective_at)), []).append(m)
        chunks = [ChunkView(start, tuple(ms)) for start, ms in sorted(by_month.items())]
        return cls(account_id, version, dict(mrr), chunks)


# redis-py types every reply as bytes | str; with decode_responses=True they are str.
async def _members(client: aioredis.Redis, key: str) -> set[str]:
    return cast(set[str], await client.smembers(key))


async def _hash(client: aioredis.Redis, key: str) -> dict[str, str]:
    return cast(dict[str, str], await client.hgetall(key))


def _row_hash(row: MonthlyAggregate) -> Any:
    data = row.model_dump(mode="json")
    return {k: "" if v is None else str(v) for k, v in data.items()}


def row_from_hash(data: Mapping[str, str]) -> MonthlyAggregate:
    return MonthlyAggregate.model_validate({k: (None if v == "" else v) for k, v in data.items()})


class RedisView:
    def __init__(self, url: str, prefix: str) -> None:
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
        )
        self.prefix = prefix
        self._replace = self.client.register_script(_REPLACE)
        self._schedule = self.client.register_script(_SCHEDULE)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def close(self) -> None:
        await self.client.aclose()

    async def write(
        self, accounts: Sequence[AccountView], rejected: Iterable[str] = (), latest: Sequence[str] = ()
    ) -> None:
        """One transactional pipeline for a whole batch: all of it lands, or none of it."""
        calls: list[list[bytes]] = [[]]
        size = 0
        for view in accounts:
            entry = to_json(
                [
                    view.account_id,
                    view.version,
                    [[currency, format_cents(cents)] for currency, cents in sorted(view.mrr.items())],
                    [
                        [
                            str(chunk.start),
                            chunk.month,
                            "[" + ",".join(record_json(m) for m in chunk.movements) + "]",
                            [[f, str(v)] for f, v in sorted(contribution(chunk.movements).items())],
                        ]
                        for chunk in view.chunks
                    ],
                ]
            )
            if calls[-1] and size + len(entry) > REPLACE_CALL_BYTES:
                calls.append([])
                size = 0
            calls[-1].append(entry)
            size += len(entry) + 1
        async with self.client.pipeline(transaction=True) as pipe:
            for call in calls:
                if call:
                    batch = b"[" + b",".join(call) + b"]"  # (bytes: the client sends them as they are)
                    await self._replace(keys=[], args=[self.prefix, batch], client=pipe)
            for view in accounts:
                if view.scheduled is not None:
                    first = min((instant_of(m.effective_at) for m in view.scheduled), default=None)
                    moves = "[" + ",".join(record_json(m) for m in view.scheduled) + "]"
                    at = "" if first is None else str(first)
                    sargs: list[str | int] = [self.prefix, view.account_id, view.version, at, moves]
                    await self._schedule(keys=[], args=sargs, client=pipe)
            rejected = list(rejected)
            if rejected:
                pipe.sadd(self.key("rejected"), *rejected)
            if latest:
                pipe.lpush(self.key("latest"), *latest)
                pipe.ltrim(self.key("latest"), 0, LATEST_KEPT - 1)
            await pipe.execute()

    async def _totals(self) -> dict[MonthKey, MonthTotals]:
        buckets = sorted(await _members(self.client, self.key("buckets")))
        keys = [tuple(bucket.split(":")) for bucket in buckets]
        async with self.client.pipeline(transaction=False) as pipe:
            for month, currency in keys:
                pipe.hgetall(self.key("totals", month, currency))
            replies = cast(list[dict[str, str]], await pipe.execute())
        return {
            (month, currency): MonthTotals(**{k: int(v) for k, v in raw.items() if k in _TOTAL_FIELDS})
            for (month, currency), raw in zip(keys, replies, strict=True)
        }

    async def refresh_rows(self, through: str | None = None) -> list[MonthlyAggregate] | None:
        """Rewrite the monthly rows from the totals, through the month `through` (now's: months run to
        now) and return them, unless the totals change meanwhile (then None)."""
        async with self.client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.key("version"))
                version = await pipe.get(self.key("version"))
                # Read on another connection: a change after the WATCH still makes the EXEC fail.
                rows = monthly_aggregates(await self._totals(), through)
                old = await _members(pipe, self.key("months"))
                pipe.multi()
                names = set()
                for row in rows:
                    names.add(f"{row.currency}:{row.month}")
                    key = self.key("month", row.month, row.currency)
                    pipe.delete(key)
                    pipe.hset(key, mapping=_row_hash(row))
                for stale in set(old) - names:
                    currency, month = stale.split(":")
                    pipe.delete(self.key("month", month, currency))
                pipe.delete(self.key("months"), self.key("current"))
                if names:
                    pipe.sadd(self.key("months"), *names)
                current: dict[str, str] = {}
                for row in rows:  # rows are ordered by month within a currency: the last one wins
                    current[f"{row.currency}:mrr"] = format_cents(row.closing_mrr)
                    current[f"{row.currency}:customers"] = str(row.customers_closing)
                if current:
                    pipe.hset(self.key("current"), mapping=cast(Any, current))
                pipe.set(self.key("rows_version"), version or 0)
                await pipe.execute()
                return rows
            except WatchError:
                return None

    async def months(self) -> list[MonthlyAggregate]:
        names = await _members(self.client, self.key("months"))
        rows = []
        for name in names:
            currency, month = name.split(":")
            rows.append(row_from_hash(await _hash(self.client, self.key("month", month, currency))))
        return sorted(rows, key=lambda r: (r.currency, r.month))

    async def rejected(self) -> int:
        return int(await self.client.scard(self.key("rejected")))

    async def account_mrr(self, account_id: str) -> dict[str, int]:
        raw = await _hash(self.client, self.key("account", account_id))
        return {k: int(Decimal(v) * 100) for k, v in raw.items() if not k.startswith("_")}

    async def current(self) -> dict[str, str]:
        return await _hash(self.client, self.key("current"))

    async def account_movements(
        self, account_id: str, limit: int = ACCOUNT_MOVEMENTS_KEPT, before: int | None = None
    ) -> tuple[list[MovementRecord], int | None] | None:
        """A page of the account's movements in effect, oldest first: the latest `limit` of those whose
        chunk starts before the instant `before` (µs; None: all), and where the next page would start
        (None when this is the first one). Whole chunks are read, newest first, so a long history costs
        only the page. None for an unknown account."""
        if not await self.client.exists(self.key("account", account_id)):
            return None
        top = "+inf" if before is None else f"({before}"
        starts = cast(
            list[str], await self.client.zrevrangebyscore(self.key("chunks", account_id), top, "-inf")
        )
        out: list[MovementRecord] = []
        for n, start in enumerate(starts):
            raw = await self.client.get(self.key("moves", account_id, start))
            chunk = [MovementRecord.model_validate(m) for m in json.loads(raw)] if raw else []
            out[:0] = [m for m in chunk if before is None or instant_of(m.effective_at) < before]
            if len(out) >= limit:
                # a page ends on an instant boundary: the next one holds what is strictly earlier
                cut = instant_of(out[-limit].effective_at)
                page = [m for m in out if instant_of(m.effective_at) >= cut]
                more = n + 1 < len(starts) or len(page) < len(out)
                return page, (cut if more else None)
        return out, None

    async def scheduled(self, until: int, currency: str | None = None) -> list[MovementRecord]:
        """The scheduled movements effective at or before `until` (µs since the epoch), of every account
        whose first scheduled movement is by then: only those accounts are read."""
        accounts = cast(list[str], await self.client.zrangebyscore(self.key("scheduled"), "-inf", str(until)))
        if not accounts:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for account in accounts:
                pipe.hget(self.key("sched", account), "moves")
            replies = cast(list[str | None], await pipe.execute())
        out: list[MovementRecord] = []
        for raw in replies:
            for item in json.loads(raw or "[]"):
                record = MovementRecord.model_validate(item)
                if instant_of(record.effective_at) <= until and currency in (None, record.currency):
                    out.append(record)
        return out

    async def latest(self, limit: int) -> list[MovementRecord]:
        """Newest first, each record_id once (a redelivery after a crash may have pushed one twice)."""
        raw = cast(list[str], await self.client.lrange(self.key("latest"), 0, LATEST_KEPT - 1))
        seen: set[str] = set()
        out: list[MovementRecord] = []
        for item in raw:
            record = MovementRecord.model_validate_json(item)
            key = record.record_id or record.movement_id
            if key not in seen:
                seen.add(key)
                out.append(record)
            if len(out) == limit:
                break
        return out

    async def missing_markers(self, partitions: Iterable[int]) -> set[int]:
        """The partitions whose view Redis does not hold as complete: their marker is gone (a Redis
        restarted empty, a FLUSHALL, an eviction, `mrr-stream resync`), or was never set."""
        wanted = sorted(partitions)
        if not wanted:
            return set()
        found = cast(list[str | None], await self.client.mget([self.key("view", str(p)) for p in wanted]))
        return {p for p, value in zip(wanted, found, strict=True) if value is None}

    async def set_marker(self, partition: int) -> None:
        await self.client.set(self.key("view", str(partition)), "complete")

    async def clear(self) -> int:
        """Delete every key of the view at once (what `mrr-stream resync` does): the workers see their
        markers gone and rebuild. Atomic, like a FLUSHDB, so no rebuild can interleave with the deletion
        (Redis is busy meanwhile: about a second per million keys)."""
        deleted = await self.client.eval(_CLEAR, 0, self.prefix)
        return int(deleted)

    async def version(self) -> int:
        return int(await self.client.get(self.key("version")) or 0)

    async def rows_version(self) -> int:
        """What the readers' figures (rows, current) reflect: changes when they are rewritten."""
        return int(await self.client.get(self.key("rows_version")) or 0)


async def read_months(url: str, prefix: str) -> tuple[list[MonthlyAggregate], int]:
    """The monthly rows and the dead-letter count held in Redis, as `status` and the demo show them."""
    view = RedisView(url, prefix)
    try:
        return await view.months(), await view.rejected()
    finally:
        await view.close()
