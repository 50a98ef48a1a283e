"""Ordinary mistakes are one line naming the problem and a non-zero status (2: what was asked cannot be
done as asked; 1: a server it needs is not there), never a traceback; `--version` says the version."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pytest

from processors.cli import main
from tests.factories import raw


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.startswith("mrr-stream ")]
    assert len(lines) == 1, err
    return code, lines[0]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["replay", "/nonexistent/h.jsonl"],
            "mrr-stream replay: /nonexistent/h.jsonl: No such file or directory",
        ),
        (["replay", "{dir}"], "mrr-stream replay: {dir}: Is a directory"),
        (
            ["report", "--year", "2025", "--replay", "/nonexistent/h.jsonl"],
            "mrr-stream report: /nonexistent/h.jsonl: No such file",
        ),
        (
            ["produce", "/nonexistent/h.jsonl"],
            "mrr-stream produce: /nonexistent/h.jsonl: No such file or directory",
        ),
        (
            ["generate", "--accounts", "1", "--months", "1", "-o", "/nonexistent/h.jsonl"],
            "mrr-stream generate: /nonexistent/h.jsonl: No such file",
        ),
    ],
)
def test_a_file_that_is_not_there_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], line: str
) -> None:
    code, said = one_line(capsys, [a.format(dir=tmp_path) for a in argv])
    assert code == 2 and said.startswith(line.format(dir=tmp_path))


def test_a_setting_that_is_not_a_number_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MRR_PARTITIONS", "abc")
    code, said = one_line(capsys, ["status"])
    assert code == 2 and said.startswith("mrr-stream status: setting MRR_PARTITIONS: ") and "'abc'" in said


@pytest.mark.parametrize("argv", [["status"], ["report", "--year", "2025"]])
def test_redis_down_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.setenv("MRR_REDIS_URL", "redis://127.0.0.1:1/0")
    code, said = one_line(capsys, argv)
    assert code == 1 and said.startswith(f"mrr-stream {argv[0]}: Redis is not reachable: ")


def test_kafka_down_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MRR_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(raw("subscribe", account="a", amount="10.00")) + "\n")
    code, said = one_line(capsys, ["produce", str(path)])
    assert code == 1 and said.startswith("mrr-stream produce: Kafka is not reachable: ")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("mrr-stream ") and out.strip() != "mrr-stream unknown"


def test_the_readme_and_the_cli_agree_on_commands() -> None:
    """Every command of the README's command table is one the CLI has, and `servers` takes the names the
    README lists."""
    import re

    from processors.cli import build_parser
    from processors.settings import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("## The command line", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `mrr-stream ([a-z]+)", table, flags=re.MULTILINE))
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = set(sub.choices)
    assert documented and documented <= commands, documented - commands
    assert parser.parse_args(["servers", "status", "kafka", "redis", "prometheus", "worker", "api"])


def valid_and_bad(path: Path, valid: int, bad: int) -> Path:
    """A history of `valid` subscribes and `bad` lines that are not JSON."""
    lines = [json.dumps(raw("subscribe", account=f"a{i}", amount="10.00")) for i in range(valid)]
    lines += ["{not json"] * bad
    path.write_text("\n".join(lines) + "\n")
    return path


def replay_must_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from processors.cli import replay_cmd

    def ran(*args: object, **kwargs: object) -> None:
        raise AssertionError("the replay ran before its output was found unwritable")

    monkeypatch.setattr(replay_cmd, "run_replay", ran)


@pytest.mark.parametrize("option", ["--rejects", "--accounts"])
@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("{dir}/missing/out.txt", "No such file or directory"),
        ("{dir}", "Is a directory"),
        ("{dir}/h.jsonl/out.txt", "Not a directory"),
    ],
)
def test_an_output_that_cannot_be_written_is_one_line_and_status_2_before_the_replay(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    option: str,
    target: str,
    reason: str,
) -> None:
    history = valid_and_bad(tmp_path / "h.jsonl", 2, 1)
    replay_must_not_run(monkeypatch)
    path = target.format(dir=tmp_path)
    code, said = one_line(capsys, ["replay", str(history), option, path])
    assert code == 2 and said == f"mrr-stream replay: {path}: {reason}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_rejects_into_a_folder_without_write_permission_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    history = valid_and_bad(tmp_path / "h.jsonl", 2, 1)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    replay_must_not_run(monkeypatch)
    code, said = one_line(capsys, ["replay", str(history), "--rejects", str(locked / "r.txt")])
    assert code == 2 and said == f"mrr-stream replay: {locked / 'r.txt'}: Permission denied"


def test_more_rejects_than_max_rejects_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = 3
    history = valid_and_bad(tmp_path / "h.jsonl", 2, bad)
    code, said = one_line(capsys, ["replay", str(history), "--format", "json", "--max-rejects", str(bad - 1)])
    assert code == 1
    assert said == f"mrr-stream replay: {bad} lines were rejected, more than --max-rejects {bad - 1}"
    assert main(["replay", str(history), "--format", "json", "--max-rejects", str(bad)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["rejected"] == bad and "mrr-stream" not in err


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "٣"])
def test_max_rejects_takes_a_whole_number(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str
) -> None:
    history = valid_and_bad(tmp_path / "h.jsonl", 1, 0)
    with pytest.raises(SystemExit) as exited:
        main(["replay", str(history), "--max-rejects", value])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    assert f"argument --max-rejects: {value!r} is not a whole number of lines" in err


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_a_file_of_nothing_but_rejected_lines_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str
) -> None:
    bad = 4
    history = valid_and_bad(tmp_path / "h.jsonl", 0, bad)
    code, said = one_line(capsys, ["replay", str(history), "--format", fmt])
    assert code == 1
    assert said == f"mrr-stream replay: every line was rejected ({bad}): no billing event to replay"


def test_an_empty_file_is_not_a_mistake(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert main(["replay", str(empty), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"rejected": 0, "months": []}


@pytest.mark.parametrize(
    ("period", "line"),
    [
        (["--month", "2025-13"], "--month takes YYYY-MM, e.g. 2025-06 (got '2025-13')"),
        (["--quarter", "2025-3"], "--quarter takes YYYYQn, e.g. 2025Q2 (got '2025-3')"),
        (["--year", "25"], "--year takes YYYY, e.g. 2025 (got '25')"),
    ],
)
def test_a_report_period_that_is_not_one_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, period: list[str], line: str
) -> None:
    history = valid_and_bad(tmp_path / "h.jsonl", 1, 0)
    code, said = one_line(capsys, ["report", *period, "--replay", str(history)])
    assert code == 2 and said == f"mrr-stream report: {line}"


def test_a_report_without_figures_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    history = valid_and_bad(tmp_path / "h.jsonl", 1, 0)  # USD, January 2025
    code, said = one_line(
        capsys, ["report", "--month", "2025-01", "--currency", "JPY", "--replay", str(history)]
    )
    assert code == 2 and said == "mrr-stream report: no JPY figures for 2025-01"
    assert not list(tmp_path.glob("*.png"))


def test_a_report_without_matplotlib_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from processors.cli import report_cmd

    history = valid_and_bad(tmp_path / "h.jsonl", 1, 0)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets where it is absent
    monkeypatch.setattr(report_cmd, "load", lambda args: pytest.fail("the report read its input first"))
    code, said = one_line(capsys, ["report", "--month", "2025-01", "--replay", str(history)])
    assert code == 2
    assert said == "mrr-stream report: matplotlib is not installed: pip install 'mrr-stream[report]'"
