"""Stripe as a source, end to end on the real servers: signed webhook POSTs -> the receiver -> the Stripe
topic -> the worker's Stripe agent -> the input topic -> the fold -> Redis, which must equal `mrr-stream
stripe import` of the same events piped into `mrr-stream replay`."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import stripe

from processors import clock
from processors.generate import parse_month
from processors.replay import replay
from processors.sources.stripe.generate import as_delivered, stripe_history
from tests.e2e.harness import Stream, free_port, status_and_replay_json, webhook_process

SECRET = "whsec_e2e_5f1d0c9b7a3e4d2c"


def post(url: str, body: bytes, secret: str = SECRET) -> int:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret)
    request = urllib.request.Request(
        url, data=body, headers={"Stripe-Signature": header, "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_signed_webhooks_through_the_stream_equal_the_import_replayed(stream: Stream, tmp_path: Path) -> None:
    events = stripe_history(60, 12, 12, parse_month("2025-06"))
    bodies = as_delivered([json.dumps(e).encode() for e in events], 12, 0.05)  # some resent, in no order
    path = tmp_path / "stripe.jsonl"
    path.write_bytes(b"\n".join(bodies) + b"\n")
    billing = tmp_path / "billing.jsonl"
    cli = [sys.executable, "-m", "processors.cli"]
    subprocess.run([*cli, "stripe", "import", str(path), "-o", str(billing)], check=True, capture_output=True)
    lines = billing.read_bytes().splitlines()
    outcome = replay(((str(i), line) for i, line in enumerate(lines)), at=clock.now())
    assert len(outcome.accounts) > 30 and not outcome.rejects
    assert {m.type for m in outcome.movements} >= {"new", "expansion", "contraction", "churn"}

    worker = stream.add_worker(free_port())
    worker.start()
    receiver_log = tmp_path / "webhook.log"
    with webhook_process(stream, SECRET, receiver_log) as url:
        assert post(url, bodies[0], secret="whsec_not_it") == 400  # stored nothing
        half = len(bodies) // 2
        assert all(post(url, body) == 200 for body in bodies[:half])
        worker.kill9()  # mid-stream: the Stripe agent's work since its last commit is done again
        worker.start()
        assert all(post(url, body) == 200 for body in bodies[half:])
        stream.wait_until(outcome.months, 0, timeout=180)
    status, replayed = status_and_replay_json(stream, billing)
    assert status == replayed
    logs = receiver_log.read_text(errors="replace") + worker.log.read_text(errors="replace")
    assert SECRET not in logs and "signature refused" in logs
