"""Live scenarios: hold the scripted call with the real server, then grade what came back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..events import StatusEvent, TurnEvent
from .identity import IdentityFrame
from .instruments import CLIENT_CLOCK, LIVE_ASR, SERVER_MARKS, Instruments
from .intelligibility import error_rate
from .lipsync import cross_correlate, windowed
from .live import (
    RecordingCall,
    TurnLog,
    events_of,
    first_audible,
    last_audible,
    record_conversation,
    reply_text,
)
from .manifest import Scenario
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
    text_language_score,
    voice_scores,
    window_details,
)

log = logging.getLogger(__name__)

SEGMENT_MARGIN_S = 0.3
BARGE_IN_WINDOW_S = 1.5
IDENTITY_SAMPLES = 30
SETTLE_S = 0.5  # the first half second after connecting is the stream starting up


def run_live(
    scenario: Scenario,
    inst: Instruments,
    base_url: str,
    *,
    on_turn: Callable[[int], None] | None = None,
) -> ScenarioOutcome:
    """Hold one live scenario's conversation with the server at ``base_url`` and score it."""
    outcome = ScenarioOutcome(scenario)
    call, logs = asyncio.run(
        record_conversation(
            base_url,
            list(scenario.turns),
            inst.locator,
            language=scenario.session_language,
            until_s=scenario.duration_s,
            on_turn=on_turn,
        )
    )
    sid = scenario.id
    record = call.record
    end = record.video[-1][0] if record.video else record.connected_at
    outcome.details.update(
        session_id=record.session_id,
        call_s=round(end - record.connected_at, 2),
        turns_said=len(logs),
        frames_received=len(record.video),
        audio_chunks_received=len(call.received.chunks),
    )
    fps = record.fps(since_s=1.0)
    if "latency" in scenario.measures:
        outcome.scores.append(
            Score(
                sid,
                "video.fps",
                fps,
                "fps",
                CLIENT_CLOCK,
                "latency",
                extra={"frames": len(record.video)},
            )
        )
        outcome.scores.append(_audio_ratio(sid, call))
    turns = [_turn_details(call, logs, i) for i in range(len(logs))]
    outcome.details["turns"] = turns
    if "latency" in scenario.measures:
        outcome.scores += _latency_scores(sid, turns, aggregate=scenario.duration_s is not None)
    for index, turn_log in enumerate(logs):
        turn = turns[index]
        detail = f"turn {index + 1} ({turn_log.spec.language}): {turn_log.spec.text}"
        if "language" in scenario.measures:
            outcome.scores += _heard_scores(sid, turn_log, detail)
        if turn_log.spec.barge_in and index > 0:
            outcome.scores += _barge_in_scores(sid, call, logs, index, turns, detail)
        if turn["reply_text"] and (
            {"voice", "intelligibility", "language"} & set(scenario.measures)
        ):
            outcome.scores += _reply_scores(inst, scenario, call, turn_log, turn, detail)
    _grade_stream(scenario, inst, call, outcome)
    return outcome


def _audio_ratio(sid: str, call: RecordingCall) -> Score:
    """Seconds of audio received per second of call: 1.0 when no audio is lost."""
    chunks = call.received.chunks
    span = chunks[-1][0] - chunks[0][0] if len(chunks) > 1 else 0.0
    if span < 1.0:
        return not_measured(
            sid,
            "audio.received_ratio",
            CLIENT_CLOCK,
            "latency",
            "less than a second of audio received",
        )
    samples = sum(len(pcm) for _, pcm in chunks[1:])  # the first chunk's time starts the span
    ratio = samples / call.received.rate_hz / span
    return Score(
        sid,
        "audio.received_ratio",
        ratio,
        "s per s",
        CLIENT_CLOCK,
        "latency",
        extra={
            "chunks": len(chunks),
            "median_chunk_samples": int(np.median([len(p) for _, p in chunks])),
        },
    )


