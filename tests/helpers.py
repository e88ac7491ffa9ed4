"""Test helpers: decoding MP4s with PyAV and measuring the mouth against the audio."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np

from realtime_avatar.evaluate.video_quality import CHROMIUM_ARGS
from realtime_avatar.face.landmarks import LIP_LOWER_OUTER, LIP_UPPER_OUTER

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium_args(mic_wav: Path, loop: bool = True) -> list[str]:
    """Headless Chromium's flags for a call: fake camera-less mic reading ``mic_wav``."""
    return [
        *CHROMIUM_ARGS,
        f"--use-file-for-fake-audio-capture={mic_wav}{'' if loop else '%noloop'}",
    ]


def ffprobe(path: Path) -> dict:
    """Streams and format of a media file, as ffprobe reports them."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def decode_av(path: Path) -> tuple[list[np.ndarray], np.ndarray, int]:
    """All RGB frames and the mono audio of an MP4."""
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    rate = 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono")
        for frame in container.decode(audio=0):
            rate = frame.sample_rate
            for out in resampler.resample(frame):
                audio.append(out.to_ndarray().reshape(-1))
    return frames, np.concatenate(audio), rate


def mouth_darkness(frames: list[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    """Per frame: how many dark pixels the mouth region holds (an open mouth is dark)."""
    pts = landmarks[LIP_UPPER_OUTER + LIP_LOWER_OUTER]
    x0, y0 = (pts.min(axis=0) - [6, 6]).astype(int)
    x1, y1 = (pts.max(axis=0) + [6, 40]).astype(int)
    values = []
    for rgb in frames:
        patch = rgb[y0:y1, x0:x1].astype(np.float32).mean(axis=2)
        values.append(float(np.sum(patch < 70)))
    return np.array(values)


def audio_envelope(audio: np.ndarray, rate: int, n_frames: int, fps: int = 25) -> np.ndarray:
    """RMS level per video frame."""
    hop = rate // fps
    audio = np.pad(audio, (0, max(0, n_frames * hop - len(audio))))[: n_frames * hop]
    return np.sqrt(np.mean(audio.reshape(n_frames, hop) ** 2, axis=1))


def best_lag(mouth: np.ndarray, envelope: np.ndarray, max_lag: int = 10) -> tuple[int, float]:
    """The lag in frames (positive: the mouth follows the audio) with the highest correlation."""
    best = (0, -1.0)
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            a, b = mouth[lag:], envelope[: len(envelope) - lag]
        else:
            a, b = mouth[:lag], envelope[-lag:]
        if len(a) < 10 or a.std() == 0 or b.std() == 0:
            continue
        r = float(np.corrcoef(a, b)[0, 1])
        if r > best[1]:
            best = (lag, r)
    return best
