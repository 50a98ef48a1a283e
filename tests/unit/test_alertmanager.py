"""Alert delivery: the Alertmanager configuration (validity, routing by severity, inhibition), its email and
Slack examples, the local configuration `mrr-stream servers` derives from it, and the annotations and runbook
section every alert carries. amtool and Alertmanager come from Debian's prometheus-alertmanager
(deploy/local/install-test-tools.sh installs it)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from processors.devtools.servers import _prepare_alertmanager, local_alertmanager_config
from processors.settings import REPO_ROOT, Settings

ALERTMANAGER = REPO_ROOT / "deploy" / "alertmanager"
CONFIG = ALERTMANAGER / "alertmanager.yml"
EXAMPLES = sorted((ALERTMANAGER / "examples").glob("*.yml"))
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "rules" / "alerts.yml"
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"
T = TypeVar("T")
INSTALL = "bash deploy/local/install-test-tools.sh installs Debian's prometheus-alertmanager, which has it"


@pytest.fixture(scope="module")
def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.skip(f"amtool missing: {INSTALL}")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def alerts() -> list[dict[str, Any]]:
    rules = [rule for group in load(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]
    assert len(rules) >= 6, rules  # the file was read: every alert the README lists
    return rules


def webhook_urls(config: dict[str, Any]) -> list[str]:
    return [hook["url"] for r in config["receivers"] for hook in r.get("webhook_configs", [])]


# --- the configuration files --------------------------------------------------------------------------------


def test_the_configuration_and_every_example_pass_amtool_check_config(amtool: str) -> None:
    assert {p.name for p in EXAMPLES} >= {"email.yml", "slack.yml"}
    files = [str(CONFIG), *map(str, EXAMPLES)]
    result = run(amtool, "check-config", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)


def keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from keys(item)


def test_the_default_receivers_are_webhooks_and_the_examples_read_their_secrets_from_files() -> None:
    assert webhook_urls(load(CONFIG)) and all(url.startswith("http") for url in webhook_urls(load(CONFIG)))
    # Alertmanager's settings that hold a credential inline; each has a *_file twin, which these files use.
    inline_secret = re.compile(r"(password|api_url|api_key|token|secret|routing_key|service_key)$")
    for path in [CONFIG, *EXAMPLES]:
        inline = [key for key in keys(load(path)) if inline_secret.search(key)]
        assert not inline, f"{path.name}: secrets written inline ({inline}): use the *_file form"
    email, slack = (load(ALERTMANAGER / "examples" / name) for name in ("email.yml", "slack.yml"))
    assert email["global"]["smtp_auth_password_file"].startswith("/run/secrets/")
    assert all(
        c["api_url_file"].startswith("/run/secrets/") for r in slack["receivers"] for c in r["slack_configs"]
    )


def test_the_examples_route_and_inhibit_as_the_configuration_does() -> None:
    # Only the receivers differ: switching to email or Slack keeps the severity routing and the inhibition.
    config = load(CONFIG)
    for path in EXAMPLES:
        example = load(path)
        assert example["route"] == config["route"], path.name
        assert example["inhibit_rules"] == config["inhibit_rules"], path.name
        assert {r["name"] for r in example["receivers"]} == {r["name"] for r in config["receivers"]}


def test_each_alert_goes_to_the_receiver_of_its_severity(amtool: str) -> None:
    def routed(*labels: str, expect: str) -> None:
        result = run(
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={CONFIG}",
            f"--verify.receivers={expect}",
            *labels,
        )
        assert result.returncode == 0, (labels, result.stdout + result.stderr)
        assert result.stdout.split() == [expect], (labels, result.stdout)

    routed("alertname=MrrChurnSpike", "severity=page", "currency=USD", expect="page")
    for alert in alerts():
        severity = alert["labels"]["severity"]
        assert severity in {"page", "ticket"}, alert["alert"]
        routed(f"alertname={alert['alert']}", f"severity={severity}", expect=severity)
    routed("alertname=SomethingElse", expect="ticket")  # no severity: nobody is woken, nothing is lost
    # the check itself can fail: a page is not a ticket
    wrong = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        "--verify.receivers=ticket",
        "severity=page",
    )
    assert wrong.returncode != 0


def test_a_worker_down_inhibits_its_lag_alert_and_nothing_else() -> None:
    names = {alert["alert"] for alert in alerts()}
    (rule,) = load(CONFIG)["inhibit_rules"]
    # no `equal`: mrr:lag_seconds:max aggregates every worker, so any worker down explains any stage's lag
    assert set(rule) == {"source_matchers", "target_matchers"}
    assert rule["source_matchers"] == ['alertname="MrrWorkerDown"']
    assert rule["target_matchers"] == ['alertname="MrrWorkerBehind"']
    assert {"MrrWorkerDown", "MrrWorkerBehind"} <= names  # the rule names alerts that exist


# --- the local configuration --------------------------------------------------------------------------------


def test_the_local_configuration_posts_to_the_configured_webhook(amtool: str, tmp_path: Path) -> None:
    url = "http://127.0.0.1:5999/test-receiver"
    derived = local_alertmanager_config(Settings(alert_webhook_url=url))
    assert len(webhook_urls(derived)) == 2 and set(webhook_urls(derived)) == {url}
    assert {k: v for k, v in derived.items() if k != "receivers"} == {
        k: v for k, v in load(CONFIG).items() if k != "receivers"
    }
    # unset, the file's own URL stays
    assert webhook_urls(local_alertmanager_config(Settings(alert_webhook_url=None))) == webhook_urls(
        load(CONFIG)
    )

    settings = Settings(local_dir=tmp_path, local_alertmanager_port=5998, alert_webhook_url=url)
    command = _prepare_alertmanager(settings, tmp_path)
    written = tmp_path / "alertmanager.yml"
    assert f"--config.file={written}" in command
    assert "--web.listen-address=127.0.0.1:5998" in command
    assert "--cluster.listen-address=" in command  # no gossip port on every interface
    assert webhook_urls(load(written)) == [url, url]
    result = run(amtool, "check-config", str(written))
    assert result.returncode == 0, result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Receiver(ThreadingHTTPServer):
    """A webhook receiver keeping what Alertmanager posts."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append({"path": self.path, **json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def api(base: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text else None


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def alertmanager(command: list[str], folder: Path) -> Iterator[str]:
    """A real Alertmanager running `command` (as `mrr-stream servers` would) with its configuration in
    folder/alertmanager.yml, routed as configured but quicker: a test does not wait out a 30 s group_wait.
    Yields its URL."""
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        pytest.skip(f"prometheus-alertmanager missing: {INSTALL}")
    config = load(folder / "alertmanager.yml")
    for route in [config["route"], *config["route"]["routes"]]:
        route["group_wait"] = "1s"
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config))
    listen = next(arg for arg in command if arg.startswith("--web.listen-address="))
    base = "http://" + listen.removeprefix("--web.listen-address=")
    with (folder / "console.log").open("wb") as log:
        process = subprocess.Popen([binary, *command[1:]], cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        try:

            def ready() -> bool:
                try:
                    with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as response:
                        return bool(response.status == 200)
                except OSError:
                    assert process.poll() is None, (folder / "console.log").read_text()
                    return False

            wait_for("Alertmanager ready", ready)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=20)


