"""What the stream keeps per account, in pieces of bounded size, and how one batch changes them.

Pure: no Kafka, no Redis, no clock. The store is anything with `get(key) -> bytes | None`; a batch returns
the writes to make, in order, and the records to publish once those writes are durable.

Keys (bytes). Every key starts with the account id, and the parts after it follow a NUL byte; the caller
writes every key of an account to the account's partition of the changelog:

* `A`, the root: version, last offset applied per source topic, next record seq, the last chunk itself
  (the tail, inline: an on-time event rewrites only the root), the chunks before it while they take at
  most HELD_BYTES (held: a sparse account, whose every event starts a month, writes no chunk key), the
  current MRR, the index entries of the last events (`recent`, up to RECENT_BYTES), the keys the last
  commit superseded, the last batch's records when they are small (else the outbox's parts); it names
  the byte sizes of its tail and held chunks, so a reader leaves the held ones undecoded (`Held`);
* `A\\0c\\0{start}\\0{ver}`, a stored chunk (before the held ones): the facts with instant in [start,
  next chunk's start), the fold state at `start` and the previous chunk's ref; its facts take at most
  CHUNK_FACT_BYTES plus one instant's;
* `A\\0i\\0{event_id}`, an index entry: instant and fingerprint of an applied event, so deduplication
  never loads history; written when the root's `recent` entries outgrow RECENT_BYTES (a sparse account's
  stay in its root);
* `A\\0d\\0`, the instant of the account's first scheduled event (the root's `due`), so that the timer
  finds the accounts with events falling due without reading every root; written once what the root's
  commit published is acknowledged (processors/stream/fold.py);
* `A\\0o\\0{ver}\\0{k}`, the outbox of a batch whose records outgrow OUTBOX_INLINE_BYTES: records of
  commit `ver`, at most OUTBOX_PART_BYTES a part, kept until the next batch of the account (the batch that
  sent them has been acknowledged by then).

Chunks are immutable: a commit that changes one writes it again under a new version (a held chunk that no
longer fits in the root is stored under the version it has), and, since each chunk names its predecessor,
rewrites every later chunk too (a late event refolds from its own chunk onward; an on-time event changes
only the tail, which lives in the root). A month always starts a new chunk and a
chunk whose facts outgrow `CHUNK_FACT_BYTES` is split at an instant boundary, so no value grows with the
account's age.

Crash safety rests on one property of the changelog: writes to one partition land in the order they were
sent, so a crash leaves a prefix of them (aiokafka keeps one batch in flight per partition). A commit writes
its new chunks, its outbox and the index entries its root no longer keeps, then the root, then the
deletions of what it superseded. Hence: a root that landed has all its chunks, and every event it applied
is in its `recent` entries or under an index key; chunks without their root are unreachable; an index
entry that landed names an event of the root before it; deletions that did not land are made again by the
next commit (the root lists them, `garbage`). The caller sends the records only once the writes are
acknowledged, so a record never leaves for a state that could be lost, and a redelivered arrival (at an
offset at or below the one the root has applied) resends the outbox instead of computing anything.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from pydantic_core import from_json, to_json

from processors.core.account import VOID_OF_VOID, Subscription, correction, fold
from processors.core.fact import DAY_US, Fact, instant_of, month_of, utc_of
from processors.core.intake import Rejection
from processors.core.movement import Movement, retraction_of

FORMAT = 5  # bump when the layout changes; a reader refuses what it does not know
# formats still read: 2 had no tail and no inline records (its last chunk is stored), 3 no held chunks, 4
# held chunks that had to be parsed with the root (5 names their sizes, so they stay bytes until needed)
READS = (2, 3, 4, 5)
CHUNK_FACT_BYTES = 8_192  # a chunk whose facts outgrow this is split (at an instant boundary)
HELD_BYTES = 4_096  # chunks before the tail up to this size stay in the root (see _hold)
COMMIT_EVENTS = 64  # new events per commit: bounds what one commit adds to a root's `recent` list
RECENT_BYTES = 4_096  # a root's `recent` entries up to this size stay in it; beyond, they go to index keys
OUTBOX_PART_BYTES = 32_768
OUTBOX_INLINE_BYTES = 16_384  # a batch's records up to this size stay in the root, not in outbox keys
SEP = b"\x00"
CONFLICT = Rejection("event_id", "already used by an event with different content")
# A root without an as-of instant was written before events could be scheduled: all its events are in
# effect (3000-01-01, past the contract's last instant).
ALL_IN_EFFECT = instant_of(datetime(3000, 1, 1, tzinfo=UTC))


class UnknownFormat(ValueError):
    """State written by a newer version: not a record's fault, so the worker stops rather than
    dead-letter the account's events (processors/stream/fold.py)."""


class Store(Protocol):
    def get(self, key: bytes) -> bytes | None: ...


def record_id(account_id: str, seq: int) -> str:
    """The idempotency key of a record on the movements topic."""
    return f"{account_id}:{seq}"


def _key(account_id: str, *parts: str) -> bytes:
    return SEP.join([account_id.encode(), *(p.encode() for p in parts)])


def root_key(account_id: str) -> bytes:
    return account_id.encode()


def chunk_key(account_id: str, ref: Ref) -> bytes:
    return _key(account_id, "c", str(ref.start), str(ref.ver))


