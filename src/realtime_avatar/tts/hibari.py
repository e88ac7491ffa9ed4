"""English speech with hibari (a 7.9 MB int8 ONNX voice distilled from Kokoro's "heart").

Only the "heart" voice is used: it ships inside the ``hibari-tts`` wheel. hibari's other
voices are downloaded on first use, which a product that runs offline must never do.

Phoneme timings come from the model's own duration predictor. The graph rounds and clips
each phoneme's predicted length and casts it to integer frames (``Round -> Clip -> Cast``);
that tensor is made a graph output here by the same protobuf wire-format edit the Piper
synthesizer uses, so every phoneme id gets a whole number of 25 ms units (the decoder
upsamples each unit to two 12.5 ms spectral frames, hop 300 at 24 kHz), and units times
600 samples is exactly the audio length.

hibari's G2P writes misaki's alphabet: one letter per phoneme, diphthongs as capitals
(``A`` = eɪ, ``O`` = oʊ…), affricates as ligatures (``ʤ``). ``to_ipa`` maps those to the
espeak-ng IPA the animator's viseme table reads; stress marks lead the vowel as in
espeak. Silence (the model's pads, punctuation, quiet word gaps) is ``"_"``.
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
from .piper import _fields, _fit_to_length, _length_delimited, _text_words, _varint

_LOGGER = logging.getLogger(__name__)

PAUSE = "_"  # the phoneme that stands for silence in every synthesizer
VOICE = "heart"  # the one voice in the wheel; the others download, so they are refused
SAMPLE_RATE_HZ = 24_000
DURATION_UNIT_SAMPLES = 600  # one duration unit: two 12.5 ms frames, 25 ms at 24 kHz
_MAX_PHONEMES = 400  # hibari's limit per model call; longer sentences split at clauses
_CLAUSE = re.compile(r"(?<=[,;:—])\s+")
_PEAK = 0.9  # normalise to this peak, as Piper does: headroom for the resampler after
_SEED = 0  # the noise branch is seeded so the same text gives the same samples
# The model opens every call with ~0.35 s of silence (Piper: ~0.05 s). Each clause of a
# reply is one call, so that would put a long gap before every clause: keep this much.
_LEAD_KEEP_S = 0.05
_AUDIBLE_RATIO = 0.01  # quieter than this fraction of the peak is silence (-40 dB)

# A word gap is usually co-articulation, not silence (the same rule as Piper's).
_MIN_PAUSE_S = 0.03
_QUIET_RMS_RATIO = 0.15
_STRESS = frozenset("ˈˌ")
_SUFFIX_MARKS = frozenset("ːˑʰʲᵝ")  # length, aspiration, palatalisation: part of the phoneme

# misaki letters that are not already espeak-ng IPA. Everything else (ə, ɹ, æ, ŋ…) is.
_MISAKI_TO_IPA: dict[str, str] = {
    "A": "eɪ",
    "I": "aɪ",
    "O": "oʊ",
    "Q": "əʊ",  # British "go"
    "W": "aʊ",
    "Y": "ɔɪ",
    "ʤ": "dʒ",
    "ʧ": "tʃ",
    "ʣ": "dz",
    "ʦ": "ts",
    "ʥ": "dʑ",
    "ʨ": "tɕ",
    "T": "ɾ",  # the American flap in "better"
    "ᵊ": "ə",  # a reduced schwa ("button")
    "ꭧ": "ɹ",  # an r-coloured ending
}


def to_ipa(symbol: str) -> str:
    """One misaki phoneme letter as espeak-ng IPA (``A`` -> ``eɪ``); others unchanged."""
    return _MISAKI_TO_IPA.get(symbol, symbol)


def _is_separator(symbol: str) -> bool:
    """Pads, word gaps and punctuation: anything that is not part of a spoken word."""
    return symbol in ("^", "$", " ") or unicodedata.category(symbol[:1] or " ")[0] in "PZS"


def phoneme_timings(
    symbols: list[str], samples: list[int], sample_rate_hz: int, pcm: np.ndarray
) -> list[PhonemeTiming]:
    """Group misaki symbols (one per model id, with their sample counts) into IPA phonemes
    with times: stress marks lead their vowel, length marks join the phoneme before, pads
    and punctuation are ``"_"`` and a word gap is ``"_"`` only where it is quiet."""
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
        if (
            last is not None
            and last[0] != PAUSE
            and not prefix
            and (symbol in _SUFFIX_MARKS or unicodedata.combining(symbol))
        ):
            last[0] += symbol
            last[2] = position
            continue
        merged.append([prefix + to_ipa(symbol), start, position])
        prefix = ""
    if prefix:  # a stress mark with nothing after it: its time goes to what came before
        if merged:
            merged[-1][2] = position
        else:
            merged.append([PAUSE, prefix_start, position])
    return [
        PhonemeTiming(phoneme, start / sample_rate_hz, end / sample_rate_hz)
        for phoneme, start, end in merged
    ]


def word_spans(symbols: list[str], samples: list[int]) -> list[tuple[int, int]]:
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


# --------------------------------------------------------------------------------------
# The model: one onnxruntime session and one G2P per process
# --------------------------------------------------------------------------------------


def _duration_tensor(view: memoryview, graph_start: int, graph_end: int) -> str:
    """Name of the integer frame counts: the ``Cast`` of the ``Clip`` of the ``Round``."""
    produced_by: dict[str, str] = {}
    consumers: dict[str, list[tuple[str, str]]] = {}  # input -> [(op, first output)]
    for number, wire, start, end, _ in _fields(view, graph_start, graph_end):
        if number != 1 or wire != 2:
            continue
        node = _fields(view, start, end)
        op = b"".join(bytes(view[s:e]) for n, w, s, e, _ in node if n == 4 and w == 2).decode()
        inputs = [bytes(view[s:e]).decode() for n, w, s, e, _ in node if n == 1 and w == 2]
        outputs = [bytes(view[s:e]).decode() for n, w, s, e, _ in node if n == 2 and w == 2]
        for name in outputs:
            produced_by[name] = op
        for name in inputs:
            consumers.setdefault(name, []).append((op, outputs[0] if outputs else ""))
    found = []
    for name, op in produced_by.items():
        if op != "Round":
            continue
        for clip_op, clipped in consumers.get(name, []):
            if clip_op != "Clip":
                continue
            found += [out for cast_op, out in consumers.get(clipped, []) if cast_op == "Cast"]
    if len(found) != 1:
        raise ValueError(f"expected one Round-Clip-Cast duration tensor, found {len(found)}")
    return found[0]


def expose_durations(model: bytes) -> tuple[bytes, str]:
    """The ONNX model with its per-phoneme frame counts as one more graph output, and the
    name of that output (ModelProto.graph is field 7, GraphProto.output 12)."""
    view = memoryview(model)
    graphs = [f for f in _fields(view, 0, len(model)) if f[0] == 7 and f[1] == 2]
    if len(graphs) != 1:
        raise ValueError("no graph in the model")
    _, _, graph_start, graph_end, graph_tag = graphs[0]
    name = _duration_tensor(view, graph_start, graph_end)
    extra = _length_delimited(12, _length_delimited(1, name.encode()))
    graph_length = graph_end - graph_start + len(extra)
    patched = b"".join(
        [
            view[:graph_tag],
            _varint(7 << 3 | 2) + _varint(graph_length),
            view[graph_start:graph_end],
            extra,
            view[graph_end:],
        ]
    )
    return patched, name


@dataclass
class _LoadedModel:
    session: object  # onnxruntime.InferenceSession
    g2p: object  # hibari.g2p.G2P
    vocab: dict[str, int]
    durations_output: str | None  # None: this model gives no durations; they are estimated
    lock: threading.Lock


_MODELS: dict[Path, _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def _load(model_path: Path, vocab_path: Path) -> _LoadedModel:
    with _MODELS_LOCK:
        cached = _MODELS.get(model_path)
        if cached is not None:
            return cached
        import onnxruntime
        from hibari.g2p import G2P

        model = model_path.read_bytes()
        durations_output: str | None
        try:
            model, durations_output = expose_durations(model)
        except (ValueError, IndexError) as error:
            _LOGGER.warning("hibari model %s gives no phoneme durations: %s", model_path, error)
            durations_output = None
        # One thread, no spinning: the machine's cores are shared by every stage.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        with open(vocab_path, encoding="utf-8") as handle:
            vocab = {str(k): int(v) for k, v in json.load(handle).items()}
        loaded = _LoadedModel(
            session=session,
            g2p=G2P(british=False),
            vocab=vocab,
            durations_output=durations_output,
            lock=threading.Lock(),
        )
        _MODELS[model_path] = loaded
        _LOGGER.info("Loaded hibari voice %s", model_path.name)
        return loaded


def _assets_dir() -> Path:
    """The ``hibari/assets`` folder of the installed wheel."""
    try:
        import hibari
    except ImportError as error:
        raise ConfigurationError(
            "The hibari synthesizer needs the hibari-tts package; install it with "
            "`pip install -c constraints.txt hibari-tts`, or set AVATAR_TTS_ENGLISH=piper."
        ) from error
    return Path(hibari.__file__).resolve().parent / "assets"


def _split_long(phonemes: str) -> list[str]:
    """One sentence's phonemes in pieces of at most ``_MAX_PHONEMES``, cut at clauses."""
    if len(phonemes) <= _MAX_PHONEMES:
        return [phonemes]
    pieces: list[str] = []
    current = ""
    for part in _CLAUSE.split(phonemes):
        if current and len(current) + len(part) + 1 > _MAX_PHONEMES:
            pieces.append(current)
            current = part
        else:
            current = f"{current} {part}" if current else part
    if current:
        pieces.append(current)
    return pieces


