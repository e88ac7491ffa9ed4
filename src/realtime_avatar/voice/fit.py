"""Voice fitting: choose the base voice and the conversion that sound most like the person.

At registration the person's sample is cut in two at a pause near its middle: the *fitting*
part gives the voice profile the WORLD matcher converts toward, the *held-out* part is
what every candidate is scored against (never the part it was fitted on). A candidate is
a ``VoiceRecipe``: a base voice (Piper joe, hibari "heart") and how strongly each WORLD
conversion is applied (pitch mapping, vocal-tract warp, long-term envelope EQ). The
search is greedy: each base voice is scored raw and with the matcher's default
conversion (what the product did before fitting); then, from the best of those, on the
best base (``fast``) or on every base (``full``), each conversion in turn is switched off,
on (or to half, ``full``), and a change is kept only where it

- raises held-out speaker similarity by at least ``MIN_GAIN``,
- keeps the median pitch moving toward the person's, never away from it (the guard the
  Kokoro trial in issue 15 lacked: it "won" by moving a man's pitch up to 368 Hz),
- keeps the ASR round trip within ``MAX_WER_RISE`` of the raw base voice's word error.

Held-out *text* too: the candidates say sentences that are in neither the calibration set
the base voices were measured on nor the person's sample. ``full`` scores both ways round
(each half held out once) and averages. The search stops when its time budget is spent
and keeps the best recipe found so far.

The judges are injected (``FitTools``): speaker similarity from resemblyzer's GE2E
encoder when it is installed (the ``eval`` extra, it needs torch), else a DSP measure
(pitch and long-term envelope distance), named in the result so nobody mistakes one for
the other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import InvalidAudioError
from .match import MatchOptions, WorldVoiceMatcher
from .profile import (
    ENVELOPE_GRID_HZ,
    LEVEL_BAND_HZ,
    VoiceProfile,
    WorldFeatures,
    analyse,
    compute_profile,
    live_f0,
)

log = logging.getLogger(__name__)

FIT_VERSION = 5
FIT_MODES = ("off", "fast", "full")
TIME_BUDGET_S = {"fast": 15.0, "full": 90.0}
BASE_VOICES = ("piper", "hibari")  # English synthesizers a recipe may start from
MIN_GAIN = 0.005  # a conversion must raise held-out similarity by this much to be kept
# ... and may add at most this much word error to the raw voice's: the held-out texts are
# ~25 words in fast mode, so 0.1 is two words (one word flipped the guard by chance).
MAX_WER_RISE = 0.10
PITCH_SLACK = 0.03  # |ln F0 ratio| a candidate may lose against the raw voice (~0.5 st)
KNOBS = ("f0_strength", "warp_strength", "eq_strength")
# The matcher's defaults (voice/match.py MatchOptions): the product's voice without a fit.
DEFAULT_STRENGTHS = {"f0_strength": 1.0, "warp_strength": 1.0, "eq_strength": 0.5}
# Strengths tried per conversion, as a share of its default: off or on; ``full`` also half.
LEVELS = {"fast": (0.0, 1.0), "full": (0.0, 0.5, 1.0)}
KNOB_LABELS = {"f0_strength": "pitch", "warp_strength": "formant warp", "eq_strength": "EQ"}
MIN_PART_S = 2.0  # each half of the sample must hold this much audio

# What the candidates say: in neither the calibration sentences nor any likely sample.
HELD_OUT_TEXTS = (
    "My grandmother kept a small garden full of herbs behind the kitchen door.",
    "We should leave early tomorrow, because the roads get busy after eight.",
    "Could you tell me which platform the next train to the city leaves from?",
    "The library closes at six, but the reading room stays open until nine.",
)
TEXTS_PER_MODE = {"fast": 2, "full": 4}

Progress = Callable[[int, int, str], None]  # (done, total, what is being tried)


@dataclass(frozen=True)
class VoiceRecipe:
    """How an avatar's English voice is made: a base voice and WORLD conversion strengths."""

    base: str = "piper"
    f0_strength: float = 0.0
    warp_strength: float = 0.0
    eq_strength: float = 0.0

    @property
    def converts(self) -> bool:
        """Whether any conversion is applied on top of the base voice."""
        return any(getattr(self, knob) > 0 for knob in KNOBS)

    def match_options(self) -> MatchOptions:
        """The matcher options this recipe asks for (the matcher's other defaults kept)."""
        return MatchOptions(
            f0_strength=self.f0_strength,
            warp_strength=self.warp_strength,
            eq_strength=self.eq_strength,
        )

    def describe(self) -> str:
        """Short words for a listing: ``hibari + pitch 1.0 + EQ 0.5``."""
        parts = [self.base]
        parts += [f"{KNOB_LABELS[k]} {getattr(self, k):g}" for k in KNOBS if getattr(self, k) > 0]
        return " + ".join(parts)

    def with_strength(self, knob: str, level: float) -> VoiceRecipe:
        """This recipe with one conversion (a name in ``KNOBS``) set to ``level``."""
        if knob not in KNOBS:
            raise ValueError(f"unknown conversion {knob!r}; one of {', '.join(KNOBS)}")
        strengths = {k: getattr(self, k) for k in KNOBS}
        strengths[knob] = level
        return VoiceRecipe(base=self.base, **strengths)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VoiceRecipe:
        """A recipe from its stored form; unknown keys are ignored, bad values refused."""
        base = str(data.get("base", "piper"))
        strengths = {k: float(data.get(k, 0.0)) for k in KNOBS}
        if any(not 0.0 <= v <= 1.0 for v in strengths.values()):
            raise ValueError(f"voice recipe strengths must be within 0..1, got {strengths}")
        return cls(base=base, **strengths)