def index_key(account_id: str, event_id: str) -> bytes:
    return _key(account_id, "i", event_id)


def due_key(account_id: str) -> bytes:
    """The first scheduled instant of the account, for the timer (no other key ends with NUL d NUL)."""
    return account_id.encode() + b"\x00d\x00"


def is_due_key(key: bytes) -> bool:
    return key.endswith(b"\x00d\x00")


def outbox_key(account_id: str, ver: int, part: int) -> bytes:
    return _key(account_id, "o", str(ver), str(part))


class Ref(NamedTuple):
    start: int  # the chunk's first instant
    ver: int  # the commit that wrote it


_NONE: Mapping[Any, Any] = MappingProxyType({})  # an empty mapping no one can change, shared as a default

# Checkpoint, Root, ChunkView and Update are NamedTuples, not frozen dataclasses: as immutable, and built
# several times per event (a frozen dataclass' __init__ sets each field through object.__setattr__, about
# six times slower). Chunk stays a dataclass: it caches its own encoding.


class Checkpoint(NamedTuple):
    """The fold state at an instant."""

    subscriptions: Mapping[str, Subscription] = _NONE
    mrr: Mapping[str, int] = _NONE
    ever_active: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Chunk:
    start: int
    ver: int
    prev: Ref | None
    checkpoint: Checkpoint
    facts: tuple[Fact, ...]
    # its JSON, made once (a chunk never changes): a held chunk is written in every root that holds it
    # (not an argument: dataclasses.replace must not carry one chunk's encoding to another)
    encoded: bytes | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def ref(self) -> Ref:
        return Ref(self.start, self.ver)


class Held(NamedTuple):
    """A chunk kept in the root, as its JSON: decoded only when a late event's refold reaches it, so
    reading a root costs its tail, not its months."""

    start: int
    ver: int
    encoded: bytes

    @property
    def ref(self) -> Ref:
        return Ref(self.start, self.ver)


def held_of(chunk: Chunk) -> Held:
    return Held(chunk.start, chunk.ver, encode_chunk(chunk))


class Seen(NamedTuple):
    event_id: str
    instant: int
    fingerprint: str
    # "" an event in the chunks; "void" a void (in no chunk); "voided" an event a void withdrew (in no
    # chunk); "awaited" an event not seen yet that a void withdrew in advance (no instant or fingerprint)
    mark: str = ""


class Root(NamedTuple):
    ver: int = 0
    offsets: Mapping[str, int] = _NONE  # source topic -> last offset applied
    seq: int = 0  # the next record's sequence number: record_id = f"{account_id}:{seq}"
    last: Ref | None = None  # the last stored chunk, when there is no tail (format 2)
    tail: Chunk | None = None  # the last chunk, kept in the root; its `prev` is the last held or stored one
    held: tuple[Held, ...] = ()  # the chunks before the tail kept in the root, oldest first (see _hold)
    mrr: Mapping[str, int] = _NONE  # currency -> cents, after the last fact
    # the index entries not yet under index keys: the last commits' events (see _keep_recent)
    recent: tuple[Seen, ...] = ()
    garbage: tuple[bytes, ...] = ()  # keys this commit superseded, deleted after it (and again by the next)
    outbox: tuple[tuple[int, int], ...] = ()  # (ver, parts) holding the records of the last batch
    sent: tuple[str, ...] = ()  # or the records themselves, when they are small
    redis_from: int | None = None  # earliest chunk start whose view the last batch changed
    # What is in effect: the movements effective at or before `asof` (µs), the instant the last commit
    # took as now; `due`, the first instant of an event after it (None: nothing scheduled).
    asof: int = -1
    due: int | None = None


class Arrival(NamedTuple):
    source: str  # the topic it was read from (an account lives in one partition of each)
    offset: int
    fact: Fact


class Published(NamedTuple):
    seq: int
    movement: Movement
    text: str = ""  # the record as sent (render's), made once by process()


class ChunkView(NamedTuple):
    """One chunk's movements in effect: what the Redis view keeps per chunk."""

    start: int
    movements: tuple[Movement, ...]

    @property
    def month(self) -> str:
        return month_of(self.start)


class Update(NamedTuple):
    """What one batch of an account's arrivals does."""

    root: Root
    writes: tuple[tuple[bytes, bytes | None], ...]  # in order; None deletes
    publish: tuple[Published, ...]  # to send once the writes are acknowledged
    resend: tuple[bytes, ...]  # outbox records of a batch redelivered after a crash
    conflicts: tuple[tuple[int, Rejection], ...]  # (index into the arrivals, why it is not applied)
    chunks: tuple[ChunkView, ...]  # chunks whose movements changed
    scheduled: tuple[Movement, ...] | None = None  # the account's scheduled movements, when they changed
    applied: int = 0
    duplicates: int = 0
    replayed: int = 0


# -- months ------------------------------------------------------------------------------------------


MONTH_STARTS_KEPT = 100_000  # days whose month start is remembered (then forgotten at once)
_month_starts: dict[int, int] = {}  # day since the epoch -> its month's first instant (ints only)


