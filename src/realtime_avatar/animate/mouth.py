"""Mouth motion from phoneme timings (with coarticulation), or from the audio alone."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..constants import FPS
from ..frames import Speech
from .visemes import viseme

TRACK_RATE_HZ = 200  # internal resolution before sampling at the frame rate
COARTICULATION_SIGMA_S = 0.032  # neighbouring sounds blend over about +-60 ms
PRESS_SIGMA_S = 0.018  # lip closures are brief and must be reached


def envelope(pcm: np.ndarray, rate_hz: int, hop_s: float) -> np.ndarray:
    """RMS level per hop, normalised to 0..1 between the noise floor and the loud peaks."""
    hop = max(int(rate_hz * hop_s), 1)
    count = int(np.ceil(len(pcm) / hop))
    padded = np.zeros(count * hop, np.float32)
    padded[: len(pcm)] = pcm
    rms = np.sqrt(np.mean(padded.reshape(count, hop) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    if len(db) == 0:
        return db
    peak = np.percentile(db, 95)
    floor = max(np.percentile(db, 10), peak - 45.0)
    return np.clip((db - floor) / max(peak - floor, 1e-3), 0.0, 1.0)


def _frame_samples(track: np.ndarray, n_frames: int) -> np.ndarray:
    """Average the internal track over each video frame's 40 ms window."""
    per = TRACK_RATE_HZ // FPS
    need = n_frames * per
    if len(track) < need:
        pad = np.zeros((need - len(track),) + track.shape[1:], track.dtype)
        track = np.concatenate([track, pad])
    return track[:need].reshape(n_frames, per, *track.shape[1:]).mean(axis=1)


class PhonemeAnimator:
    """Visemes from phoneme timings, blended by a zero-phase coarticulation filter."""

    name = "phonemes"

    def mouth_track(self, speech: Speech, n_frames: int) -> np.ndarray:
        """Per-frame (jaw_open, lip_spread, lip_round, lip_press)."""
        if not speech.phonemes:
            return AudioAnimator().mouth_track(speech, n_frames)
        length = max(int(np.ceil(speech.duration_s * TRACK_RATE_HZ)), 1)
        targets = np.zeros((length, 4), np.float32)
        for ph in speech.phonemes:
            a = int(round(ph.start_s * TRACK_RATE_HZ))
            b = max(int(round(ph.end_s * TRACK_RATE_HZ)), a + 1)
            targets[a:b] = viseme(ph.phoneme)
        smooth = gaussian_filter1d(targets[:, :3], COARTICULATION_SIGMA_S * TRACK_RATE_HZ, axis=0)
        press = gaussian_filter1d(targets[:, 3], PRESS_SIGMA_S * TRACK_RATE_HZ)
        press = np.clip(press * 1.6, 0.0, 1.0)
        # Loud syllables open wider: modulate the jaw by the audio level so emphasis shows.
        level = envelope(speech.pcm, speech.sample_rate_hz, 1.0 / TRACK_RATE_HZ)[:length]
        level = np.pad(level, (0, length - len(level)))
        level = gaussian_filter1d(level, 0.02 * TRACK_RATE_HZ)
        jaw = smooth[:, 0] * (0.6 + 0.55 * level) * (1.0 - 0.9 * press)
        track = np.stack([jaw, smooth[:, 1], smooth[:, 2], press], axis=1)
        return np.clip(_frame_samples(track, n_frames), 0.0, 1.0)


class AudioAnimator:
    """Fallback for audio without phonemes (a user's recording): the jaw follows loudness."""

    name = "audio"

    def mouth_track(self, speech: Speech, n_frames: int) -> np.ndarray:
        """Per-frame (jaw_open, lip_spread, lip_round, lip_press) from the audio alone."""
        level = envelope(speech.pcm, speech.sample_rate_hz, 1.0 / TRACK_RATE_HZ)
        level = gaussian_filter1d(level, COARTICULATION_SIGMA_S * TRACK_RATE_HZ)
        jaw = 0.75 * level**1.2
        track = np.stack([jaw, 0.2 * level, np.zeros_like(level), np.zeros_like(level)], axis=1)
        return np.clip(_frame_samples(track, n_frames), 0.0, 1.0)
