"""Voice-to-first-frame latency and barge-in of `avatar serve`, with a real aiortc client.

Starts the server on a free loopback port (its own data dir unless AVATAR_DATA_DIR is
set), asks N spoken questions (Piper, speech ends known to the sample) in one call, then
talks over M answers, and prints every figure with min / p50 / p95 / max plus each turn's
server stage marks. The same measurement is `avatar bench --only conversation`; this
script adds the per-turn detail.

Run: .venv/bin/python bench/live_latency.py --turns 20 --barge-ins 10 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from realtime_avatar.benchmark.figures import BenchContext
from realtime_avatar.benchmark.live import conversation_figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--barge-ins", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("AVATAR_DATA_DIR") or tempfile.mkdtemp(prefix="avatar-bench-"))
    with tempfile.TemporaryDirectory(prefix="avatar-bench-work-") as work:
        ctx = BenchContext(data_dir, "full", Path(work))
        figures = conversation_figures(ctx, turns=args.turns, barge_ins=args.barge_ins)
    report = {figure.key: figure.to_json() for figure in figures}
    for key, figure in report.items():
        print(
            f"{key:32} n={figure['n']:3} min={figure['min']} p50={figure['p50']} "
            f"p95={figure['p95']} max={figure['max']} met={figure['met']}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
