"""`mrr-stream servers` itself, on its own data folder and free ports, apart from the session's servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from processors.devtools.servers import servers
from processors.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "processors.cli", "servers", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
    )


@pytest.mark.parametrize("names", [["redis", "prometheus", "kafka"]])
def test_start_twice_status_and_stop(tmp_path: Path, names: list[str]) -> None:
    ports = {
        "MRR_LOCAL_KAFKA_PORT": free_port(),
        "MRR_LOCAL_KAFKA_CONTROLLER_PORT": free_port(),
        "MRR_LOCAL_REDIS_PORT": free_port(),
        "MRR_LOCAL_PROMETHEUS_PORT": free_port(),
    }
    env = {**os.environ, "MRR_LOCAL_DIR": str(tmp_path / "local"), **{k: str(v) for k, v in ports.items()}}
    settings = Settings(
        local_dir=tmp_path / "local",
        local_kafka_port=ports["MRR_LOCAL_KAFKA_PORT"],
        local_kafka_controller_port=ports["MRR_LOCAL_KAFKA_CONTROLLER_PORT"],
        local_redis_port=ports["MRR_LOCAL_REDIS_PORT"],
        local_prometheus_port=ports["MRR_LOCAL_PROMETHEUS_PORT"],
    )
    known = servers(settings)
    try:
        down = cli(env, "status", *names)
        assert down.returncode == 1 and all(f"{n}: stopped" in down.stdout for n in names)

        first = cli(env, "start", *names)
        assert first.returncode == 0, first.stderr
        assert all(f"{n} started" in first.stdout for n in names)
        pids = {n: known[n].pid() for n in names}
        assert all(pids.values())

        second = cli(env, "start", *names)
        assert second.returncode == 0, second.stderr
        assert all(f"{n} already running" in second.stdout for n in names)
        assert {n: known[n].pid() for n in names} == pids  # nothing new was started

        up = cli(env, "status", *names)
        assert up.returncode == 0 and all(f"{n}: running and ready" in up.stdout for n in names)

        # A PID file naming a process that is not ours (this test's own) must not be stopped.
        (settings.local_dir / "redis" / "server.pid").write_text(f"{os.getpid()}\n")
        assert "redis: stopped" in cli(env, "status", "redis").stdout
        (settings.local_dir / "redis" / "server.pid").write_text(f"{pids['redis']}\n")

        stopped = cli(env, "stop", *names)
        assert stopped.returncode == 0, stopped.stderr
        for name, pid in pids.items():
            assert pid is not None
            assert (
                not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
            )
            assert known[name].pid() is None
        after = cli(env, "status", *names)
        assert after.returncode == 1 and all(f"{n}: stopped" in after.stdout for n in names)
    finally:
        for name in names:
            known[name].stop()
