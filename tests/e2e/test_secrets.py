"""Protected revenue data end to end: a Redis run with docker-compose.yml's own command line (a password for
the worker and a least-privilege read-only ACL user for the API), API tokens, a metrics token. The worker
folds into the protected Redis; the API reads it with the read-only user and answers only with a token;
the read-only user can write nothing; and no configured secret appears in any log of the run, nor in a
mistake's message."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import yaml
from pydantic import SecretStr

from processors import clock
from processors.cli.produce_cmd import produce, read_lines
from processors.devtools.servers import redis_ready
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import replay
from processors.settings import REPO_ROOT
from tests.e2e.harness import Stream, api_process, expected_json, free_port, scrape, wait_for_metrics

WORKER_PASSWORD = "worker-pw-7f3a9c"
API_PASSWORD = "api-ro-pw-51d0e2"
API_TOKENS = ("page-token-0c4e8b", "rotated-token-93aa17")
METRICS_TOKEN = "scrape-token-d2b6f4"
SECRETS = (WORKER_PASSWORD, API_PASSWORD, *API_TOKENS, METRICS_TOKEN)


def compose_redis_command() -> list[str]:
    """docker-compose.yml's Redis command line (its password and its read-only ACL user for the API), with
    the test's passwords for the variables: the test runs the access rules users get."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    values = {"REDIS_PASSWORD": WORKER_PASSWORD, "REDIS_API_PASSWORD": API_PASSWORD}
    command: list[str] = compose["services"]["redis"]["command"]
    return [re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: values[m.group(1)], arg) for arg in command]


def start_protected_redis(folder: Path, port: int) -> subprocess.Popen[bytes]:
    command = compose_redis_command()
    assert command[0] == "redis-server" and "--requirepass" in command and "--user" in command
    local = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "no"]
    proc = subprocess.Popen(
        [*command, *local, "--save", "", "--logfile", str(folder / "redis.log")], stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while not redis_ready(f"redis://:{WORKER_PASSWORD}@127.0.0.1:{port}/0"):
        assert proc.poll() is None, (folder / "redis.log").read_text()
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.1)
    return proc


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian's redis-server")
def test_protected_redis_tokens_and_no_secret_in_any_log(stream: Stream, tmp_path: Path) -> None:
    port = free_port()
    prefix = "mrr:"  # the compose file's ACL names the default prefix (this Redis is the test's own)
    redis = start_protected_redis(tmp_path, port)
    worker_url = f"redis://:{WORKER_PASSWORD}@127.0.0.1:{port}/0"
    api_url = f"redis://mrr-api:{API_PASSWORD}@127.0.0.1:{port}/0"
    stream.settings = stream.settings.model_copy(
        update={
            "redis_url": SecretStr(worker_url),
            "redis_prefix": prefix,
            "api_token": SecretStr(",".join(API_TOKENS)),
            "metrics_token": SecretStr(METRICS_TOKEN),
        }
    )
    try:
        events = HistoryGenerator(120, 10, 5, parse_month("2025-01")).events()
        path = tmp_path / "h.jsonl"
        path.write_text("\n".join(arrange(events, 5, late=0.1, duplicates=0.05, bad=0.01)) + "\n")
        outcome = replay(((str(i), line) for i, line in enumerate(read_lines(path))), at=clock.now())
        metrics_port = free_port()
        stream.add_worker(metrics_port).start()
        asyncio.run(produce(stream.settings, read_lines(path)))
        stream.wait_until(outcome.months, len(outcome.rejects), timeout=120)

        wait_for_metrics(metrics_port, token=METRICS_TOKEN)
        assert any(name.startswith("mrr_") for name in scrape(metrics_port, METRICS_TOKEN))
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(metrics_port)
        assert refused.value.code == 401

        api_log = tmp_path / "api.log"
        with api_process(stream, api_log, MRR_REDIS_URL=api_url) as base:
            status, body = get(f"{base}/api/months")
            assert status == 401 and body["parameter"] == "authorization"
            assert get(f"{base}/api/months", "not-a-token")[0] == 401
            for token in API_TOKENS:  # either of two tokens: one can be rotated out
                status, body = get(f"{base}/api/months", token)
                assert status == 200 and body["months"] == expected_json(outcome.months)
            status, current = get(f"{base}/api/current", API_TOKENS[0])
            assert status == 200 and current["rejected"] == len(outcome.rejects)

        # the API's user reads the view and can change nothing, not even its own keys
        read_only = redis_lib.Redis.from_url(api_url, decode_responses=True)
        assert read_only.scard(f"{prefix}rejected") == len(outcome.rejects)
        for write in (
            lambda: read_only.set(f"{prefix}x", "1"),
            lambda: read_only.delete(f"{prefix}months"),
            lambda: read_only.flushdb(),
            lambda: read_only.get("other:key"),
        ):
            with pytest.raises(redis_lib.exceptions.NoPermissionError):
                write()

        # a wrong password is a 503 and an ordinary mistake of one line, never the password echoed
        wrong = f"redis://mrr-api:{API_PASSWORD}x@127.0.0.1:{port}/0"
        with api_process(stream, api_log, MRR_REDIS_URL=wrong) as base:
            assert get(f"{base}/api/current", API_TOKENS[1])[0] == 503
        status_run = subprocess.run(
            [sys.executable, "-m", "processors.cli", "status"],
            env={**stream.env(free_port()), "MRR_REDIS_URL": wrong.replace("mrr-api", "nobody")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status_run.returncode == 1 and "Traceback" not in status_run.stderr
        assert len(status_run.stderr.strip().splitlines()) == 1, status_run.stderr
    finally:
        stream.stop()
        redis.terminate()
        redis.wait(10)

    logs = {p.name: p.read_text(errors="replace") for p in tmp_path.glob("*.log")}
    logs["status"] = status_run.stdout + status_run.stderr
    assert {"worker-0.log", "api.log", "redis.log"} <= set(logs)
    leaks = {(name, s) for name, text in logs.items() for s in SECRETS if s in text}
    assert not leaks, leaks
