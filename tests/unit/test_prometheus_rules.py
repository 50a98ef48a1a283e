"""The alert and recording rules: `promtool check` and the unit tests of every alert."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from processors.settings import REPO_ROOT

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: `mrr-stream servers start` installs Debian's prometheus, which has it"
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=REPO_ROOT)


def test_rules_are_valid(promtool: str) -> None:
    rules = sorted(str(p) for p in (PROMETHEUS / "rules").glob("*.yml"))
    result = run(promtool, "check", "rules", *rules)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(rules) == 3


def test_config_is_valid(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(PROMETHEUS / "tests" / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    tests = (PROMETHEUS / "tests" / "alerts_test.yml").read_text()
    alerts = [
        line.split(":")[1].strip()
        for line in (PROMETHEUS / "rules" / "alerts.yml").read_text().splitlines()
        if line.strip().startswith("- alert:")
    ]
    assert len(alerts) >= 6, alerts  # the file was read: every alert the README lists
    for alert in alerts:
        assert f"alertname: {alert}" in tests, f"{alert} has no promtool test"
