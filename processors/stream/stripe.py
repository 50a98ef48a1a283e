"""The Stripe stage: raw Stripe Event objects (the `stripe-events` topic, one partition) in; contract billing
events out to the input topic, keyed by account, where the fold stage takes them like any producer's.
Knows nothing of Faust: the table and the producer are passed in (processors/stream/app.py wires them).

The mapping (processors/sources/stripe/mapping.py) is pure: a Stripe event and the state it names give the
billing events, the skips and the state writes. Per batch, in this order:
1. each record is mapped against the table seen through this batch's own writes;
2. the billing events (and the dead letters of unreadable records) are sent, and acknowledged;
3. then the state writes go to the table and its changelog, and are acknowledged;
4. Faust commits the batch's offsets when the batch returns.
A crash before 3 maps the batch again from the old state: the same billing events, with the same ids, which
the fold takes as duplicates. A crash after 3 maps it against the new state, which already holds its effect.

An event that names a coupon, discount or price not seen yet is parked in the table under that key and
mapped again when the key is written (Stripe does not promise order); with `MRR_STRIPE_API_KEY` set, a
coupon or price is first asked of the Stripe API (processors/sources/stripe/lookup.py). Bounds: a parked
event is at most PARKED_MAX_BYTES (else skipped with its reason), and a key has at most PARKED_PER_KEY
events waiting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

from processors.core.intake import RECORD, Rejection
from processors.sinks.metrics import Metrics
from processors.sources.stripe.lookup import Lookup
from processors.sources.stripe.mapping import Mapped, map_event, reads, to_json
from processors.stream import deadletter
from processors.stream.fold import Producer, Table, acknowledged
from processors.stream.intake import Record

log = logging.getLogger("mrr_stream")

PARKED = b"\x00park\x00"  # + needed key + \0 + Stripe event id -> the raw event
WAITING = b"\x00wait\x00"  # + needed key -> JSON list of the Stripe event ids parked under it
PARKED_MAX_BYTES = 64 * 1024
PARKED_PER_KEY = 1000  # ids of at most 255 bytes: the list stays under 64 KB... and is capped below
WAITING_MAX_BYTES = 64 * 1024
TOO_LARGE_TO_PARK = "too large to wait for a coupon, discount or price"
TOO_MANY_PARKED = "too many events waiting for one coupon, discount or price"
PARTITION = 0  # the Stripe topic and its table have one partition


class StripeStage:
    def __init__(
        self,
        *,
        table: Table,
        producer: Producer,
        metrics: Metrics,
        input_topic: str,
        dlq_topic: str,
        max_record_bytes: int,
        lookup: Lookup | None = None,
    ) -> None:
        """`lookup`: asks the Stripe API for a coupon or price not seen in the stream (None: it waits)."""
        self.table, self.producer, self.metrics = table, producer, metrics
        self.input_topic, self.dlq_topic = input_topic, dlq_topic
        self.max_record_bytes = max_record_bytes
        self.lookup = lookup
        self.parked: int | None = None  # events parked in the table

    async def batch(self, records: Sequence[Record]) -> None:
        overlay: dict[bytes, bytes | None] = {}

        def get(key: bytes) -> bytes | None:
            return overlay[key] if key in overlay else self.table.get(key)

        if self.parked is None:  # (counted once, after the table's recovery; kept up to date below)
            self.parked = sum(1 for key, _ in self.table.items() if key.startswith(PARKED))
        sent: list[Awaitable[object]] = []
        asked: set[str] = set()  # keys asked of the Stripe API in this batch: once each
        for record in records:
            event = self._parse(record)
            if event is None:
                sent.append(await self._dead_letter(record, "not a JSON object"))
                continue
            saved = dict(overlay)
            try:
                billing = await self._record(event, overlay, get, asked)
            except Exception as exc:  # no record can stop the stream: its state as if it never came
                overlay.clear()
                overlay.update(saved)
                log.exception("stripe record %s could not be mapped", record.source)
                reason = f"could not be mapped: {type(exc).__name__}: {exc}"[:500]
                sent.append(await self._dead_letter(record, reason, "failed"))
                continue
            for account, line in billing:
                sent.append(await self.producer.send(self.input_topic, account, line))
            self.metrics.stripe_billing_events.inc(len(billing))
        await acknowledged(sent)  # the billing events are in the input topic before the state moves on
        # A kill between two writes keeps a prefix of them, which the redelivered batch completes: so the
        # state the events caused goes first, then the parked events, then the lists of them (an unparked
        # event's own state is in, and acknowledged, before it leaves the list).
        order = sorted(
            overlay.items(), key=lambda kv: 2 if kv[0].startswith(WAITING) else kv[0].startswith(PARKED)
        )
        written: list[Awaitable[object]] = []
        for key, value in order:
            if key.startswith(PARKED):
                self.parked += (value is not None) - (self.table.get(key) is not None)
            written.append(await self.table.write(PARTITION, key, value))
        await acknowledged(written)
        self.metrics.stripe_parked.set(self.parked)

    async def _record(
        self, event: dict[str, Any], overlay: dict[bytes, bytes | None], get: Any, asked: set[str]
    ) -> list[tuple[bytes, bytes]]:
        """One Stripe record mapped (with the events it lets through): the billing records to send
        (key, value); its state changes go to `overlay`."""
        out: list[tuple[bytes, bytes]] = []
        queue: list[dict[str, Any]] = [event]
        while queue:
            current = queue.pop(0)
            mapped = self._map(current, get)
            if mapped.waits_for is not None:
                needed = mapped.waits_for
                if self.lookup is not None and needed not in asked:
                    asked.add(needed)
                    found = await self.lookup(needed, current)
                    if found is not None:  # mapped first, as if its event had come before
                        queue[:0] = [found, current]
                        continue
                self._park(current, needed, overlay, get)
                continue
            outcome = "skipped" if mapped.skips and not mapped.events and not mapped.writes else "mapped"
            self.metrics.stripe_events.labels(outcome).inc()
            for skip in mapped.skips:
                self.metrics.stripe_skipped.labels(skip.reason).inc()
                log.info("stripe event %s: %s (%s)", skip.stripe_event_id, skip.reason, skip.detail)
            out += [(b.account_id.encode(), to_json(b).encode()) for b in mapped.events]
            for key, text in mapped.writes:
                name = key.encode()
                overlay[name] = None if text is None else text.encode()
                queue += self._unpark(name, overlay, get)
        return out

    @staticmethod
    def _parse(record: Record) -> dict[str, Any] | None:
        try:
            event = json.loads(record.value or b"")
        except (ValueError, RecursionError):  # (RecursionError: nesting deeper than the parser goes)
            return None
        return event if isinstance(event, dict) else None

    @staticmethod
    def _map(event: dict[str, Any], get: Any) -> Mapped:
        state: dict[str, str] = {}
        for key in reads(event):
            value = get(key.encode())
            if value is not None:
                state[key] = value.decode()
        mapped = map_event(event, state)
        for _ in range(8):  # (reads() names every key; should it miss one, the event is not parked for it)
            if mapped.waits_for is None or mapped.waits_for in state:
                break
            value = get(mapped.waits_for.encode())
            if value is None:
                break
            state[mapped.waits_for] = value.decode()
            mapped = map_event(event, state)
        return mapped

    def _park(self, event: dict[str, Any], needed: str, overlay: dict[bytes, bytes | None], get: Any) -> None:
        event_id = str(event.get("id"))
        raw = json.dumps(event, separators=(",", ":")).encode()
        index_key = WAITING + needed.encode()
        waiting: list[str] = json.loads(get(index_key) or b"[]")
        if event_id in waiting:  # (a redelivery)
            return
        reason = None
        if len(raw) > PARKED_MAX_BYTES:
            reason = TOO_LARGE_TO_PARK
        elif len(waiting) >= PARKED_PER_KEY or len(json.dumps([*waiting, event_id])) > WAITING_MAX_BYTES:
            reason = TOO_MANY_PARKED
        if reason is not None:
            self.metrics.stripe_events.labels("skipped").inc()
            self.metrics.stripe_skipped.labels(reason).inc()
            log.warning("stripe event %s: %s (%s): skipped", event_id, reason, needed)
            return
        self.metrics.stripe_events.labels("parked").inc()
        log.info("stripe event %s waits for %s", event_id, needed)
        overlay[PARKED + needed.encode() + b"\x00" + event_id.encode()] = raw
        overlay[index_key] = json.dumps([*waiting, event_id]).encode()

    @staticmethod
    def _unpark(key: bytes, overlay: dict[bytes, bytes | None], get: Any) -> list[dict[str, Any]]:
        """The events parked for a key just written, taken out of the table."""
        index_key = WAITING + key
        stored = get(index_key)
        if stored is None or overlay.get(key) is None:
            return []
        out: list[dict[str, Any]] = []
        for event_id in json.loads(stored):
            parked_key = PARKED + key + b"\x00" + event_id.encode()
            raw = get(parked_key)
            if raw is not None:
                out.append(json.loads(raw))
            overlay[parked_key] = None
        overlay[index_key] = None
        return out

    async def _dead_letter(
        self, record: Record, reason: str, outcome: str = "unreadable"
    ) -> Awaitable[object]:
        self.metrics.stripe_events.labels(outcome).inc()
        rejection = Rejection(RECORD, reason)
        log.warning("stripe record %s: %s: dead letter", record.source, rejection)
        headers = deadletter.headers(rejection, record.source, "StripeEventError", stage="stripe")
        value = record.value
        if value is not None and len(value) > self.max_record_bytes:
            headers += deadletter.oversize_headers(value)
            value = value[: deadletter.OVERSIZE_KEPT]
        return await self.producer.send(self.dlq_topic, record.key, value, headers)
