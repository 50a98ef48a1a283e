"""The Redis view of the stream: idempotent, so at-least-once delivery never double counts.

Key layout (every key starts with the configured prefix, `mrr:` by default; money as decimal strings):

| key | type | content |
|---|---|---|
| `mrr:month:{YYYY-MM}:{CUR}` | hash | every monthly aggregate field; ratios "" when null |
| `mrr:months` | set | `{CUR}:{YYYY-MM}` of every row above |
| `mrr:current` | hash | `{CUR}:mrr` current MRR, `{CUR}:customers` |
| `mrr:account:{account_id}` | hash | `{CUR}` current MRR of the account; `_version` |
| `mrr:totals:{YYYY-MM}:{CUR}` | hash | integer sums behind the rows: cents by movement type, counts |
| `mrr:contrib:{account_id}` | hash | that account's share of the totals; `_v` its version |
| `mrr:version` | string | bumped on every change of the totals |
| `mrr:rejected` | set | `topic:partition:offset` of every dead letter (SCARD counts them once) |
| `mrr:account_movements:{account_id}` | string | JSON array of the account's movements in effect |
| `mrr:latest` | list | latest movement records, newest first (500 at most; a crash may repeat one) |

Each account's contribution to the totals is *replaced*, never added: a Lua script swaps the stored
contribution for the new one and applies the difference, and ignores a version older than the stored one.
Writing the same account twice (a redelivery, a replay after a crash, a resync) changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from processors.core.aggregates import MonthKey, MonthTotals, monthly_aggregates, monthly_totals
from processors.core.movement import Movement, to_record
from schemas.aggregate import MonthlyAggregate
from schemas.money import format_cents
from schemas.movement import MovementRecord

_TOTAL_FIELDS = tuple(f.name for f in fields(MonthTotals))
LATEST_KEPT = 500

# KEYS: none (totals keys depend on the data; this is for a single Redis, not a cluster).
# ARGV: prefix, account_id, version, movements JSON, n_mrr, then n_mrr (currency, "12.34") pairs, then
# (field, cents) pairs
_REPLACE = """
local p, acct, version = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ckey = p .. 'contrib:' .. acct
local stored = tonumber(redis.call('HGET', ckey, '_v') or '-1')
if stored >= version then return 0 end
redis.call('SET', p .. 'account_movements:' .. acct, ARGV[4])
local n_mrr = tonumber(ARGV[5])
local akey = p .. 'account:' .. acct
redis.call('DEL', akey)
redis.call('HSET', akey, '_version', version)
for i = 6, 5 + 2 * n_mrr, 2 do redis.call('HSET', akey, ARGV[i], ARGV[i + 1]) end
local delta = {}
local old = redis.call('HGETALL', ckey)
for i = 1, #old, 2 do
  if old[i] ~= '_v' then delta[old[i]] = -tonumber(old[i + 1]) end
end
redis.call('DEL', ckey)
redis.call('HSET', ckey, '_v', version)
for i = 6 + 2 * n_mrr, #ARGV, 2 do
  local f, v = ARGV[i], tonumber(ARGV[i + 1])
  delta[f] = (delta[f] or 0) + v
  redis.call('HSET', ckey, f, ARGV[i + 1])
end
local changed = 0
for f, d in pairs(delta) do
  if d ~= 0 then
    local month, cur, name = string.match(f, '^([^|]+)|([^|]+)|(.+)$')
    redis.call('HINCRBY', p .. 'totals:' .. month .. ':' .. cur, name, string.format('%d', d))
    redis.call('SADD', p .. 'buckets', month .. ':' .. cur)
    changed = 1
  end
end
if changed == 1 then redis.call('INCR', p .. 'version') end
return 1
"""


@dataclass(frozen=True, slots=True)
class AccountView:
    account_id: str
    version: int
    mrr: Mapping[str, int]
    contribution: Mapping[str, int]  # "month|CUR|field" -> integer
    movements_json: str = "[]"

    @classmethod
    def of(
        cls, account_id: str, version: int, mrr: Mapping[str, int], movements: Iterable[Movement]
    ) -> AccountView:
        movements = list(movements)
        contribution = {
            f"{month}|{cur}|{name}": value
            for (month, cur), totals in monthly_totals(movements).items()
            for name in _TOTAL_FIELDS
            if (value := getattr(totals, name))
        }
        records = [to_record(m).model_dump(mode="json") for m in movements]
        return cls(account_id, version, dict(mrr), contribution, json.dumps(records, separators=(",", ":")))


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

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def close(self) -> None:
        await self.client.aclose()

    async def write(
        self, accounts: Sequence[AccountView], rejected: Iterable[str] = (), latest: Sequence[str] = ()
    ) -> None:
        """One transactional pipeline for a whole batch: all of it lands, or none of it."""
        async with self.client.pipeline(transaction=True) as pipe:
            for view in accounts:
                args: list[str | int] = [
                    self.prefix,
                    view.account_id,
                    view.version,
                    view.movements_json,
                    len(view.mrr),
                ]
                for currency, cents in sorted(view.mrr.items()):
                    args += [currency, format_cents(cents)]
                for name, value in sorted(view.contribution.items()):
                    args += [name, value]
                await self._replace(keys=[], args=args, client=pipe)
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

    async def refresh_rows(self) -> bool:
        """Rewrite the monthly rows from the totals, unless the totals change meanwhile (then False)."""
        async with self.client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.key("version"))
                # Read on another connection: a change after the WATCH still makes the EXEC fail.
                rows = monthly_aggregates(await self._totals())
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
                await pipe.execute()
                return True
            except WatchError:
                return False

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

    async def account_movements(self, account_id: str) -> list[MovementRecord] | None:
        raw = await self.client.get(self.key("account_movements", account_id))
        if raw is None:
            return None
        return [MovementRecord.model_validate(m) for m in json.loads(raw)]

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

    async def version(self) -> int:
        return int(await self.client.get(self.key("version")) or 0)


async def read_months(url: str, prefix: str) -> tuple[list[MonthlyAggregate], int]:
    """The monthly rows and the dead-letter count held in Redis, as `status` and the demo show them."""
    view = RedisView(url, prefix)
    try:
        return await view.months(), await view.rejected()
    finally:
        await view.close()
