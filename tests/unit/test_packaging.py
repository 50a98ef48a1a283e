"""Packaging, checked without a Docker engine: the lock files agree with pyproject.toml, `make install` and
the image install from them, the image's build context is only what it copies, and the wheel the image
installs carries the runtime package and its data but no development tooling, tests or benchmarks."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = "requirements/runtime.txt"
DEV_LOCK = "requirements/dev.txt"
PROJECT = "mrr-stream (pyproject.toml)"  # how the lock files name the project as the origin of a pin
# Never in the image: the test, fuzzing and lint tools, and matplotlib (only `mrr-stream report` draws).
DEVELOPMENT_ONLY = {"pytest", "hypothesis", "schemathesis", "testcontainers", "ruff", "mypy", "matplotlib"}
# The platform the locks are resolved for (Linux, CPython 3.11), for requirements with markers.
TARGET = {  # (Marker.evaluate takes the running interpreter's values for the rest)
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_python_implementation": "CPython",
    "implementation_name": "cpython",
    "python_version": "3.11",
    "python_full_version": "3.11.0",
}


# --- the lock files ----------------------------------------------------------------------------------


@dataclass
class Pin:
    version: str
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)  # the project, "-c <file>" or the packages that need it


def read_lock(relative: str) -> dict[NormalizedName, Pin]:
    """A lock file as uv writes it: `name==version \\`, its `--hash=` lines, then `# via` annotations."""
    pins: dict[NormalizedName, Pin] = {}
    current: Pin | None = None
    in_via = False
    for raw in (ROOT / relative).read_text().splitlines():
        line = raw.strip().rstrip("\\").strip()
        if not raw.startswith((" ", "#")) and line:
            name, sep, version = line.partition("==")
            assert sep and ";" not in version and "[" not in name, f"{relative}: not an exact pin: {raw}"
            current = pins.setdefault(canonicalize_name(name), Pin(version.strip()))
            in_via = False
        elif current is None or not line:
            continue
        elif line.startswith("--hash="):
            current.hashes.append(line.removeprefix("--hash="))
        elif line.startswith("# via"):
            rest = line.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                current.via.add(rest)
        elif in_via and line.startswith("#"):
            current.via.add(line.lstrip("#").strip())
    return pins


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(*extras: str) -> list[Requirement]:
    """The project's requirements for the target platform with those extras, its own extras expanded."""
    project = pyproject()["project"]
    wanted, seen = list(extras), set()
    found = [Requirement(text) for text in project["dependencies"]]
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                wanted.extend(requirement.extras)
            else:
                found.append(requirement)
    return [r for r in found if r.marker is None or r.marker.evaluate({**TARGET, "extra": ""})]


def check_lock_fits(relative: str, wanted: list[Requirement]) -> dict[NormalizedName, Pin]:
    pins = read_lock(relative)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{relative} has no pin for {requirement} (run `make lock`)"
        version = pins[name].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{relative} pins {name}=={version}, outside pyproject.toml's {requirement} (run `make lock`)"
        )
    # the pins that come from pyproject.toml itself are exactly its requirements: a requirement dropped
    # from pyproject.toml (matplotlib from the runtime, say) does not linger in the lock
    direct = {name for name, pin in pins.items() if PROJECT in pin.via}
    assert direct == {canonicalize_name(r.name) for r in wanted}, f"{relative}: run `make lock`"
    return pins


def test_the_runtime_lock_pins_every_dependency_and_no_development_tool() -> None:
    pins = check_lock_fits(RUNTIME_LOCK, requirements())
    assert not DEVELOPMENT_ONLY & set(pins), DEVELOPMENT_ONLY & set(pins)


def test_the_dev_lock_is_the_runtime_plus_the_report_and_dev_extras_at_the_same_versions() -> None:
    project = pyproject()["project"]
    assert project["optional-dependencies"]["report"] == ["matplotlib>=3.8"]
    assert "mrr-stream[report]" in project["optional-dependencies"]["dev"]
    assert not any(Requirement(r).name == "matplotlib" for r in project["dependencies"])
    dev = check_lock_fits(DEV_LOCK, requirements("dev"))
    assert set(dev) >= DEVELOPMENT_ONLY
    for name, pin in read_lock(RUNTIME_LOCK).items():  # the image runs what the tests ran
        assert name in dev and (dev[name].version, dev[name].hashes) == (pin.version, pin.hashes), name


