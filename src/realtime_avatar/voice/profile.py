"""A voice's pitch and timbre statistics, measured once with WORLD and stored as ``.npz``.

A ``VoiceProfile`` is what the voice matcher needs to know about a voice: where its pitch
sits and how much it moves (log-F0 mean and spread over voiced frames), and the shape of
its long-term spectral envelope on a fixed frequency grid (so profiles measured at
different sample rates compare bin by bin).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidAudioError

with warnings.catch_warnings():
    # pyworld 0.3.5 imports pkg_resources at import time, which warns on every start.
    warnings.simplefilter("ignore", UserWarning)
    import pyworld as pw

logger = logging.getLogger(__name__)

PROFILE_VERSION = 1
FRAME_PERIOD_MS = 5.0
F0_FLOOR_HZ = 60.0
F0_CEIL_HZ = 600.0
# The envelope is compared on 0..8 kHz: every rate we accept (16 kHz and up) covers it.
ENVELOPE_MAX_HZ = 8000.0
ENVELOPE_GRID_HZ = np.linspace(0.0, ENVELOPE_MAX_HZ, 321)  # 25 Hz steps
# Band whose mean level is removed from each frame, so the profile holds shape, not loudness.
LEVEL_BAND_HZ = (100.0, 7000.0)
MIN_VOICED_S = 1.0
# Frames quieter than this (relative to the loudest frames) are left out of the envelope.
ENVELOPE_GATE_DB = 35.0


@dataclass(frozen=True)
class WorldFeatures:
    """WORLD parameters of one signal: F0 per frame (0 = unvoiced), envelope, aperiodicity."""

    f0_hz: np.ndarray  # (frames,)
    envelope: np.ndarray  # (frames, fft_size // 2 + 1) power spectral envelope
    aperiodicity: np.ndarray  # (frames, fft_size // 2 + 1), 0..1
    rate_hz: int
    frame_period_ms: float


def analyse(
    pcm: np.ndarray,
    rate_hz: int,
    f0_method: str = "dio",
    frame_period_ms: float = FRAME_PERIOD_MS,
    fix_octaves: bool = True,
) -> WorldFeatures:
    """WORLD analysis: F0 (``dio``: fast, ``harvest``: accurate), CheapTrick envelope, D4C."""
    x = np.ascontiguousarray(pcm, dtype=np.float64)
    if f0_method == "harvest":
        f0, times = pw.harvest(
            x, rate_hz, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=frame_period_ms
        )
    elif f0_method == "dio":
        f0, times = pw.dio(
            x, rate_hz, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=frame_period_ms
        )
        f0 = pw.stonemask(x, f0, times, rate_hz)
    else:
        raise ValueError(f"unknown F0 method {f0_method!r}; use 'dio' or 'harvest'")
    if fix_octaves:
        f0 = fix_octave_jumps(f0)
    # CheapTrick's default floor (71 Hz) keeps its FFT size equal to D4C's; the rare lower
    # frames are analysed as 71 Hz, which only smooths their envelope slightly.
    envelope = pw.cheaptrick(x, f0, times, rate_hz)
    aperiodicity = pw.d4c(x, f0, times, rate_hz)
    return WorldFeatures(f0, envelope, aperiodicity, rate_hz, frame_period_ms)


def live_f0(pcm: np.ndarray, rate_hz: int, frames: int | None = None) -> np.ndarray:
    """F0 as the live matcher reads it (DIO + StoneMask + octave folding), 5 ms frames."""
    x = np.ascontiguousarray(pcm, dtype=np.float64)
    f0, times = pw.dio(
        x, rate_hz, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=FRAME_PERIOD_MS
    )
    f0 = fix_octave_jumps(pw.stonemask(x, f0, times, rate_hz))
    if frames is not None:
        f0 = np.pad(f0[:frames], (0, max(0, frames - len(f0))))
    return f0


def fix_octave_jumps(f0_hz: np.ndarray, context_frames: int = 40) -> np.ndarray:
    """Fold frames an octave away from their neighbourhood's pitch back onto it.

    Trackers jump an octave on creaky or breathy frames; resynthesised, such a jump is a
    squeak or a grunt. The reference is the median ln F0 of the voiced frames within
    ``context_frames`` (200 ms at 5 ms frames) on each side.
    """
    voiced = np.flatnonzero(f0_hz > 0)
    if len(voiced) < 3:
        return f0_hz
    log_f0 = np.log(f0_hz[voiced])
    out = f0_hz.copy()
    lo = np.searchsorted(voiced, voiced - context_frames)
    hi = np.searchsorted(voiced, voiced + context_frames, side="right")
    for k in range(len(voiced)):
        offset = log_f0[k] - np.median(log_f0[lo[k] : hi[k]])
        # ln 2 = 0.69; fold only clear octave errors, not real pitch movement.
        if offset > 0.5:
            out[voiced[k]] = f0_hz[voiced[k]] / 2.0
        elif offset < -0.5:
            out[voiced[k]] = f0_hz[voiced[k]] * 2.0
    return out


def envelope_bins_hz(fft_bins: int, rate_hz: int) -> np.ndarray:
    """Centre frequency of each bin of a WORLD envelope with ``fft_bins`` bins."""
    return np.linspace(0.0, rate_hz / 2.0, fft_bins)


def level_normalised_log_envelope(envelope: np.ndarray, rate_hz: int) -> np.ndarray:
    """Natural-log envelope on ``ENVELOPE_GRID_HZ``, less each frame's mean over LEVEL_BAND_HZ."""
    bins_hz = envelope_bins_hz(envelope.shape[1], rate_hz)
    log_env = np.log(np.maximum(envelope, 1e-20))
    # Columns of the fixed grid, by linear interpolation along frequency (all frames at once).
    pos = np.interp(ENVELOPE_GRID_HZ, bins_hz, np.arange(len(bins_hz), dtype=np.float64))
    lo = np.minimum(np.floor(pos).astype(int), len(bins_hz) - 2)
    frac = pos - lo
    on_grid = log_env[:, lo] * (1.0 - frac) + log_env[:, lo + 1] * frac
    band = (ENVELOPE_GRID_HZ >= LEVEL_BAND_HZ[0]) & (ENVELOPE_GRID_HZ <= LEVEL_BAND_HZ[1])
    return on_grid - on_grid[:, band].mean(axis=1, keepdims=True)


