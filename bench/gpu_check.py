"""The device check for the neural renderers: streams per GPU, fps per stream, first frame.

Runs the wav2lip renderer (the published architecture, random weights: the cost of trained
ones) on ``--device`` through the render seam, as live calls do: for 1, 2, 4, ... streams
at once (one thread and one renderer per stream, one shared model), each stream renders
``--seconds`` of speech as fast as it can. A stream is live when it makes at least 25 fps;
"streams per device" is the most streams that are all live. The first-frame latency is
from ``push`` of a reply to its first frame on a renderer that has just been made.

It refuses a CUDA device where torch sees none (one line) instead of measuring the CPU.
``bench/gpu_check.sh`` runs it and the XTTS check; on a CPU machine ``--device cpu`` runs
the same code for a dry run.

Run: .venv/bin/python bench/gpu_check.py [--device cuda] [--max-streams 16] [--seconds 4]
     [--batch 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from wav2lip_speed import _face, _speech  # bench/: the same photo and speech as the CPU figures

from realtime_avatar.constants import FPS
from realtime_avatar.render.base import spoken_frames
from realtime_avatar.render.wav2lip import Wav2LipRenderer
from realtime_avatar.render.wav2lip_net import Wav2Lip, random_weights


def first_frame_ms(model: Wav2Lip, device: str, batch: int, repeat: int) -> float:
    """Median time from pushing a reply to its first frame, on a just-made renderer."""
    times = []
    for index in range(repeat):
        renderer = Wav2LipRenderer(_face(index), model, device=device, batch_frames=batch)
        start = time.perf_counter()
        next(iter(spoken_frames(renderer, _speech(1.0))))
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def streams_fps(
    model: Wav2Lip, device: str, streams: int, batch: int, seconds: float
) -> list[float]:
    """Each stream's fps when ``streams`` renderers draw ``seconds`` of speech at once."""
    renderers = [
        Wav2LipRenderer(_face(i), model, device=device, batch_frames=batch) for i in range(streams)
    ]
    for renderer in renderers:  # warm: kernels chosen, memory allocated
        list(spoken_frames(renderer, _speech(0.2)))
    fps: list[float] = [0.0] * streams
    errors: list[BaseException] = []
    go = threading.Barrier(streams)

    def run(index: int) -> None:
        try:
            go.wait()
            start = time.perf_counter()
            frames = list(spoken_frames(renderers[index], _speech(seconds, turn=2)))
            _sync(device)
            fps[index] = len(frames) / (time.perf_counter() - start)
        except BaseException as exc:  # re-raised below: a stream's failure fails the check
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return fps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (a dry run)")
    parser.add_argument("--max-streams", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="speech per stream")
    parser.add_argument("--batch", type=int, default=8, help="frames per forward pass")
    parser.add_argument("--repeat", type=int, default=5, help="first-frame samples")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"no CUDA device for --device {args.device}: torch {torch.__version__} sees none "
            "(a CPU build, or no NVIDIA driver); run it on the GPU machine, or --device cpu "
            "for a dry run",
            file=sys.stderr,
        )
        return 2
    model = Wav2Lip()
    model.load_state_dict(random_weights())
    model.eval().to(args.device)
    result: dict[str, Any] = {
        "renderer": "wav2lip",
        "device": args.device,
        "device_name": torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else "cpu",
        "torch": torch.__version__,
        "batch": args.batch,
        "first_frame_ms": round(first_frame_ms(model, args.device, args.batch, args.repeat), 1),
        "streams": [],
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }
    print(json.dumps({"first_frame_ms": result["first_frame_ms"]}), flush=True)
    live = 0
    streams = 1
    while streams <= args.max_streams:
        fps = streams_fps(model, args.device, streams, args.batch, args.seconds)
        row = {
            "streams": streams,
            "min_fps": round(min(fps), 1),
            "mean_fps": round(np.mean(fps), 1),
        }
        result["streams"].append(row)
        print(json.dumps(row), flush=True)
        if min(fps) < FPS:
            break
        live = streams
        streams *= 2
    result["streams_per_device"] = live
    if args.device.startswith("cuda"):
        result["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(args.device) / 2**20)
    print(json.dumps({"streams_per_device": live}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
