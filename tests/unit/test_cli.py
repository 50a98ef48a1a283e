import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from processors import clock
from processors.cli import main
from processors.core.fact import month_of
from tests.factories import raw


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def history(tmp_path: Path) -> Path:
    lines = [
        json.dumps(raw("subscribe", account="a", at="2025-01-05T00:00:00Z", amount="100.00")),
        "{oops",
        json.dumps(raw("upgrade", account="a", at="2025-02-05T00:00:00Z", amount="250.00", event_id="u1")),
        "",
        json.dumps(raw("upgrade", account="a", at="2025-02-05T00:00:00Z", amount="999.00", event_id="u1")),
        json.dumps(raw("subscribe", account="b", at="2025-02-07T00:00:00Z", currency="eur")),
    ]
    return write_lines(tmp_path / "h.jsonl", lines)


def test_replay_json(history: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(history), "--format", "json", "--as-of", "2025-02-28T00:00:00Z"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["rejected"] == 3
    assert [(m["month"], m["currency"], m["closing_mrr"]) for m in doc["months"]] == [
        ("2025-01", "USD", "100.00"),
        ("2025-02", "USD", "250.00"),
    ]
    assert doc["months"][1]["expansion_mrr"] == "150.00" and doc["months"][1]["nrr"] == "2.5000"
    assert f"rejected {history}:2: (record): invalid JSON" in err
    assert f"rejected {history}:5: event_id: already used" in err
    assert f"rejected {history}:6: currency: must be an ISO 4217 code" in err
    # without --as-of, the months run to now (an empty month still has its row)
    assert main(["replay", str(history), "--format", "json"]) == 0
    months = [m["month"] for m in json.loads(capsys.readouterr().out)["months"]]
    assert months[:2] == ["2025-01", "2025-02"] and months[-1] == month_of(clock.now())
    assert main(["replay", str(history), "--as-of", "soon"]) == 2
    assert "--as-of: 'soon' is not an RFC 3339 instant" in capsys.readouterr().err


def test_replay_csv_and_side_files(history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rejects, accounts = tmp_path / "rejects.txt", tmp_path / "accounts.jsonl"
    assert (
        main(
            [
                "replay",
                str(history),
                "--format",
                "csv",
                "--rejects",
                str(rejects),
                "--accounts",
                str(accounts),
                "--as-of",
                "2025-02-28",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["closing_mrr"] for r in rows] == ["100.00", "250.00"]
    assert rows[0]["nrr"] == "" and err == ""
    assert len(rejects.read_text().splitlines()) == 3
    assert [json.loads(line) for line in accounts.read_text().splitlines()] == [
        {"account_id": "a", "currency": "USD", "mrr": "250.00"}
    ]


def test_replay_table_from_stdin(history: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "processors.cli", "replay", "-"],
        input=history.read_bytes(),
        capture_output=True,
        check=True,
    )
    assert b"2025-02" in proc.stdout and b"250.00" in proc.stdout
    assert b"rejected stdin:2" in proc.stderr


def test_generate_is_reproducible_and_replayable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    args = [
        "--accounts",
        "150",
        "--months",
        "12",
        "--seed",
        "7",
        "--shuffle",
        "--duplicates",
        "0.1",
        "--bad",
        "0.05",
    ]
    assert main(["generate", *args, "-o", str(a)]) == 0
    assert main(["generate", *args, "-o", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    capsys.readouterr()
    assert main(["replay", str(a), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rejected"] > 0 and len(doc["months"]) >= 6
    kinds = {
        json.loads(line)["type"]
        for line in a.read_text().splitlines()
        if line.startswith('{"event_id":"evt_')
    }
    assert kinds == {"subscribe", "upgrade", "downgrade", "change", "cancel", "reactivate", "pause", "resume"}


def test_report_prints_the_period_and_writes_a_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from processors.cli.render import money
    from processors.core.aggregates import rollup
    from processors.replay import replay

    history = tmp_path / "h.jsonl"
    assert main(["generate", "--accounts", "300", "--months", "12", "--seed", "3", "-o", str(history)]) == 0
    png = tmp_path / "q3.png"
    capsys.readouterr()
    assert main(["report", "--quarter", "2025Q3", "--replay", str(history), "-o", str(png)]) == 0
    out = capsys.readouterr().out
    rows = replay((str(i), line) for i, line in enumerate(history.read_bytes().splitlines())).months
    q3 = rollup([r for r in rows if r.currency == "USD" and r.month in ("2025-07", "2025-08", "2025-09")])
    assert q3 is not None
    assert (
        f"opening {money(q3.opening_mrr)}, net new {money(q3.net_new_mrr)}, closing {money(q3.closing_mrr)}"
        in out
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