def month_start(instant: int) -> int:
    """The first instant of the instant's month (UTC). Remembered by day: every layout asks it of every
    fact of the chunks it refolds."""
    day = instant // DAY_US
    start = _month_starts.get(day)
    if start is None:
        if len(_month_starts) >= MONTH_STARTS_KEPT:
            _month_starts.clear()
        at = utc_of(instant)
        start = _month_starts[day] = instant_of(datetime(at.year, at.month, 1, tzinfo=UTC))
    return start


# -- encoding ----------------------------------------------------------------------------------------


def _dumps(doc: Any) -> bytes:
    # pydantic's Rust serializer: the same compact UTF-8 JSON as json.dumps, several times faster
    return to_json(doc)


def _loads(data: bytes) -> Any:
    # pydantic's Rust parser: what json.loads returns for these documents, about twice as fast
    return from_json(data)


def _checkpoint_doc(cp: Checkpoint) -> list[Any]:
    subs = {sid: [s.currency, s.terms_mrr, s.active] for sid, s in cp.subscriptions.items()}
    return [subs, dict(cp.mrr), sorted(cp.ever_active)]


def _checkpoint(doc: list[Any]) -> Checkpoint:
    subs, mrr, ever = doc
    return Checkpoint(
        {sid: Subscription(c, t, a) for sid, (c, t, a) in subs.items()}, dict(mrr), frozenset(ever)
    )


def _chunk_doc(chunk: Chunk) -> dict[str, Any]:
    return {
        "v": FORMAT,
        "s": chunk.start,
        "w": chunk.ver,
        "p": list(chunk.prev) if chunk.prev else None,
        "c": _checkpoint_doc(chunk.checkpoint),
        "f": [
            [f.instant, f.event_id, f.subscription_id, f.kind, f.currency, f.mrr, f.fingerprint]
            for f in chunk.facts
        ],
    }


def encode_chunk(chunk: Chunk) -> bytes:
    data = chunk.encoded
    if data is None:
        data = _dumps(_chunk_doc(chunk))
        object.__setattr__(chunk, "encoded", data)  # a cache of a frozen value's own encoding
    return data


def decode_chunk(account_id: str, data: bytes) -> Chunk:
    chunk = _chunk_from_doc(account_id, _loads(data))
    object.__setattr__(chunk, "encoded", data)
    return chunk


def _chunk_from_doc(account_id: str, doc: dict[str, Any]) -> Chunk:
    if doc.get("v") not in READS:
        raise UnknownFormat(f"unknown chunk format {doc.get('v')!r}")
    prev = doc["p"]
    return Chunk(
        doc["s"],
        doc["w"],
        Ref(*prev) if prev else None,
        _checkpoint(doc["c"]),
        tuple(Fact(i, e, account_id, s, k, c, m, fp) for i, e, s, k, c, m, fp in doc["f"]),
    )


_HEAD = b'{"v":5,"k":['  # a format-5 root starts so; any other is read as a whole JSON document


def encode_root(root: Root) -> bytes:
    """One JSON document: `k` lists the byte sizes of the tail and of each held chunk (with its start and
    version), so a reader slices them out without parsing them; the chunks' own JSON is spliced in."""
    tail = encode_chunk(root.tail) if root.tail else b"null"
    sizes = [len(tail)]
    for h in root.held:
        sizes += [h.start, h.ver, len(h.encoded)]
    rest = {
        "ver": root.ver,
        "off": dict(root.offsets),
        "seq": root.seq,
        "last": list(root.last) if root.last else None,
        "mrr": dict(root.mrr),
        # (plain lists: pydantic's to_json takes about four times as long over NamedTuples)
        "new": [list(s) for s in root.recent],
        "gc": [k.decode("utf-8", "surrogateescape") for k in root.garbage],
        "ob": [list(o) for o in root.outbox],
        "sent": list(root.sent),
        "rf": root.redis_from,
        "ao": root.asof,
        "due": root.due,
    }
    return b"".join(
        (
            _HEAD,
            b",".join(str(n).encode() for n in sizes),
            b'],"t":',
            tail,
            b',"h":[',
            b",".join(h.encoded for h in root.held),
            b'],"r":',
            _dumps(rest),
            b"}",
        )
    )


def _expect(data: bytes, pos: int, text: bytes) -> int:
    if not data.startswith(text, pos):
        raise ValueError(f"malformed root at byte {pos}: expected {text!r}")
    return pos + len(text)


def decode_root(account_id: str, data: bytes) -> Root:
    if not data.startswith(_HEAD):
        return _decode_whole_root(account_id, _loads(data))
    end = data.index(b"]", len(_HEAD))
    sizes = [int(n) for n in data[len(_HEAD) : end].split(b",")]
    pos = _expect(data, end, b'],"t":')
    tail = data[pos : pos + sizes[0]]
    pos = _expect(data, pos + sizes[0], b',"h":[')
    held: list[Held] = []
    for i in range(1, len(sizes), 3):
        if i > 1:
            pos = _expect(data, pos, b",")
        start, ver, size = sizes[i : i + 3]
        held.append(Held(start, ver, data[pos : pos + size]))
        pos += size
    pos = _expect(data, pos, b'],"r":')
    if not data.endswith(b"}"):
        raise ValueError("malformed root: no closing brace")
    doc = _loads(data[pos:-1])
    decoded_tail = None if tail == b"null" else decode_chunk(account_id, tail)
    recent = tuple(map(Seen._make, doc["new"]))  # (written whole: all four fields)
    return _root_of(doc, decoded_tail, tuple(held), recent, doc["ao"])


