"""The one settings object, read from MRR_* environment variables (and a .env file if present)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.core.intake import MAX_RECORD_BYTES

REPO_ROOT = Path(__file__).resolve().parents[1]


def _project_root() -> Path:
    # In a checkout, next to the code (ignored by git); in an installed package, the working directory.
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").exists() else Path.cwd()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MRR_", env_file=".env", extra="ignore")

    # Kafka (the worker, the producer CLI, the tests)
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    app_id: str = Field(default="mrr-stream", description="Kafka consumer group and internal topic prefix")
    partitions: int = Field(default=4, description="partitions of the topics and tables the app creates")
    batch_size: int = Field(default=2000, description="events per take() batch")
    # The wait after each batch for the next one to fill: at a steady 1,000 events/s the p99 from produce to
    # Redis was 180-300 ms with 0.05 s and 90-190 ms with 0.02 s (bench/stream.py); a backlog fills batches.
    batch_seconds: float = Field(default=0.02, description="longest wait to fill a batch")
    refresh_seconds: float = Field(default=0.5, description="how often Redis rows and gauges are refreshed")
    table_store: str = Field(
        default="memory://",
        description="Faust table store: memory:// (rebuilt from the changelog at start) or rocksdict:// "
        "(on disk under data_dir; a restart reads only the changelog's newer records)",
    )
    data_dir: Path | None = Field(
        default=None, description="where a rocksdict store keeps its files (Faust's default: ./{app_id}-data)"
    )
    max_record_bytes: int = Field(
        default=MAX_RECORD_BYTES,
        description="the largest input record applied; a larger one is dead-lettered with its first KB, its "
        "size and its SHA-256. The topics the worker creates and its producer allow this plus 64 KB",
    )
    input_topic: str = "billing-events"
    movements_topic: str = "mrr-movements"
    dlq_topic: str = "billing-events-dlq"

    # Stripe as a source (processors/sources/stripe/): the webhook receiver and the mapping agent
    stripe_events_topic: str = Field(
        default="stripe-events",
        description="raw Stripe Event objects, as verified by the webhook receiver; one partition, so that "
        "coupon and price events are read in order with the subscriptions that use them",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, description="the endpoint's signing secret (whsec_...); the receiver needs it"
    )
    stripe_api_key: SecretStr | None = Field(
        default=None,
        description="optional: a restricted key (read access to coupons and prices) the worker asks Stripe "
        "with for a coupon or price not seen in the stream; without it such an event waits for its event",
    )
    stripe_webhook_addr: str = Field(default="127.0.0.1", description="address the receiver listens on")
    stripe_webhook_port: int = 8090
    stripe_webhook_tolerance: int = Field(
        default=300, description="seconds a signature's timestamp may be old (Stripe's default: 300)"
    )

    # Redis and Prometheus
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:16379/0"),
        description="redis://[user:password@]host:port/db (rediss:// for TLS); a secret, never printed",
    )
    redis_prefix: str = Field(default="mrr:", description="every key the stream writes starts with this")
    prometheus_url: str = "http://127.0.0.1:19090"
    metrics_port: int = 9108
    metrics_addr: str = Field(
        default="127.0.0.1",
        description="address the worker's /metrics listens on (0.0.0.0 for every interface, as in compose)",
    )
    api_port: int = 8080
    api_addr: str = Field(default="127.0.0.1", description="address the API and page listen on")
    api_token: SecretStr | None = Field(
        default=None,
        description="bearer tokens the API and page require, comma-separated (several, so one can be "
        "rotated); none: open to anyone who reaches the address",
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="bearer token the worker's and the API's /metrics require; none: open"
    )

    # Local servers started by `mrr-stream servers start` (development, CI and the demo)
    local_dir: Path = Field(default_factory=lambda: _project_root() / ".local", description="servers' data")
    cache_dir: Path = Field(default_factory=lambda: _project_root() / ".cache", description="Kafka's jars")
    local_kafka_port: int = 19092
    local_kafka_controller_port: int = 19093
    local_kafka_heap: str = "512m"
    local_redis_port: int = 16379
    local_redis_persist: bool = False
    local_prometheus_port: int = 19090
    local_alertmanager_port: int = 19094
    alert_webhook_url: str | None = Field(
        default=None, description="where the local Alertmanager's webhook receiver posts notifications"
    )
    kafka_version: str = "4.1.1"
