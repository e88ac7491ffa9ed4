"""The render seam: speech in as it is produced, video frames out, each with its audio.

In the style of livekit's avatar interface: a ``Renderer`` is pushed speech (PCM, with
phoneme and word timings when the synthesizer gives them, tagged with its turn), is
cleared on barge-in, and yields one ``AVFrame`` per 40 ms tick: a frame of speech paired
with exactly its audio, or an idle frame with silence when nothing is queued. The
embedded renderer animates the photo from timings (``render/animated.py`` + ``mesh2d``);
an audio-driven neural renderer (Wav2Lip, MuseTalk, Ditto) reads the PCM itself.

``FaceDrawer`` is the smaller, older piece under the embedded renderer: one frame of face
parameters in, one RGB image out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..frames import AVFrame, FaceParams, Speech


@dataclass(frozen=True)
class FaceImage:
    """What a renderer is built from: the avatar's prepared face and where its files live."""

    face_rgb: np.ndarray  # square H x W x 3 uint8, the render size
    landmarks: np.ndarray  # N x 2 (or 3) face-mesh points in face_rgb's pixels
    folder: Path | None = None  # the avatar's folder (caches a renderer may keep)


@runtime_checkable
class Renderer(Protocol):
    """One session's face: speech in, paired frames out at 25 fps.

    ``push`` and ``clear`` may be called from any thread while another thread pulls
    ``next_frame``; implementations keep the work of a frame outside their lock.
    """

    name: str
    size_px: int

    def push(self, speech: Speech) -> None:
        """Queue speech to be spoken after what is queued already."""
        ...

    def clear(self) -> None:
        """Drop everything queued or playing (barge-in): the next frame is idle."""
        ...

    @property
    def busy(self) -> bool:
        """Whether speech is queued or playing."""
        ...

    @property
    def frame_index(self) -> int:
        """The index the next frame will carry (the session's frame clock)."""
        ...

    def next_frame(self) -> AVFrame:
        """The next 40 ms: speech with exactly its audio, or the idle face with silence."""
        ...


@runtime_checkable
class FaceDrawer(Protocol):
    """Draws the avatar for one frame of face parameters. Not thread-safe."""

    name: str
    size_px: int

    def render(self, params: FaceParams) -> np.ndarray:
        """An H x W x 3 uint8 RGB frame showing the face in the state ``params`` describes."""
        ...


def spoken_frames(renderer: Renderer, speech: Speech) -> Iterator[AVFrame]:
    """Push ``speech`` and yield its frames (offline drivers: ``say``, tests, benchmarks)."""
    renderer.push(speech)
    while renderer.busy:
        yield renderer.next_frame()
