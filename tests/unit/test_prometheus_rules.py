"""The alert and recording rules: `promtool check` and the unit tests of every alert; the configuration and
the local one derived from it, alerting Alertmanager; the Grafana dashboard's queries, one currency at a
time."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from processors.devtools.servers import _prepare_prometheus, local_prometheus_config
from processors.settings import REPO_ROOT, Settings
from processors.sinks.metrics import Metrics

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "mrr.json"


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


def test_config_is_valid(promtool: str, tmp_path: Path) -> None:
    # promtool insists that the metrics token's file exists: compose's secret exists only in the container,
    # so the check reads a copy naming a file that does.
    text = (PROMETHEUS / "prometheus.yml").read_text()
    assert text.count("credentials_file: /run/secrets/metrics_token") == 2
    token = tmp_path / "metrics_token"
    token.write_text("token")
    (tmp_path / "rules").symlink_to(PROMETHEUS / "rules")
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/run/secrets/metrics_token", str(token)))
    result = run(promtool, "check", "config", str(config))
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


def test_prometheus_alerts_alertmanager_and_the_local_one_alerts_the_local_one(
    promtool: str, tmp_path: Path
) -> None:
    deployed = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (alertmanagers,) = deployed["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["alertmanager:9093"]}]  # the compose service

    settings = Settings(
        local_dir=tmp_path, local_alertmanager_port=29876, metrics_port=29877, metrics_token=None
    )
    local = local_prometheus_config(settings)
    (alertmanagers,) = local["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["127.0.0.1:29876"]}]
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in local["scrape_configs"][:3]}
    assert targets == {
        "mrr-worker": ["127.0.0.1:29877"],
        "mrr-api": [f"127.0.0.1:{settings.api_port}"],
        "alertmanager": ["127.0.0.1:29876"],
    }
    # no token configured: /metrics is open, and a credentials file that is not there would fail every scrape
    assert not any("authorization" in job for job in local["scrape_configs"])
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(local))
    result = run(promtool, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_local_prometheus_scrapes_with_the_configured_metrics_token(
    promtool: str, tmp_path: Path
) -> None:
    settings = Settings(local_dir=tmp_path, metrics_token=SecretStr("current-token,next-token"))
    data = tmp_path / "prometheus"
    data.mkdir()
    command = _prepare_prometheus(settings, data)
    token = tmp_path / "prometheus" / "metrics_token"
    assert token.read_bytes() == b"current-token"  # the first of several: the one to send
    assert token.stat().st_mode & 0o777 == 0o600
    written = yaml.safe_load((data / "prometheus.yml").read_text())
    auth = {job["job_name"]: job.get("authorization") for job in written["scrape_configs"]}
    expected = {"type": "Bearer", "credentials_file": str(token)}
    assert auth["mrr-worker"] == auth["mrr-api"] == expected
    assert f"--config.file={data / 'prometheus.yml'}" in command
    result = run(promtool, "check", "config", str(data / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['id']}: {panel['title']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def series_by_currency() -> set[str]:
    """The worker's metrics with a currency label, and the recorded series kept by currency."""
    metrics = Metrics(CollectorRegistry())
    exported = {
        # private attributes: prometheus_client has no public way to list the labels of a metric with no child
        (f"{metric._name}_total" if metric._type == "counter" else metric._name)
        for metric in vars(metrics).values()
        if "currency" in getattr(metric, "_labelnames", ())
    }
    recording = yaml.safe_load((PROMETHEUS / "rules" / "recording.yml").read_text())
    recorded = {
        rule["record"]
        for group in recording["groups"]
        for rule in group["rules"]
        if re.search(r"\bby \((?:[a-z_]+, )*currency\b", rule["expr"])
    }
    assert {"mrr_current_mrr", "mrr_movement_amount_total", "mrr:current_mrr:max"} <= exported | recorded
    return exported | recorded


def test_every_money_panel_shows_one_currency() -> None:
    # USD, EUR and GBP never add up: each panel over a series kept by currency selects the one the
    # dashboard's variable names, and the variable holds exactly one.
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "currency"]
    query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
    assert re.fullmatch(r"label_values\((mrr[:_][a-z0-9_:]+), *currency\)", query), query
    assert variable["type"] == "query" and not variable["multi"] and not variable["includeAll"]
    by_currency = series_by_currency()
    selector = re.compile(r"\b(mrr[:_][a-z0-9_:]+)(\{[^}]*\})?")
    filtered = set()
    for panel, expr in dashboard_exprs():
        for name, matchers in selector.findall(expr):
            if name in by_currency:
                assert 'currency="$currency"' in matchers, (panel, expr)
                assert "$currency" in panel, panel  # its title says which currency it shows
                filtered.add(panel)
    assert len(filtered) >= 6, filtered  # MRR (stat and chart), customers, net new, churn, movements


def test_the_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool parses rules, not panels: each query, its variable set to a currency, as a recording rule.
    rules: list[dict[str, Any]] = [
        {"record": f"dashboard:query:{n}", "expr": expr.replace("$currency", "USD")}
        for n, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
