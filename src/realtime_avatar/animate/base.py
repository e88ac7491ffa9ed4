"""The ``Animator`` protocol: speech to per-frame mouth parameters."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..frames import Speech

MOUTH_CHANNELS = ("jaw_open", "lip_spread", "lip_round", "lip_press")


class Animator(Protocol):
    """Mouth motion for a piece of speech, one row per 40 ms frame."""

    name: str

    def mouth_track(self, speech: Speech, n_frames: int) -> np.ndarray:
        """An ``n_frames x 4`` array of (jaw_open, lip_spread, lip_round, lip_press)."""
        ...
