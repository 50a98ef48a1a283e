"""Ordinary mistakes are one line naming the problem and a non-zero status (2: what was asked cannot be
done as asked; 1: a server it needs is not there), never a traceback; `--version` says the version."""

from __future__ import annotations

import argparse
import json
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
