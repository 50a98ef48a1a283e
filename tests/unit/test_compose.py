"""docker-compose.yml checked statically: no Docker engine runs where this project's CI runs."""

from __future__ import annotations

from typing import Any

import yaml

from processors.settings import REPO_ROOT, Settings


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return data


def test_every_service_has_an_image_or_a_build_ports_and_a_healthcheck() -> None:
    services = compose()["services"]
    assert set(services) >= {"kafka", "redis", "prometheus", "worker"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        assert service.get("ports"), name
        check = service.get("healthcheck", {}).get("test")
        assert isinstance(check, list) and check[0] in ("CMD", "CMD-SHELL"), name
    build = services["worker"]["build"]
    assert (REPO_ROOT / build["context"] / build["dockerfile"]).is_file()
    assert services["kafka"]["image"].startswith("apache/kafka:")


def test_volumes_are_named_and_mounts_exist() -> None:
    doc = compose()
    declared = set(doc["volumes"])
    for name, service in doc["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name}: {source}"
            else:
                assert source in declared, f"{name}: {source} is not a named volume"


def test_dependencies_wait_for_health_and_env_names_are_settings() -> None:
    services = compose()["services"]
    worker = services["worker"]
    for dep, cond in worker["depends_on"].items():
        assert dep in services and cond["condition"] == "service_healthy"
    fields = {f"MRR_{name.upper()}" for name in Settings.model_fields}
    assert set(worker["environment"]) <= fields


def test_kafka_is_kraft_single_node() -> None:
    env = compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
    ):
        assert env[key] == "1"


def test_api_and_grafana_services() -> None:
    services = compose()["services"]
    assert services["api"]["command"] == ["mrr-stream", "api"]
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    mounts = {m.split(":")[1] for m in services["grafana"]["volumes"] if m.startswith("./")}
    assert mounts == {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"}


def test_grafana_dashboard_queries_what_the_project_exports() -> None:
    import json
    import re

    from prometheus_client import CollectorRegistry

    from processors.sinks.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    exported = {m.name for m in registry.collect()} | {f"{m.name}_total" for m in registry.collect()}
    recorded = set(
        re.findall(r"record: (\S+)", (REPO_ROOT / "deploy/prometheus/rules/recording.yml").read_text())
    )
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/dashboards/mrr.json").read_text())
    datasource = yaml.safe_load(
        (REPO_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = datasource["datasources"][0]["uid"]
    assert len(dashboard["panels"]) >= 10
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        for target in panel["targets"]:
            names = set(re.findall(r"\b(mrr[:_][a-z0-9_:]+)", target["expr"]))
            assert names and names <= exported | recorded, (panel["title"], names - exported - recorded)


def test_metrics_and_api_listen_on_every_interface_only_in_compose() -> None:
    # By default the worker's /metrics and the API listen on 127.0.0.1 only; in a container they must
    # answer Prometheus (worker:9108, api:8080) and the published ports, so compose says so explicitly.
    assert Settings.model_fields["metrics_addr"].default == "127.0.0.1"
    assert Settings.model_fields["api_addr"].default == "127.0.0.1"
    services = compose()["services"]
    assert services["worker"]["environment"]["MRR_METRICS_ADDR"] == "0.0.0.0"
    assert services["api"]["environment"]["MRR_API_ADDR"] == "0.0.0.0"
    fields = {f"MRR_{name.upper()}" for name in Settings.model_fields}
    assert set(services["api"]["environment"]) <= fields
    scraped = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in scraped["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    port = services["worker"]["environment"]["MRR_METRICS_PORT"]
    assert {f"worker:{port}", f"api:{services['api']['environment']['MRR_API_PORT']}"} <= targets


def test_the_stripe_receiver_is_opt_in_local_only_and_needs_its_secret_from_the_environment() -> None:
    assert Settings.model_fields["stripe_webhook_addr"].default == "127.0.0.1"
    service = compose()["services"]["stripe-webhook"]
    assert service["profiles"] == ["stripe"]
    assert service["command"] == ["mrr-stream", "stripe", "webhook"]
    assert all(str(port).startswith("127.0.0.1:") for port in service["ports"])
    env = service["environment"]
    assert set(env) <= {f"MRR_{name.upper()}" for name in Settings.model_fields}
    assert env["MRR_STRIPE_WEBHOOK_SECRET"].startswith("${MRR_STRIPE_WEBHOOK_SECRET:?")  # never in the file
