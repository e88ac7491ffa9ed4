"""Voice scores on the real-voice set: does the avatar sound like the person?

For each real recording in ``assets/voices`` (origins and licences in ``voices.json``) the
recording is cut at a pause into a *registration* part (the first 60 %: what a user
would register; the voice fit splits it again into its own fitting and held-out halves)
and an *evaluation* part (the last 40 %), which neither the fit nor the matcher ever
sees. Each way of speaking is then scored against the evaluation part:

- ``piper`` / ``hibari``: the base voices as they are;
- ``default``: today's product without a fit (Piper + the WORLD matcher at its defaults);
- ``fitted``: the recipe ``voice.fit`` chose (``fast`` or ``full``) from the registration part.

Two kinds of measure, so the one the fit optimises is not the only one reported:
speaker similarity (resemblyzer GE2E cosine: the fit's guide), and measures the fit did
not use: median-pitch error in semitones, long-term spectral envelope distance in dB
(both against the evaluation part), and the ASR round-trip WER; and the live path's cost,
the time to synthesise and convert a reply's first short clause ("Sure,"). The sentences spoken are
in neither the fit's held-out texts nor the calibration sentences. The ceiling: the
registration part itself scored against the evaluation part (same person, other words).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..media.audio import decode_audio, resample
from ..settings import Settings

log = logging.getLogger(__name__)

RATE_HZ = 22_050
EVAL_TEXTS = (
    "The quick brown fox jumps over the lazy dog while the children watch from the window.",
    "She opened the old wooden box and found a letter that her grandmother had written.",
    "If you want to learn a new language, practice a little every single day.",
)
SYSTEMS = ("piper", "hibari", "default", "fitted")
FIRST_CLAUSE = "Sure,"  # what a reply's first piece often is (engine/voice.py chunker)
REGISTRATION_SHARE = 0.6  # of each recording; the rest is the evaluation part

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RealVoice:
    """One recording of the set, as described in ``voices.json``."""

    name: str
    path: Path
    gender: str
    accent: str
    language: str
    origin: str
    licence: str


def voice_set() -> list[RealVoice]:
    """The shipped real-voice set."""
    folder = resources.files("realtime_avatar") / "assets" / "voices"
    listing = json.loads((folder / "voices.json").read_text(encoding="utf-8"))
    out = []
    for item in listing["voices"]:
        with resources.as_file(folder / item["file"]) as path:
            out.append(
                RealVoice(
                    item["name"],
                    Path(path),
                    item["gender"],
                    item["accent"],
                    item["language"],
                    item["origin"],
                    item["licence"],
                )
            )
    return out


def _cut(pcm: np.ndarray, rate_hz: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut at the quietest 50 ms within ±10 % of ``share`` of the length."""
    n = len(pcm)
    win = int(0.05 * rate_hz)
    lo, hi = int((share - 0.1) * n), int((share + 0.1) * n)
    energy = np.convolve(np.asarray(pcm[lo:hi], np.float64) ** 2, np.ones(win), mode="valid")
    cut = lo + int(np.argmin(energy)) + win // 2
    return pcm[:cut], pcm[cut:]