CHURN_SPIKE = {
    "labels": {"alertname": "MrrChurnSpike", "severity": "page", "currency": "USD"},
    "annotations": {
        "summary": "Churn spike in USD",
        "description": "5006.07 USD of MRR churned in the last hour, far above its usual hourly level.",
        "runbook_url": "docs/runbook.md#mrrchurnspike",
    },
}


def posted(receiver: Receiver, alertname: str) -> dict[str, Any]:
    def first() -> dict[str, Any] | None:
        return next((p for p in receiver.posts if alertname in json.dumps(p)), None)

    return wait_for(f"{alertname} at the receiver", first)


def test_a_real_alertmanager_inhibits_and_delivers_to_the_local_webhook(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings = Settings(
        local_dir=tmp_path, local_alertmanager_port=free_port(), alert_webhook_url=receiver.url
    )
    with alertmanager(_prepare_alertmanager(settings, tmp_path), tmp_path) as base:
        fired: dict[str, dict[str, str]] = {
            "MrrWorkerDown": {"severity": "page", "job": "mrr-worker", "instance": "w1:9108"},
            "MrrWorkerBehind": {"severity": "page", "stage": "fold"},
            "MrrRedisViewStale": {"severity": "ticket"},
        }
        api(
            base,
            "/api/v2/alerts",
            [CHURN_SPIKE, *({"labels": {"alertname": n, **v}} for n, v in fired.items())],
        )

        def statuses() -> dict[str, list[str]] | None:
            got = {a["labels"]["alertname"]: a["status"]["inhibitedBy"] for a in api(base, "/api/v2/alerts")}
            return got if len(got) == len(fired) + 1 and got["MrrWorkerBehind"] else None

        inhibited = wait_for("MrrWorkerBehind inhibited", statuses)
        assert [name for name, by in inhibited.items() if by] == ["MrrWorkerBehind"]

        post = posted(receiver, "MrrChurnSpike")
        assert post["path"] == "/alerts" and post["receiver"] == "page" and post["status"] == "firing"
        assert post["groupLabels"] == {"alertname": "MrrChurnSpike", "currency": "USD"}
        (alert,) = post["alerts"]
        assert alert["labels"] == CHURN_SPIKE["labels"] and alert["annotations"] == CHURN_SPIKE["annotations"]
        assert posted(receiver, "MrrRedisViewStale")["receiver"] == "ticket"
        posted(receiver, "MrrWorkerDown")
        time.sleep(1.5)  # a group_wait more: an inhibited alert is never sent
        sent = {a["labels"]["alertname"] for p in receiver.posts for a in p["alerts"]}
        assert sent == {"MrrChurnSpike", "MrrWorkerDown", "MrrRedisViewStale"}


def test_the_slack_example_renders_the_summary_description_and_runbook(
    tmp_path: Path, receiver: Receiver
) -> None:
    # Slack's incoming webhooks take JSON at the URL read from the file: here the test's receiver stands in.
    config = load(ALERTMANAGER / "examples" / "slack.yml")
    for route in config["receivers"]:
        for slack in route["slack_configs"]:
            secret = tmp_path / Path(slack["api_url_file"]).name
            secret.write_text(f"{receiver.url}?receiver={route['name']}\n")
            slack["api_url_file"] = str(secret)
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = ["prometheus-alertmanager", f"--config.file={tmp_path / 'alertmanager.yml'}"]
    command += [f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"]
    with alertmanager([*command, "--cluster.listen-address="], tmp_path) as base:
        api(base, "/api/v2/alerts", [CHURN_SPIKE])
        post = posted(receiver, "Churn spike")
    assert post["path"] == "/alerts?receiver=page" and post["channel"] == "#mrr-oncall"
    (attachment,) = post["attachments"]
    assert attachment["title"] == "FIRING: Churn spike in USD"
    notes = CHURN_SPIKE["annotations"]
    runbook = f"Runbook: `{notes['runbook_url']}` in the mrr-stream repository"
    assert attachment["text"] == f"{notes['description']}\n{runbook}\n"  # a line pair per alert


# --- annotations and the runbook ----------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_a_summary_a_description_and_a_runbook_section() -> None:
    text = RUNBOOK.read_text()
    headings = re.findall(r"^#{2,3} (.+)$", text, flags=re.MULTILINE)
    anchors = {github_anchor(h) for h in headings}
    assert github_anchor("MrrChurnSpike") == "mrrchurnspike"
    assert github_anchor("Reading the dead-letter topic") == "reading-the-dead-letter-topic"
    for alert in alerts():
        name, notes = alert["alert"], alert.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert notes.get(key, "").strip(), f"{name} has no {key}"
        path, _, anchor = notes["runbook_url"].partition("#")
        assert path == "docs/runbook.md" and (REPO_ROOT / path).is_file(), (name, notes["runbook_url"])
        assert anchor == github_anchor(name) and anchor in anchors, (name, anchor)
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("First checks", "What to do", "Escalate"):
            assert f"**{part}" in section, f"the runbook's {name} section has no '{part}'"
    # every alert section of the runbook is an alert that exists (none left behind by a rename)
    assert {h for h in headings if h.startswith("Mrr")} == {a["alert"] for a in alerts()}
    # the runbook's own links point at its headings
    for link in re.findall(r"\]\(#([^)]+)\)", text):
        assert link in anchors, link
