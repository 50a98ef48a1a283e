"""`mrr-stream demo`: the whole pipeline on this machine, reconciled against the in-process replay.

Starts the local Kafka, Redis, Prometheus and Alertmanager (installing what is missing), generates a year
of billing for a few thousand accounts (shuffled, with duplicates, late events and bad lines), runs the
worker in the background, streams the history through Kafka, waits until Redis holds the result, and
prints it beside the replay of the same file with a verdict. The worker keeps running for Prometheus and
`mrr-stream status`; `mrr-stream servers stop` stops it with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table

from processors import clock
from processors.cli import render
from processors.cli.produce_cmd import produce, read_lines
from processors.cli.replay_cmd import run_replay
from processors.devtools.servers import NAMES, ServerError, api_server, servers, worker_server
from processors.generate import HistoryGenerator, add_months, arrange, parse_month
from processors.replay import ReplayOutcome
from processors.settings import Settings
from processors.sinks.redis_view import RedisView, read_months
from schemas.aggregate import MonthlyAggregate


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline locally and reconcile it with the replay")
    p.add_argument("--accounts", type=int, default=3000)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument(
        "--start",
        type=parse_month,
        default=None,
        metavar="YYYY-MM",
        help="the history's first month (default: so that its last month is this one: the page then shows "
        "a business in motion, with changes scheduled for the rest of the month)",
    )
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the stream to catch up")
    p.add_argument(
        "--stripe",
        action="store_true",
        help="start from a generated Stripe history instead: its webhook events (shuffled, some resent) go "
        "to the Stripe topic, where the worker's Stripe agent maps them; the replay is of `mrr-stream "
        "stripe import` of the same events",
    )
    p.set_defaults(run=run)


def demo_settings(base: Settings, run_id: str) -> tuple[Settings, dict[str, str]]:
    """Fresh topics and consumer group for each run; the default Redis prefix, so that `mrr-stream status`
    and the dashboards show the demo."""
    names = {
        "app_id": f"mrr-demo-{run_id}",
        "input_topic": f"demo-{run_id}-billing-events",
        "movements_topic": f"demo-{run_id}-mrr-movements",
        "dlq_topic": f"demo-{run_id}-billing-events-dlq",
        "stripe_events_topic": f"demo-{run_id}-stripe-events",
    }
    settings = base.model_copy(update=names)
    env = {f"MRR_{k.upper()}": str(v) for k, v in names.items()}
    env |= {
        "MRR_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MRR_REDIS_URL": settings.redis_url.get_secret_value(),
        "MRR_REDIS_PREFIX": settings.redis_prefix,
        "MRR_METRICS_PORT": str(settings.metrics_port),
    }
    return settings, env


async def _reset_redis(settings: Settings) -> None:
    view = RedisView(settings.redis_url.get_secret_value(), settings.redis_prefix)
    try:
        keys = [k async for k in view.client.scan_iter(f"{settings.redis_prefix}*")]
        for i in range(0, len(keys), 500):
            await view.client.delete(*keys[i : i + 500])
    finally:
        await view.close()


def stripe_demo(
    source: Path, billing: Path, customers: int, months: int, seed: int, start: datetime
) -> list[str]:
    """A Stripe history as its webhooks would arrive (shuffled, 5% resent), and its import."""
    import json

    from processors.sources.stripe.generate import as_delivered, stripe_history
    from processors.sources.stripe.mapping import Mapper, to_json

    events = as_delivered(stripe_history(customers, months, seed, start), seed, 0.05)
    mapper = Mapper()
    lines = [json.dumps(e, separators=(",", ":")) for e in events]
    source.write_text("\n".join(lines) + "\n")
    billing.write_text("".join(to_json(b) + "\n" for e in events for b in mapper.feed(e).events))
    return lines


def reconciliation(replayed: list[MonthlyAggregate], streamed: list[MonthlyAggregate]) -> tuple[Table, int]:
    by_key = {(m.currency, m.month): m for m in streamed}
    t = Table(title="Stream (Redis) beside the replay", header_style="bold")
    for col in (
        "Month",
        "Cur",
        "Closing (replay)",
        "Closing (Redis)",
        "Net new (replay)",
        "Net new (Redis)",
        "Customers",
        "Fields equal",
    ):
        # two-line headers and unwrapped money: a figure is never cut, down to 100 columns
        justify: JustifyMethod = "left" if col in ("Month", "Cur") else "right"
        t.add_column(col.replace(" (", "\n("), justify=justify, no_wrap="(" in col)
    mismatches = 0
    for r in replayed:
        s = by_key.get((r.currency, r.month))
        equal = s == r
        mismatches += not equal
        t.add_row(
            r.month,
            r.currency,
            render.money(r.closing_mrr),
            render.money(s.closing_mrr if s else None),
            render.money(r.net_new_mrr),
            render.money(s.net_new_mrr if s else None),
            f"{r.customers_closing} / {s.customers_closing if s else '-'}",
            "[green]all 19[/]" if equal else "[red]differ[/]",
        )
    mismatches += len(set(by_key) - {(r.currency, r.month) for r in replayed})
    return t, mismatches


def run(args: argparse.Namespace) -> int:
    console = Console() if Console().is_terminal else Console(width=160)
    base = Settings()
    run_id = time.strftime("%Y%m%d%H%M%S")
    settings, env = demo_settings(base, run_id)
    this_month = datetime.fromtimestamp(clock.now() / 1_000_000, UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    start: datetime = args.start or add_months(this_month, 1 - args.months)
    known = servers(base)
    try:
        for name in NAMES:
            with console.status(f"starting {name} (installing it first if needed)"):
                console.print(known[name].start())
    except ServerError as exc:
        console.print(f"[red]error:[/] {exc}", markup=False)
        return 1

    folder = base.local_dir / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "history.jsonl"
    topic = settings.input_topic
    if args.stripe:
        source = folder / "stripe-events.jsonl"
        with console.status("generating a year of Stripe webhook events"):
            stripe_lines = stripe_demo(source, path, args.accounts, args.months, args.seed, start)
        lines = path.read_text().splitlines()
        console.print(
            f"{len(stripe_lines):,} Stripe events for {args.accounts:,} customers, written to {source} "
            f"(shuffled, some resent); `mrr-stream stripe import` maps them to {len(lines):,} billing "
            f"events in {path}"
        )
        topic = settings.stripe_events_topic
    else:
        with console.status("generating a year of billing"):
            events = HistoryGenerator(args.accounts, args.months, args.seed, start).events()
            lines = arrange(events, args.seed, shuffle=True, duplicates=0.05, late=0.2, bad=0.002)
            path.write_text("\n".join(lines) + "\n")
        console.print(
            f"{len(events):,} billing events for {args.accounts:,} accounts, written to {path} as "
            f"{len(lines):,} lines: shuffled, with duplicates, late events and bad lines"
        )
    replayed: ReplayOutcome = run_replay([str(path)], show_progress=console.is_terminal)

    worker = worker_server(settings, env)
    worker.stop()  # a worker of an earlier demo run would read the old topics
    api = api_server(settings, env)
    asyncio.run(_reset_redis(settings))
    try:
        console.print(worker.start())
        console.print(api.start())
    except ServerError as exc:
        console.print(f"[red]error:[/] {exc}", markup=False)
        return 1
    with console.status("producing to Kafka"):
        if args.stripe:
            records = read_lines(folder / "stripe-events.jsonl")
            asyncio.run(produce(settings, records, topic=topic, keyed=0))
        else:
            records = read_lines(path)
            asyncio.run(produce(settings, records))
    console.print(f"streamed {len(records):,} records to {topic}")

    deadline = time.monotonic() + args.timeout
    streamed: list[MonthlyAggregate] = []
    rejected = -1
    with console.status("waiting for the worker to catch up") as status:
        while time.monotonic() < deadline:
            streamed, rejected = asyncio.run(
                read_months(settings.redis_url.get_secret_value(), settings.redis_prefix)
            )
            if streamed == replayed.months and rejected == len(replayed.rejects):
                break
            status.update(
                f"waiting for the worker to catch up: {len(streamed)} of {len(replayed.months)} rows"
            )
            time.sleep(1)

    render.print_table(streamed, f"MRR by month, from Redis (prefix {settings.redis_prefix!r})", console)
    table, mismatches = reconciliation(replayed.months, streamed)
    console.print(table)
    if mismatches == 0 and rejected == len(replayed.rejects):
        console.print(
            f"[bold green]RECONCILED[/]: all {len(replayed.months)} month rows in Redis equal the "
            f"replay field by field, to the cent; {rejected} bad lines dead-lettered to "
            f"{settings.dlq_topic}."
        )
        code = 0
    else:
        console.print(
            f"[bold red]NOT RECONCILED[/]: {mismatches} rows differ; dead letters {rejected} in Redis "
            f"vs {len(replayed.rejects)} rejected by the replay. Worker log: "
            f"{worker.log_file}"
        )
        code = 1
    prometheus = known["prometheus"].address()
    last_year = add_months(start, args.months - 1).year
    console.print(
        "\nWhere to look:\n"
        f"  revenue page     {api.address()}   (live; the API is under /api, see /api/openapi.json)\n"
        f"  report           mrr-stream report --year {last_year} --currency USD   (table + PNG chart)\n"
        f"  worker metrics   {worker.address()}\n"
        f"  Prometheus       {prometheus}/graph?g0.expr=mrr_current_mrr (scraped every 5 s), alerts: "
        f"{prometheus}/alerts\n"
        f"  Alertmanager     {known['alertmanager'].address()}   (where alerts go: MRR_ALERT_WEBHOOK_URL)\n"
        f"  Redis            redis-cli -p {base.local_redis_port} hgetall {settings.redis_prefix}current\n"
        "  the table again  mrr-stream status   (or: mrr-stream status --format json)\n"
        f"  movements topic  {settings.movements_topic} on {settings.kafka_bootstrap}\n"
        "  stop everything  make stop   (mrr-stream servers stop)",
        markup=False,
    )
    return code
