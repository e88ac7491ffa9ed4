"""Voice fitting on the real-voice set: what each system scores, and what the fit bought.

Runs ``realtime_avatar.evaluate.voices`` (see its docstring for the protocol: the fit
sees the first 60 % of each recording, every score is taken on the rest)
and prints a table per voice and the set's means, with the fit's time.

Usage:

    .venv/bin/python bench/voice_fit_eval.py [--mode fast|full] [--voice NAME ...]
        [--json PATH] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from realtime_avatar.evaluate.voices import SYSTEMS, evaluate_voices  # noqa: E402
from realtime_avatar.settings import Settings  # noqa: E402


def main() -> int:
    """Run the evaluation and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("fast", "full"), default="fast")
    parser.add_argument("--voice", action="append", help="only these voices (repeatable)")
    parser.add_argument("--json", type=Path, help="write the full result here")
    parser.add_argument("--data-dir", type=Path, help="cache folder (default: a fresh temp)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="voicefit-"))
    settings = Settings(data_dir=data_dir)
    result = evaluate_voices(
        settings, args.mode, args.voice, progress=lambda m: print(m, file=sys.stderr)
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print("| voice | person F0 | ceiling | " + " | ".join(SYSTEMS) + " | fitted recipe | fit s |")
    print("| --- " * (5 + len(SYSTEMS)) + "|")
    for row in result["voices"]:
        cells = []
        for system in SYSTEMS:
            s = row["systems"][system]
            cells.append(
                f"{s['similarity']:.3f} / {s['pitch_error_st']:.1f} st / "
                f"{s['envelope_db']:.1f} dB / WER {s['wer']:.2f}"
            )
        fit = row["fit"]
        print(
            f"| {row['voice']} | {row['person_median_f0_hz']:.0f} Hz | "
            f"{row['ceiling_similarity']:.3f} | "
            + " | ".join(cells)
            + f" | {fit['recipe']} | {fit['seconds']:.0f}"
            + (" (budget)" if fit["stopped_early"] else "")
            + " |"
        )
    print()
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
