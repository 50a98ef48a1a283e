"""A realistic, reproducible billing history: the load source for tests, demos and benchmarks.

Accounts sign up over the period, some after a trial; they add seats and add-ons, switch plans (some as a
cancel + subscribe at one instant), change interval, pause and resume, churn, and some come back. Prices
come in several currencies and intervals, with recurring discounts, and carry taxes and one-time fees that
MRR must ignore. Arrival order can be shuffled or delayed, and duplicates and bad lines mixed in.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

PLANS: tuple[tuple[str, Decimal, bool], ...] = (  # plan id, monthly list price, priced per seat
    ("starter", Decimal("29.00"), False),
    ("team", Decimal("12.00"), True),
    ("business", Decimal("39.00"), True),
    ("enterprise", Decimal("1499.00"), False),
)
ADDONS: tuple[tuple[str, Decimal], ...] = (
    ("sso", Decimal("25.00")),
    ("audit-log", Decimal("49.00")),
    ("premium-support", Decimal("150.00")),
)
CURRENCIES: tuple[tuple[str, Decimal], ...] = (
    ("USD", Decimal(1)),
    ("EUR", Decimal("0.92")),
    ("GBP", Decimal("0.79")),
)
CURRENCY_WEIGHTS = (70, 20, 10)
INTERVALS: tuple[tuple[str, int], ...] = (
    ("month", 1),
    ("year", 1),
    ("quarter", 1),
    ("month", 6),
    ("week", 1),
    ("week", 2),
    ("day", 30),
)
INTERVAL_WEIGHTS = (64, 18, 6, 2, 5, 2, 3)
# Price per interval as a multiple of the monthly price: annual plans get two months free.
_INTERVAL_PRICE = {
    "day": Decimal(12) / 365,
    "week": Decimal(12) / 52,
    "month": Decimal(1),
    "quarter": Decimal(3),
    "year": Decimal(10),
}
_OFFSETS = (
    UTC,
    UTC,
    UTC,
    timezone(timedelta(hours=2)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=5, minutes=30)),
)


@dataclass
class _Sub:
    sub_id: str
    currency: str
    interval: str
    count: int
    items: list[dict[str, Any]]
    discount: dict[str, str] | None
    plan_index: int
    status: str = "active"


@dataclass
class _Account:
    account_id: str
    currency: str
    rate: Decimal
    subs: dict[str, _Sub] = field(default_factory=dict)
    next_sub: int = 0
    churned_until: datetime | None = None


def _price(monthly: Decimal, rate: Decimal, interval: str, count: int) -> str:
    value = monthly * rate * _INTERVAL_PRICE[interval] * count
    places = Decimal("0.000001") if interval == "day" else Decimal("0.01")
    return str(value.quantize(places, rounding=ROUND_HALF_EVEN))


class HistoryGenerator:
    def __init__(self, accounts: int, months: int, seed: int, start: datetime) -> None:
        self.rng = random.Random(seed)
        self.accounts = accounts
        self.start = start
        self.end = add_months(start, months)
        self.seed = seed
        self.counter = 0

    def _event_id(self) -> str:
        self.counter += 1
        return f"evt_{self.seed}_{self.counter:08d}_{self.rng.getrandbits(24):06x}"

    def _stamp(self, at: datetime) -> str:
        tz = self.rng.choice(_OFFSETS)
        text = at.astimezone(tz).isoformat()
        return text.replace("+00:00", "Z")

    def _event(
        self, kind: str, acct: _Account, sub: _Sub, at: datetime, terms: bool = True, trial: bool = False
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_id": self._event_id(),
            "type": kind,
            "account_id": acct.account_id,
            "subscription_id": sub.sub_id,
            "effective_at": self._stamp(at),
        }
        if terms:
            event.update(currency=sub.currency, interval=sub.interval, items=[dict(i) for i in sub.items])
            if sub.count != 1 or self.rng.random() < 0.3:
                event["interval_count"] = sub.count
            if sub.discount:
                event["discount"] = dict(sub.discount)
            if trial:
                event["trial"] = True
            if self.rng.random() < 0.4:
                event["tax_amount"] = str(
                    (Decimal(sub.items[0]["unit_amount"]) * Decimal("0.2")).quantize(Decimal("0.01"))
                )
            if self.rng.random() < 0.1:
                event["one_time_fees"] = [{"description": "onboarding", "amount": "500.00"}]
        return event

    def _new_sub(self, acct: _Account, plan_index: int | None = None) -> _Sub:
        rng = self.rng
        interval, count = rng.choices(INTERVALS, INTERVAL_WEIGHTS)[0]
        if plan_index is None:
            plan_index = rng.choices(range(len(PLANS)), (40, 30, 22, 8))[0]
        plan_id, monthly, per_seat = PLANS[plan_index]
        quantity = rng.randint(2, 40) if per_seat else 1
        discount: dict[str, str] | None = None
        roll = rng.random()
        if roll < 0.15:
            discount = {"percent_off": rng.choice(["10", "12.5", "20", "33.3333"])}
        elif roll < 0.2:
            discount = {"amount_off": _price(Decimal(5), acct.rate, interval, count)}
        acct.next_sub += 1
        items = [
            {
                "plan_id": plan_id,
                "unit_amount": _price(monthly, acct.rate, interval, count),
                "quantity": quantity,
            }
        ]
        return _Sub(
            f"{acct.account_id}-sub{acct.next_sub}",
            acct.currency,
            interval,
            count,
            items,
            discount,
            plan_index,
        )

    def _reprice(self, acct: _Account, sub: _Sub, plan_index: int) -> None:
        plan_id, monthly, per_seat = PLANS[plan_index]
        sub.plan_index = plan_index
        sub.items[0] = {
            "plan_id": plan_id,
            "unit_amount": _price(monthly, acct.rate, sub.interval, sub.count),
            "quantity": sub.items[0]["quantity"] if per_seat else 1,
        }

    def _random_time(self, lo: datetime, hi: datetime) -> datetime:
        span = max(int((hi - lo).total_seconds()), 1)
        return lo + timedelta(seconds=self.rng.randrange(span))

    def account_events(self, n: int) -> Iterator[dict[str, Any]]:
        rng = self.rng
        currency, rate = rng.choices(CURRENCIES, CURRENCY_WEIGHTS)[0]
        acct = _Account(f"acct_{n:06d}", currency, rate)
        at = self._random_time(self.start, self.end)
        sub = self._new_sub(acct)
        acct.subs[sub.sub_id] = sub
        if rng.random() < 0.25:
            yield self._event("subscribe", acct, sub, at, trial=True)
            at += timedelta(days=14)
            if at >= self.end:
                return
            if rng.random() < 0.35:
                yield self._event("cancel", acct, sub, at, terms=False)
                return
            yield self._event("change", acct, sub, at)
        else:
            yield self._event("subscribe", acct, sub, at)
        while True:
            at += timedelta(days=rng.uniform(10, 45))
            if at >= self.end:
                return
            active = [s for s in acct.subs.values() if s.status == "active"]
            paused = [s for s in acct.subs.values() if s.status == "paused"]
            roll = rng.random()
            if not active and not paused:
                if roll < 0.12:  # win-back: reactivate the main subscription, sometimes on new terms
                    sub = next(iter(acct.subs.values()))
                    sub.status = "active"
                    new_terms = rng.random() < 0.5
                    if new_terms:
                        self._reprice(acct, sub, rng.randrange(len(PLANS)))
                    yield self._event("reactivate", acct, sub, at, terms=new_terms)
                continue
            if paused:
                if roll < 0.5:
                    for s in paused:
                        s.status = "active"
                        yield self._event("resume", acct, s, at, terms=False)
                continue
            sub = rng.choice(active)
            if roll < 0.10:  # seats up, or a plan up
                if sub.items[0]["quantity"] > 1 or sub.plan_index + 1 >= len(PLANS):
                    sub.items[0]["quantity"] += rng.randint(1, 10)
                else:
                    self._reprice(acct, sub, sub.plan_index + 1)
                yield self._event("upgrade", acct, sub, at)
            elif roll < 0.15:
                if sub.items[0]["quantity"] > 2:
                    sub.items[0]["quantity"] -= rng.randint(1, sub.items[0]["quantity"] - 1)
                elif sub.plan_index > 0:
                    self._reprice(acct, sub, sub.plan_index - 1)
                yield self._event("downgrade", acct, sub, at)
            elif roll < 0.18:  # interval switch
                sub.interval, sub.count = ("year", 1) if sub.interval != "year" else ("month", 1)
                self._reprice(acct, sub, sub.plan_index)
                yield self._event("change", acct, sub, at)
            elif roll < 0.21:  # plan switch modelled as cancel + subscribe at one instant
                sub.status = "canceled"
                yield self._event("cancel", acct, sub, at, terms=False)
                new = self._new_sub(acct, rng.randrange(len(PLANS)))
                acct.subs[new.sub_id] = new
                yield self._event("subscribe", acct, new, at)
            elif roll < 0.25:  # an add-on as a subscription of its own
                addon_id, monthly = rng.choice(ADDONS)
                new = self._new_sub(acct)
                new.items = [
                    {
                        "plan_id": addon_id,
                        "unit_amount": _price(monthly, acct.rate, new.interval, new.count),
                        "quantity": 1,
                    }
                ]
                new.discount = None
                acct.subs[new.sub_id] = new
                yield self._event("subscribe", acct, new, at)
            elif roll < 0.27:
                for s in active:
                    s.status = "paused"
                    yield self._event("pause", acct, s, at, terms=False)
            elif roll < 0.32:  # churn: every active subscription cancelled at one instant
                for s in active:
                    s.status = "canceled"
                    yield self._event("cancel", acct, s, at, terms=False)

    def events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for n in range(self.accounts):
            out.extend(self.account_events(n))
        out.sort(key=lambda e: (datetime.fromisoformat(e["effective_at"]), e["event_id"]))
        return out


BAD_LINES: tuple[str, ...] = (
    "{not json",
    '{"event_id": "bad-missing-type", "account_id": "a", "subscription_id": "s", '
    '"effective_at": "2025-01-01T00:00:00Z"}',
    '{"event_id": "bad-float", "type": "subscribe", "account_id": "a", "subscription_id": "s", '
    '"effective_at": "2025-01-01T00:00:00Z", "currency": "USD", "interval": "month", '
    '"items": [{"plan_id": "p", "unit_amount": 49.99}]}',
    '{"event_id": "bad-currency", "type": "subscribe", "account_id": "a", "subscription_id": "s", '
    '"effective_at": "2025-01-01T00:00:00Z", "currency": "usd", "interval": "month", '
    '"items": [{"plan_id": "p", "unit_amount": "49.99"}]}',
    '{"event_id": "bad-naive", "type": "cancel", "account_id": "a", "subscription_id": "s", '
    '"effective_at": "2025-01-01T00:00:00"}',
    '{"event_id": "bad-type", "type": "refund", "account_id": "a", "subscription_id": "s", '
    '"effective_at": "2025-01-01T00:00:00Z"}',
    '{"event_id": "bad-items", "type": "subscribe", "account_id": "a", "subscription_id": "s", '
    '"effective_at": "2025-01-01T00:00:00Z", "currency": "USD", "interval": "month", "items": []}',
    '{"event_id": "bad-negative", "type": "upgrade", "account_id": "a", "subscription_id": "s", '
    '"effective_at": "2025-01-01T00:00:00Z", "currency": "USD", "interval": "month", '
    '"items": [{"plan_id": "p", "unit_amount": "-10.00"}]}',
    '{"event_id": "bad-interval", "type": "subscribe", "account_id": "a", "subscription_id": "s", '
    '"effective_at": "2025-01-01T00:00:00Z", "currency": "USD", "interval": "fortnight", '
    '"items": [{"plan_id": "p", "unit_amount": "10.00"}]}',
    '{"type": "cancel", "account_id": "a", "subscription_id": "s", "effective_at": "2025-01-01T00:00:00Z"}',
    "[1, 2, 3]",
)


def arrange(
    events: list[dict[str, Any]],
    seed: int,
    *,
    shuffle: bool = False,
    duplicates: float = 0.0,
    late: float = 0.0,
    late_days: float = 60.0,
    bad: float = 0.0,
) -> list[str]:
    """Lay events out in an arrival order: the lines a producer would send, as JSON Lines."""
    rng = random.Random(seed ^ 0x5EED)
    keyed: list[tuple[float, str]] = []
    for event in events:
        arrival = datetime.fromisoformat(event["effective_at"]).timestamp()
        if late and rng.random() < late:
            arrival += rng.uniform(0, late_days) * 86400
        line = json.dumps(event, separators=(",", ":"))
        keyed.append((arrival, line))
        if duplicates and rng.random() < duplicates:
            keyed.append((arrival + rng.uniform(0, 30) * 86400, line))
    if bad:
        n_bad = max(1, round(len(events) * bad))
        span = (keyed[0][0], keyed[-1][0]) if keyed else (0.0, 1.0)
        for i in range(n_bad):
            keyed.append((rng.uniform(*span), BAD_LINES[i % len(BAD_LINES)]))
    if shuffle:
        rng.shuffle(keyed)
    else:
        keyed.sort(key=lambda pair: pair[0])
    return [line for _, line in keyed]


def add_months(at: datetime, months: int) -> datetime:
    total = at.month - 1 + months
    return at.replace(year=at.year + total // 12, month=total % 12 + 1)


def parse_month(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)


def busy_account(account_id: str, events: int, seed: int, start: datetime) -> list[dict[str, Any]]:
    """One account that changes its seat count every 1 to 3 hours: the history that tests and benchmarks
    the per-account state's bounds. Now and then a second subscription comes and goes, and the account
    churns and comes back, so that late events change movement types too, not only amounts."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    at = start
    seats = 10
    extra_active = False

    def event(kind: str, sub: str, terms: bool, quantity: int, price: str) -> dict[str, Any]:
        e: dict[str, Any] = {
            "event_id": f"{account_id}-{len(out):06d}",
            "type": kind,
            "account_id": account_id,
            "subscription_id": sub,
            "effective_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        if terms:
            e.update(
                currency="USD",
                interval="month",
                items=[{"plan_id": "team", "unit_amount": price, "quantity": quantity}],
            )
        return e

    out.append(event("subscribe", f"{account_id}-main", True, seats, "12.00"))
    active = True
    while len(out) < events:
        at += timedelta(seconds=rng.randint(3600, 3 * 3600))
        roll = rng.random()
        if not active:
            out.append(event("reactivate", f"{account_id}-main", False, 0, ""))
            active = True
        elif roll < 0.002:
            out.append(event("cancel", f"{account_id}-main", False, 0, ""))
            active = False
        elif roll < 0.01:
            extra_active = not extra_active
            kind = "subscribe" if extra_active else "cancel"
            out.append(event(kind, f"{account_id}-addon", extra_active, 1, "25.00"))
        else:
            seats = max(1, seats + rng.choice((-2, -1, 1, 1, 2, 3)))
            out.append(event("change", f"{account_id}-main", True, seats, "12.00"))
    return out
