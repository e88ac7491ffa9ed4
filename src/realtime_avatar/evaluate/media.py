"""Reading what the pipeline wrote: MP4 frames and audio, decoded with PyAV."""

from __future__ import annotations

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
        return resample(self.audio, self.rate_hz, rate_hz) if rate_hz != self.rate_hz else self.audio


def decode_video(path: Path) -> Decoded:
    """Every frame and the whole audio track of ``path``."""
    frames: list[np.ndarray] = []
    pieces: list[np.ndarray] = []
    rate = 0
    fps = float(FPS)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.average_rate:
            fps = float(stream.average_rate)
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
    with av.open(str(path)) as container:
        if container.streams.audio:
            resampler = av.AudioResampler(format="flt", layout="mono")
            for frame in container.decode(audio=0):
                rate = frame.sample_rate
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
    audio = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    return Decoded(frames, audio, rate or 48_000, fps)


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