@pytest.mark.parametrize("relative", [RUNTIME_LOCK, DEV_LOCK])
def test_every_locked_package_is_hashed_and_needed(relative: str) -> None:
    pins = read_lock(relative)
    needs: dict[str, set[str]] = {}
    for name, pin in pins.items():
        assert pin.hashes and all(h.startswith("sha256:") for h in pin.hashes), name
        for origin in pin.via:
            if origin != PROJECT and not origin.startswith("-c "):
                assert canonicalize_name(origin) in pins, f"{relative}: {name} is there for {origin}"
                needs.setdefault(canonicalize_name(origin), set()).add(name)
    reached: set[str] = {name for name, pin in pins.items() if PROJECT in pin.via}
    todo = list(reached)
    while todo:
        for needed in needs.get(todo.pop(), set()) - reached:
            reached.add(needed)
            todo.append(needed)
    assert reached == set(pins), f"{relative}: not needed by the project: {set(pins) - reached}"


def makefile_rule(target: str) -> str:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)*)", text, re.M)
    assert match, target
    return match.group(0)


def test_make_install_installs_the_dev_lock_then_the_project_alone() -> None:
    text = (ROOT / "Makefile").read_text()
    assert re.search(rf"^DEV_LOCK\s*:=\s*\$\(LOCKS\)/{Path(DEV_LOCK).name}$", text, re.M)
    assert re.search(rf"^LOCKS\s*:=\s*{Path(DEV_LOCK).parent}$", text, re.M)
    assert re.search(r"^STAMP\s*:=.*cat pyproject\.toml \$\(DEV_LOCK\) \| cksum", text, re.M)
    rule = makefile_rule("$(STAMP)")
    assert rule.startswith("$(STAMP): pyproject.toml $(DEV_LOCK)\n")
    installs = [
        line.strip() for line in rule.splitlines() if "pip install" in line and "--upgrade pip" not in line
    ]
    assert installs == [
        "$(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK)",
        "$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .",
    ]
    lock = makefile_rule("lock")
    assert "uv==$(UV_VERSION)" in lock and "-o $(LOCKS)/dev.txt" in lock and "-o $(LOCKS)/runtime.txt" in lock
    assert re.search(r"^UV_VERSION\s*:=\s*\d+\.\d+\.\d+$", text, re.M)  # the lock tool is pinned
    assert "make install" in (ROOT / ".ci/run").read_text()


# --- the image -----------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """deploy/Dockerfile's instructions, (KEYWORD, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "deploy/Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        pending += raw.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def copies() -> list[tuple[list[str], str, str | None]]:
    """Every COPY: its sources, its destination, the stage it copies from (None: the build context)."""
    found = []
    for keyword, args in dockerfile():
        if keyword in ("COPY", "ADD"):
            assert keyword == "COPY", "ADD fetches and unpacks: COPY only"
            words = shlex.split(args)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            stage = next((f.partition("=")[2] for f in flags if f.startswith("--from=")), None)
            found.append((paths[:-1], paths[-1], stage))
    return found


def test_the_image_installs_the_runtime_lock_then_its_own_wheel_without_dependencies() -> None:
    instructions = dockerfile()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    final = instructions[last_from:]
    lock_in_image = {dest for sources, dest, stage in copies() if stage is None and sources == [RUNTIME_LOCK]}
    assert len(lock_in_image) == 1, "the image copies the runtime lock"
    pip_installs = [
        command.strip()
        for keyword, args in final
        if keyword == "RUN"
        for command in args.split("&&")
        if command.strip().startswith("pip install")
    ]
    assert pip_installs[0] == f"pip install --no-cache-dir --require-hashes -r {lock_in_image.pop()}"
    for command in pip_installs[1:]:  # anything else is the project's wheel, alone
        assert "--no-deps" in command.split() and "-r" not in command.split(), command
    every_run = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "[dev]" not in every_run and "[report]" not in every_run
    assert not any(tool in every_run for tool in DEVELOPMENT_ONLY)
    assert "pip check" in every_run  # the build fails if the lock misses one of the wheel's dependencies


