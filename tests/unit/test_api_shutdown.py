"""`mrr-stream api` stops promptly on SIGTERM even while a page holds the event stream open (aiohttp waits
for open handlers: the endless stream held a stop for a minute or more, past `servers stop`'s grace)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_ends_open_event_streams() -> None:
    port = _free_port()
    env = {**os.environ, "MRR_API_PORT": str(port), "MRR_REDIS_URL": "redis://127.0.0.1:1/0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "processors.cli", "api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                stream = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/events", timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
        assert stream.readline() == b"event: update\n"  # the stream is open and being written
        proc.send_signal(signal.SIGTERM)
        # the bug took 60 s and more (aiohttp's shutdown timeout); a prompt stop is well under 10 s
        assert proc.wait(timeout=10) == 0
        stream.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
