"""What the stream keeps per account on top of the core's state: the log of every record it published.

Pure: no Kafka, no Redis. Delivery is at-least-once, so every arrival comes with the offset it was read
at (in the by-account topic, where each account lives in one partition) and the ledger remembers the last
offset it applied. After a crash, the table may hold effects of offsets whose outputs never left:

* an arrival at an offset <= last_offset is a *replay*: everything it caused was already folded in, but
  what it sent may be lost, so the records it produced are handed out again (same ids: consumers drop
  what they already have) and the caller rewrites the account's Redis view (idempotent);
* an arrival at a newer offset is folded as usual; a duplicate there is a producer's resend: no output.

Arrivals are applied one at a time in offset order, never as a batch, so the records of an offset do not
depend on how the consumer happened to batch them: a replay reproduces them exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from processors.core.account import AccountState, apply
from processors.core.fact import Fact
from processors.core.intake import Rejection
from processors.core.movement import Movement


class Published(NamedTuple):
    seq: int  # position in the account's log: record_id = f"{account_id}:{seq}"
    offset: int  # the arrival that produced it
    movement: Movement


def record_id(account_id: str, seq: int) -> str:
    return f"{account_id}:{seq}"


@dataclass(frozen=True, slots=True)
class Ledger:
    state: AccountState
    log: tuple[Published, ...] = ()
    last_offset: int = -1

    @property
    def version(self) -> int:
        """Strictly increases with every change of the state: orders writes of derived views."""
        return len(self.state.events)


@dataclass(frozen=True, slots=True)
class Step:
    ledger: Ledger
    publish: tuple[Published, ...]  # new records, then any re-sent for a replay
    conflicts: tuple[tuple[int, Fact, Rejection], ...]  # (offset, fact, reason): to the dead-letter topic
    applied: int
    duplicates: int  # a producer's resends
    replayed: int  # arrivals already applied before a crash

    @property
    def changed(self) -> bool:
        return self.applied > 0

    @property
    def resync(self) -> bool:
        return self.replayed > 0


def step(ledger: Ledger, arrivals: Sequence[tuple[int, Fact]]) -> Step:
    """Apply (offset, fact) arrivals of one account, in offset order."""
    state, log, last = ledger.state, list(ledger.log), ledger.last_offset
    fresh: list[Published] = []
    conflicts: list[tuple[int, Fact, Rejection]] = []
    applied = duplicates = replayed = 0
    replay_from: int | None = None
    for offset, fact in sorted(arrivals, key=lambda arrival: arrival[0]):
        result = apply(state, [fact])
        conflicts += [(offset, f, reason) for f, reason in result.conflicts]
        if offset <= ledger.last_offset:
            replayed += 1
            replay_from = offset if replay_from is None else min(replay_from, offset)
            continue
        duplicates += len(result.duplicates)
        applied += len(result.accepted)
        for movement in (*result.retracted, *result.added):
            published = Published(len(log), offset, movement)
            log.append(published)
            fresh.append(published)
        state = result.state
        last = max(last, offset)
    resent = [p for p in ledger.log if p.offset >= replay_from] if replay_from is not None else []
    return Step(
        ledger=Ledger(state, tuple(log), last),
        publish=(*fresh, *resent),
        conflicts=tuple(conflicts),
        applied=applied,
        duplicates=duplicates,
        replayed=replayed,
    )
