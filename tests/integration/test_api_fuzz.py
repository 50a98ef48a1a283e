"""The read API fuzzed from its own OpenAPI description (schemathesis) against the real Redis.

The API runs as `mrr-stream api` in a subprocess, over a Redis prefix filled from a replayed history, and
the schema is the one it serves at /api/openapi.json. Every operation it describes but the server-sent
events (they never end) gets schema-valid (positive) and schema-violating (negative) requests generated
from that description, a bounded number of each. Every response passes schemathesis's own checks (no 5xx,
a documented status code, content type and headers, a body matching the documented schema, negative data
rejected with a 4xx) and two rules of this API's own: a 400 names the parameter it is about, and a
schema-valid request is accepted (an unknown account's 404 aside, and `from` after `to`, which no OpenAPI
schema can express, a 400 naming `from`). The same run against an API whose Redis does not answer gets
503s (or 400s for the bad parameters), never a 500.

schemathesis's own pytest loader (`schemathesis.pytest.from_fixture`) needs a pytest private attribute
that pytest 9.2 no longer has, so the operations are run here with its documented Hypothesis strategies.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, CheckFunction, GenerationMode, Response
from schemathesis.core.result import Err
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from processors.core.movement import record_json
from processors.generate import HistoryGenerator, arrange, parse_month
from processors.replay import replay
from processors.sinks.redis_view import AccountView, RedisView

STREAMING = {"/api/events"}  # never ends: not something a request/response fuzzer can call
EXAMPLES = 40  # per operation and generation mode: the whole file runs in well under a minute
LATEST = 120  # movement records pushed to the latest list
AnyCase = Case[Any]
Operation = APIOperation[Any, Any, Any, Any]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_api(redis_url: str, redis_prefix: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "MRR_API_PORT": str(port),
        "MRR_REDIS_URL": redis_url,
        "MRR_REDIS_PREFIX": redis_prefix,
    }
    with log.open("wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "processors.cli", "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/openapi.json", timeout=1):
                return api, base
        except OSError:
            if api.poll() is not None or time.monotonic() > deadline:
                api.kill()
                api.wait(10)
                pytest.fail(f"the API did not start:\n{log.read_text()}")
            time.sleep(0.2)


def _stop(api: subprocess.Popen[bytes]) -> None:
    api.terminate()
    try:
        api.wait(10)
    except subprocess.TimeoutExpired:
        api.kill()
        api.wait(10)


@pytest.fixture
def filled(redis_url: str, redis_prefix: str) -> list[str]:
    """Redis under the prefix as the stream leaves it for a short history; the account ids written."""
    events = HistoryGenerator(40, 14, 17, parse_month("2024-11")).events()
    lines = arrange(events, 17, shuffle=True, duplicates=0.05, bad=0.02)
    outcome = replay((str(i), line.encode()) for i, line in enumerate(lines))
    states = list(outcome.accounts.values())
    latest = [record_json(m, f"in:0:{i}") for i, m in enumerate(outcome.movements)][-LATEST:]

    async def fill() -> None:
        view = RedisView(redis_url, redis_prefix)
        try:
            await view.write(
                [AccountView.of(s.account_id, s.events, s.mrr, s.movements) for s in states],
                rejected=[f"in:0:{i}" for i in range(len(outcome.rejects))],
                latest=latest,
            )
            assert await view.refresh_rows() is not None
            assert await view.months() == outcome.months
        finally:
            await view.close()

    asyncio.run(fill())
    assert outcome.months and outcome.rejects and len(states) > 10
    return [s.account_id for s in states]


@pytest.fixture
def api(filled: list[str], redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[str]:
    proc, base = _start_api(redis_url, redis_prefix, tmp_path / "api.log")
    yield base
    _stop(proc)


@pytest.fixture
def api_without_redis(tmp_path: Path) -> Iterator[str]:
    """The API pointed at a port where nothing listens: every figure it would read is unavailable."""
    proc, base = _start_api(f"redis://127.0.0.1:{_free_port()}/0", "mrr:", tmp_path / "api.log")
    yield base
    _stop(proc)


# The API's own rules, as schemathesis checks: (context, response, case) -> None, raising when broken.


def _body(response: Response) -> object:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def bad_parameter_is_named(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """A 400 is JSON naming one of the operation's parameters, its message starting with the name."""
    if response.status_code != 400:
        return None
    body = _body(response)
    names = {p.name for p in case.operation.iter_parameters()}
    assert isinstance(body, dict), f"a 400 that is not a JSON object: {response.content[:200]!r}"
    parameter = body.get("parameter")
    assert parameter in names, f"a 400 naming {parameter!r}, not one of the parameters {sorted(names)}"
    assert str(body.get("error", "")).startswith(f"{parameter}: "), f"a 400 whose error is {body!r}"
    return True