def _decode_whole_root(account_id: str, doc: dict[str, Any]) -> Root:
    """A root of format 2, 3 or 4: one JSON document, chunks inline."""
    if doc.get("v") not in READS[:-1]:
        raise UnknownFormat(f"unknown root format {doc.get('v')!r}")
    tail = doc.get("t")
    tail_chunk = _chunk_from_doc(account_id, tail) if tail else None
    # A root without "ao" was written before events could be scheduled: what it holds is in effect (its
    # last fact's instant; without a tail, format 2, all of time), and later events are scheduled.
    legacy = tail_chunk.facts[-1].instant if tail_chunk and tail_chunk.facts else ALL_IN_EFFECT
    doc.setdefault("sent", [])  # (format 2 had no inline records, formats before scheduling no "due")
    doc.setdefault("due", None)
    held = tuple(held_of(_chunk_from_doc(account_id, c)) for c in doc.get("h", ()))
    recent = tuple(Seen(*s) for s in doc["new"])
    return _root_of(doc, tail_chunk, held, recent, doc.get("ao", legacy))


def _root_of(
    doc: dict[str, Any], tail: Chunk | None, held: tuple[Held, ...], recent: tuple[Seen, ...], asof: int
) -> Root:
    """A root from its document's fields (format 5's `r`, or an older whole document) and its parts."""
    return Root(
        ver=doc["ver"],
        offsets=doc["off"],
        seq=doc["seq"],
        last=Ref(*doc["last"]) if doc["last"] else None,
        tail=tail,
        held=held,
        mrr=doc["mrr"],
        recent=recent,
        garbage=tuple(k.encode("utf-8", "surrogateescape") for k in doc["gc"]),
        outbox=tuple((v, n) for v, n in doc["ob"]),
        sent=tuple(doc["sent"]),
        redis_from=doc["rf"],
        asof=asof,
        due=doc["due"],
    )


def _index_value(seen: Seen) -> bytes:
    return f"{seen.instant} {seen.fingerprint} {seen.mark}".rstrip().encode()


def _seen_bytes(seen: Seen) -> int:
    """The encoded size of an index entry in a root, near enough to bound roots by."""
    return len(seen.event_id.encode()) + len(seen.fingerprint) + 48


def _keep_recent(kept: Sequence[Seen], new: Sequence[Seen]) -> tuple[tuple[Seen, ...], list[Seen]]:
    """The index entries the next root keeps, and those that move to index keys now. A sparse account's
    events stay in its root (an on-time event then writes one changelog record, the root); once the
    entries outgrow RECENT_BYTES, the kept ones are written under their keys, before the root that drops
    them, and the root keeps this commit's (at most 2 * COMMIT_EVENTS: a void names two)."""
    merged = {s.event_id: s for s in kept}
    merged.update((s.event_id, s) for s in new)
    if sum(_seen_bytes(s) for s in merged.values()) <= RECENT_BYTES:
        return tuple(merged.values()), []
    fresh = {s.event_id: s for s in new}
    return tuple(fresh.values()), [s for s in kept if s.event_id not in fresh]


def _hold(chunks: Sequence[Held]) -> list[Held]:
    """The last of these chunks (the ones before the tail) that fit in HELD_BYTES: they stay in the root,
    so a sparse account, whose every event starts a month, writes no chunk key; the others are stored."""
    budget = HELD_BYTES
    held: list[Held] = []
    for chunk in reversed(chunks):
        budget -= len(chunk.encoded) + 1
        if budget < 0:
            break
        held.append(chunk)
    held.reverse()
    return held


def _fact_bytes(fact: Fact) -> int:
    """The encoded size of a fact in a chunk, near enough to bound chunks by."""
    return len(fact.event_id.encode()) + len(fact.subscription_id.encode()) + 64


# -- reading -----------------------------------------------------------------------------------------


