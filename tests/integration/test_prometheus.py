"""The real Prometheus scrapes a prometheus-client endpoint opened by this test and answers a query."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.conftest import PrometheusServer


def query(url: str, promql: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=5
    ) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_the_test_and_answers(prometheus: PrometheusServer, unique: str) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("mrr_test_probe_value", "a value set by the test", ["probe"], registry=registry)
    gauge.labels(probe=unique).set(12345.67)
    server, thread = start_http_server(0, addr="0.0.0.0", registry=registry)
    try:
        prometheus.scrape(server.server_port, unique)
        deadline = time.monotonic() + 60
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not result:
            result = query(prometheus.url, f'mrr_test_probe_value{{probe="{unique}"}}')
            time.sleep(1)
        assert result, "Prometheus never scraped the test's endpoint"
        assert float(result[0]["value"][1]) == 12345.67
        up = query(prometheus.url, f'up{{test="{unique}"}}')
        assert up and up[0]["value"][1] == "1"
    finally:
        server.shutdown()
        thread.join(5)
