"""Kafka connection options from the settings, for Faust and for plain aiokafka clients alike."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import SecretStr

from processors.settings import Settings


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if "SSL" not in settings.kafka_security_protocol:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = _ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=_secret(settings.kafka_sasl_password),
        )
    return options


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def faust_broker(settings: Settings) -> tuple[str, Any]:
    """Faust's broker URL list and credentials for the same options."""
    url = ";".join(f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(","))
    context = _ssl_context(settings)
    credentials: Any = None
    if settings.kafka_security_protocol.startswith("SASL"):
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=_secret(settings.kafka_sasl_password),
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    return url, credentials


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str], timeout: float = 15.0) -> None:
    """A new topic takes a moment to elect its leaders; producing before that only logs retries."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        described = await admin.describe_topics(topics)
        if all(t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
            return
        await asyncio.sleep(0.2)


HEADROOM = 64 * 1024  # room above MRR_MAX_RECORD_BYTES for a forwarded or dead-lettered copy's headers


def topic_bytes(settings: Settings) -> int:
    """The largest record the worker's topics take (their max.message.bytes) and its clients send: the
    input limit plus HEADROOM."""
    return settings.max_record_bytes + HEADROOM


def by_account_topic(settings: Settings) -> str:
    """The internal topic where intake re-keys events by account for fold."""
    return f"{settings.app_id}-events-by-account"


async def ensure_topics(settings: Settings, internal: bool = False) -> int:
    """Create the input, movements, dead-letter and Stripe topics (and with internal=True the
    by-account topic) if they do not exist. A worker creates them all before Faust starts: when two
    workers start together, a group leader that assigns partitions while the other is still creating a
    topic leaves that topic unassigned until the next metadata refresh, minutes later. Returns the input
    topic's partition count."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        brokers = len((await admin.describe_cluster())["brokers"])
        factor = 1 if brokers == 1 else min(3, brokers)
        # the Stripe topic has one partition: its agent keeps the catalog (coupons, prices) beside the
        # subscriptions, and Stripe's event rate is far below what one partition carries
        names = {
            settings.input_topic: settings.partitions,
            settings.movements_topic: settings.partitions,
            settings.dlq_topic: settings.partitions,
            settings.stripe_events_topic: 1,
            **({by_account_topic(settings): settings.partitions} if internal else {}),
        }
        wanted = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=factor,
                # the input may carry records up to the limit; copies of them carry a little more
                topic_configs={"max.message.bytes": str(topic_bytes(settings))},
            )
            for name, partitions in names.items()
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was quicker
                await admin.create_topics(wanted)
            await _wait_for_leaders(admin, [t.name for t in wanted])
        described = await admin.describe_topics([settings.input_topic])
        return len(described[0]["partitions"])
    finally:
        await admin.close()