def valid_request_is_accepted(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """schemathesis's positive_data_acceptance, knowing the one rule OpenAPI cannot say: from <= to."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    status, query = response.status_code, case.query or {}
    if 200 <= status < 300 or (status == 404 and case.operation.path == "/api/accounts/{account_id}"):
        return True
    body = _body(response)
    after = "from" in query and "to" in query and str(query["from"]) > str(query["to"])
    assert status == 400 and after and isinstance(body, dict) and body.get("parameter") == "from", (
        f"a schema-valid request got {status}: {response.content[:300]!r}"
    )
    return True


def unavailable_is_503(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """Redis unreachable: a 503 saying so, or the 400 of a bad parameter (checked before Redis is asked)."""
    assert response.status_code in (400, 503), f"got {response.status_code}: {response.content[:300]!r}"
    body = _body(response)
    assert isinstance(body, dict) and body.get("error"), f"a {response.status_code} without an error"
    return True


def _operations(schema: BaseSchema) -> list[Operation]:
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            pytest.fail(f"schemathesis cannot read an operation: {result.err()}")
        operations.append(result.ok())
    assert {op.path for op in operations} >= {
        "/api/current",
        "/api/months",
        "/api/periods",
        "/api/accounts/{account_id}",
        "/api/movements/latest",
        "/api/scheduled",
    }
    return [op for op in operations if op.path not in STREAMING]


def fuzz(
    strategies: list[tuple[str, st.SearchStrategy[AnyCase]]],
    check: Callable[[AnyCase], None],
    examples: int = EXAMPLES,
) -> None:
    """Run each strategy for `examples` cases; fail at the end with every operation's failures."""
    failures: list[str] = []
    for label, strategy in strategies:

        @given(case=strategy)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def run(case: AnyCase) -> None:
            check(case)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup is the latter
            failures.append(f"===== {label}\n{exc}")
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def _strategies(schema: BaseSchema) -> list[tuple[str, st.SearchStrategy[AnyCase]]]:
    out = []
    for op in _operations(schema):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not list(op.iter_parameters()):
                continue  # nothing to get wrong: /api/current takes no parameter
            out.append((f"{op.label} ({mode.value})", op.as_strategy(mode)))
    return out


def test_fuzzed_api_never_fails_and_answers_as_described(api: str, filled: list[str]) -> None:
    schema = schemathesis.openapi.from_url(f"{api}/api/openapi.json")
    accounts = schema["/api/accounts/{account_id}"]["GET"]
    known = st.sampled_from(filled).flatmap(
        lambda account_id: accounts.as_strategy(
            GenerationMode.POSITIVE, path_parameters={"account_id": account_id}
        )
    )
    session = requests.Session()
    answered: set[tuple[str, int]] = set()  # (path, status)
    excluded: list[CheckFunction] = [positive_data_acceptance]
    extra: list[CheckFunction] = [bad_parameter_is_named, valid_request_is_accepted]

    def check(case: AnyCase) -> None:
        response = case.call_and_validate(session=session, excluded_checks=excluded, additional_checks=extra)
        answered.add((case.operation.path, response.status_code))

    fuzz([*_strategies(schema), (f"{accounts.label} (positive, known accounts)", known)], check)
    # every operation answered with figures and turned a bad parameter away; accounts known and unknown
    for op in _operations(schema):
        assert (op.path, 200) in answered, op.path
        if list(op.iter_parameters()):
            assert (op.path, 400) in answered, op.path
    assert (accounts.path, 404) in answered


def test_fuzzed_api_without_redis_answers_503_never_500(api_without_redis: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api_without_redis}/api/openapi.json")
    session = requests.Session()
    checks: list[CheckFunction] = [
        unavailable_is_503,
        bad_parameter_is_named,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]
    statuses: set[int] = set()

    def check(case: AnyCase) -> None:
        statuses.add(case.call_and_validate(session=session, checks=checks).status_code)

    fuzz(_strategies(schema), check, examples=15)
    assert statuses == {400, 503}
