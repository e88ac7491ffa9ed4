"""Life when nobody speaks: blinks at natural intervals, breathing, small head motion."""

from __future__ import annotations

import math

import numpy as np

from ..constants import FPS
from ..frames import FaceParams

# Closing is fast, opening slower: one value per 40 ms frame.
BLINK_SHAPE = (0.55, 1.0, 0.85, 0.45, 0.15)
BLINK_MEAN_S = 3.6
BLINK_MIN_S = 1.4
BLINK_MAX_S = 7.5
DOUBLE_BLINK_CHANCE = 0.12


class IdleMotion:
    """Deterministic for a seed; continuous across speech and silence via a global frame index."""

    def __init__(self, seed: int = 7) -> None:
        self._rng = np.random.default_rng(seed)
        self._phase = self._rng.uniform(0, 2 * math.pi, size=6)
        self._next_blink = int(self._rng.uniform(0.8, 2.5) * FPS)
        self._blink_start = -100
        self._speech_energy = 0.0

    def _schedule_blink(self, frame: int) -> None:
        self._blink_start = frame
        if self._rng.random() < DOUBLE_BLINK_CHANCE:
            gap = len(BLINK_SHAPE) + 2
        else:
            interval = float(
                np.clip(self._rng.gamma(4.0, BLINK_MEAN_S / 4.0), BLINK_MIN_S, BLINK_MAX_S)
            )
            gap = int(interval * FPS)
        self._next_blink = frame + gap

    def params(self, frame: int, mouth: np.ndarray | None = None, turn_id: int = 0) -> FaceParams:
        """Face parameters for global frame ``frame``; ``mouth`` is this frame's mouth row."""
        if frame >= self._next_blink:
            self._schedule_blink(frame)
        k = frame - self._blink_start
        blink = BLINK_SHAPE[k] if 0 <= k < len(BLINK_SHAPE) else 0.0

        t = frame / FPS
        p = self._phase
        jaw = float(mouth[0]) if mouth is not None else 0.0
        speaking = mouth is not None
        # Speech energy drives gentle nods and brow lifts, smoothed so they lag the words.
        self._speech_energy += 0.15 * (jaw - self._speech_energy)
        energy = self._speech_energy
        roll = 1.1 * math.sin(2 * math.pi * t / 7.3 + p[0]) + 0.45 * math.sin(
            2 * math.pi * t / 3.1 + p[1]
        )
        dx = 2.2 * math.sin(2 * math.pi * t / 9.7 + p[2]) + 0.8 * math.sin(
            2 * math.pi * t / 4.3 + p[3]
        )
        breath = 1.0 * math.sin(2 * math.pi * t / 4.2 + p[4])
        dy = breath + 2.5 * energy
        if speaking:
            roll *= 1.4
            dx *= 1.3
        brow = 0.35 * max(energy - 0.3, 0.0) + 0.08 * math.sin(2 * math.pi * t / 11.0 + p[5])
        if mouth is None:
            mouth = np.zeros(4, np.float32)
        return FaceParams(
            turn_id=turn_id,
            jaw_open=float(mouth[0]),
            lip_spread=float(mouth[1]),
            lip_round=float(mouth[2]),
            lip_press=float(mouth[3]),
            blink=blink,
            brow_raise=brow,
            head_roll_deg=roll,
            head_dx_px=dx,
            head_dy_px=dy,
            speaking=speaking,
        )
