"""The fold and refresh stages in-process, with in-memory stand-ins for the table, producer and Redis."""

from __future__ import annotations

import asyncio
import gc
import json
from types import FunctionType, MethodType, ModuleType
from typing import Any, cast

from prometheus_client import CollectorRegistry

from processors.core.fact import Fact
from processors.core.movement import Movement
from processors.sinks.metrics import Metrics
from processors.sinks.redis_view import RedisView
from processors.stream.deadletter import SOURCE_HEADER
from processors.stream.fold import REFETCH_MAX, FoldStage, Topics, position_key
from processors.stream.intake import Record, partition_for
from processors.stream.memory import MemoryProducer, MemoryTable, MemoryView
from processors.stream.refresh import RefreshStage
from processors.stream.state import Checkpoint, Chunk, Held, Reader, Root, Seen, UnknownFormat, chunk_views
from tests.factories import raw

TOPICS = Topics(input="in", by_account="by-account", movements="moves", dlq="dlq")
PARTITIONS = 4


class Harness:
    def __init__(self, table: MemoryTable | None = None, copartitioned: bool = True) -> None:
        self.table = table or MemoryTable()
        self.pending = MemoryTable()
        self.producer = MemoryProducer()
        self.view = MemoryView()
        self.offsets: dict[str, int] = {}
        self.stage = FoldStage(
            table=self.table,
            pending=self.pending,
            producer=self.producer,
            view=self.view,
            metrics=Metrics(CollectorRegistry()),
            topics=TOPICS,
            partitions=PARTITIONS,
            input_copartitioned=copartitioned,
        )

    def record(self, event: dict[str, Any] | bytes, keyed: bool = True, topic: str = "in") -> Record:
        value = event if isinstance(event, bytes) else json.dumps(event).encode()
        account = event["account_id"] if isinstance(event, dict) else "x"
        offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
        partition = partition_for(account, PARTITIONS) if keyed else 0
        return Record(topic, partition, offset, account.encode() if keyed else None, value)

    def run(self, records: list[Record]) -> None:
        asyncio.run(self.stage.batch(records))

    def forwarded(self) -> list[Record]:
        """What the by-account topic received, as the stage would read it back."""
        out = []
        for n, s in enumerate(self.producer.on(TOPICS.by_account)):
            assert s.partition is not None
            out.append(Record(TOPICS.by_account, s.partition, n, s.key, s.value, headers=s.headers))
        return out

    def mrr(self, account: str) -> dict[str, int]:
        return dict(Reader(self.table).root(account).mrr)


def test_an_account_keyed_record_is_folded_where_it_is() -> None:
    h = Harness()
    h.run([h.record(raw("subscribe", account="a1", amount="100.00"))])
    assert h.producer.on(TOPICS.by_account) == []
    assert h.mrr("a1") == {"USD": 10000}
    [moved] = h.producer.on(TOPICS.movements)
    assert moved.key == b"a1" and json.loads(moved.value or b"")["record_id"] == "a1:0"


def test_unkeyed_records_are_forwarded_by_account_and_give_the_same_result() -> None:
    events = [raw("subscribe", account=f"a{i}", amount=f"{10 + i}.00") for i in range(20)]
    direct, forwarded = Harness(), Harness()
    direct.run([direct.record(e) for e in events])
    forwarded.run([forwarded.record(e, keyed=False) for e in events])
    assert forwarded.producer.on(TOPICS.movements) == []
    sent = forwarded.forwarded()
    assert all(r.partition == partition_for(r.key.decode(), PARTITIONS) for r in sent if r.key)
    assert sent[3].headers[SOURCE_HEADER] == b"in:0:3"
    forwarded.run(sent)

    def pieces(h: Harness) -> dict[bytes, bytes]:  # everything but the roots (they name their sources)
        return {k: v for k, v in h.table.data.items() if b"\x00" in k}

    assert pieces(forwarded) == pieces(direct)
    for e in events:
        a, b = Reader(forwarded.table).root(e["account_id"]), Reader(direct.table).root(e["account_id"])
        assert (a.mrr, a.last, a.seq, a.offsets) == (b.mrr, b.last, b.seq, {"by-account": b.offsets["in"]})
    assert [s.value for s in forwarded.producer.on(TOPICS.movements)] == [
        s.value for s in direct.producer.on(TOPICS.movements)
    ]


