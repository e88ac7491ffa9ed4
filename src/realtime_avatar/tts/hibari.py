"""English speech with hibari (a 7.9 MB int8 ONNX voice distilled from Kokoro's "heart").

Only the "heart" voice is used: it ships inside the ``hibari-tts`` wheel. hibari's other
voices are downloaded on first use, which a product that runs offline must never do.

Phoneme timings come from the model's own duration predictor. The graph rounds and clips
each phoneme's predicted length and casts it to integer frames (``Round -> Clip -> Cast``);
that tensor is made a graph output here by the same protobuf wire-format edit the Piper
synthesizer uses (``durations.with_graph_output``), so every phoneme id gets a whole number
of 25 ms units (the decoder upsamples each unit to two 12.5 ms spectral frames, hop 300 at
24 kHz), and units times 600 samples is exactly the audio length.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError, InvalidTextError, UnsupportedLanguageError
from ..frames import PhonemeTiming, Speech, WordTiming
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
    with_graph_output,
    word_timings,
)
from .durations import phoneme_timings as _group_phonemes

_LOGGER = logging.getLogger(__name__)

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


# One symbol per model id: misaki letters, read as IPA with ``to_ipa``.
_SYMBOLS = SymbolSet(
    vowels="AIOQWYaeiouæɑɒɔəɛɜɪʊʌɚᵊᵻ",
    suffix_marks=frozenset("ːˑʰʲᵝ"),  # length, aspiration, palatalisation: part of the phoneme
    to_ipa=to_ipa,
)


def phoneme_timings(
    symbols: list[str], samples: list[int], sample_rate_hz: int, pcm: np.ndarray
) -> list[PhonemeTiming]:
    """Group misaki symbols (one per model id, with their sample counts) into IPA phonemes
    with times: stress marks lead their vowel, length marks join the phoneme before, pads
    and punctuation are ``"_"`` and a word gap is ``"_"`` only where it is quiet."""
    return _group_phonemes(symbols, samples, sample_rate_hz, pcm, _SYMBOLS)


# --------------------------------------------------------------------------------------
# The model: one onnxruntime session and one G2P per process
# --------------------------------------------------------------------------------------


def _duration_tensor(view: memoryview, graph_start: int, graph_end: int) -> str:
    """Name of the integer frame counts: the ``Cast`` of the ``Clip`` of the ``Round``."""
    produced_by: dict[str, str] = {}
    consumers: dict[str, list[tuple[str, str]]] = {}  # input -> [(op, first output)]
    for op, inputs, outputs in graph_nodes(view, graph_start, graph_end):
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
    name of that output."""
    return with_graph_output(model, _duration_tensor)


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
        from hibari.g2p import G2P

        session, durations_output = duration_session(
            model_path, _duration_tensor, "hibari model", log_severity_level=3
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
        pcm = peak_normalized(pcm, _PEAK)
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
                counts = estimate_samples(symbols, len(audio), _SYMBOLS)
        else:
            counts = estimate_samples(symbols, len(audio), _SYMBOLS)
        counts = fit_to_length(counts, len(audio))
        return _shorten_lead(audio, counts), symbols, counts

    def _words(
        self, loaded: _LoadedModel, text: str, symbols: list[str], samples: list[int]
    ) -> list[WordTiming]:
        """Match the phoneme stream's words to the text's words (the G2P expands numbers:
        each text word is phonemized alone where the counts differ)."""
        return word_timings(
            text, symbols, samples, SAMPLE_RATE_HZ, lambda word: self._phonemize(loaded, word)
        )


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