# --------------------------------------------------------------------------------------
# The synthesizer
# --------------------------------------------------------------------------------------


class HibariSynthesizer:
    """English speech with hibari's "heart" voice; phoneme timings from its durations."""

    name = "hibari"
    sample_rate_hz = SAMPLE_RATE_HZ

    def __init__(self, speed: float = 1.0) -> None:
        """Describe the voice; the ONNX model and G2P load on first use (or ``warm_up``)."""
        from hibari.tts import SAMPLE_RATE
        from hibari.voices import VOICES

        assets = _assets_dir()
        entry = VOICES.get(VOICE, {})
        self.model_path = assets / str(entry.get("file", "hibari.onnx"))
        self.vocab_path = assets / "vocab.json"
        if not entry.get("bundled") or not self.model_path.is_file():
            raise ConfigurationError(
                f"hibari's '{VOICE}' voice is not in the installed package ({self.model_path}); "
                "reinstall hibari-tts==0.2.1, or set AVATAR_TTS_ENGLISH=piper."
            )
        if int(SAMPLE_RATE) != SAMPLE_RATE_HZ:
            raise ConfigurationError(
                f"hibari-tts speaks at {SAMPLE_RATE} Hz, not {SAMPLE_RATE_HZ}; "
                "install the pinned hibari-tts==0.2.1."
            )
        self.speed = speed
        self.capabilities = SynthCapabilities(
            languages=frozenset({"en"}), timings=True, reference_voice=False
        )

    @property
    def voice_id(self) -> str:
        """``hibari:`` and the SHA-256 of the model and its phoneme vocabulary."""
        voice_id = f"hibari:{content_digest([self.model_path, self.vocab_path])}"
        if self.speed != 1.0:
            voice_id += f":x{self.speed:g}"  # faster speech reads differently
        return voice_id

    def languages(self) -> frozenset[str]:
        """``en``: the heart voice speaks American English only."""
        return self.capabilities.languages

    def warm_up(self) -> None:
        """Load the model, the G2P and its out-of-vocabulary net, and run them once."""
        self.synthesize("Hello, Zorbington.", "en")

    def phonemize(self, text: str) -> list[str]:
        """misaki phoneme strings for ``text``, one per model call."""
        loaded = _load(self.model_path, self.vocab_path)
        with loaded.lock:
            return self._phonemize(loaded, text)

    @staticmethod
    def _phonemize(loaded: _LoadedModel, text: str) -> list[str]:
        from hibari.tts import Hibari

        pieces: list[str] = []
        for sentence in Hibari.split_sentences(text):
            phonemes = loaded.g2p(sentence)  # type: ignore[operator]
            if phonemes:
                pieces += _split_long(phonemes)
        return pieces

    def synthesize(self, text: str, language: str, turn_id: int = 0) -> Speech:
        """Speak ``text``; returns mono float32 PCM at 24 kHz with phoneme and word timings."""
        if normalize_language_code(language) != "en":
            raise UnsupportedLanguageError(
                f"hibari speaks only English, not '{language}'; "
                "use the espeak synthesizer for other languages."
            )
        spoken = normalize_for_speech(text)
        if not spoken:
            raise InvalidTextError("Nothing to say: the text is empty.")
        loaded = _load(self.model_path, self.vocab_path)
        rng = np.random.default_rng(_SEED)
        pieces: list[np.ndarray] = []
        symbols: list[str] = []
        samples: list[int] = []
        with loaded.lock:
            for phonemes in self._phonemize(loaded, spoken):
                audio, piece_symbols, piece_samples = self._run(loaded, phonemes, rng)
                pieces.append(audio)
                symbols += piece_symbols
                samples += piece_samples
            words = self._words(loaded, spoken, symbols, samples)
        if not pieces:  # only punctuation: a short silence, so callers still get a Speech
            pieces = [np.zeros(int(0.1 * SAMPLE_RATE_HZ), dtype=np.float32)]
            symbols, samples = ["^"], [len(pieces[0])]
        pcm = np.concatenate(pieces).astype(np.float32)
        peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
        if peak > 1e-6:
            pcm = (pcm * (_PEAK / peak)).astype(np.float32)
        return Speech(
            turn_id=turn_id,
            text=spoken,
            language="en",
            pcm=pcm,
            sample_rate_hz=SAMPLE_RATE_HZ,
            phonemes=phoneme_timings(symbols, samples, SAMPLE_RATE_HZ, pcm),
            words=words,
        )

    def _run(
        self, loaded: _LoadedModel, phonemes: str, rng: np.random.Generator
    ) -> tuple[np.ndarray, list[str], list[int]]:
        """One model call: audio, the symbol of every id (pads ``^``/``$``), its samples."""
        from hibari import dsp

        kept = [c for c in phonemes if c in loaded.vocab]
        symbols = ["^", *kept, "$"]
        ids = np.asarray([[0, *(loaded.vocab[c] for c in kept), 0]], dtype=np.int64)
        outputs = loaded.session.run(  # type: ignore[attr-defined]
            None, {"ids": ids, "speed": np.asarray([self.speed], dtype=np.float32)}
        )
        lh, theta, ln, lr, phi, f0 = (out[0] for out in outputs[:6])
        audio = np.asarray(dsp.synth(lh, theta, ln, lr, phi, f0, rng), dtype=np.float32)
        if loaded.durations_output is not None and len(outputs) > 6:
            frames = np.asarray(outputs[6]).reshape(-1).astype(np.int64)
            counts = [int(n) * DURATION_UNIT_SAMPLES for n in frames]
            if len(counts) != len(symbols) or sum(counts) != len(audio):
                _LOGGER.warning(
                    "hibari durations (%d ids, %d samples) do not match its audio (%d ids, "
                    "%d samples); timings are estimated",
                    len(counts),
                    sum(counts),
                    len(symbols),
                    len(audio),
                )
                counts = _estimate_samples(symbols, len(audio))
        else:
            counts = _estimate_samples(symbols, len(audio))
        counts = _fit_to_length(counts, len(audio))
        return _shorten_lead(audio, counts), symbols, counts

    def _words(
        self, loaded: _LoadedModel, text: str, symbols: list[str], samples: list[int]
    ) -> list[WordTiming]:
        """Match the phoneme stream's words to the text's words."""
        spans = word_spans(symbols, samples)
        words = _text_words(text)
        rate = SAMPLE_RATE_HZ
        if not spans or not words:
            return []
        if len(spans) == len(words):
            return [
                WordTiming(w, s / rate, e / rate) for w, (s, e) in zip(words, spans, strict=True)
            ]
        # The G2P expands numbers ("3.5" is three words): phonemize each text word alone to
        # learn how many spoken words it became.
        counts = []
        for word in words:
            flat = [c for piece in self._phonemize(loaded, word) for c in [*piece, " "]]
            counts.append(max(1, len(word_spans(flat, [1] * len(flat)))))
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