def _turn_details(call: RecordingCall, logs: list[TurnLog], index: int) -> dict[str, Any]:
    """What the events and the received media say about one turn."""
    entry = logs[index]
    turn_id = entry.turn_id
    out: dict[str, Any] = {
        "said": entry.spec.text,
        "language": entry.spec.language,
        "barge_in": entry.spec.barge_in,
        "turn_id": turn_id,
        "heard": entry.heard.text if entry.heard else "",
        "heard_language": (entry.heard.language or "") if entry.heard else "",
        "error": entry.error,
        "reply_text": reply_text(call, turn_id) if turn_id else "",
        "interrupted": None,
        "stage_ms": {},
    }
    if not turn_id:
        return out
    ended = events_of(call, TurnEvent, turn_id)
    speaking = [(t, e) for t, e in events_of(call, StatusEvent, turn_id) if e.state == "speaking"]
    if ended:
        arrival, event = ended[0]
        out["interrupted"] = event.interrupted
        out["stage_ms"] = _stage_ms(event)
        out["ended_at"] = arrival
    if speaking:
        out["speaking_at"] = speaking[0][0]
    speech_end = entry.clip.speech_end_s
    if speech_end and speaking:
        heard_from = max(speech_end, speaking[0][0] - SEGMENT_MARGIN_S)
        first = first_audible(call, heard_from)
        if first is not None:
            out["voice_to_first_audio_ms"] = round((first - speech_end) * 1000.0, 1)
    return out


def _stage_ms(event: TurnEvent) -> dict[str, float]:
    """The server's stage marks of a turn (ms after the end of speech), those it measured."""
    stages = {
        "asr_final_ms": event.asr_final_ms,
        "first_token_ms": event.first_token_ms,
        "first_audio_ms": event.first_audio_ms,
        "first_frame_ms": event.first_frame_ms,
        "turn_end_ms": event.turn_end_ms,
    }
    return {k: v for k, v in stages.items() if v is not None}


def _latency_scores(sid: str, turns: list[dict[str, Any]], aggregate: bool) -> list[Score]:
    """Server stage marks and the client's end-to-end latency, per turn or as medians."""
    rows: list[tuple[str, str, str, float]] = []  # (metric, instrument, detail, value)
    for index, turn in enumerate(turns):
        detail = f"turn {index + 1} ({turn['language']}): {turn['said']}"
        for stage, value in turn["stage_ms"].items():
            rows.append((f"latency.{stage}", SERVER_MARKS, detail, float(value)))
        if "voice_to_first_audio_ms" in turn:
            rows.append(
                (
                    "latency.voice_to_first_audio_ms",
                    CLIENT_CLOCK,
                    detail,
                    float(turn["voice_to_first_audio_ms"]),
                )
            )
    if not aggregate:
        return [
            Score(sid, metric, value, "ms", instrument, "latency", detail)
            for metric, instrument, detail, value in rows
        ]
    scores = []
    for metric in dict.fromkeys(r[0] for r in rows):
        values = np.array([r[3] for r in rows if r[0] == metric])
        instrument = next(r[1] for r in rows if r[0] == metric)
        scores.append(
            Score(
                sid,
                metric,
                float(np.median(values)),
                "ms",
                instrument,
                "latency",
                f"median of {len(values)} turns",
                extra={
                    "p90": round(float(np.percentile(values, 90)), 1),
                    "max": round(float(values.max()), 1),
                },
            )
        )
    return scores


def _heard_scores(sid: str, entry: TurnLog, detail: str) -> list[Score]:
    """Did the server's recognizer hear the words and the language the client spoke?"""
    language = entry.spec.language
    if entry.heard is None:
        reason = entry.error or "no final transcript from the server"
        return [
            not_measured(
                sid,
                "language.heard",
                LIVE_ASR,
                "language",
                reason,
                detail=detail,
                language=language,
            )
        ]
    heard_text = entry.heard.text
    scores = [
        Score(
            sid,
            "language.heard",
            entry.heard.language or "",
            "ISO 639-1",
            LIVE_ASR,
            "language",
            detail,
            language,
            expected=language,
            extra={"heard": heard_text},
        )
    ]
    rate = error_rate(entry.spec.text, heard_text, language)
    scores.append(
        Score(
            sid,
            f"live_{rate.metric}",
            rate.rate,
            f"{rate.unit} error rate",
            LIVE_ASR,
            "intelligibility",
            detail,
            language,
            extra={"said": entry.spec.text, "heard": heard_text},
        )
    )
    return scores


