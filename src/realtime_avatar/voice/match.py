"""Voice matchers: move synthesized speech toward the avatar's voice with WORLD DSP.

``WorldVoiceMatcher`` analyses each sentence of TTS audio with WORLD, maps its pitch from
the TTS voice's statistics to the avatar's, warps the spectral envelope along frequency
(a vocal-tract length change) and applies a gentle, smoothed EQ toward the avatar's
long-term envelope, keeps the aperiodicity, and resynthesises at the same length and
loudness, so phoneme and word timings stay valid.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..frames import Speech
from ..media.audio import resample
from .profile import (
    ENVELOPE_GRID_HZ,
    F0_CEIL_HZ,
    F0_FLOOR_HZ,
    PROFILE_VERSION,
    VoiceProfile,
    WorldFeatures,
    analyse,
    compute_profile,
    envelope_bins_hz,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # pyworld imports pkg_resources
    import pyworld as pw

logger = logging.getLogger(__name__)

# ln(power) per dB: envelopes are power spectra, so 10*log10 <-> ln differ by this factor.
_LN_PER_DB = np.log(10.0) / 10.0
# Shorter than this there is nothing WORLD can analyse; such speech passes unchanged.
_MIN_CONVERT_S = 0.08


@dataclass(frozen=True)
class MatchOptions:
    """How far the matcher moves speech toward the target; 1.0 is all the way."""

    f0_strength: float = 1.0  # share of the log-F0 mean (and spread ratio) moved
    warp_strength: float = 1.0  # share of the estimated vocal-tract warp (in log) applied
    eq_strength: float = 0.5  # share of the residual long-term envelope difference applied
    eq_max_db: float = 6.0  # cap on the EQ correction at any frequency
    eq_smooth_hz: float = 300.0  # Gaussian smoothing of the EQ curve, so it never shapes formants
    warp_range: tuple[float, float] = (0.82, 1.25)  # plausible adult vocal-tract ratios
    f0_spread_range: tuple[float, float] = (0.67, 1.5)  # clamp on the log-F0 std ratio
    f0_method: str = "dio"  # live F0 tracker: dio is ~10x faster than harvest
    # A target this close to the TTS voice is left alone: WORLD resynthesis alone costs
    # more speaker similarity (about 0.15 GE2E cosine on Piper joe) than matching gains.
    passthrough_semitones: float = 1.5
    passthrough_warp: float = 0.03  # |ln warp|
    passthrough_eq_db: float = 2.5  # largest EQ correction (same voice, other text: ~1.6)


def warp_log_envelope(log_env: np.ndarray, grid_hz: np.ndarray, factor: float) -> np.ndarray:
    """Envelope whose features sit ``factor`` times higher in frequency (value held at the ends)."""
    return np.interp(grid_hz / factor, grid_hz, log_env)


def estimate_warp_factor(
    target: VoiceProfile,
    source: VoiceProfile,
    warp_range: tuple[float, float] = (0.82, 1.25),
    band_hz: tuple[float, float] = (250.0, 5000.0),
) -> float:
    """Frequency warp that best lines the source's long-term envelope up with the target's.

    Compares shapes only: a straight-line trend (spectral tilt) of the difference is removed
    before scoring, because tilt is the EQ's job and would otherwise bias the warp.
    """
    grid = ENVELOPE_GRID_HZ
    band = (grid >= band_hz[0]) & (grid <= band_hz[1])
    x = grid[band] / 1000.0
    design = np.stack([np.ones_like(x), x], axis=1)
    candidates = np.exp(np.linspace(np.log(warp_range[0]), np.log(warp_range[1]), 121))
    costs = np.empty(len(candidates))
    for i, factor in enumerate(candidates):
        diff = (
            target.mean_log_envelope - warp_log_envelope(source.mean_log_envelope, grid, factor)
        )[band]
        coef, *_ = np.linalg.lstsq(design, diff, rcond=None)
        residual = diff - design @ coef
        # A light prior toward no warp breaks near-ties on flat cost curves.
        costs[i] = float(np.mean(residual**2)) + 0.05 * float(np.log(factor)) ** 2
    best = int(np.argmin(costs))
    return float(candidates[best])


def _smooth(curve: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Gaussian smoothing with edge values held (no droop at the ends)."""
    radius = max(1, int(round(3 * sigma_bins)))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_bins) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(curve, radius, mode="edge")
    return np.convolve(padded, kernel, mode="valid")


