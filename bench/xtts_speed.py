"""How fast the xtts synthesizer runs on CPU, with random weights in the published layout.

It writes an XTTS-v2 model folder with random weights (``tts/xtts_random.py``: the full-size
architecture, 30 GPT layers of 1024 and a 6681-token vocabulary, or ``--reduced``: 2 layers
of 256; the HiFi-GAN decoder and speaker encoder are full size either way), loads it through
``XttsSynthesizer``, computes the latents of a 6 s voice sample, then speaks one sentence
``--repeat`` times, streamed as the live path streams it. Random weights never choose to
stop, so each generation is capped at ``--tokens`` audio tokens (1024 samples at 22.05 kHz
each: 64 tokens are 3.0 s, a spoken sentence); the cost per token is what trained weights
cost. Figures:

- ``load_s``: reading and checking the folder and building the model;
- ``latents_s``: conditioning latents and speaker embedding of the voice sample (once per
  avatar: cached in its folder after);
- ``first_piece_s``: from the call to the first streamed piece of audio (``--chunk`` tokens);
- ``rtf``: synthesis time / audio time for the whole sentence (under 1: faster than real
  time); coqui's stream decodes all audio so far at each piece, so smaller pieces cost more;
- ``cpu_rtf``: the process's CPU seconds (all threads) per second of audio: unlike ``rtf``
  it does not grow when other programs share the cores; on ``--threads`` idle cores the
  wall-clock RTF is at best ``cpu_rtf / threads``.

Torch runs on ``--threads`` threads (default 2: the cores this project plans for). The
medians of ``--repeat`` runs are reported (the shared machine is noisy).

Run: .venv/bin/python bench/xtts_speed.py [--reduced] [--tokens 64] [--chunk 20]
     [--repeat 2] [--threads 2] [--out bench/results/xtts_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from realtime_avatar.tts.base import ReferenceVoice
from realtime_avatar.tts.xtts import SAMPLE_RATE_HZ, XttsSynthesizer
from realtime_avatar.tts.xtts_random import write_model_dir

SENTENCE = "Thanks for asking, I spent the weekend hiking up in the hills."


def _voice(path: Path, seconds: float = 6.0) -> Path:
    """A voice-like buzz with syllables, as an avatar's voice.wav."""
    rate = 22_050
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    pcm = 0.3 * envelope * np.sin(2 * np.pi * np.cumsum(pitch) / rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, pcm.astype(np.float32), rate)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reduced", action="store_true", help="2 GPT layers of 256")
    parser.add_argument("--tokens", type=int, default=64, help="audio tokens per sentence")
    parser.add_argument("--chunk", type=int, default=20, help="audio tokens per streamed piece")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="xtts-bench-") as tmp:
        folder = Path(tmp) / "XTTS-v2"
        started = time.perf_counter()
        write_model_dir(folder, reduced=args.reduced)
        write_s = time.perf_counter() - started
        sample = _voice(Path(tmp) / "avatar" / "voice.wav")
        synth = XttsSynthesizer(
            folder,
            ReferenceVoice(sample, "bench"),
            device=args.device,
            stream_chunk_tokens=args.chunk,
            max_audio_tokens=args.tokens,
        )
        started = time.perf_counter()
        loaded = synth.loaded
        load_s = time.perf_counter() - started
        params_m = sum(p.numel() for p in loaded.model.parameters()) / 1e6
        started = time.perf_counter()
        synth.latents()
        latents_s = time.perf_counter() - started

        runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            cpu_started = time.process_time()
            first = None
            samples = 0
            pieces = 0
            for piece in synth.synthesize_stream(SENTENCE, "en"):
                if first is None:
                    first = time.perf_counter() - started
                samples += len(piece.pcm)
                pieces += 1
            total = time.perf_counter() - started
            cpu_s = time.process_time() - cpu_started
            audio_s = samples / SAMPLE_RATE_HZ
            runs.append(
                {
                    "first_piece_s": first,
                    "total_s": total,
                    "cpu_s": cpu_s,
                    "audio_s": audio_s,
                    "pieces": pieces,
                }
            )

    result = {
        "architecture": "reduced GPT (2 x 256)" if args.reduced else "full size (GPT 30 x 1024)",
        "parameters_m": round(params_m, 1),
        "device": args.device,
        "threads": args.threads,
        "tokens": args.tokens,
        "chunk_tokens": args.chunk,
        "write_model_s": round(write_s, 1),
        "load_s": round(load_s, 1),
        "latents_s": round(latents_s, 2),
        "first_piece_s": round(statistics.median(r["first_piece_s"] or 0 for r in runs), 2),
        "synth_s": round(statistics.median(r["total_s"] for r in runs), 2),
        "audio_s": round(statistics.median(r["audio_s"] for r in runs), 2),
        "rtf": round(statistics.median(r["total_s"] / r["audio_s"] for r in runs), 2),
        "cpu_rtf": round(statistics.median(r["cpu_s"] / r["audio_s"] for r in runs), 2),
        "runs": runs,
        "load_average_1min": round(os.getloadavg()[0], 1),  # of this 2-core machine, at the end
        "command": "bench/xtts_speed.py "
        + " ".join(
            [*(["--reduced"] if args.reduced else []), f"--tokens {args.tokens}",
             f"--chunk {args.chunk}", f"--repeat {args.repeat}", f"--threads {args.threads}"]
        ),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