@dataclass
class CandidateScore:
    """What one candidate recipe scored on the held-out part of the sample."""

    recipe: VoiceRecipe
    similarity: float  # held-out speaker similarity (the measure named in the result)
    median_f0_hz: float  # of the candidate's speech: the live tracker's reading, mapped
    envelope_db: float | None = None  # long-term envelope distance to the held-out part, dB
    wer: float | None = None  # ASR round trip, when it was measured
    accepted: bool = False
    reason: str = ""


@dataclass
class VoiceFit:
    """The outcome of a fit: the chosen recipe and what it scored against the raw voice."""

    mode: str
    measure: str  # "resemblyzer" or "dsp"
    recipe: VoiceRecipe
    raw: CandidateScore  # the chosen base voice without conversion
    fitted: CandidateScore
    target_median_f0_hz: float  # the person's held-out speech, as the live tracker reads it
    seconds: float
    candidates: int
    stopped_early: bool = False
    note: str = ""
    tried: list[CandidateScore] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form stored in the avatar's manifest (``voice_fit``)."""

        def score(c: CandidateScore) -> dict[str, Any]:
            return {
                "recipe": asdict(c.recipe),
                "similarity": round(c.similarity, 4),
                "median_f0_hz": round(c.median_f0_hz, 1),
                "envelope_db": None if c.envelope_db is None else round(c.envelope_db, 2),
                "wer": None if c.wer is None else round(c.wer, 3),
            }

        return {
            "version": FIT_VERSION,
            "mode": self.mode,
            "measure": self.measure,
            "recipe": asdict(self.recipe),
            "describe": self.recipe.describe(),
            "raw": score(self.raw),
            "fitted": score(self.fitted),
            "target_median_f0_hz": round(self.target_median_f0_hz, 1),
            "seconds": round(self.seconds, 1),
            "candidates": self.candidates,
            "stopped_early": self.stopped_early,
            "note": self.note,
            "tried": [{**score(c), "accepted": c.accepted, "reason": c.reason} for c in self.tried],
        }


class SpeakerMeasure(Protocol):
    """Speaker similarity of speech to a reference recording (higher is more alike)."""

    name: str

    def reference(self, pcm: np.ndarray, rate_hz: int) -> Any:
        """Prepare a reference (an embedding, a profile) from a recording."""
        ...

    def similarity(self, reference: Any, pcm: np.ndarray, rate_hz: int) -> float:
        """How alike ``pcm`` is to the prepared reference."""
        ...


@dataclass
class BaseVoice:
    """One base voice as the fit sees it: its held-out speech and its measured profile."""

    name: str
    speech: np.ndarray  # the held-out texts, concatenated with short pauses
    rate_hz: int
    profile: VoiceProfile  # measured from the calibration sentences (cached per voice id)
    voice_id: str


@dataclass
class FitTools:
    """What the search needs from outside the voice stage, injected so tests use stand-ins.

    ``base_voice(name, texts)`` speaks the held-out texts with a base voice; ``measure``
    scores speaker similarity; ``word_error(pcm, rate, text)`` is an ASR round trip (WER),
    or ``None`` when no recognizer is available (the intelligibility guard is then off,
    and the result says so).
    """

    base_voice: Callable[[str, Sequence[str]], BaseVoice]
    measure: SpeakerMeasure
    word_error: Callable[[np.ndarray, int, str], float] | None = None
    clock: Callable[[], float] = time.monotonic


