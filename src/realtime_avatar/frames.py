"""Every kind of data that flows through the pipeline, as small typed dataclasses.

Every frame carries the ``turn_id`` it belongs to; a stage drops frames whose turn is
older than the session's current turn (barge-in), so interruption is one mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class PhonemeTiming:
    """One phoneme (IPA, as espeak-ng writes it) and where it sits in the audio."""

    phoneme: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class WordTiming:
    """One word and where it sits in the audio."""

    word: str
    start_s: float
    end_s: float


@dataclass(slots=True)
class AudioChunk:
    """A block of mono float32 PCM in [-1, 1]."""

    turn_id: int
    pcm: np.ndarray
    sample_rate_hz: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate_hz


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the recognizer heard; partials while the user speaks, one final per utterance."""

    turn_id: int
    text: str
    final: bool
    language: str = "en"


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the responder's reply as it streams; ``final`` marks the end of the reply."""

    turn_id: int
    text: str
    final: bool = False


@dataclass(slots=True)
class Speech:
    """Synthesized speech for one sentence or clause, with its phoneme and word timings."""

    turn_id: int
    text: str
    language: str
    pcm: np.ndarray  # mono float32 in [-1, 1]
    sample_rate_hz: int
    phonemes: list[PhonemeTiming] = field(default_factory=list)
    words: list[WordTiming] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate_hz


@dataclass(frozen=True, slots=True)
class FaceParams:
    """Face state for one 40 ms video frame. Mouth values are 0..1, angles in degrees."""

    turn_id: int = 0
    jaw_open: float = 0.0
    lip_spread: float = 0.0
    lip_round: float = 0.0
    lip_press: float = 0.0
    blink: float = 0.0
    brow_raise: float = 0.0
    head_roll_deg: float = 0.0
    head_dx_px: float = 0.0
    head_dy_px: float = 0.0
    speaking: bool = False


@dataclass(slots=True)
class AVFrame:
    """One rendered video frame and exactly its 40 ms of audio: lip sync by construction."""

    turn_id: int
    index: int
    rgb: np.ndarray  # H x W x 3 uint8
    audio: np.ndarray  # SAMPLES_PER_FRAME int16 at OUTPUT_RATE_HZ
    speaking: bool = False


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """The session opened a new turn; older turns' frames are now stale."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Interrupted:
    """The user spoke over the avatar; everything of ``turn_id`` and before is dropped."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """The last frame of a turn's answer has been produced."""

    turn_id: int
