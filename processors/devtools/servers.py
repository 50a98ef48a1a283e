"""Real Kafka (KRaft), Redis, Prometheus and Alertmanager on 127.0.0.1, installed and run by the project.

`mrr-stream servers start|stop|status [NAME...]`. What is missing is installed first: Redis, Prometheus and
Alertmanager from Debian's packages, the Kafka broker's jars from Maven Central with Maven (cached, fetched
once). Every server runs as a plain process whose PID is recorded under the local data folder; stop and status
act only on processes recorded there, so a server someone else started is never touched.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from processors.auth import tokens
from processors.settings import REPO_ROOT, Settings

DEPLOY = REPO_ROOT / "deploy"
# what `servers start` starts, in this order; the demo also starts a "worker"
NAMES = ("kafka", "redis", "alertmanager", "prometheus")
START_TIMEOUT_S = 90.0
STOP_GRACE_S = 20.0


class ServerError(RuntimeError):
    pass


def _run(cmd: Sequence[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise ServerError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


_apt_updated: list[bool] = []  # apt-get update once per process, however many packages are missing


def _apt_install(packages: Sequence[str]) -> None:
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise ServerError(f"{', '.join(packages)} missing and not root: install them with apt-get")
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        _run([*prefix, "apt-get", "update", "-qq"], "apt-get update", env)
        _apt_updated.append(True)
    _run(
        [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        "apt-get install",
        env,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


@dataclass
class Server:
    name: str
    settings: Settings
    install: Callable[[], None]
    prepare: Callable[[Path], list[str]]  # writes config under the data folder, returns the command line
    ready: Callable[[], bool]
    address: Callable[[], str]
    env: Callable[[], dict[str, str]] = lambda: {}

    @property
    def data(self) -> Path:
        return self.settings.local_dir / self.name

    @property
    def pid_file(self) -> Path:
        return self.data / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.data / "console.log"

    def pid(self) -> int | None:
        """The recorded PID if that process is alive and is ours: started in our data folder. (Redis rewrites
        its command line, and a reused PID belongs to some other program: neither may be stopped.)"""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _pid_alive(pid) and _cwd(pid) == str(self.data.resolve()):
            return pid
        return None

    def log_tail(self, lines: int = 30) -> str:
        texts = []
        for path in (self.log_file, self.data / "server.log"):
            if path.exists():
                texts.append(
                    f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                )
        return "\n".join(texts) or "(no log)"

    def start(self) -> str:
        if self.pid() is not None:
            if self._wait_ready(START_TIMEOUT_S):
                return f"{self.name} already running at {self.address()}"
            raise ServerError(f"{self.name} is running but not ready\n{self.log_tail()}")
        self.install()
        self.data.mkdir(parents=True, exist_ok=True)
        command = self.prepare(self.data)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data,
                env={**os.environ, **self.env()},
                start_new_session=True,  # outlives this command, and a Ctrl-C here does not reach it
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {proc.returncode} at start\n{self.log_tail()}")
            if self.ready():
                return f"{self.name} started at {self.address()} (pid {proc.pid})"
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"{self.name} not ready after {START_TIMEOUT_S:.0f}s\n{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return True
            time.sleep(0.5)
        return False

    def stop(self) -> str:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return f"{self.name} not running"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        forced = _pid_alive(pid)
        if forced:
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return f"{self.name} stopped (pid {pid}{', killed after TERM timed out' if forced else ''})"

    def status(self) -> tuple[bool, str]:
        pid = self.pid()
        if pid is None:
            return False, f"{self.name}: stopped"
        if self.ready():
            return True, f"{self.name}: running and ready at {self.address()} (pid {pid})"
        return False, f"{self.name}: running (pid {pid}) but not ready at {self.address()}"


# --- Kafka ------------------------------------------------------------------------------------------------


def kafka_lib(settings: Settings) -> Path:
    return settings.cache_dir / f"kafka-{settings.kafka_version}" / "lib"


def _install_kafka(settings: Settings) -> None:
    if shutil.which("java") is None:
        _apt_install(["default-jre-headless"])
    lib = kafka_lib(settings)
    marker = lib / ".complete"
    if marker.exists():
        return
    if shutil.which("mvn") is None:
        _apt_install(["maven"])
    partial = lib.with_name("lib.partial")
    shutil.rmtree(partial, ignore_errors=True)
    _run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(DEPLOY / "local" / "kafka-pom.xml"),
            f"-Dkafka.version={settings.kafka_version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
        ],
        "fetching the Kafka jars with Maven",
    )
    (partial / ".complete").write_text(settings.kafka_version + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)


def _prepare_kafka(settings: Settings, data: Path) -> list[str]:
    template = (DEPLOY / "local" / "kafka-server.properties").read_text()
    config = data / "server.properties"
    config.write_text(
        template.format(
            port=settings.local_kafka_port, controller_port=settings.local_kafka_controller_port, data=data
        )
    )
    java = [
        "java",
        f"-Xmx{settings.local_kafka_heap}",
        f"-Xms{settings.local_kafka_heap}",
        f"-Dlog4j2.configurationFile={DEPLOY / 'local' / 'kafka-log4j2.properties'}",
        f"-Dkafka.logs.dir={data}",
        "-cp",
        f"{kafka_lib(settings)}/*",
    ]
    if not (data / "logs" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        _run(
            # "--cluster-id=...": a random id may start with "-", which would read as an option
            [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)],
            "formatting Kafka storage",
        )
    return [*java, "kafka.Kafka", str(config)]


def kafka_ready(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """Ready means a produce with acks=all is acknowledged, not merely that the port is open."""
    from aiokafka import AIOKafkaProducer

    logging.getLogger("aiokafka").setLevel(
        logging.CRITICAL
    )  # refused connections are expected while starting

    async def probe() -> bool:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", request_timeout_ms=int(timeout_s * 1000)
        )
        try:
            await asyncio.wait_for(producer.start(), timeout_s)
            await asyncio.wait_for(producer.send_and_wait("__mrr_ready", b"ping"), timeout_s)
            return True
        except Exception:
            return False
        finally:
            await producer.stop()

    return asyncio.run(probe())


# --- Redis --------------------------------------------------------------------------------------------------


def _install_debian(binary: str, package: str) -> Callable[[], None]:
    def install() -> None:
        if shutil.which(binary) is None:
            _apt_install([package])

    return install


def _prepare_redis(settings: Settings, data: Path) -> list[str]:
    persistence = (
        ["--appendonly", "yes", "--save", "60 1000"]
        if settings.local_redis_persist
        else ["--appendonly", "no", "--save", ""]
    )
    return [
        "redis-server",
        "--port",
        str(settings.local_redis_port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        *persistence,
    ]


def redis_ready(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return bool(client.ping())
    except redis.RedisError:
        return False


# --- Prometheus ---------------------------------------------------------------------------------------------


def prometheus_targets_dir(settings: Settings) -> Path:
    """Drop a file_sd JSON file here and the local Prometheus scrapes its targets within seconds."""
    return settings.local_dir / "prometheus" / "targets"


def prometheus_token_file(settings: Settings) -> Path:
    return settings.local_dir / "prometheus" / "metrics_token"


def local_prometheus_config(settings: Settings) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with its service targets (scraped, and the Alertmanager it alerts)
    pointed at 127.0.0.1, the metrics token as configured here, plus file discovery."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    ports = {
        "worker": settings.metrics_port,
        "api": settings.api_port,
        "alertmanager": settings.local_alertmanager_port,
    }
    jobs = [*config.get("scrape_configs", []), *config.get("alerting", {}).get("alertmanagers", [])]
    for job in jobs:
        for static in job.get("static_configs", []):
            local = []
            for target in static.get("targets", []):
                host, _, port = target.rpartition(":")
                local.append(f"127.0.0.1:{ports.get(host, port)}")
            static["targets"] = local
    for job in config.get("scrape_configs", []):
        # compose hands Prometheus the metrics token as a secret file; here it is MRR_METRICS_TOKEN's (the
        # first, if several), which _prepare_prometheus writes; without one /metrics is open.
        if "credentials_file" in job.get("authorization", {}):
            if tokens(settings.metrics_token):
                job["authorization"]["credentials_file"] = str(prometheus_token_file(settings))
            else:
                del job["authorization"]
    config["rule_files"] = [str(DEPLOY / "prometheus" / rule) for rule in config.get("rule_files", [])]
    config["scrape_configs"].append(
        {
            "job_name": "local-targets",
            "file_sd_configs": [
                {"files": [str(prometheus_targets_dir(settings) / "*.json")], "refresh_interval": "5s"}
            ],
        }
    )
    return config


def _prepare_prometheus(settings: Settings, data: Path) -> list[str]:
    prometheus_targets_dir(settings).mkdir(parents=True, exist_ok=True)
    token = tokens(settings.metrics_token)
    if token:
        fd = os.open(prometheus_token_file(settings), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a file left by an earlier start keeps its mode otherwise
        with os.fdopen(fd, "wb") as out:
            out.write(token[0])
    config = data / "prometheus.yml"
    config.write_text(yaml.safe_dump(local_prometheus_config(settings), sort_keys=False))
    return [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={data / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{settings.local_prometheus_port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=7d",
    ]


# --- Alertmanager -------------------------------------------------------------------------------------------


def local_alertmanager_config(settings: Settings) -> dict[str, Any]:
    """deploy/alertmanager/alertmanager.yml with every webhook URL replaced by MRR_ALERT_WEBHOOK_URL when it
    is set. Unset, the file's own URL stays: a receiver on this machine (see the file)."""
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    if settings.alert_webhook_url:
        for receiver in config.get("receivers", []):
            for webhook in receiver.get("webhook_configs", []):
                webhook["url"] = settings.alert_webhook_url
    return config


