"""docker-compose.yml checked statically: no Docker engine runs where this project's CI runs."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import yaml

from processors.settings import REPO_ROOT, Settings


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return data


# A reference compose requires: `${VAR:?message}` (set and not empty) or `${VAR?message}` (set).
REQUIRED = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)(?P<op>:?\?)[^}]*\}")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_AUTH\b")


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (REPO_ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, line
            pairs[name.strip()] = value.strip()
    return pairs


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def required(value: str) -> str:
    """The variable that the whole of `value` is a required reference to."""
    match = REQUIRED.fullmatch(value)
    assert match, f"{value!r} is not a ${{VAR:?message}} reference"
    return match["name"]


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
    # never in the file; `?`, not `:?`: compose interpolates the services of every profile, so a required
    # non-empty value would stop `docker compose up` without Stripe; the receiver refuses an empty one
    assert env["MRR_STRIPE_WEBHOOK_SECRET"].startswith("${MRR_STRIPE_WEBHOOK_SECRET?")


def test_every_published_port_is_bound_to_localhost_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                host_ip, host_port, container_port = str(port).split(":")
                assert host_ip == "127.0.0.1" and host_port and container_port, (name, port)


def test_passwords_and_tokens_come_from_the_environment_and_env_example_names_each_one() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    doc = compose()
    example = env_example()
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert used == set(example), (used - set(example), set(example) - used)
    assert all(value == "" for value in example.values()), "no secret value is committed, even an example"
    # every occurrence of a variable compose requires, and with a non-empty value except the Stripe secret
    # (only the opt-in stripe profile needs it; see the test above)
    for match in re.finditer(r"(?<!\$)\$\{[^}]*\}", text):
        reference = REQUIRED.fullmatch(match.group(0))
        assert reference, f"{match.group(0)} is not required"
        optional_ok = reference["name"] == "MRR_STRIPE_WEBHOOK_SECRET"
        assert reference["op"] == ("?" if optional_ok else ":?"), match.group(0)
    # a password, token or secret is never a literal: as a setting, in a URL, on the Redis command line
    for name, service in doc["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert required(str(value)) in example, (name, key)
        for value in strings(service):
            for credentials in re.finditer(r"://[^:/@\s]*:([^@\s]*)@", value):
                assert required(credentials.group(1)) in example, (name, value)
        command = service.get("command") or []
        for flag, argument in itertools.pairwise(command):
            if flag in ("--requirepass", "--masterauth"):
                required(argument)
        for argument in command:
            if isinstance(argument, str) and argument.startswith(">"):  # an ACL user's password
                required(argument[1:])
    for secret in doc.get("secrets", {}).values():
        assert set(secret) == {"environment"} and secret["environment"] in example, secret


def test_the_api_reads_redis_as_a_read_only_acl_user_and_the_worker_as_the_default_user() -> None:
    services = compose()["services"]
    prefix = Settings.model_fields["redis_prefix"].default
    command = services["redis"]["command"]
    assert command[0] == "redis-server"
    assert required(command[command.index("--requirepass") + 1]) == "REDIS_PASSWORD"
    user = command.index("--user")
    rules = command[user + 1 :]
    rules = rules[: next((i for i, r in enumerate(rules) if r.startswith("--")), len(rules))]
    assert rules[:2] == ["mrr-api", "on"] and required(rules[2][1:]) == "REDIS_API_PASSWORD"
    # the view's keys only, no pub/sub channel, nothing but reading (and AUTH, PING, HELLO, ...)
    assert rules[3:] == [f"~{prefix}*", "resetchannels", "-@all", "+@read", "+@connection"]
    api_url = services["api"]["environment"]["MRR_REDIS_URL"]
    assert re.fullmatch(r"redis://mrr-api:(\$\{REDIS_API_PASSWORD:\?[^}]*\})@redis:6379/0", api_url), api_url
    worker_url = services["worker"]["environment"]["MRR_REDIS_URL"]
    assert re.fullmatch(r"redis://:(\$\{REDIS_PASSWORD:\?[^}]*\})@redis:6379/0", worker_url), worker_url
    # the health check authenticates: redis-cli reads REDISCLI_AUTH
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert required(services["redis"]["environment"]["REDISCLI_AUTH"]) == "REDIS_PASSWORD"


def test_the_api_and_metrics_tokens_are_required_and_prometheus_scrapes_with_the_metrics_token() -> None:
    doc = compose()
    services = doc["services"]
    assert required(services["api"]["environment"]["MRR_API_TOKEN"]) == "MRR_API_TOKEN"
    for name in ("worker", "api"):
        assert required(services[name]["environment"]["MRR_METRICS_TOKEN"]) == "MRR_METRICS_TOKEN"
    # the worker's health check reads /metrics with its token; the API's reads the open API description
    worker_check = " ".join(services["worker"]["healthcheck"]["test"])
    assert "/metrics" in worker_check and "'Bearer ' + os.environ['MRR_METRICS_TOKEN']" in worker_check
    assert "/api/openapi.json" in " ".join(services["api"]["healthcheck"]["test"])
    # prometheus.yml cannot read the environment: the token reaches it as a secret file
    assert doc["secrets"]["metrics_token"] == {"environment": "MRR_METRICS_TOKEN"}
    assert services["prometheus"]["secrets"] == ["metrics_token"]
    scraped = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    ports = {"worker": "9108", "api": "8080"}
    for job in scraped["scrape_configs"]:
        targets = {t for c in job.get("static_configs", []) for t in c["targets"]}
        if targets & {f"{host}:{port}" for host, port in ports.items()}:
            assert job["authorization"] == {
                "type": "Bearer",
                "credentials_file": "/run/secrets/metrics_token",
            }


def test_grafana_needs_its_admin_password_and_has_no_anonymous_access() -> None:
    env = compose()["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert required(env["GF_SECURITY_ADMIN_PASSWORD"]) == "GF_SECURITY_ADMIN_PASSWORD"


def test_alertmanager_runs_with_the_repository_config_and_prometheus_waits_for_it() -> None:
    services = compose()["services"]
    service = services["alertmanager"]
    assert service["image"].startswith("prom/alertmanager:v")
    assert service["ports"] == ["127.0.0.1:9093:9093"]
    mounts = dict(m.split(":")[:2] for m in service["volumes"])
    config = next(
        c.removeprefix("--config.file=") for c in service["command"] if c.startswith("--config.file=")
    )
    folder = next(target for target in mounts.values() if config.startswith(target + "/"))
    source = next(source for source, target in mounts.items() if target == folder)
    assert source.startswith("./") and service["volumes"][0].endswith(":ro")
    assert (REPO_ROOT / source / config.removeprefix(folder + "/")).is_file(), config
    storage = next(
        c.removeprefix("--storage.path=") for c in service["command"] if c.startswith("--storage.path=")
    )
    assert storage in mounts.values()
    assert "/-/ready" in " ".join(service["healthcheck"]["test"])
    assert services["prometheus"]["depends_on"]["alertmanager"] == {"condition": "service_healthy"}
    scraped = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    alertmanagers = {
        t for am in scraped["alerting"]["alertmanagers"] for c in am["static_configs"] for t in c["targets"]
    }
    assert "alertmanager:9093" in alertmanagers