@dataclass(frozen=True)
class VoiceProfile:
    """Pitch and long-term spectral shape of one voice.

    Pitch is measured twice. ``log_f0_*`` come from Harvest, the more accurate tracker
    (DIO reports twice the pitch of low and creaky voices): this is where the voice's pitch
    really sits, what a target is matched to. ``tracker_log_f0_*`` come from DIO, the fast
    tracker the matcher runs live: on the TTS side they centre its per-frame readings,
    so a tracker's bias for this voice cancels out.
    """

    log_f0_mean: float  # mean of ln(F0 / 1 Hz) over voiced frames, octave errors left out
    log_f0_std: float  # standard deviation of ln F0 over the same frames
    median_f0_hz: float
    tracker_log_f0_mean: float  # the same statistics as DIO (the live tracker) reads them
    tracker_log_f0_std: float
    voiced_fraction: float  # voiced frames / frames with speech energy
    voiced_s: float  # seconds of voiced speech the statistics rest on
    mean_log_envelope: np.ndarray  # on ENVELOPE_GRID_HZ, natural log, level-normalised
    version: int = PROFILE_VERSION

    _SCALARS = (
        "log_f0_mean",
        "log_f0_std",
        "median_f0_hz",
        "tracker_log_f0_mean",
        "tracker_log_f0_std",
        "voiced_fraction",
        "voiced_s",
    )

    def save(self, path: Path | str) -> None:
        """Write the profile as an ``.npz`` file (no pickled objects)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        scalars = {name: np.float64(getattr(self, name)) for name in self._SCALARS}
        np.savez(
            tmp,
            version=np.int64(self.version),
            mean_log_envelope=np.asarray(self.mean_log_envelope, dtype=np.float64),
            envelope_grid_hz=ENVELOPE_GRID_HZ,
            **scalars,
        )
        # Rename last so a reader never sees a half-written profile.
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | str) -> VoiceProfile:
        """Read a profile written by ``save``; refuses files of another version or grid."""
        path = Path(path)
        with np.load(path, allow_pickle=False) as data:
            version = int(data["version"])
            if version != PROFILE_VERSION:
                raise ValueError(
                    f"voice profile {path} has version {version}, expected {PROFILE_VERSION}; "
                    "compute it again from the voice sample"
                )
            grid = data["envelope_grid_hz"]
            if grid.shape != ENVELOPE_GRID_HZ.shape or not np.allclose(grid, ENVELOPE_GRID_HZ):
                raise ValueError(f"voice profile {path} uses another frequency grid")
            scalars = {name: float(data[name]) for name in cls._SCALARS}
            envelope = np.array(data["mean_log_envelope"], dtype=np.float64)
        return cls(mean_log_envelope=envelope, version=version, **scalars)


def _frame_energy_db(pcm: np.ndarray, rate_hz: int, frames: int, period_ms: float) -> np.ndarray:
    """Energy in dB of a window centred on each WORLD frame."""
    hop = rate_hz * period_ms / 1000.0
    half = int(round(rate_hz * 0.0125))  # 25 ms window
    padded = np.pad(pcm.astype(np.float64), (half, half))
    csum = np.concatenate([[0.0], np.cumsum(padded**2)])
    centres = np.round(np.arange(frames) * hop).astype(int) + half
    centres = np.clip(centres, half, len(padded) - half)
    energy = (csum[centres + half] - csum[centres - half]) / (2 * half)
    return 10.0 * np.log10(energy + 1e-12)


def _trim_octave_errors(log_f0: np.ndarray) -> np.ndarray:
    """Drop frames far from the voice's usual pitch (mostly tracker octave errors).

    Octave jumps are ±0.69 in ln F0, several times a speaker's usual spread, so a few of
    them inflate the standard deviation badly; the cut is 3 robust deviations (MAD).
    """
    centre = float(np.median(log_f0))
    robust_std = 1.4826 * float(np.median(np.abs(log_f0 - centre)))
    limit = max(3.0 * robust_std, 0.15)
    kept = log_f0[np.abs(log_f0 - centre) <= limit]
    return kept if len(kept) >= 0.5 * len(log_f0) else log_f0


def _voiced_log_f0(f0_hz: np.ndarray, loud: np.ndarray) -> np.ndarray:
    """ln F0 of the loud voiced frames, octave errors left out."""
    voiced = (f0_hz > 0) & loud
    if not voiced.any():
        return np.zeros(0)
    return _trim_octave_errors(np.log(f0_hz[voiced]))


def compute_profile(pcm: np.ndarray, rate_hz: int, f0_method: str = "harvest") -> VoiceProfile:
    """Measure a voice from a recording of it (mono float PCM at ``rate_hz`` ≥ 16 kHz).

    Takes about 0.15 s per second of audio (Harvest; ``f0_method="dio"`` is several times
    faster and reads low voices less well). Raises ``InvalidAudioError`` when the
    recording holds too little voiced speech to measure.
    """
    if rate_hz < 2 * ENVELOPE_MAX_HZ:
        raise ValueError(f"voice profiles need audio at 16 kHz or more, got {rate_hz} Hz")
    pcm = np.asarray(pcm, dtype=np.float64)
    feats = analyse(pcm, rate_hz, f0_method=f0_method)
    frames = len(feats.f0_hz)
    energy_db = _frame_energy_db(pcm, rate_hz, frames, feats.frame_period_ms)
    loud = energy_db > (np.percentile(energy_db, 95) - ENVELOPE_GATE_DB)
    voiced = (feats.f0_hz > 0) & loud
    voiced_s = float(voiced.sum()) * feats.frame_period_ms / 1000.0
    if voiced_s < MIN_VOICED_S:
        raise InvalidAudioError(
            f"the voice sample holds only {voiced_s:.1f} s of voiced speech; record about "
            "10 seconds of yourself speaking in a quiet room"
        )
    log_f0 = _voiced_log_f0(feats.f0_hz, loud)
    tracker_log_f0 = _voiced_log_f0(live_f0(pcm, rate_hz, frames), loud)
    if len(tracker_log_f0) < 10:
        tracker_log_f0 = log_f0
    envelope = level_normalised_log_envelope(feats.envelope[voiced], rate_hz)
    profile = VoiceProfile(
        log_f0_mean=float(log_f0.mean()),
        log_f0_std=float(log_f0.std()),
        median_f0_hz=float(np.exp(np.median(log_f0))),
        tracker_log_f0_mean=float(tracker_log_f0.mean()),
        tracker_log_f0_std=float(tracker_log_f0.std()),
        voiced_fraction=float(voiced.sum() / max(int(loud.sum()), 1)),
        voiced_s=voiced_s,
        mean_log_envelope=envelope.mean(axis=0),
    )
    logger.debug(
        "voice profile: median F0 %.0f Hz (DIO reads %.0f Hz), log-F0 std %.3f, %.1f s voiced",
        profile.median_f0_hz,
        float(np.exp(np.median(tracker_log_f0))),
        profile.log_f0_std,
        voiced_s,
    )
    return profile
