"""The stream's per-account state in bounded pieces: equal to the core's replay whatever the arrival
order and batching, crash-safe at any instant, and bounded in size whatever the account's age."""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.core.account import AccountState, apply
from processors.core.aggregates import MonthTotals, monthly_totals
from processors.core.fact import Fact, fact_of, utc_of
from processors.core.intake import parse_event
from processors.core.movement import record_dict, record_json, retraction_of, to_record
from processors.generate import HistoryGenerator, arrange, busy_account, parse_month
from processors.stream.state import (
    CHUNK_FACT_BYTES,
    CONFLICT,
    HELD_BYTES,
    OUTBOX_INLINE_BYTES,
    RECENT_BYTES,
    Arrival,
    Published,
    Reader,
    Update,
    chunk_key,
    chunk_views,
    decode_chunk,
    decode_root,
    encode_chunk,
    encode_root,
    process,
    record_id,
)
from schemas.billing_event import BillingEvent
from schemas.movement import MovementRecord
from tests.factories import fx, raw

SOURCE = "events"


def render(account_id: str, published: Published) -> str:
    return to_record(published.movement, record_id(account_id, published.seq)).model_dump_json()


class Table(dict[bytes, bytes]):
    """An in-memory table: what Faust's store holds after replaying the changelog."""

    def apply(self, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        for key, value in writes:
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value


def facts_of(lines: list[str]) -> list[Fact]:
    out = []
    for line in lines:
        parsed = parse_event(line)
        if isinstance(parsed, BillingEvent):
            out.append(fact_of(parsed))
    return out


def history(seed: int, accounts: int = 20, conflicts: int = 3) -> list[Fact]:
    events = HistoryGenerator(accounts, 8, seed, parse_month("2025-01")).events()
    facts = facts_of(arrange(events, seed, shuffle=True, duplicates=0.15, late=0.3))
    rng = random.Random(seed)
    for _ in range(conflicts):  # an event_id reused with other content
        victim = rng.choice(facts)
        facts.insert(rng.randrange(len(facts) + 1), victim._replace(fingerprint="0" * 20, mrr=victim.mrr + 1))
    return facts


def with_voids(facts: list[Fact], seed: int, voids: int = 6) -> list[Fact]:
    """Voids among the facts: of applied events, of events still to come and of a void, at any position."""
    rng = random.Random(seed)
    out = list(facts)
    for n in range(voids):
        target = rng.choice(out)
        if n % 3 == 2:  # a void of a void: rejected, whatever comes first
            target = next((f for f in out if f.kind == "void"), target)
        at = utc_of(target.instant).isoformat().replace("+00:00", "Z")
        void = raw(
            "void", account=target.account_id, at=at, voids=target.event_id, event_id=f"void-{seed}-{n}"
        )
        [fact] = facts_of([json.dumps(void)])
        out.insert(rng.randrange(len(out) + 1), fact)
    return out


def seat_changes(count: int, at: Callable[[int], str]) -> list[Fact]:
    """A subscribe, then upgrades: event n at `at(n)`, for 100 + n dollars."""
    return [
        fx("upgrade" if n else "subscribe", event_id=f"ev-{n:04d}", at=at(n), amount=f"{100 + n}.00")
        for n in range(count)
    ]


def one_by_one(table: Table, account: str, facts: Sequence[Fact]) -> Iterator[Update]:
    """Each fact a batch of its own, as the stage applies it (its writes in the table, its root confirmed);
    yields each update once its writes are in the table."""
    confirmed: int | None = None
    for offset, fact in enumerate(facts):
        update = process(Reader(table), account, [Arrival(SOURCE, offset, fact)], render, confirmed)
        table.apply(update.writes)
        confirmed = update.root.ver
        yield update


def expected(facts: Sequence[Fact]) -> dict[str, AccountState]:
    by_account: dict[str, list[Fact]] = {}
    for f in facts:
        by_account.setdefault(f.account_id, []).append(f)
    return {a: apply(AccountState(a), fs).state for a, fs in by_account.items()}


def group(arrivals: Sequence[Arrival]) -> dict[str, list[Arrival]]:
    grouped: dict[str, list[Arrival]] = {}
    for a in arrivals:
        grouped.setdefault(a.fact.account_id, []).append(a)
    return grouped


def totals_of(records: dict[str, str]) -> dict[tuple[str, str], MonthTotals]:
    movements = [MovementRecord.model_validate_json(r) for r in records.values()]
    sums = monthly_totals(movements)  # type: ignore[arg-type]  # records carry the movement fields
    return {k: t for k, t in sums.items() if t != MonthTotals()}


def check_state(table: Table, facts: Sequence[Fact]) -> None:
    reader = Reader(table)
    for account, state in expected(facts).items():
        root = reader.root(account)
        views = chunk_views(reader, account, root, None)
        assert [m for v in views for m in v.movements] == list(state.movements)
        assert dict(root.mrr) == dict(state.mrr)


def test_on_time_events_rewrite_only_the_root_and_publish_once() -> None:
    """The last chunk (the tail) lives in the root: an on-time event in its month writes no chunk."""
    table = Table()
    a = fx("subscribe", at="2025-01-01T00:00:00Z")
    first = process(Reader(table), "acct-1", [Arrival(SOURCE, 0, a)], render)
    table.apply(first.writes)
    assert [p.movement.type for p in first.publish] == ["new"]
    b = fx("upgrade", at="2025-01-20T00:00:00Z", amount="150.00")
    second = process(Reader(table), "acct-1", [Arrival(SOURCE, 1, b)], render, 0)
    table.apply(second.writes)
    assert [(p.seq, p.movement.type) for p in second.publish] == [(1, "expansion")]
    # one changelog record: the root (a sparse account's index entries stay in it)
    assert [k for k, _ in second.writes] == [b"acct-1"]
    tail = Reader(table).root("acct-1").tail
    assert tail is not None and [f.event_id for f in tail.facts] == [a.event_id, b.event_id]
    # a new month starts a new tail; the old one is held in the root, still no chunk key
    c = fx("upgrade", at="2025-02-03T00:00:00Z", amount="160.00")
    third = process(Reader(table), "acct-1", [Arrival(SOURCE, 2, c)], render, second.root.ver)
    table.apply(third.writes)
    assert [k for k, _ in third.writes] == [b"acct-1"]
    assert [decode_chunk("acct-1", h.encoded).facts for h in third.root.held] == [tail.facts]
    check_state(table, [a, b, c])


def test_chunks_before_the_tail_stay_in_the_root_up_to_a_bound_then_the_oldest_are_stored() -> None:
    table = Table()
    # one event a month: each starts a chunk
    facts = seat_changes(120, lambda n: f"{2020 + n // 12}-{n % 12 + 1:02d}-05T00:00:00Z")
    stored: list[bytes] = []
    for update in one_by_one(table, "acct-1", facts):
        stored += [k for k, v in update.writes if b"\x00c\x00" in k and v is not None]
        held = update.root.held
        assert sum(len(h.encoded) for h in held) <= HELD_BYTES
        # the tail, then the held chunks, then the stored ones: one chain, in order, no gap
        chain = Reader(table).chain("acct-1", update.root, None)
        assert [c.start for c in chain] == sorted({c.start for c in chain})
        assert [c.prev for c in chain[1:]] == [c.ref for c in chain[:-1]]
    assert len(stored) >= 60 and len(Reader(table).root("acct-1").held) >= 5
    # a late event in a stored month refolds from it onward and still equals the replay
    late = fx("downgrade", at="2021-03-20T00:00:00Z", amount="50.00")
    update = process(Reader(table), "acct-1", [Arrival(SOURCE, 120, late)], render, update.root.ver)
    table.apply(update.writes)
    assert any(p.movement.record == "retraction" for p in update.publish)
    check_state(table, [*facts, late])


def test_duplicate_publishes_nothing_and_conflict_is_named() -> None:
    table = Table()
    a = fx("subscribe", event_id="same", at="2025-01-01T00:00:00Z")
    table.apply(process(Reader(table), "acct-1", [Arrival(SOURCE, 0, a)], render).writes)
    clash = fx("subscribe", event_id="same", at="2025-03-01T00:00:00Z", amount="1.00")
    update = process(Reader(table), "acct-1", [Arrival(SOURCE, 1, a), Arrival(SOURCE, 2, clash)], render)
    assert update.publish == () and update.duplicates == 1 and update.conflicts == ((1, CONFLICT),)


def test_index_entries_move_out_of_the_root_once_they_outgrow_it_and_still_find_old_events() -> None:
    table = Table()
    facts = seat_changes(300, lambda n: f"2025-01-01T{n // 60:02d}:{n % 60:02d}:00Z")
    flushes = 0
    for fact, update in zip(facts, one_by_one(table, "acct-1", facts), strict=True):
        keys = [k for k, _ in update.writes]
        index = [k for k in keys if b"\x00i\x00" in k]
        if index:  # written before the root that drops them, which keeps only this commit's event
            flushes += 1
            assert keys.index(b"acct-1") > max(keys.index(k) for k in index)
            assert [s.event_id for s in update.root.recent] == [fact.event_id]
        root_bytes = table[b"acct-1"]
        assert len(json.loads(root_bytes)["r"]["new"]) * 50 <= RECENT_BYTES + 50
    assert flushes >= 3
    indexed = {k.split(b"\x00")[-1].decode() for k in table if b"\x00i\x00" in k}
    recent = {s.event_id for s in Reader(table).root("acct-1").recent}
    assert indexed | recent == {f.event_id for f in facts} and not indexed & recent
    # the first event is under its key now: a duplicate changes nothing, other content is a conflict
    clash = facts[0]._replace(fingerprint="0" * 20, mrr=facts[0].mrr + 1)
    update = process(
        Reader(table),
        "acct-1",
        [Arrival(SOURCE, 300, facts[0]), Arrival(SOURCE, 301, clash)],
        render,
        update.root.ver,
    )
    assert update.publish == () and update.duplicates == 1 and update.conflicts == ((1, CONFLICT),)
    check_state(table, facts)


def test_late_event_publishes_a_correction_from_its_month_on() -> None:
    table = Table()
    events = [
        fx("subscribe", at="2025-01-01T00:00:00Z"),
        fx("upgrade", at="2025-03-01T00:00:00Z", amount="120.00"),
        fx("upgrade", at="2025-05-01T00:00:00Z", amount="130.00"),
    ]
    *_, done = one_by_one(table, "acct-1", events)
    late = fx("downgrade", at="2025-04-01T00:00:00Z", amount="90.00")
    update = process(Reader(table), "acct-1", [Arrival(SOURCE, 3, late)], render, done.root.ver)
    kinds = [(p.movement.record, p.movement.type, p.movement.month) for p in update.publish]
    assert kinds == [
        ("retraction", "expansion", "2025-05"),
        ("movement", "contraction", "2025-04"),
        ("movement", "expansion", "2025-05"),
    ]
    assert {v.month for v in update.chunks} == {"2025-04", "2025-05"}
    table.apply(update.writes)
    check_state(table, [*events, late])


def test_a_root_not_confirmed_here_has_its_outbox_sent_again_and_kept() -> None:
    """After a restart an account's next batch may come from the other source topic before its
    unacknowledged batch is redelivered: that batch's records are sent again, and kept in the outbox."""
    table = Table()
    a = fx("subscribe", at="2025-01-01T00:00:00Z")
    first = process(Reader(table), "acct-1", [Arrival("input", 0, a)], render)
    table.apply(first.writes)
    b = fx("upgrade", at="2025-02-01T00:00:00Z", amount="150.00")
    after_restart = process(Reader(table), "acct-1", [Arrival("by-account", 0, b)], render, None)
    assert after_restart.resend == tuple(render("acct-1", p).encode() for p in first.publish)
    table.apply(after_restart.writes)
    kept = [render("acct-1", p) for p in (*first.publish, *after_restart.publish)]
    assert list(Reader(table).root("acct-1").sent) == kept
    confirmed = after_restart.root.ver
    c = fx("upgrade", at="2025-03-01T00:00:00Z", amount="160.00")
    calm = process(Reader(table), "acct-1", [Arrival("input", 1, c)], render, confirmed)
    assert calm.resend == ()
    table.apply(calm.writes)
    assert list(Reader(table).root("acct-1").sent) == [render("acct-1", p) for p in calm.publish]


def test_records_that_outgrow_the_root_go_to_outbox_keys_and_are_resent_in_order() -> None:
    table = Table()
    first = fx("subscribe", at="2025-01-01T00:00:00Z")
    opened = process(Reader(table), "acct-1", [Arrival(SOURCE, 0, first)], render)
    table.apply(opened.writes)
    many = [
        fx("upgrade", at=f"2025-02-01T00:{m:02d}:{sec:02d}Z", amount=f"{101 + 60 * m + sec}.00")
        for m in range(5)
        for sec in range(60)
    ]
    arrivals = [Arrival(SOURCE, 1 + i, f) for i, f in enumerate(many)]
    update = process(Reader(table), "acct-1", arrivals, render, opened.root.ver)
    table.apply(update.writes)
    root = Reader(table).root("acct-1")
    assert root.outbox and len(update.publish) == len(many)
    assert sum(len(r.encode()) for r in root.sent) <= OUTBOX_INLINE_BYTES
    sent = [render("acct-1", p).encode() for p in update.publish]
    again = process(Reader(table), "acct-1", arrivals, render, update.root.ver)
    assert again.publish == () and list(again.resend) == sent
    # the next batch deletes the outbox keys
    cancel = fx("cancel", at="2025-03-01T00:00:00Z")
    calm = process(Reader(table), "acct-1", [Arrival(SOURCE, 999, cancel)], render, again.root.ver)
    table.apply(calm.writes)
    assert not [k for k in table if b"\x00o\x00" in k]
    check_state(table, [first, *many, cancel])


def test_an_account_stored_by_format_2_is_read_and_moved_on() -> None:
    """Format 2 had no tail and no inline records: its last chunk is stored. A worker upgraded over such a
    table folds on, and the stored last chunk is superseded like any other."""
    table = Table()
    a = fx("subscribe", at="2025-01-01T00:00:00Z")
    table.apply(process(Reader(table), "acct-1", [Arrival(SOURCE, 0, a)], render).writes)
    root = Reader(table).root("acct-1")
    assert root.tail is not None
    old_chunk = replace(root.tail, ver=root.ver)
    doc = {**json.loads(encode_root(root._replace(tail=None, last=old_chunk.ref, sent=())))["r"], "v": 2}
    del doc["sent"]
    chunk_doc = json.loads(encode_chunk(old_chunk))
    chunk_doc["v"] = 2
    table[chunk_key("acct-1", old_chunk.ref)] = json.dumps(chunk_doc).encode()
    table[b"acct-1"] = json.dumps(doc).encode()
    b = fx("upgrade", at="2025-01-20T00:00:00Z", amount="150.00")
    update = process(Reader(table), "acct-1", [Arrival(SOURCE, 1, b)], render, root.ver)
    assert [p.movement.type for p in update.publish] == ["expansion"]
    table.apply(update.writes)
    assert chunk_key("acct-1", old_chunk.ref) not in table
    check_state(table, [a, b])


def test_an_account_stored_by_format_4_is_read_and_moved_on() -> None:
    """Format 4 was one JSON document with its tail and held chunks parsed with it: a worker upgraded over
    such a table reads it, folds on, and writes format 5."""
    table = Table()
    facts = seat_changes(12, lambda n: f"2024-{n + 1:02d}-05T00:00:00Z")
    *_, last = one_by_one(table, "acct-1", facts)
    assert last.root.held and last.root.tail is not None
    new = json.loads(table[b"acct-1"])
    assert new["v"] == 5 and list(new) == ["v", "k", "t", "h", "r"]
    table[b"acct-1"] = json.dumps({"t": new["t"], "h": new["h"], "v": 4, **new["r"]}).encode()
    assert Reader(table).root("acct-1") == last.root
    later = [
        fx("upgrade", event_id=f"later-{n}", at=f"2025-0{n + 1}-05T00:00:00Z", amount="300.00")
        for n in (1, 2)
    ]
    late = fx("downgrade", at="2024-03-20T00:00:00Z", amount="50.00")  # refolds held chunks
    arrivals = [Arrival(SOURCE, 100 + n, f) for n, f in enumerate([*later, late])]
    update = process(Reader(table), "acct-1", arrivals, render, last.root.ver)
    table.apply(update.writes)
    assert json.loads(table[b"acct-1"])["v"] == 5
    check_state(table, [*facts, *later, late])


def test_a_batch_that_failed_part_way_leaves_nothing_decoded_for_its_retry() -> None:
    """The fold stage applies the arrivals of a failed batch again, one by one, on the same reader. A chunk
    the failed attempt decoded from its own unwritten commits (here the March chunk at version 2, holding
    mar-0 and mar-1) must not stand in for the retry's chunk of the same start and version (mar-0 only)."""
    table = Table()
    base = fx("subscribe", event_id="base", at="2024-02-01T00:00:00Z")
    table.apply(process(Reader(table), "acct-1", [Arrival(SOURCE, 0, base)], render).writes)
    mar0 = fx("upgrade", event_id="mar-0", at="2024-03-05T00:00:00Z", amount="110.00")
    apr0 = fx("upgrade", event_id="apr-0", at="2024-04-05T00:00:00Z", amount="120.00")
    mar1 = fx("upgrade", event_id="mar-1", at="2024-03-10T00:00:00Z", amount="130.00")
    april = [
        fx(
            "upgrade",
            event_id=f"apr-{n}",
            at=f"2024-04-{6 + n // 24:02d}T{n % 24:02d}:00:00Z",
            amount=f"{140 + n}.00",
        )
        for n in range(1, 62)
    ]
    late = fx("downgrade", event_id="mar-2", at="2024-03-20T00:00:00Z", amount="90.00")
    facts = [mar0, apr0, mar1, *april, late]  # 64 in the first commit, the late one in a second
    arrivals = [Arrival(SOURCE, 1 + n, f) for n, f in enumerate(facts)]

    def failing(account_id: str, published: Published) -> str:
        if published.movement.record == "retraction":
            raise RuntimeError("a record the stage cannot render")
        return render(account_id, published)

    reader = Reader(table)
    with pytest.raises(RuntimeError):
        process(reader, "acct-1", arrivals, failing, 1)
    confirmed = 1
    for arrival in arrivals:
        update = process(reader, "acct-1", [arrival], render, confirmed)
        table.apply(update.writes)
        confirmed = update.root.ver
    check_state(table, [base, *facts])


def test_redelivery_resends_the_outbox_and_computes_nothing() -> None:
    table = Table()
    a = fx("subscribe", at="2025-01-01T00:00:00Z")
    late = fx("downgrade", at="2024-12-01T00:00:00Z", amount="90.00")
    first = process(Reader(table), "acct-1", [Arrival(SOURCE, 0, a)], render)
    table.apply(first.writes)
    update = process(Reader(table), "acct-1", [Arrival(SOURCE, 1, late)], render, first.root.ver)
    table.apply(update.writes)
    again = process(Reader(table), "acct-1", [Arrival(SOURCE, 1, late)], render)
    assert again.replayed == 1 and again.publish == ()
    # after a restart only the deletions a root lists are made again (its index entries are in it)
    assert all(value is None for _, value in again.writes)
    assert again.resend == tuple(render("acct-1", p).encode() for p in update.publish)
    assert {v.start for v in again.chunks} == {v.start for v in update.chunks}


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40))
def test_any_order_and_batching_equal_the_replay(seed: int, largest_batch: int) -> None:
    facts = history(seed)
    rng = random.Random(seed)
    table, records = Table(), {}
    arrivals = [Arrival(SOURCE, offset, f) for offset, f in enumerate(facts)]
    conflicts = 0
    while arrivals:
        n = rng.randint(1, largest_batch)
        batch, arrivals = arrivals[:n], arrivals[n:]
        for account, items in group(batch).items():
            update = process(Reader(table), account, items, render, None)
            table.apply(update.writes)
            conflicts += len(update.conflicts)
            for p in update.publish:
                rid = record_id(account, p.seq)
                assert rid not in records
                records[rid] = render(account, p)
    states = expected(facts)
    core_conflicts = sum(
        len(apply(AccountState(a), [f for f in facts if f.account_id == a]).conflicts) for a in states
    )
    assert conflicts == core_conflicts
    assert totals_of(records) == monthly_totals(m for s in states.values() for m in s.movements)
    check_state(table, facts)