def _prepare_alertmanager(settings: Settings, data: Path) -> list[str]:
    config = data / "alertmanager.yml"
    config.write_text(yaml.safe_dump(local_alertmanager_config(settings), sort_keys=False))
    at = f"127.0.0.1:{settings.local_alertmanager_port}"
    return [
        "prometheus-alertmanager",  # Debian's name for the alertmanager binary
        f"--config.file={config}",
        f"--storage.path={data / 'data'}",
        f"--web.listen-address={at}",
        # the links in notifications; the default would name this host, which may not resolve elsewhere
        f"--web.external-url=http://{at}",
        # one instance, no gossip: its default, 9094 on every interface, would clash with any other
        # Alertmanager on this machine and be reachable from the network
        "--cluster.listen-address=",
    ]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


# --- all of them --------------------------------------------------------------------------------------------


def _noop() -> None:
    pass


def _background(name: str, settings: Settings, env: dict[str, str], ready_url: str, address: str) -> Server:
    """A `mrr-stream NAME` process in the background, as the demo runs it (stopped by `servers stop`)."""
    return Server(
        name,
        settings,
        _noop,
        lambda _: [sys.executable, "-m", "processors.cli", name],
        lambda: http_ok(ready_url),
        lambda: address,
        lambda: env,
    )


