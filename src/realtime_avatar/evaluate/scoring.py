"""Turning measurements into scores: shared by the say and live scenarios."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.voice import AvatarVoice
from ..media.audio import resample
from .identity import IdentityFrame
from .instruments import ASR, IDENTITY, LID_AUDIO, LID_TEXT, LIPSYNC, SPEAKER, Instruments
from .intelligibility import ASR_RATE_HZ, CHARACTER_LANGUAGES, ModelUnavailable, error_rate
from .lipsync import SyncResult, WindowSync, drift_ms_per_min
from .manifest import Scenario
from .scores import Score, not_measured

log = logging.getLogger(__name__)

MIN_LID_S = 1.0  # Whisper's language ID on less than a second of speech is a coin toss


def raw_tts(text: str, language: str, instruments: Instruments) -> tuple[np.ndarray, int]:
    """The synthesizer's own voice saying ``text``, before any voice matching: the one
    the avatar speaks with (``AvatarVoice.synthesizer``), so the gain is the matcher's."""
    voice = AvatarVoice.for_avatar(instruments.avatar, instruments.settings)
    speech = voice.synthesizer(language).synthesize(text, language)
    return speech.pcm, speech.sample_rate_hz


def voice_scores(
    inst: Instruments,
    scenario: str,
    pcm: np.ndarray,
    rate_hz: int,
    raw: tuple[np.ndarray, int] | None,
    *,
    detail: str = "",
    language: str | None = None,
) -> tuple[list[Score], dict[str, float]]:
    """Similarity of the output (and of the raw TTS voice) to the avatar's reference."""
    if inst.speaker is None or inst.reference_embedding is None:
        reason = inst.speaker_reason or "no speaker judge"
        return [
            not_measured(scenario, m, SPEAKER, "voice", reason, detail=detail, language=language)
            for m in ("voice.similarity", "voice.similarity_raw", "voice.similarity_gain")
        ], {}
    out = inst.speaker.embed(pcm, rate_hz)
    if out is None:
        reason = "the output holds less than 1 s of speech"
        return [
            not_measured(scenario, "voice.similarity", SPEAKER, "voice", reason, detail=detail)
        ], {}
    matched = inst.speaker.similarity(out, inst.reference_embedding)
    scores = [
        Score(scenario, "voice.similarity", matched, "cosine", SPEAKER, "voice", detail, language)
    ]
    figures = {"matched": matched}
    raw_embedding = inst.speaker.embed(*raw) if raw is not None else None
    if raw_embedding is None:
        scores.append(
            not_measured(
                scenario,
                "voice.similarity_raw",
                SPEAKER,
                "voice",
                "no raw TTS rendering to compare with",
                detail=detail,
                language=language,
            )
        )
    else:
        raw_sim = inst.speaker.similarity(raw_embedding, inst.reference_embedding)
        figures["raw"] = raw_sim
        scores += [
            Score(
                scenario,
                "voice.similarity_raw",
                raw_sim,
                "cosine",
                SPEAKER,
                "voice",
                detail,
                language,
            ),
            Score(
                scenario,
                "voice.similarity_gain",
                matched - raw_sim,
                "cosine",
                SPEAKER,
                "voice",
                detail,
                language,
            ),
        ]
    return scores, figures


def intelligibility_scores(
    inst: Instruments,
    scenario: str,
    pcm: np.ndarray,
    rate_hz: int,
    reference: str,
    language: str,
    *,
    detail: str = "",
) -> tuple[list[Score], dict[str, Any]]:
    """Whisper round trip: WER (or CER) of the output against the text it should say."""
    metric = "asr.cer" if language in CHARACTER_LANGUAGES else "asr.wer"
    audio = resample(np.asarray(pcm, np.float32), rate_hz, ASR_RATE_HZ)
    try:
        heard, model = inst.asr.transcribe(audio, language)
        rate = error_rate(reference, heard, language)
    except (ModelUnavailable, ValueError) as error:
        # No judge for this language, or nothing to compare against: not measured, never 0.
        return [
            not_measured(
                scenario,
                metric,
                ASR,
                "intelligibility",
                str(error),
                detail=detail,
                language=language,
            )
        ], {}
    score = Score(
        scenario,
        rate.metric,
        rate.rate,
        f"{rate.unit} error rate",
        ASR,
        "intelligibility",
        detail,
        language,
        extra={
            "reference": reference,
            "heard": heard,
            "errors": rate.errors,
            "reference_length": rate.reference_length,
            "model": f"whisper {model}",
        },
    )
    return [score], {"heard": heard, "model": model}


def audio_language_score(
    inst: Instruments,
    scenario: str,
    pcm: np.ndarray,
    rate_hz: int,
    expected: str,
    *,
    detail: str = "",
) -> Score:
    """Whisper's language ID of the output against the requested language."""
    if len(pcm) < MIN_LID_S * rate_hz:
        return not_measured(
            scenario,
            "language.audio",
            LID_AUDIO,
            "language",
            f"less than {MIN_LID_S:g} s of audio",
            detail=detail,
            language=expected,
        )
    audio = resample(np.asarray(pcm, np.float32), rate_hz, ASR_RATE_HZ)
    try:
        code, probability = inst.asr.detect_language(audio)
    except ModelUnavailable as error:
        return not_measured(
            scenario,
            "language.audio",
            LID_AUDIO,
            "language",
            str(error),
            detail=detail,
            language=expected,
        )
    return Score(
        scenario,
        "language.audio",
        code,
        "ISO 639-1",
        LID_AUDIO,
        "language",
        detail,
        expected,
        expected=expected,
        extra={"probability": round(probability, 3)},
    )


