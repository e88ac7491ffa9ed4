"""The embedded renderer behind the seam: mouth shapes from speech, drawn by ``mesh2d``.

The animator turns each pushed piece of speech into a mouth track (from its phoneme
timings, or from the audio alone when the synthesizer gives none); idle motion (blinks,
breathing, head motion) runs underneath, and the drawer renders one frame per tick. The
lock only guards which frame comes next: drawing happens outside it, so ``push`` and
``clear`` from the event loop never wait for a frame to be drawn.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

import numpy as np

from ..animate.base import Animator
from ..animate.idle import IdleMotion
from ..animate.mouth import PhonemeAnimator
from ..constants import OUTPUT_RATE_HZ, SAMPLES_PER_FRAME
from ..frames import AVFrame, Speech
from ..media.audio import float_to_int16, resample
from .base import FaceDrawer

SILENCE = np.zeros(SAMPLES_PER_FRAME, np.int16)


@dataclass
class _Playing:
    """One piece of speech cut into frames: its audio and mouth track, and where we are."""

    turn_id: int
    audio: np.ndarray  # n_frames * SAMPLES_PER_FRAME int16
    mouth: np.ndarray  # n_frames x 4
    next: int = 0

    @property
    def frames(self) -> int:
        return len(self.mouth)


def cut_into_frames(speech: Speech, animator: Animator) -> _Playing:
    """Audio at the output rate padded to whole frames, with the mouth track for each."""
    pcm = resample(speech.pcm, speech.sample_rate_hz, OUTPUT_RATE_HZ)
    n_frames = max(int(np.ceil(len(pcm) / SAMPLES_PER_FRAME)), 1)
    audio = np.zeros(n_frames * SAMPLES_PER_FRAME, np.int16)
    audio[: len(pcm)] = float_to_int16(pcm)
    return _Playing(speech.turn_id, audio, animator.mouth_track(speech, n_frames))


class AnimatedRenderer:
    """A ``Renderer``: an animator and idle motion driving a ``FaceDrawer``."""

    def __init__(
        self,
        drawer: FaceDrawer,
        animator: Animator | None = None,
        *,
        seed: int = 7,
        name: str | None = None,
    ) -> None:
        self.drawer = drawer
        self.animator = animator or PhonemeAnimator()
        self.name = name or drawer.name
        self.size_px = drawer.size_px
        self.idle = IdleMotion(seed)
        self._lock = threading.Lock()
        self._queue: collections.deque[Speech] = collections.deque()
        self._playing: _Playing | None = None
        self._starting: Speech | None = None  # taken from the queue, being cut into frames
        self._cleared = 0  # clears so far: a piece cut across a clear is not installed
        self._index = 0

    def push(self, speech: Speech) -> None:
        with self._lock:
            self._queue.append(speech)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._playing = None
            self._starting = None
            self._cleared += 1

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._queue) or self._playing is not None or self._starting is not None

    @property
    def frame_index(self) -> int:
        return self._index

    def next_frame(self) -> AVFrame:
        with self._lock:
            index = self._index
            # Counted before drawing: the index names frames to the client, and a barge-in
            # during the draw must not make two frames share one.
            self._index += 1
            speech = None
            if self._playing is None and self._queue:
                speech = self._starting = self._queue.popleft()
            cleared = self._cleared
        if speech is not None:
            # Cutting a piece (resampling, the mouth track) is the costly part of a start:
            # done outside the lock, then installed unless a clear came meanwhile.
            started = cut_into_frames(speech, self.animator)
            with self._lock:
                if self._cleared == cleared:
                    self._playing, self._starting = started, None
        with self._lock:
            playing = self._playing
            step = -1
            if playing is not None:
                step = playing.next
                playing.next += 1
                if playing.next >= playing.frames:
                    self._playing = None
        if playing is None:
            params = self.idle.params(index, None, 0)
            return AVFrame(0, index, self.drawer.render(params), SILENCE)
        params = self.idle.params(index, playing.mouth[step], playing.turn_id)
        audio = playing.audio[step * SAMPLES_PER_FRAME : (step + 1) * SAMPLES_PER_FRAME]
        return AVFrame(playing.turn_id, index, self.drawer.render(params), audio, speaking=True)
