"""The in-process replay: JSON Lines in, the same core as the stream, monthly aggregates out.

No account is complete before the last line is read (events arrive in any order), so the replay reads
everything, then applies the core per account. What it holds is kept compact, since that is its peak
memory (1,000,000 events: 1,550 MB when it held every raw line and every Fact, under 300 MB now):

- each valid event as a packed record of its Fact's fields, appended to its account's bytearray: about
  90 bytes, where its raw line took about 300 and its Fact with its strings about 500;
- a raw line only where a reject may need it: a bad line, a line whose event_id may have been seen
  before (a conflict, the same event_id with other content, is never the first line of its event_id),
  or a void (a void of a void is rejected);
- per account, once applied: its event count and current MRR, and its packed events, from which the
  core refolds its movements when a caller asks for them.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from processors.core.account import AccountState, Applied, apply, as_of
from processors.core.aggregates import monthly_aggregates, monthly_totals
from processors.core.fact import Fact, fact_of, month_of
from processors.core.intake import MAX_RECORD_BYTES, RECORD, Rejection, parse_event, too_large
from processors.core.movement import Movement
from schemas.aggregate import MonthlyAggregate


@dataclass(frozen=True, slots=True)
class Reject:
    source: str  # where the line came from: "file:line"
    rejection: Rejection
    raw: bytes


@dataclass(frozen=True, slots=True)
class AccountOutcome:
    """What the replay keeps of an account instead of the core's whole state: its event count, current
    MRR and packed events. Its movements are the core's, refolded from those events when asked for:
    kept as objects they would be most of the replay's peak memory again, and packing them would cost
    the replay more time than refolding the few accounts callers look at."""

    account_id: str
    events: int  # distinct events applied, len(AccountState.events): grows with every change
    mrr_items: tuple[tuple[str, int], ...]  # (currency, cents), a currency back to 0 included
    packed: bytearray = field(repr=False)  # the account's valid lines in arrival order, as _Packer packs them
    packer: _Packer = field(repr=False)
    failed: frozenset[str] = frozenset()  # event ids the engine failed to apply: rejected, left out
    as_of: int | None = None  # the instant the figures are taken at (None: after every event)

    @property
    def mrr(self) -> dict[str, int]:
        """MRR in cents per currency at `as_of`, equal to the core's as_of(...).mrr."""
        return dict(self.mrr_items)

    @property
    def movements(self) -> tuple[Movement, ...]:
        """The movements in effect at `as_of`, in order: the core applied again to the same events."""
        return as_of(self._state(), self.as_of).movements

    @property
    def scheduled(self) -> tuple[Movement, ...]:
        """The movements the events known will cause after `as_of`."""
        return as_of(self._state(), self.as_of).scheduled

    def _state(self) -> AccountState:
        facts, _ = self.packer.unpack(self.account_id, self.packed)
        kept = [f for f in facts if f.event_id not in self.failed]
        return apply(AccountState(self.account_id), kept).state


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    accounts: dict[str, AccountOutcome]
    rejects: list[Reject]
    months: list[MonthlyAggregate]
    events: int  # valid events applied, duplicates not counted
    duplicates: int
    as_of: int | None = None  # µs since the epoch; None: after every event
    scheduled: list[Movement] = field(default_factory=list)  # what is known to happen after as_of

    @property
    def movements(self) -> list[Movement]:
        return [m for account in self.accounts.values() for m in account.movements]


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    # Millions of short-lived containers (Facts, movements, tuples) would trigger collections that rescan
    # the long-lived ones (an AccountOutcome per account) again and again for nothing: nothing here is
    # cyclic, and reference counting frees it all.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# A valid event while reading, the fields of its Fact but account_id (its bytearray's key): the line's
