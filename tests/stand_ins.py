"""Stand-in stages for fast tests: no models, deterministic, each as small as its protocol.

``AudioMouthRenderer`` is a second renderer behind the render seam that reads only the
audio it is pushed (no phoneme timings): it proves the seam takes audio-driven renderers.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Callable

import numpy as np

from realtime_avatar.constants import ASR_RATE_HZ, OUTPUT_RATE_HZ, SAMPLES_PER_FRAME
from realtime_avatar.dialogue.base import DialogueError, Message
from realtime_avatar.frames import AVFrame, FaceParams, Speech, Transcript
from realtime_avatar.media.audio import float_to_int16, resample
from realtime_avatar.render.base import FaceImage
from realtime_avatar.settings import Settings
from realtime_avatar.vad.base import VadEvent

CHUNK = np.zeros(ASR_RATE_HZ // 50, np.float32)  # 20 ms of mic audio


class ScriptedVad:
    """A VAD whose events the test decides: ``then(kind)`` is returned by the next feed."""

    name = "scripted"

    def __init__(self) -> None:
        self._next: list[VadEvent] = []
        self.stream_s = 0.0
        self.fed = 0

    def then(self, *kinds: str) -> None:
        self._next += [VadEvent(k, self.stream_s) for k in kinds]

    def feed(self, pcm_16k: np.ndarray) -> list[VadEvent]:
        self.fed += 1
        self.stream_s += len(pcm_16k) / ASR_RATE_HZ
        events, self._next = self._next, []
        return events

    @property
    def speaking(self) -> bool:
        return False

    def speech_probability(self) -> float:
        return 0.0

    def reset(self) -> None:
        self._next = []


class _Utterance:
    def __init__(self, recognizer: StubRecognizer, turn_id: int) -> None:
        self.recognizer, self.turn_id = recognizer, turn_id
        self.samples = 0

    def feed(self, pcm_16k: np.ndarray) -> Transcript | None:
        self.samples += len(pcm_16k)
        return None

    def peek(self) -> Transcript:
        self.recognizer.peeks += 1
        return Transcript(
            self.turn_id, self.recognizer.heard_at_pause or self.recognizer.text, False
        )

    def finish(self) -> Transcript:
        self.recognizer.finishes += 1
        if self.recognizer.fail:
            raise RuntimeError("recognizer broke")
        return Transcript(self.turn_id, self.recognizer.text, True, "en")


class StubRecognizer:
    """Hears ``text`` (``heard_at_pause`` at a pause, when set)."""

    name = "stub"

    def __init__(self) -> None:
        self.text = ""
        self.heard_at_pause: str | None = None
        self.fail = False
        self.peeks = 0
        self.finishes = 0
        self.utterances: list[_Utterance] = []

    def languages(self) -> frozenset[str]:
        return frozenset({"en"})

    def start(self, turn_id: int, language: str = "auto") -> _Utterance:
        utterance = _Utterance(self, turn_id)
        self.utterances.append(utterance)
        return utterance


class StubResponder:
    """Replies ``reply(text)`` in word deltas; ``gate`` (if set) holds each delta until set."""

    name = "stub"

    def __init__(
        self, reply: Callable[[str], str] = lambda text: f"You said {text}. Right."
    ) -> None:
        self.reply = reply
        self.calls: list[str] = []
        self.fail_after: int | None = None  # raise DialogueError after this many deltas
        self.gate: asyncio.Event | None = None

    async def respond(self, history: list[Message], text: str, language: str) -> AsyncIterator[str]:
        self.calls.append(text)
        for i, word in enumerate(self.reply(text).split(" ")):
            if self.fail_after is not None and i >= self.fail_after:
                raise DialogueError("the backend went away")
            if self.gate is not None:
                await self.gate.wait()
            yield word if i == 0 else " " + word


class StubSpeech:
    """Speech whose length follows the text: a 200 Hz tone, 30 ms per character."""

    def __init__(self) -> None:
        self.spoken: list[tuple[str, bool, bool]] = []
        self.lock = threading.Lock()

    def speak(
        self, text: str, language: str, turn_id: int = 0, *, first: bool = False, more: bool = False
    ) -> Speech:
        with self.lock:
            self.spoken.append((text, first, more))
        rate = 16_000
        t = np.arange(int(0.03 * len(text) * rate)) / rate
        pcm = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
        return Speech(turn_id, text, language, pcm, rate)


class FlatDrawer:
    """A ``FaceDrawer`` that draws the jaw opening as a grey level: cheap and readable."""

    name = "flat"
    size_px = 16

    def __init__(self) -> None:
        self.drawn: list[FaceParams] = []

    def render(self, params: FaceParams) -> np.ndarray:
        self.drawn.append(params)
        return np.full((self.size_px, self.size_px, 3), int(params.jaw_open * 255), np.uint8)


class AudioMouthRenderer:
    """A ``Renderer`` that reads only audio: the mouth bar's height is the frame's loudness."""

    name = "audio-mouth"

    def __init__(self, face: FaceImage, settings: Settings) -> None:
        self.size_px = 32
        self.base = np.full((self.size_px, self.size_px, 3), 128, np.uint8)
        self.model_path = settings.renderer_model_path
        self._lock = threading.Lock()
        self._audio: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._index = 0

    def push(self, speech: Speech) -> None:
        pcm = float_to_int16(resample(speech.pcm, speech.sample_rate_hz, OUTPUT_RATE_HZ))
        frames = max(int(np.ceil(len(pcm) / SAMPLES_PER_FRAME)), 1)
        padded = np.zeros(frames * SAMPLES_PER_FRAME, np.int16)
        padded[: len(pcm)] = pcm
        with self._lock:
            for chunk in padded.reshape(frames, SAMPLES_PER_FRAME):
                self._audio.append((speech.turn_id, chunk))

    def clear(self) -> None:
        with self._lock:
            self._audio.clear()

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._audio)

    @property
    def frame_index(self) -> int:
        return self._index

    def next_frame(self) -> AVFrame:
        with self._lock:
            item = self._audio.popleft() if self._audio else None
            index, self._index = self._index, self._index + 1
        rgb = self.base.copy()
        if item is None:
            return AVFrame(0, index, rgb, np.zeros(SAMPLES_PER_FRAME, np.int16))
        turn_id, audio = item
        rgb[: mouth_height(audio), :, :] = 0
        return AVFrame(turn_id, index, rgb, audio, speaking=True)


def mouth_height(audio: np.ndarray) -> int:
    """How many rows of the frame the audio-driven mouth covers."""
    rms = float(np.sqrt(np.mean((audio.astype(np.float32) / 32768.0) ** 2)))
    return min(int(rms * 100), 32)


def bar_height(rgb: np.ndarray) -> int:
    """Read the mouth bar back from a frame of ``AudioMouthRenderer``."""
    return int(np.sum(rgb[:, 0, 0] == 0))


class ScriptedDecider:
    """An end-of-turn decider that releases once the silence reaches ``release_after_ms``
    (0: at the first ask), and records what it was asked."""

    def __init__(self, release_after_ms: float = 0.0, recheck_ms: float = 100.0) -> None:
        self.release_after_ms = release_after_ms
        self.recheck_ms = recheck_ms
        self.asked: list[tuple[str, float]] = []

    def decide(
        self, transcript: str, language: str, audio_16k: np.ndarray | None, silence_ms: float
    ) -> StubDecision:
        self.asked.append((transcript, silence_ms))
        release = silence_ms >= self.release_after_ms
        return StubDecision(release, 0.0 if release else self.recheck_ms, transcript, silence_ms)


class StubDecision:
    def __init__(self, release: bool, wait_ms: float, transcript: str, silence_ms: float) -> None:
        self.release, self.wait_ms = release, wait_ms
        self.transcript, self.silence_ms = transcript, silence_ms

    def as_record(self) -> dict[str, object]:
        return {
            "release": self.release,
            "transcript": self.transcript,
            "silence_ms": self.silence_ms,
        }