def _reply_scores(
    inst: Instruments,
    scenario: Scenario,
    call: RecordingCall,
    entry: TurnLog,
    turn: dict[str, Any],
    detail: str,
) -> list[Score]:
    """Language, intelligibility and voice of one received answer."""
    sid = scenario.id
    language = entry.spec.language
    reply = turn["reply_text"]
    scores: list[Score] = []
    if "language" in scenario.measures:
        scores.append(text_language_score(inst, sid, reply, language, detail=detail))
    start = turn.get("speaking_at")
    stop = turn.get("ended_at")
    if start is None or stop is None:
        reason = "the answer's speaking/turn events did not arrive"
        return scores + [
            not_measured(
                sid,
                "language.audio",
                "language.whisper-lid",
                "language",
                reason,
                detail=detail,
                language=language,
            )
        ]
    pcm = call.received.between(start - SEGMENT_MARGIN_S, stop + SEGMENT_MARGIN_S)
    rate = call.received.rate_hz
    if "language" in scenario.measures:
        scores.append(audio_language_score(inst, sid, pcm, rate, language, detail=detail))
    if "intelligibility" in scenario.measures:
        metric = "asr.cer" if language == "zh" else "asr.wer"
        if turn["interrupted"]:
            scores.append(
                not_measured(
                    sid,
                    metric,
                    "asr.whisper",
                    "intelligibility",
                    "the answer was interrupted on purpose (barge-in)",
                    detail=detail,
                    language=language,
                )
            )
        else:
            more, _ = intelligibility_scores(inst, sid, pcm, rate, reply, language, detail=detail)
            scores += more
    if "voice" in scenario.measures:
        more, _ = voice_scores(
            inst, sid, pcm, rate, raw_tts(reply, language, inst), detail=detail, language=language
        )
        scores += more
    return scores


def _mouth_threshold(call: RecordingCall, logs: list[TurnLog]) -> float | None:
    """An opening above idle: idle is the mouth before the first question, speech during
    the first answer; the threshold sits a third of the way from one to the other."""
    if not logs or not call.mouth:
        return None
    first = logs[0].clip
    times = np.array([t for t, _ in call.mouth])
    values = np.array([m for _, m in call.mouth])
    idle = values[(times > call.record.connected_at + SETTLE_S) & (times < first.speech_start_s)]
    answer_from = first.speech_end_s
    ended = events_of(call, TurnEvent, logs[0].turn_id)
    answer_to = ended[0][0] if ended else answer_from + 5.0
    speaking = values[(times > answer_from) & (times < answer_to)]
    if len(idle) == 0 or len(speaking) == 0:
        return None
    low, high = float(np.nanpercentile(idle, 95)), float(np.nanpercentile(speaking, 95))
    if high <= low:
        return None
    return low + (high - low) / 3.0