# sequence number, instant, MRR, codes of kind and currency (0: none), then lengths of the fingerprint and
# event_id in characters and of the tail in bytes, the tail being fingerprint + event_id + subscription_id
# in UTF-8 (one encode and one decode per event). Fixed widths hold whatever the contract lets through: an
# instant within datetime's range, ids of at most 128 characters, at most 26**3 currency codes (and an MRR
# too large for 8 bytes is kept aside).
_RECORD = struct.Struct("<qqqHHHHH")
_MRR_ASIDE = -1  # an MRR is never negative: this one is in _Packer.large_mrr
# surrogatepass: any str round-trips, whatever the JSON parser lets through.
_UTF8, _ANY_STR = "utf-8", "surrogatepass"


class _Packer:
    """Facts to records and back. Kinds and currencies become codes; read back, each is one shared str."""

    def __init__(self) -> None:
        self.codes: dict[str | None, int] = {None: 0}  # no currency: 0
        self.names: list[str | None] = [None]
        self.large_mrr: dict[int, int] = {}  # line sequence number -> MRR of 2**63 cents or more

    def _add(self, name: str | None) -> int:
        code = self.codes[name] = len(self.names)
        self.names.append(name)
        return code

    def pack(self, into: bytearray, seq: int, fact: Fact) -> None:
        fingerprint, event_id = fact.fingerprint, fact.event_id
        # a void's subscription_id is never read: its place holds the event it voids
        third = fact.voids if fact.voids is not None else fact.subscription_id
        tail = (fingerprint + event_id + third).encode(_UTF8, _ANY_STR)
        mrr = fact.mrr
        if mrr >= 1 << 63:
            self.large_mrr[seq], mrr = mrr, _MRR_ASIDE
        codes = self.codes
        kind = codes.get(fact.kind) or self._add(fact.kind)  # 0 is no currency, never a kind
        currency = codes.get(fact.currency)
        if currency is None:
            currency = self._add(fact.currency)
        into += _RECORD.pack(
            seq, fact.instant, mrr, kind, currency, len(fingerprint), len(event_id), len(tail)
        )
        into += tail

    def unpack(self, account_id: str, packed: bytearray) -> tuple[list[Fact], list[int]]:
        """The account's Facts, equal to fact_of's, in arrival order, and their line sequence numbers."""
        facts: list[Fact] = []
        seqs: list[int] = []
        names, unpack, size = self.names, _RECORD.unpack_from, _RECORD.size
        pos, end = 0, len(packed)
        while pos < end:
            seq, instant, mrr, kind, currency, n_fingerprint, n_event, n_tail = unpack(packed, pos)
            pos += size
            tail = packed[pos : pos + n_tail].decode(_UTF8, _ANY_STR)
            pos += n_tail
            ids = n_fingerprint + n_event
            if mrr == _MRR_ASIDE:
                mrr = self.large_mrr[seq]
            name = names[kind]
            third = tail[ids:]
            fields = (instant, tail[n_fingerprint:ids], account_id, third, name, names[currency])
            fact = Fact._make((*fields, mrr, tail[:n_fingerprint], None))
            facts.append(fact._replace(subscription_id="", voids=third) if name == "void" else fact)
            seqs.append(seq)
        return facts, seqs


# A bit per event_id hash: a line whose bit is already set may repeat an earlier event_id, so its raw text
# is kept in case it is a conflict. A false positive (8 MB of bits: about 1.5% at 1,000,000 events) only
# keeps one more line; a set of the ids themselves would cost ten times as much.
_SEEN_BITS = 1 << 26


def _apply_isolating(account_id: str, facts: list[Fact]) -> tuple[Applied, list[tuple[Fact, Exception]]]:
    """The account's facts one by one, leaving out each the engine fails on (as the stream's processing-
    error path does); the end state equals applying the others together, whatever their order."""
    state = AccountState(account_id)
    accepted: list[Fact] = []
    duplicates: list[Fact] = []
    conflicts: list[tuple[Fact, Rejection]] = []
    failed: list[tuple[Fact, Exception]] = []
    for fact in facts:  # in arrival order, as apply() takes them: the first of two contents wins
        try:
            result = apply(state, [fact])
        except Exception as exc:
            failed.append((fact, exc))
            continue
        state = result.state
        accepted += result.accepted
        duplicates += result.duplicates
        conflicts += result.conflicts
    return Applied(
        state, accepted=tuple(accepted), duplicates=tuple(duplicates), conflicts=tuple(conflicts)
    ), failed