@dataclass
class Broker:
    """One partition of everything: two input topics (an account's events come both straight from the
    input and forwarded through the by-account topic), the changelog (durable writes, in order) and the
    movements topic (durable records). A crash loses what had not landed: a suffix of the changelog writes
    in flight, any subset of the records in flight."""

    changelog: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    records: list[tuple[str, str]] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})

    def table(self) -> Table:
        table = Table()
        table.apply(self.changelog)
        return table


def run_with_crashes(facts: list[Fact], rng: random.Random, crashes: int) -> Broker:
    broker = Broker()
    topics: dict[str, list[Arrival]] = {"a": [], "b": []}
    for f in facts:
        # every record of one event_id takes one path: Kafka orders nothing across partitions, so which of
        # two contents of an event_id wins may differ otherwise (for the stream and a replay alike)
        source = "ab"[zlib.crc32(f.event_id.encode()) % 2]
        topics[source].append(Arrival(source, len(topics[source]), f))
    crash_budget = crashes
    while True:
        table = broker.table()  # a restart rebuilds the table from the changelog
        confirmed: dict[str, int] = {}
        position = dict(broker.committed)
        crashed = False
        while any(position[t] < len(topics[t]) for t in topics):
            # the two topics' partitions are fetched independently: any interleaving
            batch: list[Arrival] = []
            for t in rng.sample(sorted(topics), 2):
                take = rng.randint(0, 6)
                batch += topics[t][position[t] : position[t] + take]
            if not batch:
                continue
            writes: list[tuple[bytes, bytes | None]] = []
            updates: list[tuple[str, Update]] = []
            reader = Reader(table)
            for account, items in group(batch).items():
                update = process(reader, account, items, render, confirmed.get(account))
                # the stage applies each account's writes before the next account (same partition)
                table.apply(update.writes)
                writes += update.writes
                updates.append((account, update))
            if crash_budget and rng.random() < 0.25:  # kill -9 while the writes are in flight
                # anywhere, or (the delicate spot) right after a root, before its index entries
                after_root = [i + 1 for i, (key, _) in enumerate(writes) if b"\x00" not in key]
                cut = rng.choice(after_root) if after_root and rng.random() < 0.5 else None
                broker.changelog += writes[: rng.randint(0, len(writes)) if cut is None else cut]
                crash_budget -= 1
                crashed = True
                break
            broker.changelog += writes  # flushed: every write acknowledged
            sends = [
                (record_id(account, p.seq), render(account, p)) for account, u in updates for p in u.publish
            ]
            sends += [(json.loads(r)["record_id"], r.decode()) for _, u in updates for r in u.resend]
            if crash_budget and rng.random() < 0.25:  # kill -9 while the records are in flight
                broker.records += [s for s in sends if rng.random() < 0.5]
                crash_budget -= 1
                crashed = True
                break
            broker.records += sends
            for account, u in updates:
                confirmed[account] = u.root.ver
            for arrival in batch:
                position[arrival.source] = max(position[arrival.source], arrival.offset + 1)
            for t in topics:  # Faust commits now and then, each topic's partition on its own
                if rng.random() < 0.5 or position[t] == len(topics[t]):
                    broker.committed[t] = position[t]
        if not crashed:
            return broker


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8))
def test_crashes_at_any_instant_neither_lose_nor_double_count(seed: int, crashes: int) -> None:
    check_crashes(seed, crashes)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8))
