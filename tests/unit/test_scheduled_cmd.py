"""`mrr-stream scheduled --replay`: the movements that events effective after --as-of will cause, summed per
currency and type, every figure worked out by hand from the events below. Redis is never reached here but
in the one test where it must not answer."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from processors.cli import main
from tests.factories import raw

AS_OF = "2026-01-01T00:00:00Z"


def _events() -> list[dict[str, Any]]:
    def sub(account: str, at: str, amount: str, **kw: Any) -> dict[str, Any]:
        return raw("subscribe", account=account, at=at, amount=amount, event_id=f"{account}-{at}-sub", **kw)

    def event(kind: str, account: str, at: str, **kw: Any) -> dict[str, Any]:
        return raw(kind, account=account, at=at, event_id=f"{account}-{at}-{kind}", **kw)

    return [
        # a: 100.00 a month, cancelled 10 days after as-of: churn 100.00 USD
        sub("acct-a", "2025-06-01T00:00:00Z", "100.00"),
        event("cancel", "acct-a", "2026-01-11T00:00:00Z", amount=None),
        # f: 1,200.00 a year (100.00 a month), cancelled 12.5 days after: churn 100.00 USD
        sub("acct-f", "2025-03-01T00:00:00Z", "1200.00", interval="year"),
        event("cancel", "acct-f", "2026-01-13T12:00:00Z", amount=None),
        # d: 200.00 down to 120.00 five days after: contraction 80.00 USD
        sub("acct-d", "2025-09-01T00:00:00Z", "200.00"),
        event("downgrade", "acct-d", "2026-01-06T00:00:00Z", amount="120.00"),
        # c: 30.00 up to 45.00 20 days after: expansion 15.00 EUR
        sub("acct-c", "2025-10-01T00:00:00Z", "30.00", currency="EUR"),
        event("upgrade", "acct-c", "2026-01-21T00:00:00Z", amount="45.00", currency="EUR"),
        # e: churned in the past, a new subscription 25 days after: reactivation 25.00 USD
        sub("acct-e", "2025-02-01T00:00:00Z", "10.00"),
        event("cancel", "acct-e", "2025-05-01T00:00:00Z", amount=None),
        sub("acct-e", "2026-01-26T00:00:00Z", "25.00", sub="sub-2"),
        # j: a cancel and a subscribe at one instant 15 days after: one expansion of 20.00 USD
        sub("acct-j", "2025-07-01T00:00:00Z", "40.00"),
        event("cancel", "acct-j", "2026-01-16T00:00:00Z", amount=None),
        sub("acct-j", "2026-01-16T00:00:00Z", "60.00", sub="sub-2"),
        # g: a subscribe exactly 30 days after: new 70.00 USD, inside a 30-day window (its end counts)
        sub("acct-g", "2026-01-31T00:00:00Z", "70.00"),
        # b: a subscribe 45 days after: new 50.00 USD, in 60 days but not in 30
        sub("acct-b", "2026-02-15T00:00:00Z", "50.00"),
        # h: a subscribe 100 days after: new 99.00 GBP, past 90 days
        sub("acct-h", "2026-04-11T00:00:00Z", "99.00", currency="GBP"),
        # i: a subscribe at the as-of instant itself is in effect, not scheduled
        sub("acct-i", AS_OF, "5.00"),
    ]


@pytest.fixture
def history(tmp_path: Path) -> Path:
    lines = [json.dumps(e) for e in _events()]
    lines.insert(3, "{oops")  # a bad line is left out and counted on stderr
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def scheduled(
    capsys: pytest.CaptureFixture[str], history: Path, *options: str, as_of: str = AS_OF
) -> dict[str, Any]:
    code = main(["scheduled", "--replay", str(history), "--as-of", as_of, "--format", "json", *options])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == "mrr-stream scheduled: 1 rejected lines left out (`mrr-stream replay` lists them)\n"
    doc: dict[str, Any] = json.loads(out)
    return doc


def total(currency: str, kind: str, amount: str, accounts: list[str], movements: int = 0) -> dict[str, Any]:
    return {
        "currency": currency,
        "type": kind,
        "amount": amount,
        "movements": movements or len(accounts),
        "accounts": accounts,
    }


THIRTY_DAYS = [
    total("EUR", "expansion", "15.00", ["acct-c"]),
    total("USD", "new", "70.00", ["acct-g"]),
    total("USD", "expansion", "20.00", ["acct-j"]),
    total("USD", "contraction", "80.00", ["acct-d"]),
    total("USD", "churn", "200.00", ["acct-a", "acct-f"]),
    total("USD", "reactivation", "25.00", ["acct-e"]),
]


def test_thirty_days_totals_and_movements(capsys: pytest.CaptureFixture[str], history: Path) -> None:
    doc = scheduled(capsys, history, "--days", "30")
    assert (doc["as_of"], doc["until"], doc["days"]) == (AS_OF, "2026-01-31T00:00:00Z", 30)
    assert doc["totals"] == THIRTY_DAYS
    assert doc["truncated"] is False
    listed = [
        (
            m["effective_at"],
            m["account_id"],
            m["currency"],
            m["type"],
            m["amount"],
            m["mrr_before"],
            m["mrr_after"],
        )
        for m in doc["movements"]
    ]
    assert listed == [
        ("2026-01-06T00:00:00Z", "acct-d", "USD", "contraction", "80.00", "200.00", "120.00"),
        ("2026-01-11T00:00:00Z", "acct-a", "USD", "churn", "100.00", "100.00", "0.00"),
        ("2026-01-13T12:00:00Z", "acct-f", "USD", "churn", "100.00", "100.00", "0.00"),
        ("2026-01-16T00:00:00Z", "acct-j", "USD", "expansion", "20.00", "40.00", "60.00"),
        ("2026-01-21T00:00:00Z", "acct-c", "EUR", "expansion", "15.00", "30.00", "45.00"),
        ("2026-01-26T00:00:00Z", "acct-e", "USD", "reactivation", "25.00", "0.00", "25.00"),
        ("2026-01-31T00:00:00Z", "acct-g", "USD", "new", "70.00", "0.00", "70.00"),
    ]
    j = doc["movements"][3]
    assert j["event_ids"] == ["acct-j-2026-01-16T00:00:00Z-cancel", "acct-j-2026-01-16T00:00:00Z-sub"]


def test_the_window_decides_what_is_in_it(capsys: pytest.CaptureFixture[str], history: Path) -> None:
    sixty = scheduled(capsys, history, "--days", "60")
    with_b = [*THIRTY_DAYS]
    with_b[1] = total("USD", "new", "120.00", ["acct-b", "acct-g"])
    assert sixty["totals"] == with_b
    assert sixty["until"] == "2026-03-02T00:00:00Z"
    assert "acct-b" in {m["account_id"] for m in sixty["movements"]}
    assert scheduled(capsys, history)["totals"] == with_b  # the default, 90 days: h is 100 days out
    decade = scheduled(capsys, history, "--days", "3660")
    assert decade["totals"] == [*with_b[:1], total("GBP", "new", "99.00", ["acct-h"]), *with_b[1:]]
    assert scheduled(capsys, history, "--days", "4")["totals"] == []  # nothing in the first 4 days


def test_currency_and_an_offset_as_of(capsys: pytest.CaptureFixture[str], history: Path) -> None:
    eur = scheduled(capsys, history, "--days", "30", "--currency", "EUR")
    assert eur["totals"] == THIRTY_DAYS[:1]
    assert [m["account_id"] for m in eur["movements"]] == ["acct-c"]
    same_instant = scheduled(capsys, history, "--days", "30", as_of="2026-01-01T01:00:00+01:00")
    assert same_instant["totals"] == THIRTY_DAYS and same_instant["as_of"] == AS_OF
    date_only = scheduled(capsys, history, "--days", "30", as_of="2026-01-01")
    assert date_only["totals"] == THIRTY_DAYS
    # six days later, d's downgrade (day 5) is in effect, and b's subscribe (day 45) still past the window
    later = scheduled(capsys, history, "--days", "30", as_of="2026-01-07T00:00:00Z")
    assert [(t["currency"], t["type"]) for t in later["totals"]] == [
        ("EUR", "expansion"),
        ("USD", "new"),
        ("USD", "expansion"),
        ("USD", "churn"),
        ("USD", "reactivation"),
    ]


def test_csv_is_one_line_per_movement(capsys: pytest.CaptureFixture[str], history: Path) -> None:
    assert (
        main(["scheduled", "--replay", str(history), "--as-of", AS_OF, "--days", "30", "--format", "csv"])
        == 0
    )
    out, _ = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["account_id"], r["type"], r["amount"]) for r in rows] == [
        ("acct-d", "contraction", "80.00"),
        ("acct-a", "churn", "100.00"),
        ("acct-f", "churn", "100.00"),
        ("acct-j", "expansion", "20.00"),
        ("acct-c", "expansion", "15.00"),
        ("acct-e", "reactivation", "25.00"),
        ("acct-g", "new", "70.00"),
    ]
    assert rows[0]["effective_at"] == "2026-01-06T00:00:00Z" and rows[0]["month"] == "2026-01"
    assert rows[3]["event_ids"] == "acct-j-2026-01-16T00:00:00Z-cancel acct-j-2026-01-16T00:00:00Z-sub"


def test_table(capsys: pytest.CaptureFixture[str], history: Path) -> None:
    assert main(["scheduled", "--replay", str(history), "--as-of", AS_OF, "--days", "60"]) == 0
    out, _ = capsys.readouterr()
    assert "Scheduled MRR changes from 2026-01-01 00:00:00 to 2026-03-02 00:00:00 UTC (60 days):" in out
    churn = next(line for line in out.splitlines() if " churn " in line and "USD" in line)
    assert "-200.00" in churn and "acct-a, acct-f" in churn
    new = next(line for line in out.splitlines() if " new " in line and "USD" in line)
    assert "120.00" in new and "acct-b, acct-g" in new
    assert "200.00 → 120.00" in out  # d's movement in the list
    assert main(["scheduled", "--replay", str(history), "--as-of", AS_OF, "--days", "4"]) == 0
    out, _ = capsys.readouterr()
    assert "No MRR change scheduled from 2026-01-01 00:00:00 to 2026-01-05 00:00:00 UTC (4 days)." in out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--as-of", "yesterday"], "--as-of: 'yesterday' is not an RFC 3339 instant"),
        (["--as-of", "2026-01-01T00:00:00"], "--as-of: '2026-01-01T00:00:00' has no offset"),
        (["--as-of", "9999-12-01"], "--as-of: '9999-12-01' is outside the years 1970 to 2999"),
        (["--days", "0"], "--days: '0' is not a whole number of days from 1 to 3660"),
        (["--days", "3661"], "--days: '3661' is not a whole number"),
        (["--days", "١٢"], "--days: '١٢' is not a whole number"),
        (["--days", "thirty"], "--days: 'thirty' is not a whole number"),
        (["--currency", "usd"], "--currency: 'usd' is not an ISO 4217 code"),
        (["--replay", "/nonexistent/events.jsonl"], "cannot read /nonexistent/events.jsonl: No such file"),
    ],
)
def test_a_mistake_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    assert main(["scheduled", *options]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"mrr-stream scheduled: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_redis_down_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MRR_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert main(["scheduled", "--days", "30"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("mrr-stream scheduled: Redis (MRR_REDIS_URL) is unavailable: "), err
    assert err.count("\n") == 1


def test_the_last_as_of_with_the_longest_window_works(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "none.jsonl"
    empty.write_bytes(b"")
    last = ["--as-of", "2999-12-31T23:59:59Z", "--days", "3660"]
    options = [*last, "--replay", str(empty), "--format", "json"]
    assert main(["scheduled", *options]) == 0
    assert json.loads(capsys.readouterr().out)["days"] == 3660
