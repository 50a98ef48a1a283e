"""The engine knows nothing of Kafka, Redis, Prometheus, files or the clock: the same core runs in the
stream and in the replay."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from processors.settings import REPO_ROOT

FORBIDDEN = {
    "faust",
    "aiokafka",
    "redis",
    "prometheus_client",
    "aiohttp",
    "os",
    "io",
    "pathlib",
    "time",
    "socket",
    "asyncio",
    "random",
    "processors.stream",
    "processors.sinks",
    "processors.api",
    "processors.cli",
    "processors.settings",
    "processors.devtools.servers",
}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_no_io() -> None:
    core = sorted((REPO_ROOT / "processors" / "core").glob("*.py"))
    assert len(core) >= 6
    for path in core:
        bad = {n for n in imports(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)}
        assert not bad, f"{path.name} imports {bad}"


CLOCK_OR_FILES = re.compile(
    r"(?<![\w.])(datetime\.(now|utcnow|today)|date\.today|time\.(time|monotonic)|open)\("
)


def test_core_never_reads_the_clock_or_files() -> None:
    for path in (REPO_ROOT / "processors" / "core").glob("*.py"):
        found = CLOCK_OR_FILES.search(path.read_text())
        assert found is None, f"{path.name} calls {found and found.group(0)}"
    assert CLOCK_OR_FILES.search("x = datetime.now()") and not CLOCK_OR_FILES.search("d.timestamp()")


def test_state_layout_is_pure_too() -> None:
    path = REPO_ROOT / "processors" / "stream" / "state.py"
    bad = {
        n
        for n in imports(path)
        if any(n == f or n.startswith(f + ".") for f in FORBIDDEN - {"processors.stream"})
    }
    assert not bad
    found = CLOCK_OR_FILES.search(path.read_text())
    assert found is None, f"state.py calls {found and found.group(0)}"
