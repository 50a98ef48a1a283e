"""`mrr-stream stripe import`: the three file shapes Stripe events come in give the same billing events,
which replay to what the mapping gives; mistakes are one line; the summary names the skip reasons."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from processors.cli import main
from processors.generate import parse_month
from processors.replay import replay
from processors.sources.stripe.generate import stripe_history
from processors.sources.stripe.mapping import Mapper, to_json

EVENTS = stripe_history(12, 8, 7, parse_month("2025-02"))
AT = 1_800_000_000_000_000  # µs, 2027-01-15: after every event


def expected_lines() -> list[str]:
    mapper = Mapper()
    return [to_json(b) for e in EVENTS for b in mapper.feed(e).events]


def run_import(capsys: pytest.CaptureFixture[str], *files: str) -> tuple[list[str], str]:
    assert main(["stripe", "import", *files]) == 0
    out, err = capsys.readouterr()
    return out.splitlines(), err


@pytest.mark.parametrize("shape", ["lines", "array", "page", "pretty page"])
def test_every_file_shape_gives_the_same_billing_events(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, shape: str
) -> None:
    path = tmp_path / "events.json"
    page: dict[str, Any] = {"object": "list", "data": EVENTS, "has_more": False, "url": "/v1/events"}
    text = {
        "lines": "\n".join(json.dumps(e) for e in EVENTS) + "\n",
        "array": json.dumps(EVENTS),
        "page": json.dumps(page),
        "pretty page": json.dumps(page, indent=2),
    }[shape]
    path.write_text(text)
    lines, err = run_import(capsys, str(path))
    assert lines == expected_lines() and len(lines) > 20
    assert f"{len(EVENTS)} Stripe events read, {len(lines)} billing events written" in err


def test_the_output_replays_and_two_files_are_one_history(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    half = len(EVENTS) // 2
    first, second, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "billing.jsonl"
    first.write_text("".join(json.dumps(e) + "\n" for e in EVENTS[half:]))  # the later half first
    second.write_text("".join(json.dumps(e) + "\n" for e in EVENTS[:half]))
    assert main(["stripe", "import", str(first), str(second), "-o", str(out)]) == 0
    capsys.readouterr()
    lines = out.read_bytes().splitlines()
    ordered = replay(((str(i), line.encode()) for i, line in enumerate(expected_lines())), at=AT)
    streamed = replay(((str(i), line) for i, line in enumerate(lines)), at=AT)
    assert streamed.months == ordered.months and not streamed.rejects


def test_standard_input_and_a_pipe_into_replay(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    cli = [sys.executable, "-m", "processors.cli"]
    imported = subprocess.run([*cli, "stripe", "import", "-"], input=path.read_bytes(), capture_output=True)
    assert imported.returncode == 0, imported.stderr
    replayed = subprocess.run(
        [*cli, "replay", "-", "--format", "json", "--as-of", "2027-01-01T00:00:00Z"],
        input=imported.stdout,
        capture_output=True,
    )
    assert replayed.returncode == 0 and json.loads(replayed.stdout)["rejected"] == 0


def test_skips_are_summed_by_reason(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    other = {"id": "evt_x", "object": "event", "type": "invoice.paid", "created": 1, "data": {"object": {}}}
    path.write_text(json.dumps(other) + "\n" + json.dumps(other) + "\n" + "[1]\n" + "not json\n")
    lines, err = run_import(capsys, str(path))
    assert lines == []
    assert "skipped: 1 duplicate event, 2 not a JSON object, 1 unsupported event type" in err


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["/nonexistent/events.jsonl"], "cannot read /nonexistent/events.jsonl: No such file"),
        (["{dir}"], "cannot read {dir}: Is a directory"),
        (["{dir}/e.jsonl", "-o", "/nonexistent/out.jsonl"], "cannot write /nonexistent/out.jsonl"),
    ],
)
def test_a_mistake_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, files: list[str], message: str
) -> None:
    (tmp_path / "e.jsonl").write_text(json.dumps(EVENTS[0]) + "\n")
    args = [f.format(dir=tmp_path) for f in files]
    assert main(["stripe", "import", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"mrr-stream stripe import: {message.format(dir=tmp_path)}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_webhook_without_its_secret_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MRR_STRIPE_WEBHOOK_SECRET", raising=False)
    assert main(["stripe", "webhook"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mrr-stream stripe webhook: set MRR_STRIPE_WEBHOOK_SECRET") and err.count("\n") == 1