def replay(
    lines: Iterable[tuple[str, bytes]],
    on_line: Callable[[], None] | None = None,
    max_record_bytes: int = MAX_RECORD_BYTES,
    at: int | None = None,
) -> ReplayOutcome:
    """Replay (source, raw line) pairs; blank lines are skipped, bad ones rejected, the rest applied.
    `at`: the as-of instant (µs since the epoch): events effective after it are scheduled, and the
    monthly rows run through its month. None: every event applied, rows through the last movement."""
    with _no_cyclic_gc():
        return _replay(lines, on_line, max_record_bytes, at)


def _replay(
    lines: Iterable[tuple[str, bytes]],
    on_line: Callable[[], None] | None,
    max_record_bytes: int,
    at: int | None,
) -> ReplayOutcome:
    by_account: dict[str, bytearray] = {}
    packer = _Packer()
    seen = bytearray(_SEEN_BITS // 8)
    maybe_conflicts: dict[int, tuple[str, bytes]] = {}  # line sequence number -> (source, raw)
    rejects: list[Reject] = []
    for seq, (source, raw) in enumerate(lines):
        if on_line is not None:
            on_line()
        if not raw or raw.isspace():  # what `not raw.strip()` tells, without copying every line
            continue
        parsed = too_large(len(raw.rstrip(b"\r\n")), max_record_bytes) or parse_event(raw)
        if isinstance(parsed, Rejection):
            rejects.append(Reject(source, parsed, raw))
            continue
        fact = fact_of(parsed)
        bit = hash(fact.event_id) & (_SEEN_BITS - 1)
        if seen[bit >> 3] & (1 << (bit & 7)) or fact.voids is not None:  # (a void may void a void)
            maybe_conflicts[seq] = (source, raw)
        else:
            seen[bit >> 3] |= 1 << (bit & 7)
        packed = by_account.get(fact.account_id)
        if packed is None:
            packed = by_account[fact.account_id] = bytearray()
        packer.pack(packed, seq, fact)
    del seen

    accounts: dict[str, AccountOutcome] = {}
    scheduled: list[Movement] = []
    applied_events = duplicates = 0

    def apply_each() -> Iterator[Movement]:
        # Each account's movements go into the monthly totals as it is applied, then are dropped with
        # its Facts: only the packed events stay.
        nonlocal applied_events, duplicates
        for account_id, packed in by_account.items():
            facts, seqs = packer.unpack(account_id, packed)
            position = {id(fact): i for i, fact in enumerate(facts)}
            failed: list[tuple[Fact, Exception]] = []
            try:
                result = apply(AccountState(account_id), facts)
            except Exception:
                result, failed = _apply_isolating(account_id, facts)
            state = result.state
            applied_events += len(result.accepted)
            duplicates += len(result.duplicates)
            for fact, rejection in result.conflicts:
                source, raw = maybe_conflicts[seqs[position[id(fact)]]]
                rejects.append(Reject(source, rejection, raw))
            for fact, exc in failed:
                # as the stream dead-letters it; the line's text is not kept for valid lines
                reason = Rejection(RECORD, f"could not be applied: {type(exc).__name__}: {exc}"[:500])
                rejects.append(Reject(f"line {seqs[position[id(fact)]] + 1}", reason, b""))
            then = as_of(state, at)
            accounts[account_id] = AccountOutcome(
                account_id,
                len(state.events),
                tuple(then.mrr.items()),
                packed,
                packer,
                frozenset(f.event_id for f, _ in failed),
                at,
            )
            scheduled.extend(then.scheduled)
            yield from then.movements

    through = None if at is None else month_of(at)
    months = monthly_aggregates(monthly_totals(apply_each()), through)
    return ReplayOutcome(accounts, rejects, months, applied_events, duplicates, at, scheduled)
