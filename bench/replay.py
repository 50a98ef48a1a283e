"""Replay throughput and memory against bare contract validation, measured in the same run.

    python bench/replay.py [--events 1000000] [--baseline DIR]

Goals (issue 3): replay >= 200,000 events/s on one core, and replay rate / bare model_validate_json
rate >= 0.5; peak RSS of the replay at most 400 MB for 1,000,000 events. The figures are printed whether
or not it gets there. Each measurement runs in a child process of its own so that its peak RSS is its
own. The replay reads the file as `mrr-stream replay FILE` does, line by line, so its peak is the replay's
and not a copy of the input; bare validation times lines already read (its peak includes them all).

--baseline DIR also runs the replay of another checkout (e.g. `git worktree add DIR HEAD~1`), same child,
same file, interleaved: a before/after in one run, as an extra row (the JSON last line is unchanged).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from processors.generate import HistoryGenerator, arrange, parse_month

# Peak RSS from VmHWM: ru_maxrss would include the parent's peak, since Linux keeps it across fork + exec.
_PEAK_RSS = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"

_CHILD_VALIDATE = """
import json, sys, time
from schemas.billing_event import BillingEvent
lines = open(sys.argv[1], "rb").read().splitlines()
validate = BillingEvent.model_validate_json
start = time.perf_counter()
for line in lines:
    validate(line)
elapsed = time.perf_counter() - start
print(json.dumps({"lines": len(lines), "seconds": elapsed, "rss_mb": PEAK_RSS}))
""".replace("PEAK_RSS", _PEAK_RSS)

_CHILD_REPLAY = """
import json, sys, time
from processors.cli.replay_cmd import run_replay
start = time.perf_counter()
outcome = run_replay([sys.argv[1]], show_progress=False)
elapsed = time.perf_counter() - start
lines = outcome.events + outcome.duplicates + len(outcome.rejects)
print(json.dumps({"lines": lines, "seconds": elapsed, "rss_mb": PEAK_RSS}))
""".replace("PEAK_RSS", _PEAK_RSS)


def child(code: str, path: Path, checkout: Path | None = None) -> dict[str, float]:
    # `python -c` puts its working directory first on sys.path: a checkout's own packages win there.
    cwd = checkout or Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True, cwd=cwd
    )
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=2, help="best of N for each measurement")
    parser.add_argument("--baseline", type=Path, help="also time the replay of this checkout (before/after)")
    args = parser.parse_args()
    console = Console(stderr=True)

    with console.status("generating the history"):
        accounts = max(10, args.events // 5)  # about five events per account over two years
        events = HistoryGenerator(accounts, 24, args.seed, parse_month("2024-01")).events()
        lines = arrange(events, args.seed, late=0.05, duplicates=0.01)[: args.events]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
        path.write_text("\n".join(lines) + "\n")
        validate: list[dict[str, float]] = []
        replays: list[dict[str, float]] = []
        baselines: list[dict[str, float]] = []
        for round_ in range(args.rounds):  # interleaved, so that machine noise hits all alike
            with console.status(f"round {round_ + 1}/{args.rounds}: bare validation"):
                validate.append(child(_CHILD_VALIDATE, path))
            with console.status(f"round {round_ + 1}/{args.rounds}: replay"):
                replays.append(child(_CHILD_REPLAY, path))
            if args.baseline:
                with console.status(f"round {round_ + 1}/{args.rounds}: replay of {args.baseline}"):
                    baselines.append(child(_CHILD_REPLAY, path, args.baseline))
    v = min(validate, key=lambda r: r["seconds"])
    r = min(replays, key=lambda r: r["seconds"])
    if r["lines"] != len(lines):
        raise SystemExit(f"the replay counted {r['lines']:,} lines of {len(lines):,}")
    v_rate, r_rate = v["lines"] / v["seconds"], r["lines"] / r["seconds"]
    ratio = r_rate / v_rate

    table = Table(title=f"bench/replay.py — {len(lines):,} lines, best of {args.rounds}")
    for col in ("measure", "events/s", "seconds", "peak RSS MB", "goal", "met"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row(
        "bare model_validate_json", f"{v_rate:,.0f}", f"{v['seconds']:.2f}", f"{v['rss_mb']:,.0f}", "", ""
    )
    table.add_row(
        "replay (validate + engine + aggregates)",
        f"{r_rate:,.0f}",
        f"{r['seconds']:.2f}",
        f"{r['rss_mb']:,.0f}",
        ">= 200,000/s",
        "yes" if r_rate >= 200_000 else "no",
    )
    if baselines:
        b = min(baselines, key=lambda r: r["seconds"])
        table.add_row(
            f"replay of {args.baseline}",
            f"{b['lines'] / b['seconds']:,.0f}",
            f"{b['seconds']:.2f}",
            f"{b['rss_mb']:,.0f}",
            "",
            "",
        )
    table.add_row(
        "replay peak RSS",
        "",
        "",
        f"{r['rss_mb']:,.0f}",
        "<= 400 MB",
        "yes" if r["rss_mb"] <= 400 else "no",
    )
    table.add_row(
        "ratio replay / validation", f"{ratio:.3f}", "", "", ">= 0.5", "yes" if ratio >= 0.5 else "no"
    )
    Console(width=120).print(table)
    print(
        json.dumps(
            {
                "lines": len(lines),
                "validate_per_s": round(v_rate),
                "replay_per_s": round(r_rate),
                "ratio": round(ratio, 3),
                "replay_peak_rss_mb": round(r["rss_mb"]),
                "validate_peak_rss_mb": round(v["rss_mb"]),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
