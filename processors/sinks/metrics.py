"""Prometheus metrics of the worker. Money is exported in currency units as float64, as Prometheus holds
every sample: fine for charts and alerts. The exact figures, to the cent, are in Redis."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from processors.core.movement import Movement
from schemas.aggregate import MonthlyAggregate
from schemas.scheduled import ScheduledChanges


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._published: dict[tuple[str, str, str], tuple[Counter, Counter]] = {}
        self._outcomes: dict[str, Counter] = {}
        self.events = Counter(
            "mrr_events_total",
            "Billing events by outcome: applied, duplicate (a resend), "
            "replayed (redelivered after a crash), rejected, conflict",
            ["outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "mrr_dead_letters_total",
            "Records sent to the dead-letter topic, by the field that failed",
            ["field"],
            registry=registry,
        )
        self.movements = Counter(
            "mrr_movements_total",
            "Movement records published, by type, currency and record (movement or retraction)",
            ["type", "currency", "record"],
            registry=registry,
        )
        self.movement_amount = Counter(
            "mrr_movement_amount_total",
            "Size of the movement records published, in currency units",
            ["type", "currency", "record"],
            registry=registry,
        )
        self.current_mrr = Gauge(
            "mrr_current_mrr",
            "Current MRR per currency, in currency units (the same "
            "value on every worker: aggregate with max)",
            ["currency"],
            registry=registry,
        )
        self.customers = Gauge(
            "mrr_customers", "Accounts with MRR > 0 per currency", ["currency"], registry=registry
        )
        self.net_new_mtd = Gauge(
            "mrr_net_new_mrr_month_to_date",
            "Net new MRR of the latest month, in currency units",
            ["currency"],
            registry=registry,
        )
        self.churn_mtd = Gauge(
            "mrr_churn_mrr_month_to_date",
            "Churned MRR of the latest month, in currency units",
            ["currency"],
            registry=registry,
        )
        self.lag = Gauge(
            "mrr_processing_lag_seconds",
            "Seconds since the worker last had every assigned partition processed to its end offset "
            "(0 while it keeps up; rises while it is stuck or behind), updated every second",
            ["stage"],
            registry=registry,
        )
        self.records_behind = Gauge(
            "mrr_records_behind",
            "Records between what the worker has processed and its partitions' end offsets",
            registry=registry,
        )
        self.redis_pending = Gauge(
            "mrr_redis_pending_accounts",
            "Accounts whose Redis view waits for Redis to come back",
            registry=registry,
        )
        self.view_rebuilding = Gauge(
            "mrr_redis_view_rebuilding",
            "1 while the worker rebuilds the Redis view from its tables (Redis lost it)",
            registry=registry,
        )
        self.view_rebuilds = Counter(
            "mrr_redis_view_rebuilds",
            "Times the worker found the Redis view gone and rebuilt it",
            registry=registry,
        )
        self.refetched = Counter(
            "mrr_records_refetched",
            "Records the consumer skipped (around a rebalance) that the fold read again from the broker",
            registry=registry,
        )
        self.stripe_events = Counter(
            "mrr_stripe_events",
            "Stripe events the Stripe agent read, by outcome: mapped (into billing events or state, or into "
            "nothing: a renewal), skipped (nothing but a skip reason: see mrr_stripe_skipped_total, also "
            "counting parts of mapped events), parked (waiting for a coupon, "
            "discount or price not seen yet), unreadable (not a JSON object) and failed (the mapping "
            "raised): both dead-lettered",
            ["outcome"],
            registry=registry,
        )
        self.stripe_skipped = Counter(
            "mrr_stripe_skipped",
            "Stripe events or parts of them the mapping does not carry into MRR, by reason",
            ["reason"],
            registry=registry,
        )
        self.stripe_parked = Gauge(
            "mrr_stripe_parked_events",
            "Stripe events waiting in the Stripe table for a coupon, discount or price not seen yet (a "
            "discount applied before the webhook endpoint existed never comes by event: set "
            "MRR_STRIPE_API_KEY so that the worker asks Stripe for it)",
            registry=registry,
        )
        self.stripe_billing_events = Counter(
            "mrr_stripe_billing_events",
            "Billing events the Stripe agent produced to the input topic",
            registry=registry,
        )
        self.scheduled_mrr = Gauge(
            "mrr_scheduled_mrr",
            "MRR that scheduled events (effective after now) will move within the window, by movement "
            "type, in currency units (positive; churn and contraction lower MRR)",
            ["type", "currency", "window"],
            registry=registry,
        )
        self.scheduled_accounts = Gauge(
            "mrr_scheduled_accounts",
            "Accounts behind mrr_scheduled_mrr",
            ["type", "currency", "window"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "mrr_batch_seconds", "Time to process one batch, by stage", ["stage"], registry=registry
        )

    def published(self, movement: Movement) -> None:
        labels = (movement.type, movement.currency, movement.record)
        # the labelled children, looked up once: labels() costs more than the increments (never cleared)
        children = self._published.get(labels)
        if children is None:
            children = self._published[labels] = (
                self.movements.labels(*labels),
                self.movement_amount.labels(*labels),
            )
        children[0].inc()
        children[1].inc(abs(movement.amount) / 100)

    def outcome(self, name: str) -> Counter:
        """The `mrr_events_total` child of an outcome (never cleared: kept once looked up)."""
        child = self._outcomes.get(name)
        if child is None:
            child = self._outcomes[name] = self.events.labels(name)
        return child

    def scheduled(self, windows: list[ScheduledChanges]) -> None:
        """The scheduled totals of each window (30d, 60d, 90d); a series with nothing left is removed."""
        self.scheduled_mrr.clear()
        self.scheduled_accounts.clear()
        for changes in windows:
            window = f"{changes.days}d"
            for t in changes.totals:
                self.scheduled_mrr.labels(t.type, t.currency, window).set(t.amount / 100)
                self.scheduled_accounts.labels(t.type, t.currency, window).set(len(t.accounts))

    def rows(self, rows: list[MonthlyAggregate]) -> None:
        latest: dict[str, MonthlyAggregate] = {}
        for row in rows:
            latest[row.currency] = row  # rows come by currency, then month: the last is the latest
        for currency, row in latest.items():
            self.current_mrr.labels(currency).set(row.closing_mrr / 100)
            self.customers.labels(currency).set(row.customers_closing)
            self.net_new_mtd.labels(currency).set(row.net_new_mrr / 100)
            self.churn_mtd.labels(currency).set(row.churn_mrr / 100)
