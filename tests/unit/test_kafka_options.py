"""Kafka security settings reach aiokafka and Faust (no SASL/SSL broker runs here: the mapping is tested)."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from processors.settings import Settings
from processors.stream.kafka import by_account_topic, client_options, faust_broker


def test_plaintext_by_default() -> None:
    settings = Settings(kafka_bootstrap="a:9092,b:9092")
    assert client_options(settings) == {
        "bootstrap_servers": "a:9092,b:9092",
        "security_protocol": "PLAINTEXT",
    }
    url, credentials = faust_broker(settings)
    assert url == "kafka://a:9092;kafka://b:9092" and credentials is None
    assert by_account_topic(settings) == "mrr-stream-events-by-account"


def test_sasl_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRR_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MRR_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("MRR_KAFKA_SASL_USERNAME", "mrr")
    monkeypatch.setenv("MRR_KAFKA_SASL_PASSWORD", "secret")
    settings = Settings()
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "mrr",
        "secret",
    )
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    _, credentials = faust_broker(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "mrr" and credentials.ssl_context is not None


def test_ssl_with_a_missing_ca_file_fails_loudly(tmp_path: Path) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(FileNotFoundError):
        client_options(settings)


@pytest.mark.parametrize("max_record_bytes", [1_000_000, 100_000, 5_000_000])
def test_producer_batches_fit_every_topic_the_worker_writes(max_record_bytes: int) -> None:
    """A produce batch larger than a topic's max.message.bytes is refused by the broker (the worker would
    exit, again at every restart): batches stay within the topics the worker creates (the limit plus
    HEADROOM) and within Kafka's default 1 MB of the changelogs, yet far above aiokafka's 16 KB."""
    from prometheus_client import CollectorRegistry

    from processors.sinks.metrics import Metrics
    from processors.stream.app import create_app
    from processors.stream.kafka import topic_bytes

    settings = Settings(max_record_bytes=max_record_bytes)
    app = create_app(settings, Metrics(CollectorRegistry()))
    batch = app.conf.producer_max_batch_size
    assert batch <= topic_bytes(settings) == max_record_bytes + 64 * 1024 and batch <= 1_000_000
    assert batch >= 128 * 1024
    assert app.conf.producer_max_request_size >= batch