def test_crashes_while_entries_and_chunks_move_out_of_roots_neither_lose_nor_double_count(
    seed: int, crashes: int
) -> None:
    # a root keeping one or two index entries and a chunk or none before the tail: nearly every commit
    # writes index keys and chunks before its root
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("processors.stream.state.RECENT_BYTES", 120)
        patch.setattr("processors.stream.state.HELD_BYTES", 300)
        check_crashes(seed, crashes, voids=6)


def check_crashes(seed: int, crashes: int, voids: int = 0) -> None:
    facts = with_voids(history(seed, accounts=10), seed, voids)
    broker = run_with_crashes(facts, random.Random(seed), crashes)
    published: dict[str, str] = {}
    for rid, record in broker.records:
        assert published.setdefault(rid, record) == record, f"{rid} was published with two contents"
    states = expected(facts)
    assert totals_of(published) == monthly_totals(m for s in states.values() for m in s.movements)
    table = broker.table()
    check_state(table, facts)
    # nothing unreachable stays behind but what one crash can orphan
    reachable: set[bytes] = set()
    reader = Reader(table)
    for account in states:
        reachable |= {chunk_key(account, c.ref) for c in reader.chain(account, reader.root(account), None)}
    chunks = {k for k in table if b"\x00c\x00" in k}
    assert len(chunks - reachable) <= 3 * crashes


