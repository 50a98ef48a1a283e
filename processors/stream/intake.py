"""Intake: what becomes of one record read from the input topic (or the by-account topic).

* not a billing event: a dead letter (its reason names the field);
* a billing event in the partition its account hashes to, keyed by the account: folded at once, so an
  account-keyed record crosses Kafka once on its way to the fold;
* any other billing event (unkeyed, keyed otherwise, or on an input topic partitioned otherwise): forwarded
  to the by-account topic, keyed by account, and folded from there. The result is the same either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from aiokafka.partitioner import murmur2

from processors.core.fact import Fact, fact_of
from processors.core.intake import MAX_RECORD_BYTES, RECORD, Rejection, parse_event, too_large
from processors.stream.deadletter import SOURCE_HEADER, Source

HASHES_KEPT = 100_000  # account ids whose hash is remembered (then forgotten at once)
_hashes: dict[str, int] = {}  # (of str and int only: the cyclic collector never walks it)


def partition_for(account_id: str, partitions: int) -> int:
    """The partition of an account: Kafka's default partitioner (murmur2) on its id, as producers keying
    records by account with the Java client or aiokafka get. (murmur2 is pure Python, several µs an id:
    the hash is remembered.)"""
    hashed = _hashes.get(account_id)
    if hashed is None:
        if len(_hashes) >= HASHES_KEPT:
            _hashes.clear()
        hashed = _hashes[account_id] = int(murmur2(account_id.encode()) & 0x7FFFFFFF)
    return hashed % partitions


@dataclass(frozen=True, slots=True)
class Record:
    """A Kafka record as the stages see it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float = 0.0  # seconds since the epoch
    headers: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def source(self) -> Source:
        """Where the record was first read: a forwarded record carries its origin in a header."""
        origin = self.headers.get(SOURCE_HEADER)
        return Source.parse(origin.decode()) if origin else Source(self.topic, self.partition, self.offset)


class Rejected(NamedTuple):
    record: Record
    rejection: Rejection
    oversize: bool = False  # then only its first bytes go to the dead-letter topic


class Forward(NamedTuple):
    record: Record
    account_id: str


class Fold(NamedTuple):
    record: Record
    fact: Fact
    partition: int  # the account's partition: where its state lives


Route = Rejected | Forward | Fold


def route(
    record: Record, partitions: int, direct_topics: frozenset[str], max_bytes: int = MAX_RECORD_BYTES
) -> Route:
    """`direct_topics`: the topics whose partitions are the by-account topic's (the by-account topic, and
    the input topic when it has as many partitions); a record there, keyed by its account and in the
    account's partition, is folded where it is. A record over `max_bytes` is rejected unread."""
    if not record.value:
        return Rejected(record, Rejection(RECORD, "empty record"))
    oversized = too_large(len(record.value), max_bytes)
    if oversized is not None:
        return Rejected(record, oversized, oversize=True)
    parsed = parse_event(record.value)
    if isinstance(parsed, Rejection):
        return Rejected(record, parsed)
    account = parsed.account_id
    home = partition_for(account, partitions)
    if record.topic in direct_topics and record.partition == home and record.key == account.encode():
        return Fold(record, fact_of(parsed), home)
    return Forward(record, account)
