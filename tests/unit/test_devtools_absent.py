"""Where the development tooling is not installed (the image, a wheel install), `mrr-stream` still starts,
and `demo` or `servers` say in one line why they are not there."""

from __future__ import annotations

import sys

import pytest

from processors.cli import main


@pytest.mark.parametrize("argv", [["demo"], ["servers", "start", "kafka"], ["servers", "--help"]])
def test_demo_and_servers_are_one_line_without_the_devtools(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m.startswith("processors.devtools")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "processors.devtools", None)  # what an import meets where it is absent
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.strip() == (
        f"mrr-stream: {argv[0]!r} comes with the development install only (make install in a checkout); "
        "this install runs the stream against your own Kafka, Redis and Prometheus"
    )


def test_the_other_commands_are_there_without_the_devtools(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "processors.devtools", None)
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    for command in ("replay", "report", "worker", "api", "status", "stripe"):
        assert command in help_text