def _barge_in_scores(
    scenario_id: str,
    call: RecordingCall,
    logs: list[TurnLog],
    index: int,
    turns: list[dict[str, Any]],
    detail: str,
) -> list[Score]:
    """Was the answer talked over interrupted, and how fast did its sound and mouth stop?"""
    previous = turns[index - 1]
    clip = logs[index].clip
    scores: list[Score] = []
    if previous["interrupted"] is None:
        scores.append(
            not_measured(
                scenario_id,
                "barge_in.interrupted",
                CLIENT_CLOCK,
                "latency",
                "the talked-over turn never reported its end",
                detail=detail,
            )
        )
    else:
        scores.append(
            Score(
                scenario_id,
                "barge_in.interrupted",
                "yes" if previous["interrupted"] else "no",
                "",
                SERVER_MARKS,
                "latency",
                detail,
                expected="yes",
            )
        )
    onset = clip.speech_start_s
    if not onset:
        return scores
    until = onset + BARGE_IN_WINDOW_S
    next_answer = turns[index].get("speaking_at")
    if next_answer is not None:
        until = min(until, next_answer - 0.1)
    # The answer was playing when the client started talking if it had started and its
    # end (the turn event, sent when it finished or was cut) came after the onset. A pause
    # between words at that moment is still "talking": the sound test alone would miss it.
    started_at = previous.get("speaking_at")
    ended_at = previous.get("ended_at")
    was_talking = started_at is not None and started_at < onset
    was_talking = was_talking and (ended_at is None or ended_at > onset)
    if not was_talking:
        reason = "the answer had already ended when the client started talking"
        return scores + [
            not_measured(scenario_id, m, CLIENT_CLOCK, "latency", reason, unit="ms", detail=detail)
            for m in ("barge_in.audio_stop_ms", "barge_in.mouth_stop_ms")
        ]
    last = last_audible(call, onset, until)
    stop_ms = 0.0 if last is None else (last - onset) * 1000.0  # 0: silent from the onset on
    scores.append(
        Score(scenario_id, "barge_in.audio_stop_ms", stop_ms, "ms", CLIENT_CLOCK, "latency", detail)
    )
    threshold = _mouth_threshold(call, logs)
    if threshold is None:
        scores.append(
            not_measured(
                scenario_id,
                "barge_in.mouth_stop_ms",
                CLIENT_CLOCK,
                "latency",
                "no idle/speaking mouth reference in this call",
                unit="ms",
                detail=detail,
            )
        )
    else:
        moving = [t for t, m in call.mouth if onset < t <= until and m > threshold]
        mouth_ms = (max(moving) - onset) * 1000.0 if moving else 0.0
        scores.append(
            Score(
                scenario_id,
                "barge_in.mouth_stop_ms",
                mouth_ms,
                "ms",
                CLIENT_CLOCK,
                "latency",
                detail,
                extra={"opening_threshold": round(threshold, 4)},
            )
        )
    return scores


def _grade_stream(
    scenario: Scenario, inst: Instruments, call: RecordingCall, outcome: ScenarioOutcome
) -> None:
    """Lip sync (and drift) on the received stream, identity on sampled frames, stills."""
    sid = scenario.id
    record = call.record
    if record.video:
        start = record.connected_at + SETTLE_S
        times, mouth, envelope = call.grid(start, record.video[-1][0])
        if "lipsync" in scenario.measures:
            sync = cross_correlate(mouth, envelope)
            outcome.scores += lipsync_scores(sid, sync, detail="whole call, at the client")
            if sync is not None:
                outcome.details["lipsync"] = sync_details(sync)
        if "drift" in scenario.measures:
            windows = windowed(mouth, envelope, scenario.window_s)
            outcome.scores += drift_scores(sid, windows, scenario.window_s)
            outcome.details["windows"] = window_details(windows)
    samples = call.sample_frames
    if "identity" in scenario.measures:
        step = max(1, len(samples) // IDENTITY_SAMPLES)
        frames: list[IdentityFrame] = [inst.identity.frame(rgb) for _, rgb in samples[::step]]
        outcome.scores += identity_scores(sid, frames, detail=f"{len(frames)} received frames")
    if samples:
        mouth_times = np.array([t for t, _ in call.mouth])
        mouth_values = np.nan_to_num(np.array([m for _, m in call.mouth]))
        at_sample = [mouth_values[np.argmin(np.abs(mouth_times - t))] for t, _ in samples]
        widest = int(np.argmax(at_sample))
        outcome.samples = [
            (f"{sid}: received frame, listening", samples[0][1]),
            (f"{sid}: received frame, widest sampled mouth", samples[widest][1]),
        ]
