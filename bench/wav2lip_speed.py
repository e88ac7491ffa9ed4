"""How fast the wav2lip renderer runs on CPU: the real architecture, random weights.

Two figures per batch size (frames per forward pass):

- ``forward_ms_per_frame``: the network alone (mel windows and faces in, 96x96 faces out);
- ``frame_ms``: what the renderer spends per frame of speech through the seam (resampling
  and mel for the piece, the forward pass, colour match and paste-back into a 512 px
  photo), so ``1000 / frame_ms`` is the most frames a second it can give.

Live needs ``frame_ms`` under 40 (25 fps) with time to spare for everything else. Torch
runs on ``--threads`` threads (default 2: the cores this project plans for). The weights
are random (``wav2lip_net.random_weights``), which costs exactly what trained ones cost.

Each figure is the median of ``--repeat`` runs (the shared machine is noisy).

Run: .venv/bin/python bench/wav2lip_speed.py [--batches 1 8 16] [--threads 2] [--seconds 2]
     [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from realtime_avatar.constants import RENDER_SIZE_PX
from realtime_avatar.frames import Speech
from realtime_avatar.render.base import FaceImage, spoken_frames
from realtime_avatar.render.wav2lip import Wav2LipRenderer
from realtime_avatar.render.wav2lip_net import Wav2Lip, random_weights


def _face(seed: int = 0) -> FaceImage:
    """A 512 px photo and face-mesh-like points covering a face-sized ellipse."""
    rng = np.random.default_rng(seed)
    photo = rng.integers(0, 255, (RENDER_SIZE_PX, RENDER_SIZE_PX, 3), dtype=np.uint8)
    angle, radius = rng.uniform(0, 2 * np.pi, 468), np.sqrt(rng.uniform(0, 1, 468))
    points = np.stack([256 + 110 * radius * np.cos(angle), 240 + 150 * radius * np.sin(angle)], 1)
    return FaceImage(photo, points.astype(np.float32))


def _speech(seconds: float, turn: int = 1) -> Speech:
    rate = 24_000
    t = np.arange(int(seconds * rate)) / rate
    pcm = 0.3 * np.sin(2 * np.pi * 180 * t) * np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    return Speech(turn, "bench", "en", pcm.astype(np.float32), rate)


def forward_ms_per_frame(model: Wav2Lip, batch: int, repeat: int) -> float:
    mels = torch.rand(batch, 1, 80, 16) * 8 - 4
    faces = torch.rand(batch, 6, 96, 96)
    times = []
    with torch.inference_mode():
        model(mels, faces)  # warm-up
        for _ in range(repeat):
            start = time.perf_counter()
            model(mels, faces)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / batch


def renderer_ms_per_frame(model: Wav2Lip, batch: int, seconds: float, repeat: int) -> float:
    renderer = Wav2LipRenderer(_face(), model, batch_frames=batch)
    list(spoken_frames(renderer, _speech(0.2)))  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        frames = list(spoken_frames(renderer, _speech(seconds)))
        times.append((time.perf_counter() - start) / len(frames))
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="speech per renderer run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = Wav2Lip()
    model.load_state_dict(random_weights())
    model.eval()
    rows = []
    for batch in args.batches:
        forward = forward_ms_per_frame(model, batch, args.repeat)
        frame = renderer_ms_per_frame(model, batch, args.seconds, args.repeat)
        rows.append(
            {
                "batch": batch,
                "forward_ms_per_frame": round(forward, 1),
                "frame_ms": round(frame, 1),
                "max_fps": round(1000 / frame, 1),
                "live_at_25_fps": frame < 40,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    params = sum(p.numel() for p in model.parameters())
    load = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps({"threads": args.threads, "params": params, "load_average": load}))


if __name__ == "__main__":
    main()