class WorldVoiceMatcher:
    """DSP voice conversion from the TTS voice (``source``) toward the avatar (``target``)."""

    name = "world"

    def __init__(
        self,
        target: VoiceProfile,
        source: VoiceProfile,
        options: MatchOptions | None = None,
    ) -> None:
        self.target = target
        self.source = source
        self.options = options or MatchOptions()
        opts = self.options

        # Pitch: ln f0' = centre + (ln f0 - reading mean) * spread. Live readings are centred
        # on how the live tracker reads the TTS voice, so its bias on that voice cancels;
        # the centre is the target's real (Harvest) pitch, reached at f0_strength 1.
        if opts.f0_method == "dio":
            self._reading_mean = source.tracker_log_f0_mean
            reading_std = source.tracker_log_f0_std
        else:
            self._reading_mean = source.log_f0_mean
            reading_std = source.log_f0_std
        a = opts.f0_strength
        self._f0_centre = (1.0 - a) * self._reading_mean + a * target.log_f0_mean
        spread = target.log_f0_std / max(reading_std, 1e-3)
        self._f0_spread = float(np.clip(spread, *opts.f0_spread_range)) ** a

        estimated = estimate_warp_factor(target, source, opts.warp_range)
        self.warp_factor = float(np.exp(opts.warp_strength * np.log(estimated)))

        # EQ: what the warp leaves of the long-term difference, smoothed and capped.
        grid = ENVELOPE_GRID_HZ
        residual = target.mean_log_envelope - warp_log_envelope(
            source.mean_log_envelope, grid, self.warp_factor
        )
        # Below 150 Hz the long-term envelope mostly reflects F0, not timbre: hold it flat.
        low = grid < 150.0
        residual[low] = residual[np.argmax(~low)]
        residual = _smooth(residual, opts.eq_smooth_hz / (grid[1] - grid[0]))
        cap = opts.eq_max_db * _LN_PER_DB
        self.eq_log = np.clip(opts.eq_strength * residual, -cap, cap)

        semitones = 12.0 * abs(target.log_f0_mean - source.log_f0_mean) / np.log(2.0)
        self.passthrough = bool(
            semitones < opts.passthrough_semitones
            and abs(np.log(self.warp_factor)) < opts.passthrough_warp
            and np.max(np.abs(self.eq_log)) < opts.passthrough_eq_db * _LN_PER_DB
        )

        self._bin_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        logger.info(
            "voice matcher: F0 x%.2f (spread x%.2f), warp %.3f, EQ within ±%.1f dB%s",
            self.f0_ratio,
            self._f0_spread,
            self.warp_factor,
            float(np.max(np.abs(self.eq_log)) / _LN_PER_DB),
            "; target is close to the TTS voice, speech passes unchanged"
            if self.passthrough
            else "",
        )

    @property
    def f0_ratio(self) -> float:
        """Factor by which the TTS voice's typical pitch is moved."""
        return float(np.exp(self._f0_centre - self._reading_mean))

    def _bins(self, rate_hz: int, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-bin warp source index, interpolation weight and EQ gain for one FFT size."""
        key = (rate_hz, n_bins)
        with self._lock:
            cached = self._bin_cache.get(key)
            if cached is None:
                bins_hz = envelope_bins_hz(n_bins, rate_hz)
                pos = np.clip(bins_hz / self.warp_factor / (bins_hz[1] - bins_hz[0]), 0, n_bins - 1)
                lo = np.minimum(np.floor(pos).astype(int), n_bins - 2)
                frac = pos - lo
                eq = np.interp(bins_hz, ENVELOPE_GRID_HZ, self.eq_log)
                cached = (lo, frac, eq)
                self._bin_cache[key] = cached
            return cached

    def map_f0(self, f0_hz: np.ndarray) -> np.ndarray:
        """Map voiced F0 values log-linearly from source to target statistics; 0 stays 0."""
        out = np.zeros_like(f0_hz)
        voiced = f0_hz > 0
        log_f0 = np.log(f0_hz[voiced])
        mapped = self._f0_centre + (log_f0 - self._reading_mean) * self._f0_spread
        out[voiced] = np.clip(np.exp(mapped), F0_FLOOR_HZ, F0_CEIL_HZ * 1.5)
        return out

    def convert_pcm(self, pcm: np.ndarray, rate_hz: int) -> np.ndarray:
        """Convert mono float PCM; the result has the same length, rate and RMS level."""
        n = len(pcm)
        x = np.asarray(pcm, dtype=np.float64)
        in_rms = float(np.sqrt(np.mean(x**2))) if n else 0.0
        if self.passthrough or n < _MIN_CONVERT_S * rate_hz or in_rms < 1e-5:
            return np.asarray(pcm, dtype=np.float32)
        feats = analyse(x, rate_hz, f0_method=self.options.f0_method)
        return self.convert_features(feats, n, in_rms)

    def convert_features(self, feats: WorldFeatures, n: int, in_rms: float) -> np.ndarray:
        """Resynthesise analysed speech (``n`` samples long, at ``in_rms``) in the target
        voice: the part of ``convert_pcm`` after the analysis, for callers that convert
        the same speech several ways (the voice fit)."""
        rate_hz = feats.rate_hz
        f0 = self.map_f0(feats.f0_hz)
        lo, frac, eq = self._bins(rate_hz, feats.envelope.shape[1])
        log_env = np.log(np.maximum(feats.envelope, 1e-20))
        warped = log_env[:, lo] * (1.0 - frac) + log_env[:, lo + 1] * frac
        envelope = np.exp(warped + eq)
        y = pw.synthesize(
            f0, np.ascontiguousarray(envelope), feats.aperiodicity, rate_hz, feats.frame_period_ms
        )
        y = y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))
        out_rms = float(np.sqrt(np.mean(y**2)))
        if out_rms > 0:
            y *= in_rms / out_rms
        peak = float(np.max(np.abs(y)))
        if peak > 0.99:
            # Rare after RMS matching; scale rather than clip so no distortion is added.
            y *= 0.99 / peak
        return y.astype(np.float32)

    def convert(self, speech: Speech) -> Speech:
        """Return the same sentence in a voice closer to the target; timings unchanged."""
        return replace(speech, pcm=self.convert_pcm(speech.pcm, speech.sample_rate_hz))


class IdentityMatcher:
    """Leaves speech as it is: for synthesizers that already speak in the avatar's voice."""

    name = "identity"

    def __init__(self, target: VoiceProfile | None = None, source: VoiceProfile | None = None):
        self.target = target
        self.source = source

    def convert(self, speech: Speech) -> Speech:
        """Return ``speech`` unchanged."""
        return speech


# Fixed text per language from which a synthesizer's own voice profile is measured.
CALIBRATION_SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "The rainbow is a division of white light into many beautiful colors.",
        "When the sunlight strikes raindrops in the air, they act as a prism.",
        "People look, but no one ever finds the end of it, and we wonder why.",
        "Please call Stella and ask her to bring these things with her from the store.",
        "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack.",
    ),
    "es": (
        "El arco iris es la división de la luz blanca en muchos colores hermosos.",
        "Cuando la luz del sol toca las gotas de lluvia, actúan como un prisma.",
        "Por favor, llama a Estela y pídele que traiga estas cosas de la tienda.",
        "Mañana por la mañana viajaremos a las montañas para buscar un lugar tranquilo.",
    ),
    "zh": (
        "彩虹是白光分成许多美丽颜色的现象。",
        "当阳光照射到空气中的雨滴时，雨滴就像一个棱镜。",
        "请给小明打电话，让他从商店带些东西回来。",
        "明天早上我们要去山里找一个安静的地方露营。",
    ),
}

