"""A Ledger as bytes for the Faust table and its changelog: compact JSON, exact integers only."""

from __future__ import annotations

import json
from typing import Any

from processors.core.account import AccountState, Subscription
from processors.core.fact import Fact, instant_of, utc_of
from processors.core.movement import Movement
from processors.stream.ledger import Ledger, Published

_FORMAT = 1  # bump when the layout changes; a reader refuses what it does not know


def _movement(m: Movement) -> list[Any]:
    return [
        m.movement_id,
        m.currency,
        m.type,
        m.amount,
        m.mrr_before,
        m.mrr_after,
        instant_of(m.effective_at),
        m.month,
        list(m.event_ids),
        m.record,
        m.sign,
        m.retracts,
        list(m.corrects),
    ]


def _unmovement(account_id: str, row: list[Any]) -> Movement:
    mid, cur, kind, amount, before, after, instant, month, ids, record, sign, retracts, corrects = row
    return Movement(
        mid,
        account_id,
        cur,
        kind,
        amount,
        before,
        after,
        utc_of(instant),
        month,
        tuple(ids),
        record,
        sign,
        retracts,
        tuple(corrects),
    )


def encode(ledger: Ledger) -> bytes:
    s = ledger.state
    doc = {
        "v": _FORMAT,
        "a": s.account_id,
        "e": [
            [f.instant, f.event_id, f.subscription_id, f.kind, f.currency, f.mrr, f.fingerprint]
            for f in s.events
        ],
        "m": [_movement(m) for m in s.movements],
        "s": {sid: [sub.currency, sub.terms_mrr, sub.active] for sid, sub in s.subscriptions.items()},
        "r": dict(s.mrr),
        "x": sorted(s.ever_active),
        "l": [[p.seq, p.offset, _movement(p.movement)] for p in ledger.log],
        "o": ledger.last_offset,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> Ledger:
    doc = json.loads(data)
    if doc.get("v") != _FORMAT:
        raise ValueError(f"unknown ledger format {doc.get('v')!r}")
    account = doc["a"]
    state = AccountState(
        account_id=account,
        events=tuple(
            Fact(i, eid, account, sid, kind, cur, mrr, fp) for i, eid, sid, kind, cur, mrr, fp in doc["e"]
        ),
        movements=tuple(_unmovement(account, row) for row in doc["m"]),
        subscriptions={sid: Subscription(cur, mrr, active) for sid, (cur, mrr, active) in doc["s"].items()},
        mrr=dict(doc["r"]),
        ever_active=frozenset(doc["x"]),
    )
    log = tuple(Published(seq, offset, _unmovement(account, row)) for seq, offset, row in doc["l"])
    return Ledger(state, log, doc["o"])