class _Overlay:
    """A store with a batch's writes not yet applied on top: a commit reads what the previous one wrote."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.pending[key] if key in self.pending else self.store.get(key)


class Reader:
    """Decodes an account's values from the store, keeping the chunks it decoded. Short-lived: one per
    process() call (and one per batch, or per rebuild, outside it); a worker-long cache of decoded state
    made the collector's full passes take seconds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cache: dict[bytes, Chunk] = {}

    def root(self, account_id: str) -> Root:
        data = self.store.get(root_key(account_id))
        return Root() if data is None else decode_root(account_id, data)

    def chunk(self, account_id: str, ref: Ref) -> Chunk:
        key = chunk_key(account_id, ref)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        data = self.store.get(key)
        if data is None:
            raise LookupError(f"account {account_id}: chunk {ref} is missing from the table")
        chunk = decode_chunk(account_id, data)
        self.cache[key] = chunk
        return chunk

    def held(self, account_id: str, held: Held) -> Chunk:
        # Cached under its chunk key, which no other chunk decoded in this call has: within a call a ref
        # names one chunk (each commit writes under a new version), and along a chain every stored chunk
        # starts before every held one. The key in the store may hold another chunk (an orphan a crash
        # left there before its root landed): it is never read, since held chunks come from the root.
        key = chunk_key(account_id, held.ref)
        cached = self.cache.get(key)
        if cached is None:
            cached = self.cache[key] = decode_chunk(account_id, held.encoded)
        return cached

    def chain(self, account_id: str, root: Root, since: int | None) -> list[Chunk]:
        """The chunks from the one holding instant `since` (or the first) to the last, in order."""
        out: list[Chunk] = []
        ref = root.last
        if root.tail is not None:
            out.append(root.tail)
            if since is not None and root.tail.start <= since:
                return out
            first = root.tail
            for held in reversed(root.held):
                first = self.held(account_id, held)
                out.append(first)
                if since is not None and first.start <= since:
                    out.reverse()
                    return out
            ref = first.prev
        while ref is not None:
            chunk = self.chunk(account_id, ref)
            out.append(chunk)
            if since is not None and chunk.start <= since:
                break
            ref = chunk.prev
        out.reverse()
        return out

    def seen(self, account_id: str, event_id: str) -> Seen | None:
        """The index entry of an event: in the root's `recent` entries or under its key."""
        for entry in self.root(account_id).recent:
            if entry.event_id == event_id:
                return entry
        return self.indexed(account_id, event_id)

    def indexed(self, account_id: str, event_id: str) -> Seen | None:
        data = self.store.get(index_key(account_id, event_id))
        if data is None:
            return None
        instant, fingerprint, *mark = data.decode().split(" ")
        return Seen(event_id, int(instant), fingerprint, *mark)

    def outbox(self, account_id: str, root: Root) -> list[bytes]:
        records: list[bytes] = [r.encode() for r in root.sent]
        for ver, parts in root.outbox:
            for part in range(parts):
                data = self.store.get(outbox_key(account_id, ver, part))
                if data is not None:
                    records += [r.encode() for r in _loads(data)]
        return records


# -- folding -----------------------------------------------------------------------------------------


def _split(facts: Sequence[Fact]) -> list[list[Fact]]:
    """Consecutive runs of at most CHUNK_FACT_BYTES, cut only between instants."""
    runs: list[list[Fact]] = [[]]
    size = 0
    for _, group in groupby(facts, key=attrgetter("instant")):
        facts_at = list(group)
        grow = sum(_fact_bytes(f) for f in facts_at)
        if runs[-1] and size + grow > CHUNK_FACT_BYTES:
            runs.append([])
            size = 0
        runs[-1] += facts_at
        size += grow
    return runs


def layout(starts: Iterable[int], facts: Sequence[Fact]) -> list[tuple[int, list[Fact]]]:
    """Sorted facts into chunks: the existing chunk starts are kept, every month with facts starts with a
    chunk at its first instant, and an oversized chunk is split."""
    bounds = sorted(set(starts) | {month_start(f.instant) for f in facts})
    grouped: dict[int, list[Fact]] = {}
    for fact in facts:
        start = bounds[bisect.bisect_right(bounds, fact.instant) - 1]
        grouped.setdefault(start, []).append(fact)
    out: list[tuple[int, list[Fact]]] = []
    for start in sorted(grouped):
        runs = _split(grouped[start])
        out.append((start, runs[0]))
        out += [(run[0].instant, run) for run in runs[1:]]
    return out


def _fold_chunks(
    account_id: str,
    base: Checkpoint,
    chunks: Sequence[tuple[int, Sequence[Fact]]],
    asof: int = ALL_IN_EFFECT,
    quiet_before: int | None = None,
) -> tuple[list[tuple[Checkpoint, list[Movement]]], Checkpoint, dict[str, int]]:
    """Each chunk's checkpoint and movements (all of them, scheduled ones too), the state at the end, and
    the MRR at `asof` (the fold is causal: what comes after `asof` never changes what came before).
    `quiet_before`: a chunk whose facts all precede this instant is folded for its state only (its
    movements are returned empty: the caller has them, unchanged)."""
    subs, mrr, ever = dict(base.subscriptions), dict(base.mrr), set(base.ever_active)
    out: list[tuple[Checkpoint, list[Movement]]] = []
    at_asof: dict[str, int] | None = None
    for _, facts in chunks:
        at_start = Checkpoint(dict(subs), dict(mrr), frozenset(ever))
        quiet = quiet_before is not None and bool(facts) and facts[-1].instant < quiet_before
        if at_asof is None and facts and facts[-1].instant > asof:
            cut = bisect.bisect_right([f.instant for f in facts], asof)
            movements = fold(account_id, facts[:cut], subs, mrr, ever, quiet)
            at_asof = dict(mrr)
            movements += fold(account_id, facts[cut:], subs, mrr, ever, quiet)
        else:
            movements = fold(account_id, facts, subs, mrr, ever, quiet)
        out.append((at_start, movements))
    return out, Checkpoint(subs, mrr, frozenset(ever)), dict(mrr) if at_asof is None else at_asof


def _due(movements: Iterable[Movement], cut: datetime) -> list[Movement]:
    """The movements in effect at `cut` (utc_of of an as-of instant, made once by the caller)."""
    return [m for m in movements if m.effective_at <= cut]


def _later(movements: Iterable[Movement], cut: datetime) -> list[Movement]:
    return [m for m in movements if m.effective_at > cut]