def test_an_input_topic_partitioned_otherwise_is_always_forwarded() -> None:
    h = Harness(copartitioned=False)
    h.run([h.record(raw("subscribe", account="a1"))])
    assert len(h.producer.on(TOPICS.by_account)) == 1 and h.mrr("a1") == {}


def test_bad_records_and_conflicts_are_dead_lettered_with_their_reason() -> None:
    h = Harness()
    good = raw("subscribe", account="a1", event_id="e-1")
    clash = {**good, "items": [{"plan_id": "p", "unit_amount": "1.00"}]}
    records = [h.record(b"{not json"), h.record(good), h.record(clash)]
    h.run(records)
    letters = h.producer.on(TOPICS.dlq)
    assert [s.headers["mrr.errors.field"] for s in letters] == [b"(record)", b"event_id"]
    assert letters[1].headers["__connect.errors.exception.class.name"] == b"EventIdConflict"
    assert letters[1].value == json.dumps(clash).encode()
    [(_, rejected, _)] = h.view.writes
    assert rejected == [str(records[0].source), str(records[2].source)]


def test_state_is_acknowledged_before_any_record_it_caused_leaves() -> None:
    journal: list[str] = []
    h = Harness()
    write, send = h.table.write, h.producer.send

    async def logged_write(partition: int, key: bytes, value: bytes | None) -> Any:
        journal.append("state")
        return await write(partition, key, value)

    async def logged_send(topic: str, *args: Any) -> Any:
        journal.append(topic)
        return await send(topic, *args)

    h.table.write = logged_write  # type: ignore[method-assign]
    h.producer.send = logged_send  # type: ignore[method-assign,assignment]
    h.run([h.record(raw("subscribe", account=f"a{i}")) for i in range(5)])
    assert journal.index(TOPICS.movements) > max(i for i, j in enumerate(journal) if j == "state")


def test_a_redelivered_batch_resends_its_records_and_changes_nothing() -> None:
    h = Harness()
    late = raw("downgrade", account="a1", at="2025-01-10T00:00:00Z", amount="50.00")
    records = [
        h.record(raw("subscribe", account="a1", at="2025-01-01T00:00:00Z")),
        h.record(raw("upgrade", account="a1", at="2025-02-01T00:00:00Z", amount="150.00")),
    ]
    h.run(records)
    late_record = h.record(late)
    h.run([late_record])
    first = [json.loads(s.value or b"") for s in h.producer.on(TOPICS.movements)]
    state = dict(h.table.data)
    # kill -9 after the state landed: a new worker on the same table gets the last batch again
    again = Harness(MemoryTable(dict(h.table.data)))
    again.run([late_record])
    resent = [json.loads(s.value or b"") for s in again.producer.on(TOPICS.movements)]
    assert resent == first[-len(resent) :] and len(resent) == 3
    assert {k: v for k, v in again.table.data.items()} == state
    [(views, _, _)] = again.view.writes
    assert views[0].chunks, "the chunks the lost batch changed are written to Redis again"


