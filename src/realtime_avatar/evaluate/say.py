"""``avatar say`` scenarios: render the script in-process, then grade the MP4 it wrote."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..engine.script import render_script
from .identity import IdentityFrame
from .instruments import RENDER_CLOCK, Instruments
from .lipsync import MouthMeter, audio_envelope_db, cross_correlate, fill_gaps, windowed
from .manifest import Scenario
from .media import iter_frames, read_audio, video_fps
from .scores import Score, not_measured
from .scoring import (
    ScenarioOutcome,
    audio_language_score,
    drift_scores,
    identity_scores,
    intelligibility_scores,
    lipsync_scores,
    raw_tts,
    sync_details,
    voice_scores,
    window_details,
)

log = logging.getLogger(__name__)

IDENTITY_SAMPLES = 24  # frames sampled for identity per video
PAUSE_FLOOR_DB = 40.0  # below the loudest 10 ms by this much counts as a pause
MIN_PAUSE_S = 0.15
RAW_GAP_S = 0.3
TRACE_MAX_FRAMES = 500  # per-frame mouth and audio series kept in the report up to 20 s


def run_say(scenario: Scenario, inst: Instruments, media_dir: Path) -> ScenarioOutcome:
    """Render one say scenario and score it."""
    outcome = ScenarioOutcome(scenario)
    sid = scenario.id
    single = len(scenario.segments) == 1
    language = scenario.segments[0].language if single else "auto"
    path = media_dir / f"{sid}.mp4"
    result = render_script(
        scenario.text,
        path,
        avatar_name=inst.avatar.name,
        language=language,
        settings=inst.settings,
    )
    outcome.details.update(
        video=path.name,
        wall_s=round(result.wall_s, 3),
        duration_s=round(result.duration_s, 3),
        rtf=round(result.real_time_factor, 4),
        frames=result.frames,
        sentences=result.sentences,
        pipeline_languages=list(result.languages),
    )
    if "latency" in scenario.measures:
        outcome.scores += [
            Score(
                sid,
                "say.wall_s",
                result.wall_s,
                "s",
                RENDER_CLOCK,
                "latency",
                extra={"video_s": result.duration_s},
            ),
            Score(
                sid,
                "say.rtf",
                result.real_time_factor,
                "x real time",
                RENDER_CLOCK,
                "latency",
                extra={"video_s": result.duration_s},
            ),
        ]
    audio, rate = read_audio(path)
    fps = video_fps(path)
    mouth, identity, samples = _scan_frames(path, inst, scenario, result.frames)
    outcome.samples = samples
    if "identity" in scenario.measures:
        outcome.scores += identity_scores(sid, identity)
    if "lipsync" in scenario.measures:
        envelope = audio_envelope_db(audio, rate, len(mouth), int(round(fps)))
        sync = cross_correlate(mouth, envelope, fps=int(round(fps)))
        outcome.scores += lipsync_scores(sid, sync)
        if len(mouth) <= TRACE_MAX_FRAMES:
            outcome.details["trace"] = {
                "mouth_opening": [round(float(v), 4) for v in mouth],
                "audio_db": [round(float(v), 2) for v in envelope],
            }
        if sync is not None:
            outcome.details["lipsync"] = sync_details(sync)
        if "drift" in scenario.measures:
            windows = windowed(mouth, envelope, scenario.window_s, int(round(fps)))
            outcome.scores += drift_scores(sid, windows, scenario.window_s)
            outcome.details["windows"] = window_details(windows)
    if "voice" in scenario.measures:
        raw = _raw_script(scenario, inst)
        scores, figures = voice_scores(inst, sid, audio, rate, raw)
        outcome.scores += scores
        outcome.details["voice"] = figures
    if "intelligibility" in scenario.measures or "language" in scenario.measures:
        _score_segments(scenario, inst, audio, rate, outcome)
    return outcome


def _scan_frames(
    path: Path, inst: Instruments, scenario: Scenario, n_frames: int
) -> tuple[np.ndarray, list[IdentityFrame], list[tuple[str, np.ndarray]]]:
    """One pass over the video: mouth opening of every frame, identity of a sample, stills."""
    meter = MouthMeter(inst.locator)
    step = max(1, n_frames // IDENTITY_SAMPLES)
    openings: list[float] = []
    identity: list[IdentityFrame] = []
    first: np.ndarray | None = None
    widest: tuple[float, np.ndarray] | None = None
    for index, rgb in enumerate(iter_frames(path)):
        opening = meter.opening(rgb)
        openings.append(opening)
        if first is None:
            first = rgb
        if not np.isnan(opening) and (widest is None or opening > widest[0]):
            widest = (opening, rgb)
        if "identity" in scenario.measures and index % step == step // 2:
            identity.append(inst.identity.frame(rgb))
    samples = []
    if first is not None:
        samples.append((f"{scenario.id}: first frame (idle)", first))
    if widest is not None:
        samples.append((f"{scenario.id}: widest mouth ({widest[0]:.2f})", widest[1]))
    return fill_gaps(np.array(openings)), identity, samples


def _raw_script(scenario: Scenario, inst: Instruments) -> tuple[np.ndarray, int] | None:
    """The script in the raw TTS voices (no matching), segments joined by short pauses."""
    pieces: list[np.ndarray] = []
    rate = 0
    for segment in scenario.segments:
        pcm, seg_rate = raw_tts(segment.text, segment.language, inst)
        if rate and seg_rate != rate:
            from ..media.audio import resample

            pcm = resample(pcm, seg_rate, rate)
        rate = rate or seg_rate
        pieces += [pcm, np.zeros(int(RAW_GAP_S * rate), np.float32)]
    return (np.concatenate(pieces), rate) if pieces else None


def _score_segments(
    scenario: Scenario,
    inst: Instruments,
    audio: np.ndarray,
    rate: int,
    outcome: ScenarioOutcome,
) -> None:
    """Language and intelligibility per segment (the whole audio when there is one)."""
    sid = scenario.id
    segments = scenario.segments
    if len(segments) == 1:
        spans: list[tuple[int, int]] | None = [(0, len(audio))]
    else:
        spans = split_at_pauses(audio, rate, len(segments))
    if spans is None:
        reason = f"could not find {len(segments)} segments at the pauses of the audio"
        for index, segment in enumerate(segments):
            detail = f"segment {index + 1} ({segment.language})"
            outcome.scores.append(
                not_measured(
                    sid,
                    "language.audio",
                    "language.whisper-lid",
                    "language",
                    reason,
                    detail=detail,
                    language=segment.language,
                )
            )
        return
    found = []
    for index, (segment, (start, end)) in enumerate(zip(segments, spans, strict=True)):
        detail = "" if len(segments) == 1 else f"segment {index + 1} ({segment.language})"
        piece = audio[start:end]
        if "language" in scenario.measures:
            outcome.scores.append(
                audio_language_score(inst, sid, piece, rate, segment.language, detail=detail)
            )
        if "intelligibility" in scenario.measures:
            scores, info = intelligibility_scores(
                inst, sid, piece, rate, segment.text, segment.language, detail=detail
            )
            outcome.scores += scores
            found.append(
                {
                    "language": segment.language,
                    "start_s": round(start / rate, 3),
                    "end_s": round(end / rate, 3),
                    "text": segment.text,
                    "heard": info.get("heard"),
                }
            )
    outcome.details["segments"] = found


def split_at_pauses(audio: np.ndarray, rate: int, count: int) -> list[tuple[int, int]] | None:
    """Cut speech into ``count`` spans at its ``count - 1`` longest pauses, or ``None``.

    Pauses are runs of 10 ms blocks more than ``PAUSE_FLOOR_DB`` below the loudest block,
    between the first and last speech; each must last at least ``MIN_PAUSE_S``.
    """
    hop = rate // 100
    n = len(audio) // hop
    if n == 0:
        return None
    rms = np.sqrt(np.mean(audio[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1))
    loud = 20 * np.log10(np.maximum(rms, 1e-9))
    voiced = loud > loud.max() - PAUSE_FLOOR_DB
    idx = np.flatnonzero(voiced)
    if len(idx) == 0:
        return None
    first, last = int(idx[0]), int(idx[-1]) + 1
    runs: list[tuple[int, int]] = []
    start = None
    for i in range(first, last):
        if not voiced[i] and start is None:
            start = i
        elif voiced[i] and start is not None:
            runs.append((start, i))
            start = None
    runs = [r for r in runs if (r[1] - r[0]) / 100 >= MIN_PAUSE_S]
    if len(runs) < count - 1:
        return None
    cuts = sorted(sorted(runs, key=lambda r: r[1] - r[0], reverse=True)[: count - 1])
    bounds = [first] + [(a + b) // 2 for a, b in cuts] + [last]
    return [(bounds[i] * hop, bounds[i + 1] * hop) for i in range(count)]