def split_at_pause(pcm: np.ndarray, rate_hz: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a recording in two at its quietest 50 ms between 40 % and 60 % of its length."""
    n = len(pcm)
    if n < 2 * MIN_PART_S * rate_hz:
        raise ValueError(
            f"a voice fit needs at least {2 * MIN_PART_S:.0f} s of audio, got {n / rate_hz:.1f} s"
        )
    win = max(1, int(0.05 * rate_hz))
    lo, hi = int(0.4 * n), int(0.6 * n)
    energy = np.convolve(np.asarray(pcm[lo:hi], np.float64) ** 2, np.ones(win), mode="valid")
    cut = lo + int(np.argmin(energy)) + win // 2
    return pcm[:cut], pcm[cut:]


def tracker_median_f0(pcm: np.ndarray, rate_hz: int) -> float:
    """Median F0 of the voiced frames as the live (DIO) tracker reads them; 0 if none."""
    f0 = live_f0(np.asarray(pcm, dtype=np.float64), rate_hz)
    voiced = f0[f0 > 0]
    return float(np.exp(np.median(np.log(voiced)))) if len(voiced) else 0.0


def envelope_distance_db(a: VoiceProfile, b: VoiceProfile) -> float:
    """RMS distance of two long-term envelopes over the level band, in dB, mean removed."""
    band = (ENVELOPE_GRID_HZ >= LEVEL_BAND_HZ[0]) & (ENVELOPE_GRID_HZ <= LEVEL_BAND_HZ[1])
    diff = (a.mean_log_envelope - b.mean_log_envelope)[band]
    diff = diff - diff.mean()
    return float(np.sqrt(np.mean(diff**2)) * 10.0 / np.log(10.0))


def pitch_error_semitones(f0_hz: float, target_hz: float) -> float:
    """|12 log2(f0 / target)|; infinity when either is unmeasured."""
    if f0_hz <= 0 or target_hz <= 0:
        return float("inf")
    return float(abs(12.0 * np.log2(f0_hz / target_hz)))


class DspMeasure:
    """Similarity without a neural encoder: 1 − (envelope dB / 10 + pitch semitones / 12) / 2.

    Used when resemblyzer is not installed. It rewards exactly what the WORLD matcher
    changes, so it says less than an independent encoder would; results carry its name.
    """

    name = "dsp"

    def reference(self, pcm: np.ndarray, rate_hz: int) -> tuple[VoiceProfile, float]:
        return compute_profile(pcm, rate_hz), tracker_median_f0(pcm, rate_hz)

    def similarity(
        self, reference: tuple[VoiceProfile, float], pcm: np.ndarray, rate_hz: int
    ) -> float:
        profile, median = reference
        env = envelope_distance_db(compute_profile(pcm, rate_hz, f0_method="dio"), profile)
        semis = min(pitch_error_semitones(tracker_median_f0(pcm, rate_hz), median), 24.0)
        return 1.0 - (env / 10.0 + semis / 12.0) / 2.0


class ResemblyzerMeasure:
    """Cosine of resemblyzer GE2E utterance embeddings (needs the ``eval`` extra: torch)."""

    name = "resemblyzer"
    _RATE_HZ = 16_000

    def __init__(self) -> None:
        from resemblyzer import VoiceEncoder, audio

        self._audio: Any = audio
        self._encoder: Any = VoiceEncoder(device="cpu", verbose=False)

    def embed(self, pcm: np.ndarray, rate_hz: int) -> np.ndarray:
        """Unit-norm embedding of one recording.

        resemblyzer's own ``preprocess_wav`` steps (volume to -30 dBFS, long silences cut),
        with our resampler: its librosa resampling costs seconds on a first call.
        """
        from ..media.audio import resample

        wav = resample(np.asarray(pcm, dtype=np.float32), rate_hz, self._RATE_HZ)
        wav = self._audio.normalize_volume(wav, -30, increase_only=True)
        wav = self._audio.trim_long_silences(wav)
        if len(wav) < self._RATE_HZ:
            raise ValueError("less than 1 s of speech to embed")
        return np.asarray(self._encoder.embed_utterance(wav), dtype=np.float64)

    def reference(self, pcm: np.ndarray, rate_hz: int) -> np.ndarray:
        return self.embed(pcm, rate_hz)

    def similarity(self, reference: np.ndarray, pcm: np.ndarray, rate_hz: int) -> float:
        emb = self.embed(pcm, rate_hz)
        return float(emb @ reference / (np.linalg.norm(emb) * np.linalg.norm(reference)))


def default_measure() -> tuple[SpeakerMeasure, str]:
    """Resemblyzer when installed, else the DSP measure, with a line saying which and why."""
    try:
        return ResemblyzerMeasure(), ""
    except ImportError as exc:
        return DspMeasure(), (
            f"resemblyzer is not installed ({exc.name or exc}); the fit used the DSP "
            "measure (pitch and envelope). Install the eval extra for the speaker encoder"
        )


def cache_key(pcm: np.ndarray, mode: str, measure: str, voice_ids: Sequence[str]) -> str:
    """Content key of a fit: the sample's samples, the mode, the measure and the voices."""
    digest = hashlib.sha256(np.ascontiguousarray(pcm, dtype=np.float32).tobytes())
    digest.update(f"\0{mode}\0{measure}\0v{FIT_VERSION}\0{','.join(voice_ids)}".encode())
    return digest.hexdigest()[:24]


@dataclass
class _Fold:
    """One way round: the profile fitted on one half, the reference of the other."""

    target: VoiceProfile
    reference: Any
    heldout_profile: VoiceProfile
    heldout_median_hz: float


class _Search:
    """State of one fit: folds, base voices, the deadline and every candidate tried."""

    def __init__(
        self,
        folds: list[_Fold],
        bases: dict[str, BaseVoice],
        tools: FitTools,
        texts: Sequence[str],
        deadline: float,
        progress: Progress,
        total: int,
    ) -> None:
        self.folds = folds
        self.bases = bases
        self.tools = tools
        self.texts = texts
        self.deadline = deadline
        self.progress = progress
        self.total = total
        self.done = 0
        self.tried: list[CandidateScore] = []
        self.stopped_early = False
        self._features: dict[str, WorldFeatures] = {}
        self._raw_median: dict[str, float] = {}

    def out_of_time(self) -> bool:
        if self.tools.clock() >= self.deadline:
            self.stopped_early = True
        return self.stopped_early

    def features(self, name: str) -> WorldFeatures:
        """The base voice's speech analysed once (every candidate converts the same audio)."""
        feats = self._features.get(name)
        if feats is None:
            base = self.bases[name]
            feats = analyse(np.asarray(base.speech, np.float64), base.rate_hz, f0_method="dio")
            self._features[name] = feats
        return feats

    def convert(self, recipe: VoiceRecipe, fold: _Fold) -> tuple[np.ndarray, float]:
        """The candidate's speech and its median F0 (what the pitch mapping asked for)."""
        base = self.bases[recipe.base]
        if not recipe.converts:
            if recipe.base not in self._raw_median:
                self._raw_median[recipe.base] = tracker_median_f0(base.speech, base.rate_hz)
            return base.speech, self._raw_median[recipe.base]
        matcher = WorldVoiceMatcher(fold.target, base.profile, recipe.match_options())
        if matcher.passthrough:
            return self.convert(VoiceRecipe(base=recipe.base), fold)
        feats = self.features(recipe.base)
        speech = np.asarray(base.speech, np.float64)
        rms = float(np.sqrt(np.mean(speech**2)))
        pcm = matcher.convert_features(feats, len(speech), rms)
        mapped = matcher.map_f0(feats.f0_hz)
        voiced = mapped[mapped > 0]
        median = float(np.exp(np.median(np.log(voiced)))) if len(voiced) else 0.0
        return pcm, median

    def score(self, recipe: VoiceRecipe) -> CandidateScore:
        self.progress(self.done, self.total, recipe.describe())
        base = self.bases[recipe.base]
        sims, medians = [], []
        for fold in self.folds:
            pcm, median = self.convert(recipe, fold)
            sims.append(self.tools.measure.similarity(fold.reference, pcm, base.rate_hz))
            medians.append(median)
        self.done += 1
        result = CandidateScore(recipe, float(np.mean(sims)), float(np.median(medians)))
        self.tried.append(result)
        return result

    def envelope_db(self, score: CandidateScore) -> float:
        """Long-term envelope distance of a candidate's speech to the held-out part (dB)."""
        base = self.bases[score.recipe.base]
        dists = []
        for fold in self.folds:
            pcm, _median = self.convert(score.recipe, fold)
            spoken = compute_profile(pcm, base.rate_hz, f0_method="dio")
            dists.append(envelope_distance_db(spoken, fold.heldout_profile))
        return float(np.mean(dists))

    def word_error(self, recipe: VoiceRecipe) -> float | None:
        """Mean WER of the candidate's speech over the held-out texts (first fold)."""
        if self.tools.word_error is None:
            return None
        base = self.bases[recipe.base]
        pcm, _median = self.convert(recipe, self.folds[0])
        # The texts were spoken one after another; score the whole against all of them.
        return self.tools.word_error(pcm, base.rate_hz, " ".join(self.texts))


def _pitch_distance(median_hz: float, target_hz: float) -> float:
    if median_hz <= 0 or target_hz <= 0:
        return float("inf")
    return abs(float(np.log(median_hz / target_hz)))


def rejection(
    cand: CandidateScore, current: CandidateScore, raw: CandidateScore, target_hz: float
) -> str:
    """Why a candidate is not kept over ``current`` (empty when it passes): it must raise
    held-out similarity, and its median pitch must not move away from the person's
    further than the raw base voice's (``raw``) by more than ``PITCH_SLACK``."""
    if cand.similarity < current.similarity + MIN_GAIN:
        return f"similarity {cand.similarity:.3f} ≤ {current.similarity:.3f}"
    if _pitch_distance(cand.median_f0_hz, target_hz) > (
        _pitch_distance(raw.median_f0_hz, target_hz) + PITCH_SLACK
    ):
        return (
            f"pitch {cand.median_f0_hz:.0f} Hz moves away from {target_hz:.0f} Hz "
            f"(raw {raw.median_f0_hz:.0f} Hz)"
        )
    return ""


def fit_voice(
    pcm: np.ndarray,
    rate_hz: int,
    mode: str,
    tools: FitTools,
    progress: Progress | None = None,
    bases: Sequence[str] = BASE_VOICES,
) -> VoiceFit:
    """Search recipes for the voice in ``pcm`` (the person's sample) within ``mode``'s budget."""
    if mode not in TIME_BUDGET_S:
        raise ValueError(f"voice fit mode must be one of fast, full, off; got {mode!r}")
    start = tools.clock()
    report = progress or (lambda _done, _total, _what: None)
    texts = HELD_OUT_TEXTS[: TEXTS_PER_MODE[mode]]
    levels = LEVELS[mode]
    searched_bases = len(bases) if mode == "full" else 1
    total = 2 * len(bases) + searched_bases * len(KNOBS) * (len(levels) - 1)

    report(0, total, "measuring the sample")
    first, second = split_at_pause(pcm, rate_hz)
    halves = [(first, second)] + ([(second, first)] if mode == "full" else [])
    folds = []
    for index, (fit_part, heldout) in enumerate(halves):
        try:
            folds.append(
                _Fold(
                    target=compute_profile(fit_part, rate_hz),
                    reference=tools.measure.reference(heldout, rate_hz),
                    # Only its envelope is compared: DIO is enough and several times faster.
                    heldout_profile=compute_profile(heldout, rate_hz, f0_method="dio"),
                    heldout_median_hz=tracker_median_f0(heldout, rate_hz),
                )
            )
        except InvalidAudioError:
            # Too little voiced speech in one half to profile: the other way round may
            # still do (``full``); with no fold at all the caller keeps the default voice.
            if index == len(halves) - 1 and not folds:
                raise
            log.info("voice fit: fold %d skipped, too little voiced speech in a half", index)
    target_hz = float(np.median([f.heldout_median_hz for f in folds]))

    voices = {}
    for name in bases:
        report(0, total, f"speaking with {name}")
        voices[name] = tools.base_voice(name, texts)
    search = _Search(folds, voices, tools, texts, start + TIME_BUDGET_S[mode], report, total)
    raw_wer: dict[str, float | None] = {}

    def intelligible(cand: CandidateScore, raw: CandidateScore) -> bool:
        """The ASR guard, run only on a candidate about to be kept (it costs a decode)."""
        if not cand.recipe.converts:
            return True
        if raw.recipe.base not in raw_wer:
            raw_wer[raw.recipe.base] = raw.wer = search.word_error(raw.recipe)
        before = raw_wer[raw.recipe.base]
        cand.wer = search.word_error(cand.recipe)
        if before is not None and cand.wer is not None and cand.wer > before + MAX_WER_RISE:
            cand.reason = f"WER {cand.wer:.2f} against the raw voice's {before:.2f}"
            return False
        return True

    # Phase 1: every base voice raw, and with the matcher's default conversion.
    raws: dict[str, CandidateScore] = {}
    starts: dict[str, CandidateScore] = {}
    for name in bases:
        if raws and search.out_of_time():
            break
        raw = raws[name] = search.score(VoiceRecipe(base=name))
        raw.accepted, raw.reason = True, "base voice"
        starts[name] = raw
        if name != bases[0] and search.out_of_time():
            continue
        default = search.score(VoiceRecipe(base=name, **DEFAULT_STRENGTHS))
        # The default conversion competes with the raw voice under the same rules.
        reason = rejection(default, raw, raw, target_hz)
        if reason:
            default.reason = reason
        elif intelligible(default, raw):
            default.accepted, default.reason = True, "kept (default conversion)"
            starts[name] = default
    # Another base voice is only a start if its pitch is not further from the person's
    # than the first base's (Piper's) raw pitch: hibari's 187 Hz as it is, for a man at
    # 100 Hz, won on a held-out half by chance and sounded nothing like him.
    first_raw = raws[bases[0]]
    for name, opening in list(starts.items()):
        if name != bases[0] and _pitch_distance(opening.median_f0_hz, target_hz) > (
            _pitch_distance(first_raw.median_f0_hz, target_hz) + PITCH_SLACK
        ):
            opening.accepted = False
            opening.reason = (
                f"pitch {opening.median_f0_hz:.0f} Hz is further from {target_hz:.0f} Hz than "
                f"{bases[0]}'s {first_raw.median_f0_hz:.0f} Hz"
            )
            del starts[name]
    order = sorted(starts, key=lambda n: starts[n].similarity, reverse=True)

    # Phase 2: each conversion switched off / on / to half, kept where it helps.
    best: tuple[CandidateScore, CandidateScore] | None = None  # (fitted, its raw)
    for name in order[:searched_bases]:
        raw, current = raws[name], starts[name]
        for knob in KNOBS:
            tried_here = []
            for share in levels:
                level = share * DEFAULT_STRENGTHS[knob]
                if level == getattr(current.recipe, knob) or search.out_of_time():
                    continue
                cand = search.score(current.recipe.with_strength(knob, level))
                reason = rejection(cand, current, raw, target_hz)
                if reason:
                    cand.reason = reason
                    continue
                tried_here.append(cand)
            for cand in sorted(tried_here, key=lambda c: c.similarity, reverse=True):
                if intelligible(cand, raw):
                    cand.accepted, cand.reason = True, "kept"
                    current = cand
                    break
        if best is None or current.similarity > best[0].similarity:
            best = (current, raw)
    for name in order[searched_bases:]:
        if best is None or starts[name].similarity > best[0].similarity:
            best = (starts[name], raws[name])
    assert best is not None
    fitted, raw = best
    # Reported, never used to choose: a measure the search did not optimise.
    raw.envelope_db = search.envelope_db(raw)
    fitted.envelope_db = search.envelope_db(fitted)
    if fitted.wer is None and fitted.recipe.converts:
        fitted.wer = search.word_error(fitted.recipe)
    seconds = tools.clock() - start
    report(total, total, "done")
    note = ""
    if tools.word_error is None:
        note = "no speech recognizer installed: the intelligibility guard was off"
    if search.stopped_early:
        note = (note + "; " if note else "") + f"stopped at the {TIME_BUDGET_S[mode]:.0f} s budget"
    result = VoiceFit(
        mode=mode,
        measure=tools.measure.name,
        recipe=fitted.recipe,
        raw=raw,
        fitted=fitted,
        target_median_f0_hz=target_hz,
        seconds=seconds,
        candidates=len(search.tried),
        stopped_early=search.stopped_early,
        note=note,
        tried=search.tried,
    )
    log.info(
        "voice fit (%s, %s): %s, held-out similarity %.3f -> %.3f in %.1f s",
        mode,
        result.measure,
        fitted.recipe.describe(),
        raw.similarity,
        fitted.similarity,
        seconds,
    )
    return result


def load_cached(cache_dir: Path, key: str) -> dict[str, Any] | None:
    """A stored fit result for ``key``, or ``None`` when absent or unreadable."""
    path = cache_dir / f"voicefit-{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != FIT_VERSION:
        return None
    return data


def save_cached(cache_dir: Path, key: str, result: dict[str, Any]) -> None:
    """Store a fit result (written whole, then renamed into place)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"voicefit-{key}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot cache the voice fit in %s: %s", cache_dir, exc)