_source_profiles: dict[tuple[str, str], VoiceProfile] = {}
_source_lock = threading.Lock()
_measuring: dict[tuple[str, str], threading.Lock] = {}  # one lock per voice being measured


def _cache_file(cache_dir: Path, voice_id: str, language: str) -> Path:
    """A file name that is safe whatever the voice id holds (paths, colons)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", voice_id)[:40]
    digest = hashlib.sha256(f"{voice_id}\0{language}".encode()).hexdigest()[:12]
    return cache_dir / f"source-{slug}-{language}-{digest}-v{PROFILE_VERSION}.npz"


def source_profile_for(
    voice_id: str,
    language: str,
    synthesize: Callable[[str], tuple[np.ndarray, int]],
    cache_dir: Path | None = None,
    sentences: Sequence[str] | None = None,
) -> VoiceProfile:
    """The TTS voice's own profile, measured once from fixed sentences and then cached.

    ``voice_id`` is the synthesizer's content key (``Synthesizer.voice_id``), so two voices
    that share a synthesizer name never share a profile. ``synthesize(text)`` returns
    ``(pcm, rate_hz)``. The profile is kept in memory per ``(voice_id, language)`` and, with
    ``cache_dir``, on disk across processes; concurrent callers for one voice wait for one
    measurement.
    """
    key = (voice_id, language)
    with _source_lock:
        cached = _source_profiles.get(key)
        if cached is not None:
            return cached
        measuring = _measuring.setdefault(key, threading.Lock())
    with measuring:
        with _source_lock:
            cached = _source_profiles.get(key)
        if cached is not None:
            return cached  # measured by the caller we waited for
        profile = _load_or_measure(voice_id, language, synthesize, cache_dir, sentences)
        with _source_lock:
            _source_profiles.setdefault(key, profile)
            _measuring.pop(key, None)
            return _source_profiles[key]


def _load_or_measure(
    voice_id: str,
    language: str,
    synthesize: Callable[[str], tuple[np.ndarray, int]],
    cache_dir: Path | None,
    sentences: Sequence[str] | None,
) -> VoiceProfile:
    """The profile from the disk cache, or measured from the calibration sentences and saved."""
    path = _cache_file(Path(cache_dir), voice_id, language) if cache_dir else None
    if path is not None and path.is_file():
        try:
            return VoiceProfile.load(path)
        except (ValueError, OSError, KeyError) as exc:
            logger.warning("ignoring unreadable voice profile cache %s: %s", path, exc)
    texts = sentences or CALIBRATION_SENTENCES.get(language, CALIBRATION_SENTENCES["en"])
    pieces: list[np.ndarray] = []
    rate_hz = 0
    for text in texts:
        pcm, pcm_rate = synthesize(text)
        if rate_hz == 0:
            rate_hz = pcm_rate
        pieces.append(resample(np.asarray(pcm, dtype=np.float32), pcm_rate, rate_hz))
        pieces.append(np.zeros(rate_hz // 5, dtype=np.float32))  # 200 ms pause
    profile = compute_profile(np.concatenate(pieces), rate_hz)
    logger.info(
        "measured voice profile of %s (%s): median F0 %.0f Hz",
        voice_id,
        language,
        profile.median_f0_hz,
    )
    if path is not None:
        try:
            profile.save(path)
        except OSError as exc:
            logger.warning("cannot cache voice profile at %s: %s", path, exc)
    return profile