def score_voice(
    voice: RealVoice, settings: Settings, mode: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Every system's scores on one real voice (see the module's description)."""
    from ..engine.voice import AvatarVoice, fit_sample
    from ..voice.fit import (
        ResemblyzerMeasure,
        VoiceRecipe,
        envelope_distance_db,
        pitch_error_semitones,
        tracker_median_f0,
    )
    from ..voice.profile import compute_profile
    from .intelligibility import AsrJudge, error_rate

    say = progress or (lambda _msg: None)
    pcm = decode_audio(voice.path, RATE_HZ, max_s=30.0)
    pcm = (pcm * 0.9 / max(float(np.max(np.abs(pcm))), 1e-6)).astype(np.float32)
    registration, evaluation = _cut(pcm, RATE_HZ, REGISTRATION_SHARE)
    judge = ResemblyzerMeasure()
    reference = judge.reference(evaluation, RATE_HZ)
    eval_profile = compute_profile(evaluation, RATE_HZ)
    eval_median = tracker_median_f0(evaluation, RATE_HZ)
    target = compute_profile(registration, RATE_HZ)  # what register stores

    say(f"{voice.name}: fitting ({mode})")
    started = time.monotonic()
    fit = fit_sample(registration, RATE_HZ, settings, mode)
    fit_s = time.monotonic() - started
    assert fit is not None
    recipes: dict[str, VoiceRecipe | None] = {
        "piper": VoiceRecipe(base="piper"),
        "hibari": VoiceRecipe(base="hibari"),
        "default": None,  # no recipe: AVATAR_TTS_ENGLISH and the matcher's defaults
        # Not fitted (too little voiced speech): the avatar keeps the default voice.
        "fitted": VoiceRecipe.from_dict(fit["recipe"]) if fit["recipe"] else None,
    }
    asr = AsrJudge(settings)
    systems: dict[str, Any] = {}
    for system, recipe in recipes.items():
        say(f"{voice.name}: speaking as {system}")
        stage = AvatarVoice(settings, target, None, recipe)
        pieces, rate = [], RATE_HZ
        wers = []
        for text in EVAL_TEXTS:
            speech = stage.speak(text, "en")
            rate = speech.sample_rate_hz
            pieces += [speech.pcm, np.zeros(int(0.25 * rate), np.float32)]
            heard, _model = asr.transcribe(resample(speech.pcm, rate, 16_000), "en")
            wers.append(error_rate(text, heard, "en").rate)
        spoken = np.concatenate(pieces)
        median = tracker_median_f0(spoken, rate)
        # The live path: a reply's short first clause, synthesised and converted (warm).
        clause_ms = []
        for _ in range(3):
            begun = time.perf_counter()
            stage.speak(FIRST_CLAUSE, "en", first=True, more=True)
            clause_ms.append((time.perf_counter() - begun) * 1000.0)
        systems[system] = {
            "recipe": None if recipe is None else recipe.describe(),
            "similarity": round(judge.similarity(reference, spoken, rate), 4),
            "pitch_error_st": round(pitch_error_semitones(median, eval_median), 2),
            "median_f0_hz": round(median, 1),
            "envelope_db": round(
                envelope_distance_db(compute_profile(spoken, rate, f0_method="dio"), eval_profile),
                2,
            ),
            "wer": round(float(np.mean(wers)), 3),
            "first_clause_ms": round(float(np.median(clause_ms)), 1),
        }
    ceiling = judge.similarity(reference, registration, RATE_HZ)
    return {
        "voice": voice.name,
        "gender": voice.gender,
        "accent": voice.accent,
        "registration_s": round(len(registration) / RATE_HZ, 1),
        "evaluation_s": round(len(evaluation) / RATE_HZ, 1),
        "person_median_f0_hz": round(eval_median, 1),
        "ceiling_similarity": round(ceiling, 4),
        "fit": {
            "mode": mode,
            "recipe": fit["describe"],
            "seconds": round(fit_s, 1),
            "stopped_early": fit.get("stopped_early", False),
            "candidates": fit.get("candidates", 0),
            "heldout_similarity_raw": (fit.get("raw") or {}).get("similarity"),
            "heldout_similarity_fitted": (fit.get("fitted") or {}).get("similarity"),
            "note": fit["note"],
            "tried": [
                {k: c[k] for k in ("recipe", "similarity", "median_f0_hz", "wer", "reason")}
                for c in fit.get("tried", [])
            ],
        },
        "systems": systems,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and minimum of each system's scores over the set."""
    out: dict[str, Any] = {}
    for system in SYSTEMS:
        values = [row["systems"][system] for row in rows if system in row["systems"]]
        if not values:
            continue
        sims = [v["similarity"] for v in values]
        out[system] = {
            "similarity_mean": round(float(np.mean(sims)), 4),
            "similarity_min": round(float(np.min(sims)), 4),
            "pitch_error_st_mean": round(float(np.mean([v["pitch_error_st"] for v in values])), 2),
            "envelope_db_mean": round(float(np.mean([v["envelope_db"] for v in values])), 2),
            "wer_mean": round(float(np.mean([v["wer"] for v in values])), 3),
            "first_clause_ms_median": round(
                float(np.median([v["first_clause_ms"] for v in values])), 1
            ),
        }
    out["ceiling_similarity_mean"] = round(
        float(np.mean([row["ceiling_similarity"] for row in rows])), 4
    )
    return out


def evaluate_voices(
    settings: Settings,
    mode: str = "fast",
    names: list[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Scores of every system on the real-voice set (or the ``names`` in it)."""
    voices = [v for v in voice_set() if names is None or v.name in names]
    rows = [score_voice(v, settings, mode, progress) for v in voices]
    return {
        "mode": mode,
        "measure_guiding_fit": "resemblyzer",
        "second_speaker_model": "none available offline (every other speaker encoder checked "
        "downloads its weights at run time); pitch and envelope distances stand in",
        "voices": rows,
        "summary": summarise(rows),
    }
