"""The ``VoiceActivity`` protocol: 16 kHz audio in, speech start/end events out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class VadEvent:
    """Speech began (``start``) or ended (``end``) at ``time_s`` into the stream.

    Detectors may also report a likely end early (``pause``, at where the silence began)
    and its cancellation (``resume``, where speech came back); an ``end`` or ``resume``
    always follows a ``pause``.
    """

    kind: str  # "start" | "end" | "pause" | "resume"
    time_s: float


class VoiceActivity(Protocol):
    """Streaming voice activity detection for one session (state per instance)."""

    name: str

    def feed(self, pcm_16k: np.ndarray) -> list[VadEvent]:
        """Consume float32 mono 16 kHz samples (any length); return the events they complete."""
        ...

    @property
    def speaking(self) -> bool:
        """Whether the user is speaking now."""
        ...

    def speech_probability(self) -> float:
        """The latest frame's speech probability, 0..1."""
        ...

    def reset(self) -> None:
        """Forget all state (new session)."""
        ...
