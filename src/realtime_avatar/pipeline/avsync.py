"""Speech to paired audio/video frames: the part of the pipeline after TTS.

Each rendered frame leaves with exactly its 40 ms of audio, so lip sync holds by
construction; between utterances the same renderer plays the idle animation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..animate.base import Animator
from ..animate.idle import IdleMotion
from ..animate.mouth import PhonemeAnimator
from ..constants import OUTPUT_RATE_HZ, SAMPLES_PER_FRAME
from ..engine.voice import trim_leading_silence, trim_trailing_silence  # noqa: F401
from ..frames import AVFrame, Speech
from ..media.audio import float_to_int16, resample
from ..render.base import Renderer

_SILENCE = np.zeros(SAMPLES_PER_FRAME, np.int16)


class AVSynth:
    """Owns one session's renderer, animator and idle motion, and its frame clock."""

    def __init__(self, renderer: Renderer, animator: Animator | None = None, seed: int = 7) -> None:
        self.renderer = renderer
        self.animator = animator or PhonemeAnimator()
        self.idle = IdleMotion(seed)
        self.frame_index = 0

    def idle_frame(self, turn_id: int = 0) -> AVFrame:
        """One frame of the idle loop (blinks, breathing, head motion) with silence."""
        params = self.idle.params(self.frame_index, None, turn_id)
        frame = AVFrame(turn_id, self.frame_index, self.renderer.render(params), _SILENCE)
        self.frame_index += 1
        return frame

    def speech_frames(self, speech: Speech) -> Iterator[AVFrame]:
        """Frames for one utterance; its audio is padded with silence to whole frames."""
        pcm = resample(speech.pcm, speech.sample_rate_hz, OUTPUT_RATE_HZ)
        n_frames = max(int(np.ceil(len(pcm) / SAMPLES_PER_FRAME)), 1)
        audio = np.zeros(n_frames * SAMPLES_PER_FRAME, np.int16)
        audio[: len(pcm)] = float_to_int16(pcm)
        mouth = self.animator.mouth_track(speech, n_frames)
        for i in range(n_frames):
            index = self.frame_index
            # Counted before the yield: a barge-in abandons this generator right after one,
            # and the clock must still move on (it names frames to the client).
            self.frame_index += 1
            params = self.idle.params(index, mouth[i], speech.turn_id)
            rgb = self.renderer.render(params)
            chunk = audio[i * SAMPLES_PER_FRAME : (i + 1) * SAMPLES_PER_FRAME]
            yield AVFrame(speech.turn_id, index, rgb, chunk, speaking=True)
