"""Dead-letter records: the original bytes untouched, the reason in headers.

Header names follow Kafka Connect's `__connect.errors.*` convention, plus the failing field:

* `__connect.errors.topic`, `.partition`, `.offset`: where the original record was read;
* `__connect.errors.exception.class.name`: `ValidationError` (the contract) or `EventIdConflict`;
* `__connect.errors.exception.message`: the reason, naming the field (`items.0.unit_amount: must be ...`);
* `mrr.errors.field`: the failing field alone (`(record)` when the record as a whole is not an event).

The same record redelivered after a crash goes out again with the same source coordinates: consumers
deduplicate dead letters by (topic, partition, offset).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from processors.core.intake import Rejection

SOURCE_HEADER = "mrr.source"  # on the by-account topic: "topic:partition:offset" of the original record


@dataclass(frozen=True, slots=True)
class Source:
    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Source:
        topic, partition, offset = text.rsplit(":", 2)
        return cls(topic, int(partition), int(offset))


OVERSIZE_KEPT = 1024  # bytes of an oversized record kept in its dead letter


def oversize_headers(value: bytes) -> list[tuple[str, bytes]]:
    """What identifies an oversized record whose dead letter keeps only its first bytes."""
    return [
        ("mrr.errors.size", str(len(value)).encode()),
        ("mrr.errors.sha256", hashlib.sha256(value).hexdigest().encode()),
    ]


def headers(
    rejection: Rejection, source: Source, exception: str = "ValidationError", stage: str | None = None
) -> list[tuple[str, bytes]]:
    """`exception`: ValidationError (the contract), EventIdConflict, or the class of an unexpected error
    while applying the record (then `stage` names where: `mrr.errors.stage`)."""
    out = [
        ("__connect.errors.topic", source.topic.encode()),
        ("__connect.errors.partition", str(source.partition).encode()),
        ("__connect.errors.offset", str(source.offset).encode()),
        ("__connect.errors.exception.class.name", exception.encode()),
        ("__connect.errors.exception.message", str(rejection).encode()),
        ("mrr.errors.field", rejection.field.encode()),
    ]
    if stage is not None:
        out.append(("mrr.errors.stage", stage.encode()))
    return out