def _shorten_lead(audio: np.ndarray, counts: list[int]) -> np.ndarray:
    """Cut the opening pad (``counts[0]``; ``counts`` change in place) to ``_LEAD_KEEP_S``.

    The first phoneme's sound can start before its predicted start (a fricative, a voiced
    onset), inside the pad: the pad then ends where the sound starts, so that what the
    speech stage trims as silence is silent."""
    if len(counts) < 2 or not audio.size:
        return audio
    peak = float(np.max(np.abs(audio)))
    audible = np.flatnonzero(np.abs(audio) > _AUDIBLE_RATIO * peak)
    onset = int(audible[0]) if audible.size else len(audio)
    if onset < counts[0]:
        counts[1] += counts[0] - onset
        counts[0] = onset
    cut = max(0, counts[0] - int(_LEAD_KEEP_S * SAMPLE_RATE_HZ))
    counts[0] -= cut
    return audio[cut:]


def _estimate_samples(symbols: list[str], total: int) -> list[int]:
    """Without model durations: vowels twice as long as consonants, pauses in between."""
    weights = []
    for symbol in symbols:
        if _is_separator(symbol):
            weights.append(1.5)
        elif symbol in _STRESS or symbol in _SUFFIX_MARKS or unicodedata.combining(symbol):
            weights.append(0.3)
        elif symbol in "AIOQWYaeiouæɑɒɔəɛɜɪʊʌɚᵊᵻ":
            weights.append(2.0)
        else:
            weights.append(1.0)
    return _fit_to_length([int(w * 1000) for w in weights], total)