def chunk_views(reader: Reader, account_id: str, root: Root, since: int | None) -> list[ChunkView]:
    """The movements in effect of every chunk from the one holding `since` (None: all) to the last."""
    views = []
    cut = utc_of(root.asof)
    for chunk in reader.chain(account_id, root, since):
        folded, _, _ = _fold_chunks(account_id, chunk.checkpoint, [(chunk.start, chunk.facts)])
        views.append(ChunkView(chunk.start, tuple(_due(folded[0][1], cut))))
    return views


def scheduled_of(reader: Reader, account_id: str, root: Root) -> tuple[Movement, ...]:
    """The movements the account's scheduled events will cause (effective after root.asof)."""
    if root.due is None:
        return ()
    out: list[Movement] = []
    cut = utc_of(root.asof)
    for chunk in reader.chain(account_id, root, root.due):
        folded, _, _ = _fold_chunks(account_id, chunk.checkpoint, [(chunk.start, chunk.facts)])
        out += _later(folded[0][1], cut)
    return tuple(out)


@dataclass
class _Commit:
    """A commit's outcome; process() makes its root (the offsets, records and entries are its own)."""

    last: Ref | None
    tail: Chunk | None
    held: tuple[Held, ...]
    mrr: dict[str, int]
    garbage: tuple[bytes, ...]
    due: int | None
    writes: list[tuple[bytes, bytes | None]]
    retracted: list[Movement]
    added: list[Movement]
    views: list[ChunkView]
    redis_from: int
    scheduled: tuple[Movement, ...] | None


def _commit(
    reader: Reader,
    account_id: str,
    root: Root,
    facts: list[Fact],
    removed: Sequence[Seen],
    ver: int,
    asof: int,
) -> _Commit:
    """Commit `ver`: fold new facts (unique, not seen before) into the account's chunks, take the
    `removed` ones (voided) out of them, and bring what is in effect from root.asof to `asof`: the
    movements of every event effective by then are published, corrections included."""
    gone = {s.event_id for s in removed}
    facts = [f for f in facts if f.event_id not in gone]
    starts = [f.instant for f in facts] + [s.instant for s in removed]
    if root.due is not None:  # from the first scheduled event on: it may fall due, and the list changes
        starts.append(root.due)
    first = min(starts, default=asof)
    chain = reader.chain(account_id, root, first)
    if chain and chain[0].start <= first:
        base, prev = chain[0].checkpoint, chain[0].prev
    else:  # before the first chunk, or the account's first facts
        base, prev = Checkpoint(), None
    old_facts = [f for chunk in chain for f in chunk.facts]
    # On time (every new fact after every old one, nothing scheduled, nothing voided): the old movements
    # stay as they are, so the chain is folded once, and only the movements from the first new instant
    # on are new.
    on_time = bool(old_facts) and bool(facts) and not removed and root.due is None
    on_time = on_time and facts[0].instant > old_facts[-1].instant
    old_folded = (
        [] if on_time else _fold_chunks(account_id, base, [(c.start, c.facts) for c in chain], root.asof)[0]
    )
    kept_facts = [f for f in old_facts if f.event_id not in gone]
    new_layout = layout([c.start for c in chain], sorted([*kept_facts, *facts]))
    # (on time, the chunks before the first new fact keep their movements: folded for their state only)
    quiet_before = facts[0].instant if on_time else None
    new_folded, _, mrr = _fold_chunks(account_id, base, new_layout, asof, quiet_before)

    # the old tail and held chunks live in the old root, not under a key: never kept, never deleted (a ref
    # names one chunk of the account: its start and the commit that wrote it)
    in_root = {h.ref for h in root.held}
    if root.tail is not None:
        in_root.add(root.tail.ref)
    stored = [c for c in chain if c.ref not in in_root]
    in_chain = {c.ref for c in chain}
    # chunks before the tail that may stay in the root: the held ones before the chain's first, the new or
    # changed ones, and held ones unchanged (_hold keeps the last that fit; the others are stored)
    rooted = [h for h in root.held if h.ref not in in_chain]
    old_by_start = {c.start: c for c in chain}
    cut_before, cut = utc_of(root.asof), utc_of(asof)
    old_moves = {c.start: _due(folded[1], cut_before) for c, folded in zip(chain, old_folded, strict=False)}
    writes: list[tuple[bytes, bytes | None]] = []
    views: list[ChunkView] = []
    kept: set[Ref] = set()
    tail: Chunk | None = None
    for n, ((start, chunk_facts), (checkpoint, all_movements)) in enumerate(
        zip(new_layout, new_folded, strict=True)
    ):
        movements = _due(all_movements, cut)
        old = old_by_start.get(start)
        candidate = Chunk(start, ver, prev, checkpoint, tuple(chunk_facts))
        if n == len(new_layout) - 1:
            tail = candidate  # the last chunk goes into the root
        elif (
            old is not None
            and old.prev == prev
            and old.facts == candidate.facts
            and old.checkpoint == checkpoint
        ):
            prev = old.ref
            if prev in in_root:
                rooted.append(held_of(old))
            else:
                kept.add(prev)
        else:
            rooted.append(held_of(candidate))
            prev = candidate.ref
        if on_time:
            changed = bool(movements) and instant_of(movements[-1].effective_at) >= facts[0].instant
        else:
            changed = old is None or [m.movement_id for m in old_moves[start]] != [
                m.movement_id for m in movements
            ]
        if changed:
            views.append(ChunkView(start, tuple(movements)))
    held = _hold(rooted) if tail is not None else []  # (no tail: the root names the last one, stored)
    for chunk in rooted[: len(rooted) - len(held)]:
        writes.append((chunk_key(account_id, chunk.ref), chunk.encoded))
    # a chunk whose every fact was voided is gone: its view is emptied
    new_starts = {start for start, _ in new_layout}
    views += [ChunkView(c.start, ()) for c in chain if c.start not in new_starts and old_moves.get(c.start)]
    views.sort(key=attrgetter("start"))
    all_new = [m for _, movements in new_folded for m in movements]
    new_movements = _due(all_new, cut)
    if on_time:
        retracted: list[Movement] = []
        added = [m for m in new_movements if instant_of(m.effective_at) >= facts[0].instant]
    else:
        old_movements = [m for start in old_moves for m in old_moves[start]]
        retracted, added = correction(old_movements, new_movements)
    later = [f.instant for _, chunk_facts in new_layout for f in chunk_facts if f.instant > asof]
    due = min(later, default=None)
    scheduled = tuple(_later(all_new, cut)) if due is not None or root.due is not None else None
    garbage = tuple(chunk_key(account_id, c.ref) for c in stored if c.ref not in kept)
    redis_from = min((v.start for v in views), default=new_layout[-1][0] if new_layout else first)
    last = prev if tail is None else None
    return _Commit(
        last, tail, tuple(held), mrr, garbage, due, writes, retracted, added, views, redis_from, scheduled
    )


