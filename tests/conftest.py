"""Fixtures for real servers. For each of Kafka, Redis and Prometheus, in this order:
1. an environment variable pointing at an existing server (MRR_KAFKA_BOOTSTRAP, MRR_REDIS_URL,
   MRR_PROMETHEUS_URL) wins;
2. otherwise testcontainers, where a Docker engine answers;
3. otherwise the local processes of `mrr-stream servers` (started here if they are not running, and then
   stopped again at the end of the session).
Every test gets its own topic names and its own Redis key prefix.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from processors.devtools.servers import Server, prometheus_targets_dir, servers
from processors.settings import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path) or "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.integration)


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def docker_engine() -> bool:
    return docker_available()


@contextlib.contextmanager
def _local(server: Server) -> Iterator[None]:
    started_here = server.pid() is None
    server.start()
    try:
        yield
    finally:
        if started_here:
            server.stop()


@pytest.fixture(scope="session")
def local_servers() -> dict[str, Server]:
    return servers(Settings())


@pytest.fixture(scope="session")
def kafka_bootstrap(docker_engine: bool, local_servers: dict[str, Server]) -> Iterator[str]:
    if os.environ.get("MRR_KAFKA_BOOTSTRAP"):
        yield os.environ["MRR_KAFKA_BOOTSTRAP"]
    elif docker_engine:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        with _local(local_servers["kafka"]):
            yield local_servers["kafka"].address()


@pytest.fixture(scope="session")
def redis_url(docker_engine: bool, local_servers: dict[str, Server]) -> Iterator[str]:
    if os.environ.get("MRR_REDIS_URL"):
        yield os.environ["MRR_REDIS_URL"]
    elif docker_engine:
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
    else:
        with _local(local_servers["redis"]):
            yield local_servers["redis"].address()


@dataclass(frozen=True)
class PrometheusServer:
    url: str
    targets_dir: Path | None  # file_sd folder it watches; None where the tests cannot add targets
    target_host: str = "127.0.0.1"  # how the server reaches a port opened by the tests

    def scrape(self, port: int, name: str) -> None:
        if self.targets_dir is None:
            pytest.skip("this Prometheus cannot be told about the test's targets")
        path = self.targets_dir / f"{name}.json"
        path.write_text(json.dumps([{"targets": [f"{self.target_host}:{port}"], "labels": {"test": name}}]))


@pytest.fixture(scope="session")
def prometheus(
    docker_engine: bool, local_servers: dict[str, Server], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    if os.environ.get("MRR_PROMETHEUS_URL"):
        targets = os.environ.get("MRR_PROMETHEUS_TARGETS_DIR")
        yield PrometheusServer(os.environ["MRR_PROMETHEUS_URL"], Path(targets) if targets else None)
    elif docker_engine:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        folder = tmp_path_factory.mktemp("prometheus")
        (folder / "targets").mkdir()
        (folder / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: local-targets\n"
            "    file_sd_configs: [{files: ['/etc/prometheus/targets/*.json'], refresh_interval: 1s}]\n"
        )
        container = (
            DockerContainer("prom/prometheus:v2.53.0")
            .with_exposed_ports(9090)
            .with_volume_mapping(str(folder), "/etc/prometheus", "rw")
            .with_kwargs(extra_hosts={"host.docker.internal": "host-gateway"})
        )
        with container:
            wait_for_logs(container, "Server is ready to receive web requests")
            url = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(9090)}"
            yield PrometheusServer(url, folder / "targets", "host.docker.internal")
    else:
        server = local_servers["prometheus"]
        with _local(server):
            yield PrometheusServer(server.address(), prometheus_targets_dir(server.settings))


@pytest.fixture
def unique() -> str:
    """A name no other test uses: topics, consumer groups and Redis prefixes derive from it."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_prefix(redis_url: str, unique: str) -> Iterator[str]:
    import redis

    prefix = f"test:{unique}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
