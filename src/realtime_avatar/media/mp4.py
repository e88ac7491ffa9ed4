"""Streaming MP4 writer (H.264 + AAC) that leaves no partial file behind on failure."""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from ..constants import FPS, OUTPUT_RATE_HZ
from ..errors import OutputPathError


def check_output_path(path: Path) -> Path:
    """Refuse an output path that cannot be written, before any work is done."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(f"{path} is a folder; give a file name such as {path / 'out.mp4'}")
    if path.suffix.lower() != ".mp4":
        raise OutputPathError(f"output must be an .mp4 file, got {path.name}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(
            f"folder {parent} does not exist; create it first or pick another path"
        )
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputPathError(f"cannot write to {path}: permission denied; pick another path")
    return path


class Mp4Writer:
    """Write RGB frames and their audio as they come; the file appears only when complete."""

    def __init__(self, path: Path, width: int, height: int, crf: int = 20) -> None:
        self.path = check_output_path(path)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.stem}-", suffix=".mp4.part", dir=self.path.parent
        )
        os.close(fd)
        self._tmp = Path(tmp)
        self.frames = 0
        self.audio_samples = 0
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
            video = self._container.add_stream("libx264", rate=FPS)
            video.width, video.height = width, height
            video.pix_fmt = "yuv420p"
            video.options = {"crf": str(crf), "preset": "veryfast", "tune": "stillimage"}
            video.codec_context.time_base = Fraction(1, FPS)
            audio = self._container.add_stream("aac", rate=OUTPUT_RATE_HZ)
            audio.layout = "mono"
            audio.bit_rate = 96_000
            self._video, self._audio = video, audio
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def write(self, rgb: np.ndarray, audio_int16: np.ndarray) -> None:
        """Append one video frame and exactly its audio."""
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        chunk = av.AudioFrame.from_ndarray(audio_int16.reshape(1, -1), format="s16", layout="mono")
        chunk.sample_rate = OUTPUT_RATE_HZ
        chunk.pts = self.audio_samples
        chunk.time_base = Fraction(1, OUTPUT_RATE_HZ)
        for packet in self._audio.encode(chunk):
            self._container.mux(packet)
        self.frames += 1
        self.audio_samples += len(audio_int16)

    def close(self) -> Path:
        """Flush the encoders and move the finished file into place."""
        for stream in (self._video, self._audio):
            for packet in stream.encode(None):
                self._container.mux(packet)
        self._container.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away anyway
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