def test_while_redis_is_down_accounts_wait_and_the_refresh_stage_catches_up() -> None:
    h = Harness()
    h.view.down = True
    records = [h.record(raw("subscribe", account="a1")), h.record(b"[1]")]
    h.run(records)
    assert dict(h.pending.items()).keys() == {b"a1", str(records[1].source).encode()}
    h.view.down = False
    refresh = RefreshStage(
        table=h.table,
        pending=h.pending,
        view=cast(RedisView, h.view),
        metrics=Metrics(CollectorRegistry()),
        partitions=PARTITIONS,
    )
    asyncio.run(refresh.catch_up())
    [(views, rejected, _)] = h.view.writes
    assert [v.account_id for v in views] == ["a1"] and rejected == [str(records[1].source)]
    reader = Reader(h.table)
    assert list(views[0].chunks) == chunk_views(reader, "a1", reader.root("a1"), None)
    assert dict(h.pending.items()) == {}


def test_a_record_that_fails_to_apply_is_dead_lettered_and_the_stream_goes_on(monkeypatch: Any) -> None:
    from processors.stream.state import process as real

    def poisoned(reader: Any, account: str, arrivals: Any, *args: Any) -> Any:
        if any(a.fact.event_id == "poison" for a in arrivals):
            raise RuntimeError("boom")
        return real(reader, account, arrivals, *args)

    monkeypatch.setattr("processors.stream.fold.process", poisoned)
    h, clean = Harness(), Harness()
    events = [
        raw("subscribe", account="a1", at="2025-01-01T00:00:00Z"),
        raw("upgrade", account="a1", at="2025-02-01T00:00:00Z", amount="150.00", event_id="poison"),
        raw("upgrade", account="a1", at="2025-03-01T00:00:00Z", amount="120.00"),
        raw("subscribe", account="a2"),
    ]
    records = [h.record(e) for e in events]
    h.run(records)
    clean.run([clean.record(e) for e in events if e["event_id"] != "poison"])
    [letter] = h.producer.on(TOPICS.dlq)
    assert letter.headers["__connect.errors.exception.class.name"] == b"RuntimeError"
    assert letter.headers["mrr.errors.stage"] == b"fold"
    assert b"boom" in letter.headers["__connect.errors.exception.message"]
    assert letter.value == records[1].value
    for account in ("a1", "a2"):
        assert h.mrr(account) == clean.mrr(account)

    def movements(harness: Harness) -> list[str]:  # as a consumer sees them: each record_id once
        records = {
            json.loads(s.value or b"")["record_id"]: s.value for s in harness.producer.on(TOPICS.movements)
        }
        return [json.loads(v or b"")["movement_id"] for v in records.values()]

    assert movements(h) == movements(clean)
    [(_, rejected, _)] = h.view.writes
    assert rejected == [str(records[1].source)]