@dataclass(frozen=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    text: str
    negated: bool


@cache
def dockerignore() -> tuple[IgnoreRule, ...]:
    """.dockerignore as Docker reads it: `#` comments, `!` exceptions, Go glob patterns with `**`, paths
    relative to the context; a pattern that matches a folder matches everything in it; the last match wins."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        text = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(text):
            if text.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif text.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif text[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif text[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif text[i] == "[":
                end = text.index("]", i + 1)
                body = text[i + 1 : end]
                regex += "[" + ("^" + body[1:] if body[:1] in "^!" and body else body) + "]"
                i = end + 1
            else:
                regex, i = regex + re.escape(text[i]), i + 1
        rules.append(IgnoreRule(re.compile(regex), text, negated))
    return tuple(rules)


def ignored(relative: str) -> bool:
    parts = Path(relative).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for rule in dockerignore():
        if any(rule.pattern.fullmatch(candidate) for candidate in candidates):
            verdict = not rule.negated
    return verdict


def context_files() -> list[str]:
    """The files `docker build` sends from the repository root, .dockerignore applied."""
    exceptions = [rule.text for rule in dockerignore() if rule.negated]
    found = []
    for folder, dirs, files in os.walk(ROOT):
        here = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if here == "." else here + "/"
        dirs[:] = [
            d
            for d in dirs
            if not ignored(prefix + d)
            or any(e.startswith(prefix + d + "/") or e.startswith("*") for e in exceptions)
        ]
        found += [prefix + f for f in files if not ignored(prefix + f)]
    return sorted(found)


def test_the_build_context_is_what_the_dockerfile_copies_and_nothing_heavy() -> None:
    for heavy in (".venv", ".git", ".local", ".cache", "build", "tests", "bench", "docs", ".env"):
        assert ignored(heavy) and ignored(f"{heavy}/some/file"), heavy
    assert ignored("processors/devtools/servers.py")
    assert ignored("processors/core/__pycache__/mrr.cpython-311.pyc")
    sources = [source for paths, _, stage in copies() if stage is None for source in paths]
    assert {"pyproject.toml", "README.md", "processors", "schemas", RUNTIME_LOCK} <= set(sources)
    for source in sources:
        path = ROOT / source
        assert path.exists() and not ignored(source), source
        if path.is_dir():  # the package's modules and data are all sent
            for file in path.rglob("*"):
                relative = file.relative_to(ROOT).as_posix()
                if file.is_file() and "__pycache__" not in file.parts and "/devtools/" not in relative:
                    assert not ignored(relative), relative
    sent = context_files()
    assert all(f.split("/")[0] in sources or f in sources for f in sent), sent
    size = sum((ROOT / f).stat().st_size for f in sent)
    assert size < 5_000_000, f"the build context is {size:,} bytes"


def test_the_wheel_has_the_runtime_package_and_its_data_but_no_tooling_tests_or_benchmarks(
    tmp_path: Path,
) -> None:
    # The wheel is built as the image's first stage builds it: from the files of the build context.
    source = tmp_path / "context"
    for relative in context_files():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, source / relative)
    # processors.devtools is left out by pyproject.toml even when it is in the sources (a checkout, an
    # sdist): put it there whether the context had it or not.
    devtools = source / "processors/devtools"
    if (ROOT / "processors/devtools").is_dir():
        shutil.copytree(ROOT / "processors/devtools", devtools, dirs_exist_ok=True)
    else:
        (devtools / "cli").mkdir(parents=True)
        (devtools / "__init__.py").write_text('"""The development tooling."""\n')
        (devtools / "servers.py").write_text("RUNNING = True\n")
        (devtools / "cli/__init__.py").write_text("")
    out = tmp_path / "wheels"
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"),
            *("--no-index", "--wheel-dir", str(out), str(source)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = out.glob("mrr_stream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("processors/devtools/")]
    # (where the server manager and the demo lived before they moved into processors.devtools)
    assert not {"processors/servers.py", "processors/cli/servers_cmd.py", "processors/cli/demo_cmd.py"} & set(
        names
    )
    assert not [n for n in names if n.split("/")[0] in ("tests", "bench", "docs", "deploy", "build")]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    for relative in ("processors/api/static", "schemas/json"):
        expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / relative).iterdir() if p.is_file()}
        assert expected and expected <= set(names), expected - set(names)
    assert "processors/cli/__init__.py" in names and "processors/core/mrr.py" in names
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    runtime = {canonicalize_name(Requirement(r).name) for r in requires if "extra ==" not in r}
    assert runtime == {canonicalize_name(r.name) for r in requirements()}
    assert not DEVELOPMENT_ONLY & runtime
    assert any(r.startswith("matplotlib") and 'extra == "report"' in r for r in requires), requires
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "mrr-stream = processors.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