def text_language_score(
    inst: Instruments, scenario: str, text: str, expected: str, *, detail: str = ""
) -> Score:
    """Lingua's language of a reply text against the requested language."""
    code = inst.text_language.detect(text)
    if code is None:
        return not_measured(
            scenario,
            "language.text",
            LID_TEXT,
            "language",
            "no text, or lingua could not decide",
            detail=detail,
            language=expected,
        )
    return Score(
        scenario,
        "language.text",
        code,
        "ISO 639-1",
        LID_TEXT,
        "language",
        detail,
        expected,
        expected=expected,
        extra={"text": text},
    )


def lipsync_scores(
    scenario: str, result: SyncResult | None, *, detail: str = "", why_missing: str = ""
) -> list[Score]:
    """Offset and correlation of one cross-correlation."""
    if result is None:
        reason = why_missing or "too little speech or a constant mouth track to align"
        return [
            not_measured(
                scenario, "lipsync.offset_ms", LIPSYNC, "lipsync", reason, unit="ms", detail=detail
            ),
            not_measured(
                scenario, "lipsync.correlation", LIPSYNC, "lipsync", reason, detail=detail
            ),
        ]
    return [
        Score(
            scenario,
            "lipsync.offset_ms",
            result.offset_ms,
            "ms",
            LIPSYNC,
            "lipsync",
            detail,
            extra={"offset_frames": round(result.offset_frames, 3), "frames": result.frames},
        ),
        Score(
            scenario,
            "lipsync.correlation",
            result.peak_r,
            "pearson r",
            LIPSYNC,
            "lipsync",
            detail,
            extra={"sharpness": round(result.sharpness, 4)},
        ),
    ]


def drift_scores(scenario: str, windows: list[WindowSync], window_s: float) -> list[Score]:
    """Offset per window (informational) and the drift slope over the recording."""
    scores = []
    for index, window in enumerate(windows):
        label = f"window {index + 1}: {window.start_s:.0f}-{window.end_s:.0f} s"
        if window.result is None:
            scores.append(
                not_measured(
                    scenario,
                    "lipsync.window_offset_ms",
                    LIPSYNC,
                    "lipsync",
                    "too little speech in the window",
                    unit="ms",
                    detail=label,
                )
            )
        else:
            scores.append(
                Score(
                    scenario,
                    "lipsync.window_offset_ms",
                    window.result.offset_ms,
                    "ms",
                    LIPSYNC,
                    "lipsync",
                    label,
                    extra={"correlation": round(window.result.peak_r, 4)},
                )
            )
    slope = drift_ms_per_min(windows)
    if slope is None:
        scores.append(
            not_measured(
                scenario,
                "lipsync.drift_ms_per_min",
                LIPSYNC,
                "lipsync",
                f"fewer than 3 windows of {window_s:g} s with speech",
                unit="ms/min",
            )
        )
    else:
        scores.append(
            Score(
                scenario,
                "lipsync.drift_ms_per_min",
                slope,
                "ms/min",
                LIPSYNC,
                "lipsync",
                f"least-squares slope over {len(windows)} windows",
            )
        )
    return scores


def identity_scores(scenario: str, frames: list[IdentityFrame], *, detail: str = "") -> list[Score]:
    """Mean appearance similarity and geometry error over the sampled frames."""
    found = [
        f for f in frames if f.appearance_ssim is not None and f.geometry_error_iod is not None
    ]
    if not found:
        reason = "no face found in the sampled frames" if frames else "no frames sampled"
        return [
            not_measured(scenario, m, IDENTITY, "identity", reason, detail=detail)
            for m in ("identity.appearance_ssim", "identity.geometry_error_iod")
        ]
    ssim = np.array([f.appearance_ssim for f in found], dtype=np.float64)
    geometry = np.array([f.geometry_error_iod for f in found], dtype=np.float64)
    label = detail or f"mean over {len(found)} sampled frames"
    return [
        Score(
            scenario,
            "identity.appearance_ssim",
            float(ssim.mean()),
            "SSIM",
            IDENTITY,
            "identity",
            label,
            extra={
                "min": round(float(ssim.min()), 4),
                "frames": len(found),
                "missed": len(frames) - len(found),
            },
        ),
        Score(
            scenario,
            "identity.geometry_error_iod",
            float(geometry.mean()),
            "IOD",
            IDENTITY,
            "identity",
            label,
            extra={"max": round(float(geometry.max()), 4)},
        ),
    ]


@dataclass
class ScenarioOutcome:
    """Everything one scenario produced: scores, details for the plots, sample frames."""

    scenario: Scenario
    scores: list[Score] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    samples: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (caption, RGB)
    error: str = ""
    wall_s: float = 0.0


def sync_details(sync: SyncResult) -> dict[str, Any]:
    """The cross-correlation curve of a lip-sync measurement, for the report's plots."""
    return {"lags": sync.lags, "curve": sync.curve, "offset_ms": round(sync.offset_ms, 2)}


def window_details(windows: list[WindowSync]) -> list[dict[str, Any]]:
    """Per-window lip-sync offsets and correlations, for the drift plot."""
    return [
        {
            "start_s": w.start_s,
            "end_s": w.end_s,
            "offset_ms": None if w.result is None else round(w.result.offset_ms, 2),
            "correlation": None if w.result is None else round(w.result.peak_r, 4),
        }
        for w in windows
    ]
