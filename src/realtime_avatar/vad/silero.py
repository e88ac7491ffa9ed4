"""Silero VAD v6 (ONNX, shipped in faster-whisper's assets) run with onnxruntime, streaming.

The model scores 32 ms frames (512 samples at 16 kHz). Each frame is given with the last
64 samples of the frame before it (the "context" the v5/v6 models were trained with) and
the LSTM state ``h``/``c`` carried from frame to frame. This export takes a batch of frames
as a sequence and runs the LSTM across it, so all the whole frames of one ``feed`` go
through one ``run`` call; the result is identical to scoring them one at a time.

Turning probabilities into events uses hysteresis: speech starts once the probability
stays at or above ``threshold`` for ``min_speech_ms``, and ends once it has stayed below
``neg_threshold`` for ``min_silence_ms``. Event times are positions in the stream: a
"start" is where the run of speech frames began, an "end" is where the silence began
(not the later moment when it was long enough to be sure).

Between the two, a "pause" fires once the silence has lasted ``pause_ms`` (the user has
probably finished: a session may start its reply speculatively), and a "resume" if
confident speech comes back before the "end" (they had not: drop the speculation).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import ASR_RATE_HZ
from ..errors import ConfigurationError
from ..settings import Settings
from .base import VadEvent

_LOGGER = logging.getLogger(__name__)

FRAME_SAMPLES = 512  # 32 ms at 16 kHz: the only frame size the 16 kHz model accepts
CONTEXT_SAMPLES = 64  # samples of the previous frame prepended to each frame
_STATE_SHAPE = (1, 1, 128)  # h and c of the model's LSTM
FRAME_S = FRAME_SAMPLES / ASR_RATE_HZ

# The constructor's defaults are the ``vad_*`` settings' (from settings.py).
_DEFAULTS: dict[str, Any] = {
    name: setting.default
    for name, setting in Settings.model_fields.items()
    if name.startswith("vad_")
}


def default_model_path() -> Path:
    """``silero_vad_v6.onnx`` from faster-whisper's package assets."""
    # Located without importing faster_whisper, which drags in ctranslate2 (~0.3 s).
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "faster-whisper is not installed; it ships the Silero VAD model: "
            "pip install faster-whisper==1.2.1"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"


@dataclass
class _Model:
    session: object  # onnxruntime.InferenceSession; loose so onnxruntime loads lazily
    lock: threading.Lock


_MODELS: dict[Path, _Model] = {}
_MODELS_LOCK = threading.Lock()


def _load_model(path: Path) -> _Model:
    """The process's one onnxruntime session for ``path`` (created on first use)."""
    with _MODELS_LOCK:
        cached = _MODELS.get(path)
        if cached is not None:
            return cached
        if not path.is_file():
            raise ConfigurationError(
                f"Silero VAD model not found at {path}; reinstall faster-whisper "
                "(pip install faster-whisper==1.2.1), which ships it."
            )
        import onnxruntime

        # One thread: a frame costs ~0.1 ms, far less than waking a thread pool would, and
        # every stage shares the same two cores.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = {i.name for i in session.get_inputs()}
        if names != {"input", "h", "c"}:
            raise ConfigurationError(
                f"{path} is not a Silero VAD v6 model (inputs {sorted(names)}); "
                "use the silero_vad_v6.onnx that faster-whisper ships."
            )
        model = _Model(session=session, lock=threading.Lock())
        _MODELS[path] = model
        _LOGGER.debug("Loaded Silero VAD from %s", path)
        return model