def test_a_busy_account_stays_bounded_and_equal_to_the_replay() -> None:
    events = busy_account("busy", 4_000, 7, parse_month("2023-01"))
    lines = arrange(events, 7, late=0.02, late_days=60)
    facts = facts_of(lines)
    table = Table()
    largest = 0
    records: dict[str, str] = {}
    for update in one_by_one(table, "busy", facts):
        largest = max([largest, *(len(v) for _, v in update.writes if v is not None)])
        records.update((record_id("busy", p.seq), render("busy", p)) for p in update.publish)
    assert largest <= 64 * 1024
    # a chunk holds at most CHUNK_FACT_BYTES of facts plus one instant's
    assert max(len(v) for k, v in table.items() if b"\x00c\x00" in k) < 2 * CHUNK_FACT_BYTES
    check_state(table, facts)
    states = expected(facts)
    assert totals_of(records) == monthly_totals(states["busy"].movements)


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000))
def test_large_batches_of_one_account_take_several_commits(seed: int) -> None:
    events = busy_account("busy", 1_500, seed, parse_month("2023-01"))
    facts = facts_of(arrange(events, seed, late=0.05, late_days=60, duplicates=0.02))
    rng = random.Random(seed)
    table, offset, confirmed = Table(), 0, None
    records: dict[str, str] = {}
    while offset < len(facts):
        n = rng.randint(1, 400)
        arrivals = [Arrival(SOURCE, o, facts[o]) for o in range(offset, min(offset + n, len(facts)))]
        update = process(Reader(table), "busy", arrivals, render, confirmed)
        table.apply(update.writes)
        confirmed = update.root.ver
        records.update((record_id("busy", p.seq), render("busy", p)) for p in update.publish)
        offset += n
    check_state(table, facts)
    assert totals_of(records) == monthly_totals(expected(facts)["busy"].movements)


def test_codecs_round_trip() -> None:
    table = Table()
    facts = history(3, accounts=5)
    for offset, f in enumerate(facts):
        table.apply(process(Reader(table), f.account_id, [Arrival(SOURCE, offset, f)], render).writes)
    for key, value in table.items():
        account = key.split(b"\x00")[0].decode()
        if b"\x00" not in key:
            assert encode_root(decode_root(account, value)) == value
        elif b"\x00c\x00" in key:
            assert encode_chunk(decode_chunk(account, value)) == value


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000))
def test_record_json_is_the_contracts_serialisation(seed: int) -> None:
    states = expected(history(seed, accounts=10))
    movements = [m for s in states.values() for m in s.movements]
    movements += [retraction_of(m) for m in movements[:20]]
    movements += [
        m._replace(account_id="ü-😀", effective_at=m.effective_at.replace(microsecond=5))
        for m in movements[:5]
    ]
    for n, m in enumerate(movements):
        assert record_json(m, f"a:{n}") == to_record(m, f"a:{n}").model_dump_json()
        assert record_dict(m) == to_record(m).model_dump(mode="json")
