"""Live scenarios: a scripted conversation with the real server over WebRTC (aiortc).

``RecordingCall`` is the evaluator's client: an ``AvatarCall`` that also keeps what the
scoring needs and ``CallRecord`` does not hold: every received audio sample with its
arrival time, the evaluator's own mouth measure of every received video frame (BlazeFace,
not the face mesh), and a sample of received frames for identity and the report.

``run_conversation`` speaks a list of turns into the call (Piper for English, espeak-ng
for the rest, through the product's synthesizer registry) in real time: a turn waits for
the previous answer to finish, or, for a barge-in turn, talks over it once it is speaking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import av
import numpy as np

from ..constants import FPS
from ..events import InterruptedEvent, ServerEvent, StatusEvent, TranscriptEvent, TurnEvent
from .face_points import BlazeFaceLocator
from .lipsync import MouthMeter, level_db
from .manifest import TurnSpec
from .rtc_client import AvatarCall, Clip, mic_audio

log = logging.getLogger(__name__)

AUDIBLE_RMS = 0.01
SAMPLE_FRAME_EVERY_S = 2.0
MAX_SAMPLE_FRAMES = 160
TURN_TIMEOUT_S = 60.0
HEARD_TIMEOUT_S = 30.0

TurnScoped = TypeVar(
    "TurnScoped", bound=StatusEvent | TranscriptEvent | TurnEvent | InterruptedEvent
)


@dataclass
class TurnLog:
    """What happened in one turn, from the client's side."""

    spec: TurnSpec
    clip: Clip
    turn_id: int = 0
    heard: TranscriptEvent | None = None  # the server's final transcript of what was said
    error: str = ""


@dataclass
class ReceivedAudio:
    """Audio chunks as they arrived: (arrival time, mono float32 at ``rate_hz``)."""

    chunks: list[tuple[float, np.ndarray]] = field(default_factory=list)
    rate_hz: int = 48_000

    def between(self, start: float, end: float) -> np.ndarray:
        """The samples of chunks that arrived in [start, end], joined."""
        parts = [pcm for t, pcm in self.chunks if start <= t <= end]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def levels(self) -> tuple[np.ndarray, np.ndarray]:
        """Arrival times and RMS of every chunk."""
        if not self.chunks:
            return np.zeros(0), np.zeros(0)
        times = np.array([t for t, _ in self.chunks])
        rms = np.array([float(np.sqrt(np.mean(p.astype(np.float64) ** 2))) for _, p in self.chunks])
        return times, rms