class SileroVad:
    """Streaming speech start/end detection for one session (``VoiceActivity``)."""

    name = "silero"

    def __init__(
        self,
        threshold: float = _DEFAULTS["vad_threshold"],
        neg_threshold: float = _DEFAULTS["vad_neg_threshold"],
        min_speech_ms: float = _DEFAULTS["vad_min_speech_ms"],
        min_silence_ms: float = _DEFAULTS["vad_min_silence_ms"],
        model_path: Path | None = None,
        pause_ms: float | None = _DEFAULTS["vad_pause_ms"],
    ) -> None:
        """Load the shared model (once per process) and start with empty state.

        ``threshold``/``neg_threshold``: probabilities that start / end speech;
        ``min_speech_ms``: how long speech must last before "start" fires;
        ``min_silence_ms``: how long silence must last before "end" fires;
        ``pause_ms``: how long silence must last before "pause" fires (``None``: never).
        Each defaults to its ``vad_*`` setting's default.
        """
        if not 0.0 < neg_threshold <= threshold < 1.0:
            raise ConfigurationError(
                f"VAD thresholds must satisfy 0 < neg_threshold <= threshold < 1; "
                f"got neg_threshold={neg_threshold}, threshold={threshold}."
            )
        if min_speech_ms < 0 or min_silence_ms < 0:
            raise ConfigurationError("VAD min_speech_ms and min_silence_ms must be >= 0.")
        if pause_ms is not None and not 0 < pause_ms < min_silence_ms:
            raise ConfigurationError(
                f"VAD pause_ms must be between 0 and min_silence_ms ({min_silence_ms:g}); "
                f"got {pause_ms:g}."
            )
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        # Counted in whole frames: a run of n frames lasts n * 32 ms.
        self._min_speech_frames = max(1, int(np.ceil(min_speech_ms / 1000.0 / FRAME_S - 1e-9)))
        self._min_silence_frames = max(1, int(np.ceil(min_silence_ms / 1000.0 / FRAME_S - 1e-9)))
        self._pause_frames = (
            None
            if pause_ms is None
            else min(
                max(1, int(np.ceil(pause_ms / 1000.0 / FRAME_S - 1e-9))),
                self._min_silence_frames - 1,
            )
        )
        self._model = _load_model(model_path or default_model_path())
        self.reset()

    def reset(self) -> None:
        """Forget all state (new session): audio, LSTM state, time and speech status."""
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames_done = 0  # frames scored since reset; frame i starts at i * 32 ms
        self._speaking = False
        self._probability = 0.0
        self._speech_run_start: int | None = None  # first frame of the current run >= threshold
        self._silence_start: int | None = None  # first frame below neg_threshold while speaking
        self._paused = False  # a "pause" fired for the current silence

    @property
    def speaking(self) -> bool:
        """Whether the user is speaking now (between a "start" and its "end")."""
        return self._speaking

    def speech_probability(self) -> float:
        """The latest frame's speech probability, 0..1 (0 before the first frame)."""
        return self._probability

    @property
    def time_s(self) -> float:
        """How much audio has been scored since the last reset, in seconds."""
        return self._frames_done * FRAME_S

    def feed(self, pcm_16k: np.ndarray) -> list[VadEvent]:
        """Consume float32 mono 16 kHz samples (any length); return the events they complete.

        Samples that do not fill a whole 32 ms frame wait for the next call.
        """
        samples = np.asarray(pcm_16k, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"VAD expects mono 1-D audio, got shape {samples.shape}")
        if len(self._pending):
            samples = np.concatenate([self._pending, samples])
        n_frames = len(samples) // FRAME_SAMPLES
        self._pending = samples[n_frames * FRAME_SAMPLES :].copy()
        if n_frames == 0:
            return []
        probabilities = self._score(samples[: n_frames * FRAME_SAMPLES].reshape(n_frames, -1))
        events: list[VadEvent] = []
        for probability in probabilities:
            event = self._step(float(probability))
            if event is not None:
                events.append(event)
        return events

    def _score(self, frames: np.ndarray) -> np.ndarray:
        """Speech probabilities of consecutive frames, carrying context and LSTM state."""
        contexts = np.empty((len(frames), CONTEXT_SAMPLES), dtype=np.float32)
        contexts[0] = self._context
        contexts[1:] = frames[:-1, -CONTEXT_SAMPLES:]
        batch = np.concatenate([contexts, frames], axis=1)
        with self._model.lock:
            probabilities, h, c = self._model.session.run(  # type: ignore[attr-defined]
                None, {"input": batch, "h": self._h, "c": self._c}
            )
        self._h, self._c = h, c
        self._context = frames[-1, -CONTEXT_SAMPLES:].copy()
        return np.asarray(probabilities, dtype=np.float32).reshape(-1)

    def _step(self, probability: float) -> VadEvent | None:
        """Advance the hysteresis by one frame; return the event it completes, if any."""
        index = self._frames_done
        self._frames_done += 1
        self._probability = probability
        if not self._speaking:
            if probability < self.threshold:
                self._speech_run_start = None
                return None
            if self._speech_run_start is None:
                self._speech_run_start = index
            if index + 1 - self._speech_run_start >= self._min_speech_frames:
                self._speaking = True
                self._silence_start = None
                start = self._speech_run_start
                self._speech_run_start = None
                return VadEvent("start", start * FRAME_S)
            return None
        # Speaking: a frame between the two thresholds neither ends the silence nor starts
        # one, as in Silero's own get_speech_timestamps; only confident speech cancels it.
        if probability >= self.threshold:
            self._silence_start = None
            if self._paused:
                self._paused = False
                return VadEvent("resume", index * FRAME_S)
        elif probability < self.neg_threshold and self._silence_start is None:
            self._silence_start = index
        if self._silence_start is None:
            return None
        silent_frames = index + 1 - self._silence_start
        if silent_frames >= self._min_silence_frames:
            self._speaking = False
            self._paused = False
            end = self._silence_start
            self._silence_start = None
            return VadEvent("end", end * FRAME_S)
        if self._pause_frames is not None and not self._paused:
            if silent_frames >= self._pause_frames:
                self._paused = True
                return VadEvent("pause", self._silence_start * FRAME_S)
        return None
