"""The real Prometheus scrapes a real worker and evaluates the project's rules on what it scraped."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from processors import clock
from processors.cli.produce_cmd import produce, read_lines
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import replay
from tests.conftest import PrometheusServer
from tests.e2e.harness import Stream, free_port


def api(url: str, path: str, **params: str) -> Any:
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_scrapes_the_worker_and_evaluates_the_rules(
    stream: Stream, prometheus: PrometheusServer, tmp_path: Path, unique: str
) -> None:
    events = HistoryGenerator(300, 6, 3, parse_month("2025-01")).events()
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(arrange(events, 3, bad=0.01)) + "\n")
    outcome = replay(((str(i), line) for i, line in enumerate(read_lines(path))), at=clock.now())
    port = free_port()
    stream.add_worker(port).start()
    asyncio.run(produce(stream.settings, read_lines(path)))
    stream.wait_until(outcome.months, len(outcome.rejects), timeout=120)
    prometheus.scrape(port, unique)

    latest = {m.currency: m for m in outcome.months}
    deadline = time.monotonic() + 90
    scraped: dict[str, float] = {}
    while time.monotonic() < deadline and set(scraped) != set(latest):
        result = api(prometheus.url, "query", query=f'mrr_current_mrr{{test="{unique}"}}')
        scraped = {r["metric"]["currency"]: float(r["value"][1]) for r in result["result"]}
        time.sleep(1)
    assert scraped == {c: row.closing_mrr / 100 for c, row in latest.items()}

    # The rule groups are loaded and evaluated without error, and the recording rules see the worker.
    groups = {g["name"]: g for g in api(prometheus.url, "rules")["groups"]}
    assert {"mrr-thresholds", "mrr-recording", "mrr-alerts"} <= set(groups)
    for name in ("mrr-thresholds", "mrr-recording", "mrr-alerts"):
        assert all(rule["health"] == "ok" for rule in groups[name]["rules"]), groups[name]
    deadline = time.monotonic() + 30
    recorded: dict[str, float] = {}
    while time.monotonic() < deadline and set(recorded) != set(latest):
        result = api(prometheus.url, "query", query="mrr:current_mrr:max")
        recorded = {r["metric"]["currency"]: float(r["value"][1]) for r in result["result"]}
        time.sleep(1)
    for currency, value in scraped.items():
        assert recorded[currency] >= value  # max over every worker Prometheus scrapes, this one included
    alerts = {r["name"] for r in groups["mrr-alerts"]["rules"]}
    rules_file = Path(__file__).parents[2] / "deploy" / "prometheus" / "rules" / "alerts.yml"
    written = {rule["alert"] for rule in yaml.safe_load(rules_file.read_text())["groups"][0]["rules"]}
    assert alerts == written and "MrrRedisViewStale" in alerts
