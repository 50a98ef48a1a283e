"""Replay throughput and memory against bare contract validation, measured in the same run.

    python bench/replay.py [--events 1000000]

Goals (issue 3): replay >= 200,000 events/s on one core, and replay rate / bare model_validate_json
rate >= 0.5. The figures are printed whether or not it gets there. Each measurement runs in a child
process of its own so that its peak RSS is its own.
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
from processors.replay import replay
lines = open(sys.argv[1], "rb").read().splitlines()
start = time.perf_counter()
outcome = replay((str(i), line) for i, line in enumerate(lines))
elapsed = time.perf_counter() - start
print(json.dumps({"lines": len(lines), "seconds": elapsed, "rss_mb": PEAK_RSS}))
""".replace("PEAK_RSS", _PEAK_RSS)


def child(code: str, path: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=2, help="best of N for each measurement")
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
        for round_ in range(args.rounds):  # interleaved, so that machine noise hits both alike
            with console.status(f"round {round_ + 1}/{args.rounds}: bare validation"):
                validate.append(child(_CHILD_VALIDATE, path))
            with console.status(f"round {round_ + 1}/{args.rounds}: replay"):
                replays.append(child(_CHILD_REPLAY, path))
    v = min(validate, key=lambda r: r["seconds"])
    r = min(replays, key=lambda r: r["seconds"])
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