def test_a_record_over_the_size_limit_is_dead_lettered_with_its_first_bytes_size_and_hash() -> None:
    import hashlib

    h = Harness()
    h.stage.max_record_bytes = 2_000
    big_valid = raw("subscribe", account="a1", padding="x" * 1_990)  # valid, but over the limit
    just_under = raw("subscribe", account="a2", padding="x" * 1_700)
    records = [h.record(big_valid), h.record(just_under, keyed=False)]
    h.run(records)
    [letter] = h.producer.on(TOPICS.dlq)
    value = records[0].value or b""
    assert letter.headers["mrr.errors.size"] == str(len(value)).encode()
    assert letter.headers["mrr.errors.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert letter.value == value[:1024] and letter.headers["mrr.errors.field"] == b"(record)"
    assert b"above the limit of 2,000" in letter.headers["__connect.errors.exception.message"]
    h.run(h.forwarded())  # the record under the limit is forwarded whole and applied
    assert h.mrr("a1") == {} and h.mrr("a2") == {"USD": 10000}


def _partition_log(events: list[dict[str, Any]]) -> dict[int, list[Record]]:
    """Account-keyed records as the broker holds them: contiguous offsets per partition."""
    log: dict[int, list[Record]] = {}
    for e in events:
        p = partition_for(e["account_id"], PARTITIONS)
        part = log.setdefault(p, [])
        part.append(Record(TOPICS.input, p, len(part), e["account_id"].encode(), json.dumps(e).encode()))
    return log


def test_records_the_consumer_skipped_are_read_again_before_the_batch() -> None:
    """Faust can resume a partition it kept through a rebalance past records it had prefetched: the fold
    notices the hole from its position and reads those records again, so none is lost."""
    events = [
        raw("subscribe" if i < 30 else "upgrade", account=f"a{i % 30}", amount=f"{10 + i}.00")
        for i in range(90)
    ]
    log = _partition_log(events)
    asked: list[tuple[int, int, int]] = []

    async def refetch(topic: str, partition: int, start: int, end: int) -> list[Record]:
        assert topic == TOPICS.input
        asked.append((partition, start, end))
        return [r for r in log[partition] if start <= r.offset < end]

    whole, holed = Harness(), Harness()
    holed.stage.refetch = refetch
    whole.run([r for part in log.values() for r in part])
    biggest = max(log, key=lambda p: len(log[p]))
    part = log[biggest]
    holed.run([r for r in part[:5]])
    holed.run([r for r in part[12:]] + [r for p, rs in log.items() if p != biggest for r in rs])
    assert asked == [(biggest, 5, 12)]

    def in_effect(h: Harness, account: str) -> list[str]:
        reader = Reader(h.table)
        views = chunk_views(reader, account, reader.root(account), None)
        return [m.movement_id for v in views for m in v.movements]

    for e in events:
        assert holed.mrr(e["account_id"]) == whole.mrr(e["account_id"])
        assert in_effect(holed, e["account_id"]) == in_effect(whole, e["account_id"])

    # A redelivery (offsets below the position) asks nothing; offsets without a record (a transaction
    # marker) are asked once and skipped.
    asked.clear()
    holed.run(part[10:14])
    assert asked == []
    end = len(part)
    log[biggest] = [*part, Record(TOPICS.input, biggest, end + 3, b"a0", json.dumps(events[0]).encode())]
    holed.run(log[biggest][-1:])
    assert asked == [(biggest, end, end + 3)]
    assert holed.mrr("a0") == whole.mrr("a0")


def _finding_nothing() -> tuple[Harness, Record, list[tuple[int, int]]]:
    """A stage whose broker has nothing to read again, the ranges it was asked for, and one folded record."""
    asked: list[tuple[int, int]] = []

    async def refetch(topic: str, partition: int, start: int, end: int) -> list[Record]:
        asked.append((start, end))
        return []

    h = Harness()
    h.stage.refetch = refetch
    first = h.record(raw("subscribe", account="a1", amount="10.00"))
    h.run([first])
    return h, first, asked


def test_a_hole_too_large_to_be_a_skip_is_not_read_again() -> None:
    """An operator who resets the group's offsets past records means to skip them (or retention deleted
    them): beyond REFETCH_MAX the fold follows the consumer instead of reading the range back."""
    h, first, asked = _finding_nothing()
    later = raw("upgrade", account="a1", amount="20.00")
    jump = first.offset + 1 + REFETCH_MAX + 1
    h.run([Record(TOPICS.input, first.partition, jump, b"a1", json.dumps(later).encode())])
    assert asked == [] and h.mrr("a1") == {"USD": 2000}
    assert h.table.get(position_key(TOPICS.input, first.partition)) == str(jump + 1).encode()


def test_records_the_consumer_passed_over_are_folded_while_idle() -> None:
    """A consumer that resumes a partition at its end (as Faust did after a rebalance gave a worker a
    partition with no committed offset) delivers nothing more: no batch shows the hole. While the worker is
    idle, `fill` compares each partition's end with the fold's position and folds what lies between."""
    events = [raw("subscribe", account=f"a{i}", amount=f"{10 + i}.00") for i in range(40)]
    log = _partition_log(events)
    asked: list[tuple[int, int, int]] = []

    async def refetch(topic: str, partition: int, start: int, end: int) -> list[Record]:
        asked.append((partition, start, end))
        return [r for r in log[partition] if start <= r.offset < end]

    h = Harness()
    h.stage.refetch = refetch
    h.run([r for part in log.values() for r in part[:2]])  # the first two of each partition
    ends = {(TOPICS.input, p): len(part) for p, part in log.items()}
    unknown = {(TOPICS.by_account, 0): 7}  # no position yet: nothing known to be missing
    folded = asyncio.run(h.stage.fill({**ends, **unknown}))
    assert folded == sum(len(part) - 2 for part in log.values())
    assert sorted(asked) == sorted((p, 2, len(part)) for p, part in log.items())
    for e in events:
        assert h.mrr(e["account_id"]) == {"USD": int(float(e["items"][0]["unit_amount"]) * 100)}
    asked.clear()
    assert asyncio.run(h.stage.fill(ends)) == 0 and asked == []  # caught up: nothing asked


def test_offsets_without_records_at_a_partitions_end_are_asked_once() -> None:
    """A transactional producer leaves a marker after its last record: the end is past the position
    although nothing is missing. One read finds nothing, and the position moves past the marker."""
    h, first, asked = _finding_nothing()
    ends = {(TOPICS.input, first.partition): first.offset + 2}
    assert asyncio.run(h.stage.fill(ends)) == 0 and asyncio.run(h.stage.fill(ends)) == 0
    assert asked == [(first.offset + 1, first.offset + 2)]


def test_fill_does_nothing_while_a_batch_runs() -> None:
    h, first, asked = _finding_nothing()

    async def during_a_batch() -> int:
        async with h.stage.lock:
            return await h.stage.fill({(TOPICS.input, first.partition): first.offset + 5})

    assert asyncio.run(during_a_batch()) == 0 and asked == []


def test_state_written_by_a_newer_version_stops_the_batch_and_dead_letters_nothing() -> None:
    # (a rolling upgrade gone wrong: an old worker must not take the accounts' events for bad records)
    h = Harness()
    h.run([h.record(raw("subscribe", account="a1", at="2025-01-01T00:00:00Z"))])
    root = json.loads(h.table.data[b"a1"])
    h.table.data[b"a1"] = json.dumps({**root, "v": 99}).encode()
    sent = len(h.producer.sent)
    try:
        h.run([h.record(raw("upgrade", account="a1", at="2025-02-01T00:00:00Z", amount="150.00"))])
    except UnknownFormat as exc:
        assert "unknown root format 99" in str(exc)
    else:
        raise AssertionError("the batch went on with state it cannot read")
    assert h.producer.sent[sent:] == [] and h.view.writes[1:] == []


def test_the_stage_keeps_no_decoded_state_between_batches() -> None:
    """Decoded roots and chunks kept worker-long made Python's full collections walk millions of objects
    (1 to 2 s pauses with 40,000 accounts): what a batch decodes goes with it. (The stand-ins keep what a
    broker and Redis would; they are not part of the stage.)"""
    h = Harness()
    events = [raw("subscribe", account=f"a{i}", amount="10.00") for i in range(200)]
    events += [raw("upgrade", account=f"a{i}", at="2025-02-01T00:00:00Z", amount="20.00") for i in range(200)]
    for n in range(0, len(events), 50):
        h.run([h.record(e) for e in events[n : n + 50]])
    assert len(h.producer.on(TOPICS.movements)) == 400
    # (code reaches every module: only the stage's own data is looked at)
    skipped = (MemoryTable, MemoryProducer, MemoryView, type, ModuleType, FunctionType, MethodType)
    decoded = (Root, Chunk, Checkpoint, Held, Fact, Seen, Movement)
    seen: set[int] = set()
    found: list[str] = []
    todo: list[object] = [h.stage]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, skipped):
            continue
        seen.add(id(obj))
        if isinstance(obj, decoded):
            found.append(type(obj).__name__)
        todo += gc.get_referents(obj)
    assert found == []