def worker_server(settings: Settings, env: dict[str, str]) -> Server:
    metrics = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    return _background("worker", settings, env, metrics, metrics)


def api_server(settings: Settings, env: dict[str, str]) -> Server:
    page = f"http://127.0.0.1:{settings.api_port}/"
    return _background("api", settings, env, f"{page}api/openapi.json", page)


def servers(settings: Settings | None = None) -> dict[str, Server]:
    s = settings or Settings()
    kafka_at = f"127.0.0.1:{s.local_kafka_port}"
    redis_at = f"redis://127.0.0.1:{s.local_redis_port}/0"
    prometheus_at = f"http://127.0.0.1:{s.local_prometheus_port}"
    alertmanager_at = f"http://127.0.0.1:{s.local_alertmanager_port}"
    return {
        "kafka": Server(
            "kafka",
            s,
            lambda: _install_kafka(s),
            lambda d: _prepare_kafka(s, d),
            lambda: kafka_ready(kafka_at),
            lambda: kafka_at,
        ),
        "redis": Server(
            "redis",
            s,
            _install_debian("redis-server", "redis-server"),
            lambda d: _prepare_redis(s, d),
            lambda: redis_ready(redis_at),
            lambda: redis_at,
        ),
        "alertmanager": Server(
            "alertmanager",
            s,
            _install_debian("prometheus-alertmanager", "prometheus-alertmanager"),
            lambda d: _prepare_alertmanager(s, d),
            lambda: http_ok(f"{alertmanager_at}/-/ready"),
            lambda: alertmanager_at,
        ),
        "prometheus": Server(
            "prometheus",
            s,
            _install_debian("prometheus", "prometheus"),
            lambda d: _prepare_prometheus(s, d),
            lambda: http_ok(f"{prometheus_at}/-/ready"),
            lambda: prometheus_at,
        ),
        "worker": worker_server(s, {}),
        "api": api_server(s, {}),
    }
