"""Figures for the avatar core: render ms/frame on one core, `avatar say` wall time, peak RSS.

Run: .venv/bin/python bench/core.py  (the render figure is taken pinned to one core)
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

SCRIPT_20S = (
    "Welcome to realtime avatar. I was made from a single photo and a short voice sample. "
    "Everything you see and hear runs on an ordinary computer, without any cloud service. "
    "My lips follow every sound I make, and my eyes blink now and then, just like yours. "
    "You can give me a script, and I will turn it into a video like this one. "
    "Thank you for watching, and have a wonderful day."
)


def render_figures(avatar) -> dict:  # type: ignore[no-untyped-def]
    from realtime_avatar.animate.idle import IdleMotion
    from realtime_avatar.frames import FaceParams
    from realtime_avatar.media.mp4 import Mp4Writer
    from realtime_avatar.render.mesh2d import Mesh2DRenderer

    cv2.setNumThreads(1)
    all_cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(all_cores)})
    renderer = Mesh2DRenderer(avatar.face_rgb, avatar.landmarks)
    idle = IdleMotion(1)
    rng = np.random.default_rng(0)
    params = []
    for i in range(500):
        mouth = rng.uniform(0, 1, 4) * [1.0, 0.6, 0.6, 0.3]
        params.append(idle.params(i, mouth if i % 50 < 40 else None))
    for p in params[:20]:
        renderer.render(p)
    times = []
    for p in params:
        t = time.perf_counter()
        renderer.render(p)
        times.append((time.perf_counter() - t) * 1000)
    audio = np.zeros(1920, np.int16)
    enc = []
    with tempfile.TemporaryDirectory() as tmp:
        writer = Mp4Writer(Path(tmp) / "b.mp4", renderer.size_px, renderer.size_px)
        for p in params:
            t = time.perf_counter()
            writer.write(renderer.render(p), audio)
            enc.append((time.perf_counter() - t) * 1000)
        writer.close()
    os.sched_setaffinity(0, all_cores)
    return {
        "render_ms_median": statistics.median(times),
        "render_ms_p95": float(np.percentile(times, 95)),
        "render_plus_h264_ms_median": statistics.median(enc),
        "render_plus_h264_ms_p95": float(np.percentile(enc, 95)),
        "frames": len(params),
        "_": FaceParams.__name__,
    }


def say_figures(data_dir: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "script.mp4"
        env = dict(os.environ, AVATAR_DATA_DIR=data_dir)
        cmd = [
            sys.executable,
            "-m",
            "realtime_avatar.cli",
            "say",
            SCRIPT_20S,
            "--lang",
            "en",
            "-o",
            str(out),
        ]
        subprocess.run(cmd, check=True, env=env, capture_output=True)  # warm caches
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        wall = time.perf_counter() - t
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        dur = float(
            subprocess.run(
                [
                    "ffprobe",
                    "-v",
                    "error",
                    "-show_entries",
                    "format=duration",
                    "-of",
                    "csv=p=0",
                    str(out),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
    return {
        "say_wall_s": wall,
        "video_s": dur,
        "real_time_factor": wall / dur,
        "peak_rss_mb": rss_mb,
    }


def main() -> None:
    from realtime_avatar.avatars.registry import load_avatar

    data_dir = os.environ.setdefault("AVATAR_DATA_DIR", tempfile.mkdtemp(prefix="avatar-bench-"))
    avatar = load_avatar("default")
    result = {
        "render": render_figures(avatar),
        "say": say_figures(data_dir),
        "cpu_count": os.cpu_count(),
    }
    result["render"].pop("_")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