class RecordingCall(AvatarCall):
    """An ``AvatarCall`` that keeps received audio, its own mouth measure and sample frames."""

    def __init__(self, base_url: str, clips: list[Clip], locator: BlazeFaceLocator, **kw: Any):
        super().__init__(base_url, clips, measure_mouth=False, **kw)
        self.meter = MouthMeter(locator)
        self.mouth: list[tuple[float, float]] = []  # (arrival, opening)
        self.received = ReceivedAudio()
        self.sample_frames: list[tuple[float, np.ndarray]] = []
        self._next_sample = 0.0

    def on_video(self, arrival: float, frame: av.VideoFrame) -> None:
        """Measure the mouth with the evaluator's own instrument and keep sample frames."""
        rgb = frame.to_ndarray(format="rgb24")
        opening = self.meter.opening(rgb)
        self.mouth.append((arrival, opening))
        self.record.video.append((arrival, opening))
        self.record.last_frame = rgb
        if arrival >= self._next_sample and len(self.sample_frames) < MAX_SAMPLE_FRAMES:
            self.sample_frames.append((arrival, rgb))
            self._next_sample = arrival + SAMPLE_FRAME_EVERY_S

    def on_audio(self, arrival: float, frame: av.AudioFrame) -> None:
        """Keep the received samples (mono) for the judges, and their level."""
        channels = len(frame.layout.channels)
        pcm = frame.to_ndarray().astype(np.float32).reshape(-1, channels).mean(axis=1)
        pcm /= 32768.0
        self.received.rate_hz = frame.sample_rate
        self.received.chunks.append((arrival, pcm))
        self.record.audio.append((arrival, float(np.sqrt(np.mean(pcm**2)))))

    # -- what the call looked like, on a regular 40 ms grid -------------------------------

    def grid(self, start: float, end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grid times, mouth opening and audio level (dB) per 40 ms bin from ``start`` to ``end``.

        Each received video frame and audio chunk is placed at its arrival time: what a
        player that shows media as it arrives would show. Empty bins are interpolated.
        """
        n = max(int((end - start) * FPS), 0)
        times = start + np.arange(n) / FPS
        mouth = _binned([t for t, _ in self.mouth], [m for _, m in self.mouth], start, n)
        audio_t, audio_rms = self.received.levels()
        energy = _binned(list(audio_t), list(audio_rms**2), start, n)
        return times, mouth, level_db(np.sqrt(np.maximum(energy, 0.0)))


def _binned(times: list[float], values: list[float], start: float, n: int) -> np.ndarray:
    """Average values into 40 ms bins; empty bins take the neighbours' interpolation."""
    sums = np.zeros(n)
    counts = np.zeros(n)
    if n and times:
        index = np.floor((np.asarray(times) - start) * FPS).astype(int)
        vals = np.asarray(values, dtype=np.float64)
        keep = (index >= 0) & (index < n) & ~np.isnan(vals)
        np.add.at(sums, index[keep], vals[keep])
        np.add.at(counts, index[keep], 1)
    out = np.full(n, np.nan)
    filled = counts > 0
    out[filled] = sums[filled] / counts[filled]
    if filled.any() and not filled.all():
        grid = np.arange(n)
        out[~filled] = np.interp(grid[~filled], grid[filled], out[filled])
    return out


def _is_user_final(after_turn: int) -> Callable[[ServerEvent], bool]:
    return lambda e: (
        isinstance(e, TranscriptEvent) and e.role == "user" and e.final and e.turn_id > after_turn
    )


def _is_turn_end(turn_id: int) -> Callable[[ServerEvent], bool]:
    return lambda e: isinstance(e, TurnEvent) and e.turn_id == turn_id


def _is_speaking(turn_id: int) -> Callable[[ServerEvent], bool]:
    return lambda e: isinstance(e, StatusEvent) and e.state == "speaking" and e.turn_id == turn_id


async def converse(
    call: RecordingCall,
    turns: list[TurnSpec],
    mic: list[np.ndarray],
    *,
    until_s: float | None = None,
    on_turn: Callable[[int], None] | None = None,
) -> list[TurnLog]:
    """Say ``turns`` in order (cycling through them until ``until_s`` if given); log each.

    The call must be started. A turn that times out is logged with its error and the
    conversation goes on.
    """
    assert call.mic is not None
    logs: list[TurnLog] = []
    last_turn = 0
    started = time.monotonic()
    await asyncio.sleep(1.0)  # a second of idle video before the first question
    index = 0
    while True:
        if until_s is None and index >= len(turns):
            break
        if until_s is not None and time.monotonic() - started >= until_s:
            break
        spec, pcm = turns[index % len(turns)], mic[index % len(turns)]
        mark = len(call.record.events)
        try:
            if logs and spec.barge_in:
                await call.wait_for_event(_is_speaking(last_turn), TURN_TIMEOUT_S)
                await asyncio.sleep(spec.after_speaking_s)
            elif logs and last_turn:
                await call.wait_for_event(_is_turn_end(last_turn), TURN_TIMEOUT_S)
                await asyncio.sleep(spec.gap_s)
        except TimeoutError as error:
            logs[-1].error = logs[-1].error or f"answer did not end: {error}"
        clip = call.mic.say_now(pcm)
        entry = TurnLog(spec, clip)
        logs.append(entry)
        try:
            heard = await call.wait_for_event(_is_user_final(last_turn), HEARD_TIMEOUT_S, mark)
            assert isinstance(heard, TranscriptEvent)
            entry.heard = heard
            entry.turn_id = heard.turn_id
            last_turn = entry.turn_id
        except TimeoutError as error:
            entry.error = f"the server did not hear the turn: {error}"
        index += 1
        if on_turn is not None:
            on_turn(index)
    if last_turn:
        with contextlib.suppress(TimeoutError):
            await call.wait_for_event(_is_turn_end(last_turn), TURN_TIMEOUT_S)
    await asyncio.sleep(1.0)
    return logs


async def record_conversation(
    base_url: str,
    turns: list[TurnSpec],
    locator: BlazeFaceLocator,
    *,
    language: str = "auto",
    until_s: float | None = None,
    on_turn: Callable[[int], None] | None = None,
) -> tuple[RecordingCall, list[TurnLog]]:
    """Connect, hold the scripted conversation, hang up; the call keeps everything seen."""
    mic = [mic_audio(t.text, t.language) for t in turns]
    call = RecordingCall(base_url, [], locator, language=language, dialogue="persona")
    await call.start()
    try:
        logs = await converse(call, turns, mic, until_s=until_s, on_turn=on_turn)
    finally:
        await call.close()
    return call, logs


def events_of(
    call: AvatarCall, kind: type[TurnScoped], turn_id: int
) -> list[tuple[float, TurnScoped]]:
    """Events of one model (``TurnEvent``...) for one turn, with their arrival times."""
    return [(t, e) for t, e in call.record.of_type(kind) if e.turn_id == turn_id]


def reply_text(call: AvatarCall, turn_id: int) -> str:
    """The avatar's final reply text of a turn ("" if none)."""
    for _, event in events_of(call, TranscriptEvent, turn_id):
        if event.role == "avatar" and event.final:
            return event.text
    return ""


def first_audible(call: RecordingCall, after: float, until: float | None = None) -> float | None:
    """Arrival of the first audible received audio chunk after ``after``."""
    for t, pcm in call.received.chunks:
        if t > after and (until is None or t <= until) and np.sqrt(np.mean(pcm**2)) > AUDIBLE_RMS:
            return t
    return None


def last_audible(call: RecordingCall, after: float, until: float) -> float | None:
    """Arrival of the last audible received audio chunk in (after, until]."""
    last = None
    for t, pcm in call.received.chunks:
        if after < t <= until and np.sqrt(np.mean(pcm**2)) > AUDIBLE_RMS:
            last = t
    return last
