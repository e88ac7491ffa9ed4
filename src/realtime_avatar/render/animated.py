"""The embedded renderer behind the seam: mouth shapes from speech, drawn by ``mesh2d``.

The animator turns each pushed piece of speech into a mouth track (from its phoneme
timings, or from the audio alone when the synthesizer gives none); idle motion (blinks,
breathing, head motion) runs underneath, and the drawer renders one frame per tick. The
queue and the clock are ``Playout``'s: drawing happens outside its lock, so ``push`` and
``clear`` from the event loop never wait for a frame to be drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..animate.base import Animator
from ..animate.idle import IdleMotion
from ..animate.mouth import PhonemeAnimator
from ..constants import OUTPUT_RATE_HZ, SAMPLES_PER_FRAME
from ..frames import AVFrame, Speech
from ..media.audio import float_to_int16, resample
from .base import FaceDrawer
from .playout import Playout, PlayoutRenderer

SILENCE = np.zeros(SAMPLES_PER_FRAME, np.int16)


@dataclass
class _Playing:
    """One piece of speech cut into frames: its audio and mouth track, and where we are."""

    turn_id: int
    audio: np.ndarray  # n_frames * SAMPLES_PER_FRAME int16
    mouth: np.ndarray  # n_frames x 4

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


class AnimatedRenderer(PlayoutRenderer[_Playing]):
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
        self._playout: Playout[_Playing] = Playout(
            lambda speech: cut_into_frames(speech, self.animator)
        )

    def next_frame(self) -> AVFrame:
        index, playing, step = self._playout.next()
        if playing is None:
            params = self.idle.params(index, None, 0)
            return AVFrame(0, index, self.drawer.render(params), SILENCE)
        params = self.idle.params(index, playing.mouth[step], playing.turn_id)
        audio = playing.audio[step * SAMPLES_PER_FRAME : (step + 1) * SAMPLES_PER_FRAME]
        return AVFrame(playing.turn_id, index, self.drawer.render(params), audio, speaking=True)
