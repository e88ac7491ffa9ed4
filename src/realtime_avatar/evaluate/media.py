"""Reading what the pipeline wrote: MP4 frames and audio, decoded with PyAV."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..constants import FPS
from ..media.audio import resample


@dataclass
class Decoded:
    """All frames (RGB) and the mono float32 audio of a video file."""

    frames: list[np.ndarray]
    audio: np.ndarray
    rate_hz: int
    fps: float = FPS

    @property
    def duration_s(self) -> float:
        return len(self.frames) / self.fps

    def audio_at(self, rate_hz: int) -> np.ndarray:
        """The audio resampled to ``rate_hz``."""
        return (
            resample(self.audio, self.rate_hz, rate_hz) if rate_hz != self.rate_hz else self.audio
        )


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """The RGB frames of ``path`` one at a time (a long video never sits in memory whole)."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """The audio track of ``path`` as mono float32, and its sample rate."""
    pieces: list[np.ndarray] = []
    rate = 0
    with av.open(str(path)) as container:
        if container.streams.audio:
            resampler = av.AudioResampler(format="flt", layout="mono")
            for frame in container.decode(audio=0):
                rate = frame.sample_rate
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
    audio = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    return audio, rate or 48_000


def video_fps(path: Path) -> float:
    """The frame rate the container declares (25 when it declares none)."""
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else float(FPS)


def decode_video(path: Path) -> Decoded:
    """Every frame and the whole audio track of ``path`` (for short videos)."""
    audio, rate = read_audio(path)
    return Decoded(list(iter_frames(path)), audio, rate, video_fps(path))


def shift_audio(audio: np.ndarray, rate_hz: int, shift_ms: float) -> np.ndarray:
    """The audio delayed by ``shift_ms`` (advanced if negative), same length, silence-padded."""
    samples = int(round(abs(shift_ms) * rate_hz / 1000.0))
    out = np.zeros_like(audio)
    if samples >= len(audio):
        return out
    if shift_ms >= 0:
        out[samples:] = audio[: len(audio) - samples]
    else:
        out[: len(audio) - samples] = audio[samples:]
    return out
