"""Alerts reach someone: a real worker, a real Prometheus evaluating the project's rules on what it scraped
(with the metrics token), a real Alertmanager with the project's routing, and a webhook receiver of the
test's that must get the churn-spike page, annotations and all.

The Prometheus and Alertmanager are a private pair, configured as `mrr-stream servers` configures them
(the same functions) on free ports: the session's shared Prometheus sums churn over every test's worker,
and its Alertmanager posts to the URL it was started with. Two things differ from production, and only
in copies: the churn-spike floor in the thresholds file, and the alert's `for:` and the receivers'
`group_wait`, shortened so that the test takes seconds, not minutes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from processors import clock
from processors.cli.produce_cmd import produce, read_lines
from processors.devtools.servers import DEPLOY, _prepare_alertmanager, _prepare_prometheus, servers
from processors.replay import replay
from processors.settings import Settings
from tests.e2e.harness import Stream, free_port, wait_for_metrics
from tests.factories import raw

METRICS_TOKEN = "alerts-scrape-token"
ACCOUNTS = 30
MRR_EACH = "500.00"
FLOOR = 5000  # currency units churned in an hour: the 30 cancels (15,000 USD) pass it, the first does not


@dataclasses.dataclass
class Receiver:
    url: str
    received: list[dict[str, Any]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, **json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/alerts", received)
    finally:
        server.shutdown()
        server.server_close()


def rule_copies(folder: Path) -> list[str]:
    rules = DEPLOY / "prometheus" / "rules"
    thresholds = yaml.safe_load((rules / "thresholds.yml").read_text())
    for rule in thresholds["groups"][0]["rules"]:
        if rule["record"] == "mrr:config:churn_spike_floor":
            rule["expr"] = f"vector({FLOOR})"
    alerts = yaml.safe_load((rules / "alerts.yml").read_text())
    for rule in alerts["groups"][0]["rules"]:
        if rule["alert"] == "MrrChurnSpike":
            rule["for"] = "2s"
    (folder / "thresholds.yml").write_text(yaml.safe_dump(thresholds))
    (folder / "alerts.yml").write_text(yaml.safe_dump(alerts))
    return [str(folder / "thresholds.yml"), str(rules / "recording.yml"), str(folder / "alerts.yml")]


def query(url: str, promql: str) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def produce_events(stream: Stream, folder: Path, name: str, events: list[dict[str, Any]]) -> None:
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    asyncio.run(produce(stream.settings, read_lines(path)))


def test_a_churn_spike_pages_through_prometheus_and_alertmanager(
    stream: Stream, receiver: Receiver, tmp_path: Path
) -> None:
    metrics_port = free_port()
    stream.settings = stream.settings.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)})
    monitor = Settings(
        local_dir=tmp_path / "monitor",
        local_prometheus_port=free_port(),
        local_alertmanager_port=free_port(),
        alert_webhook_url=receiver.url,
        metrics_port=metrics_port,
        api_port=free_port(),  # nothing listens: the API job is down, which no alert here is about
        metrics_token=SecretStr(METRICS_TOKEN),
    )
    rules = rule_copies(tmp_path)

    def prepare_prometheus(data: Path) -> list[str]:
        command = _prepare_prometheus(monitor, data)
        config = yaml.safe_load((data / "prometheus.yml").read_text())
        config["rule_files"] = rules
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        (data / "prometheus.yml").write_text(yaml.safe_dump(config))
        return command

    def prepare_alertmanager(data: Path) -> list[str]:
        command = _prepare_alertmanager(monitor, data)
        config = yaml.safe_load((data / "alertmanager.yml").read_text())
        for route in [config["route"], *config["route"]["routes"]]:
            route["group_wait"] = "1s"
        (data / "alertmanager.yml").write_text(yaml.safe_dump(config))
        return command

    known = servers(monitor)
    alertmanager = dataclasses.replace(known["alertmanager"], prepare=prepare_alertmanager)
    prometheus = dataclasses.replace(known["prometheus"], prepare=prepare_prometheus)
    now = datetime.now(UTC)
    at = (now - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    churn_at = (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    subscribes = [
        raw("subscribe", account=f"alert-{i}", at=at, amount=MRR_EACH, event_id=f"alert-sub-{i}")
        for i in range(ACCOUNTS + 1)
    ]
    first = [raw("cancel", account="alert-0", at=churn_at, amount=None, event_id="alert-cancel-0")]
    spike = [
        raw("cancel", account=f"alert-{i}", at=churn_at, amount=None, event_id=f"alert-cancel-{i}")
        for i in range(1, ACCOUNTS + 1)
    ]
    try:
        alertmanager.start()
        prometheus.start()
        stream.add_worker(metrics_port).start()
        wait_for_metrics(metrics_port, token=METRICS_TOKEN)
        produce_events(stream, tmp_path, "subscribes", subscribes)
        produce_events(stream, tmp_path, "first", first)
        lines = [json.dumps(e).encode() for e in subscribes + first]
        outcome = replay(((str(i), line) for i, line in enumerate(lines)), at=clock.now())
        stream.wait_until(outcome.months, 0, timeout=120)

        # increase() ignores a series' first sample: the churn counter must have been scraped (with the
        # token) before the spike, or the spike would look like the counter's start
        deadline = time.monotonic() + 60
        churn = 'mrr_movement_amount_total{type="churn", record="movement", job="mrr-worker"}'
        while not query(prometheus.address(), f"count_over_time({churn}[1m]) >= 2"):
            assert time.monotonic() < deadline, query(prometheus.address(), "up")
            time.sleep(1)
        assert not receiver.received  # 500 USD of churn is below the floor: nothing was sent

        produce_events(stream, tmp_path, "spike", spike)
        deadline = time.monotonic() + 120
        pages: list[dict[str, Any]] = []
        while not pages:
            assert time.monotonic() < deadline, (
                f"no page reached the receiver; it got {receiver.received}; Prometheus alerts: "
                f"{query(prometheus.address(), 'ALERTS')}"
            )
            time.sleep(1)
            pages = [
                n
                for n in receiver.received
                if n["receiver"] == "page" and n["groupLabels"].get("alertname") == "MrrChurnSpike"
            ]
    finally:
        stream.stop()
        prometheus.stop()
        alertmanager.stop()

    notification = pages[0]
    assert notification["status"] == "firing" and notification["path"] == "/alerts"
    assert notification["groupLabels"] == {"alertname": "MrrChurnSpike", "currency": "USD"}
    (alert,) = notification["alerts"]
    assert alert["labels"]["severity"] == "page" and alert["labels"]["currency"] == "USD"
    annotations = alert["annotations"]
    assert annotations["summary"] == "Churn spike in USD"
    assert "USD of MRR churned in the last hour" in annotations["description"]
    churned = float(annotations["description"].split()[0].replace(",", ""))
    assert churned >= FLOOR  # the hour's churn as Prometheus extrapolated it: at least the floor
    assert annotations["runbook_url"].endswith("docs/runbook.md#mrrchurnspike")
    # the page is the only notification: the monitor's other alerts stayed quiet
    assert {n["groupLabels"].get("alertname") for n in receiver.received} == {"MrrChurnSpike"}