def _outbox_parts(records: Sequence[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    size = 0
    for record in records:
        grow = len(record.encode()) + 3
        if parts[-1] and size + grow > OUTBOX_PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(record)
        size += grow
    return parts


class _Op(NamedTuple):
    """What one new arrival does: the index entries it makes, a fact to add, an event it voids."""

    position: int  # in the arrivals
    entries: tuple[Seen, ...]
    fact: Fact | None
    removes: Seen | None


def _commits(ops: Sequence[_Op]) -> list[list[_Op]]:
    """The arrivals' commits: at most COMMIT_EVENTS each, and index entries of at most RECENT_BYTES (plus
    one arrival's), since a root keeps its own commit's entries: long ids cannot swell a root."""
    commits: list[list[_Op]] = []
    size = 0
    for op in ops:
        grow = sum(_seen_bytes(s) for s in op.entries)
        if not commits or len(commits[-1]) >= COMMIT_EVENTS or size + grow > RECENT_BYTES:
            commits.append([])
            size = 0
        commits[-1].append(op)
        size += grow
    return commits


def process(
    reader: Reader,
    account_id: str,
    arrivals: Sequence[Arrival],
    render: Callable[[str, Published], str],
    confirmed_ver: int | None = None,
    now: int | None = None,
) -> Update:
    """Apply one account's arrivals (in the order read: offset order within each source) to its state,
    and bring what is in effect up to `now` (µs since the epoch; None: every event is in effect): an
    event effective after `now` is kept, scheduled, and its movements are published once a later call's
    `now` reaches them. Arrivals may be empty: then only scheduled events that fell due are applied.

    `render` turns a published movement into the record text sent (and kept in the outbox).
    `confirmed_ver`: the version of the account's root this process last wrote and saw acknowledged with
    everything after it. Any other root may be one whose index entries and deletions a crash lost: they
    are written again.
    """
    overlay = _Overlay(reader.store)
    # What this call decodes stays with it: it may be decoded from its own unwritten commits, and if the
    # call fails, a retry on the same reader (the stage applies a failed batch one arrival at a time)
    # makes other chunks under the same start and version.
    reader = Reader(overlay)
    before = root = reader.root(account_id)
    asof = max(before.asof, ALL_IN_EFFECT if now is None else now)  # never back: published stays so
    writes: list[tuple[bytes, bytes | None]] = []
    if confirmed_ver != root.ver:  # (its index entries are in it: `recent` goes only once written)
        writes += [(key, None) for key in root.garbage]

    # Classify every arrival: redelivered (its offset was applied before), a conflict, a duplicate or new.
    batch_seen: dict[str, Seen] = {}
    recent = {s.event_id: s for s in root.recent}

    def lookup(event_id: str) -> Seen | None:
        return batch_seen.get(event_id) or recent.get(event_id) or reader.indexed(account_id, event_id)

    conflicts: list[tuple[int, Rejection]] = []
    replayed = duplicates = 0
    ops: list[_Op] = []
    for position, arrival in enumerate(arrivals):
        fact = arrival.fact
        redelivered = arrival.offset <= before.offsets.get(arrival.source, -1)
        replayed += redelivered
        seen = lookup(fact.event_id)
        if seen is not None and seen.mark != "awaited":
            if seen.fingerprint != fact.fingerprint:
                conflicts.append((position, CONFLICT))
            else:
                duplicates += not redelivered
            continue
        if redelivered:
            continue
        if fact.voids is not None:
            target = lookup(fact.voids)
            if target is not None and target.mark == "void":
                conflicts.append((position, VOID_OF_VOID))
                continue
            entry = batch_seen[fact.event_id] = Seen(fact.event_id, fact.instant, fact.fingerprint, "void")
            if target is None:  # not seen yet: withdrawn when it comes
                awaited = batch_seen[fact.voids] = Seen(fact.voids, 0, "-", "awaited")
                ops.append(_Op(position, (entry, awaited), None, None))
            elif target.mark == "":
                voided = batch_seen[fact.voids] = target._replace(mark="voided")
                ops.append(_Op(position, (entry, voided), None, target))
            else:  # withdrawn already
                ops.append(_Op(position, (entry,), None, None))
        else:
            mark = "" if seen is None else "voided"  # (a void named it before it came)
            entry = batch_seen[fact.event_id] = Seen(fact.event_id, fact.instant, fact.fingerprint, mark)
            ops.append(_Op(position, (entry,), fact if seen is None else None, None))

    # A redelivery after a crash: what the last batch sent may be lost; send it again, keep it in the
    # outbox until this batch is acknowledged, and rewrite what it changed in Redis. The same for a root
    # this process has not seen acknowledged: after a restart an account's next batch can come from the
    # other source topic (input or by-account) before its unacknowledged one is redelivered.
    again = bool(replayed) or confirmed_ver != before.ver
    resend = reader.outbox(account_id, before) if again else []
    outbox: list[tuple[int, int]] = list(before.outbox) if again else []
    inline: list[str] = list(before.sent) if again else []
    inline_bytes = sum(len(r.encode()) for r in inline)
    stale_outbox = (
        []
        if again
        else [outbox_key(account_id, v, part) for v, parts in before.outbox for part in range(parts)]
    )
    redis_from: int | None = before.redis_from if again else None
    publish: list[Published] = []
    views: dict[int, ChunkView] = {}
    scheduled: tuple[Movement, ...] | None = None
    if again and before.redis_from is not None:
        # (read before this batch's commits: their chunks are not in the store yet; they replace these)
        views = {v.start: v for v in chunk_views(reader, account_id, before, before.redis_from)}
    if again:  # (an empty list too: it clears what a lost write left in Redis)
        scheduled = scheduled_of(reader, account_id, before)

    def offsets_through(position: int) -> dict[str, int]:
        offsets = dict(before.offsets)
        for arrival in arrivals[: position + 1]:
            offsets[arrival.source] = max(offsets.get(arrival.source, -1), arrival.offset)
        return offsets

    commits = _commits(ops)
    if not commits and before.due is not None and before.due <= asof:
        commits = [[]]  # nothing new, but scheduled events fell due
    for n, group in enumerate(commits):
        ver = root.ver + 1
        commit = _commit(
            reader,
            account_id,
            root,
            sorted(op.fact for op in group if op.fact is not None),
            [op.removes for op in group if op.removes is not None],
            ver,
            asof,
        )
        records: list[str] = []
        seq = root.seq
        for movement in (*(retraction_of(m) for m in commit.retracted), *commit.added):
            text = render(account_id, Published(seq, movement))
            publish.append(Published(seq, movement, text))
            records.append(text)
            seq += 1
        grow = sum(len(r.encode()) for r in records)
        if not outbox and inline_bytes + grow <= OUTBOX_INLINE_BYTES:
            inline += records  # (once a batch spills into outbox keys, the rest follows: resent in order)
            inline_bytes += grow
        elif records:
            parts = _outbox_parts(records)
            writes += [(outbox_key(account_id, ver, i), _dumps(part)) for i, part in enumerate(parts)]
            outbox.append((ver, len(parts)))
        for view in commit.views:
            views[view.start] = view
        if commit.scheduled is not None:
            scheduled = commit.scheduled
        redis_from = commit.redis_from if redis_from is None else min(redis_from, commit.redis_from)
        # The last commit also covers the duplicates and conflicts after the last new fact.
        through = len(arrivals) - 1 if n == len(commits) - 1 else group[-1].position
        kept_entries, flushed = _keep_recent(root.recent, [e for op in group for e in op.entries])
        root = Root(
            ver=ver,
            offsets=offsets_through(through),
            seq=seq,
            last=commit.last,
            tail=commit.tail,
            held=commit.held,
            mrr=commit.mrr,
            recent=kept_entries,
            garbage=commit.garbage,
            outbox=tuple(outbox),
            sent=tuple(inline),
            redis_from=redis_from,
            asof=asof,
            due=commit.due,
        )
        writes += commit.writes
        writes += [(index_key(account_id, s.event_id), _index_value(s)) for s in flushed]
        root_bytes = encode_root(root)
        writes.append((root_key(account_id), root_bytes))
        writes += [(key, None) for key in (*root.garbage, *stale_outbox)]
        stale_outbox = []
        overlay.pending.update(writes)
    offsets = offsets_through(len(arrivals) - 1)
    if not commits and offsets != dict(before.offsets):
        # Only duplicates, conflicts or redeliveries: remember the offsets, so a redelivery is recognised.
        root = root._replace(
            ver=root.ver + 1,
            offsets=offsets,
            garbage=(),
            outbox=tuple(outbox),
            sent=tuple(inline),
            redis_from=redis_from,
        )
        writes.append((root_key(account_id), encode_root(root)))
        writes += [(key, None) for key in stale_outbox]
    return Update(
        root=root,
        writes=tuple(writes),
        publish=tuple(publish),
        resend=tuple(resend),
        conflicts=tuple(conflicts),
        chunks=tuple(views[s] for s in sorted(views)),
        scheduled=scheduled,
        applied=len(ops),
        duplicates=duplicates,
        replayed=replayed,
    )
