"""Which language a text is in, and turning the codes users type into the ones we speak."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..errors import UnsupportedLanguageError

_LOGGER = logging.getLogger(__name__)

AUTO = "auto"
DETECTABLE = ("en", "es", "zh")  # lingua loads only these: all languages cost ~0.9 GiB

# Codes people type (ISO 639-2/3, names, regional tags) mapped to the codes we use.
_ALIASES = {
    "cmn": "zh",
    "zho": "zh",
    "chi": "zh",
    "chinese": "zh",
    "mandarin": "zh",
    "zh-cn": "zh",
    "zh-hans": "zh",
    "zh-hant": "zh",
    "zh-tw": "zh",
    "zh-sg": "zh",
    "zh-cmn": "zh",
    "zh-yue": "yue",
    "cantonese": "yue",
    "eng": "en",
    "english": "en",
    "spa": "es",
    "spanish": "es",
    "español": "es",
    "fra": "fr",
    "fre": "fr",
    "french": "fr",
    "deu": "de",
    "ger": "de",
    "german": "de",
    "ita": "it",
    "italian": "it",
    "por": "pt",
    "portuguese": "pt",
    "jpn": "ja",
    "japanese": "ja",
    "kor": "ko",
    "korean": "ko",
    "rus": "ru",
    "russian": "ru",
    "ara": "ar",
    "arabic": "ar",
    "hin": "hi",
    "hindi": "hi",
    "nld": "nl",
    "dut": "nl",
    "dutch": "nl",
}

_detector: Any = None
_detector_lock = threading.Lock()


def _lingua_detector() -> Any:
    """The lingua detector for English, Spanish and Chinese, built on first use."""
    global _detector
    with _detector_lock:
        if _detector is None:
            from lingua import Language, LanguageDetectorBuilder

            _detector = LanguageDetectorBuilder.from_languages(
                Language.ENGLISH, Language.SPANISH, Language.CHINESE
            ).build()
        return _detector


def _han_share(text: str) -> float:
    """Share of the letters in ``text`` that are Han ideographs."""
    letters = 0
    han = 0
    for char in text:
        if char.isalpha():
            letters += 1
            code = ord(char)
            if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF:
                han += 1
    return han / letters if letters else 0.0


def detect_language(text: str) -> str:
    """``en``, ``es`` or ``zh`` for ``text``; ``en`` when there is nothing to go on."""
    if not text.strip():
        return "en"
    # Han characters settle it without a model: one ideograph counts for a whole word.
    if _han_share(text) >= 0.2:
        return "zh"
    language = _lingua_detector().detect_language_of(text)
    if language is None:
        return "en"
    code = language.iso_code_639_1.name.lower()
    return code if code in DETECTABLE else "en"


def normalize_language_code(code: str) -> str:
    """``"zh-CN"``, ``"cmn"``, ``"EN"``, ``"en_US"`` → ``"zh"``, ``"zh"``, ``"en"``, ``"en"``."""
    cleaned = code.strip().lower().replace("_", "-")
    if cleaned in _ALIASES:
        return _ALIASES[cleaned]
    primary = cleaned.split("-", 1)[0]
    return _ALIASES.get(primary, primary)


def resolve_language(lang: str | None, text: str) -> str:
    """The code to speak ``text`` in: detected for ``auto``, else ``lang`` normalised.

    Raises ``UnsupportedLanguageError`` when no installed synthesizer speaks it.
    """
    if lang is None or lang.strip().lower() in ("", AUTO):
        detected = detect_language(text)
        _LOGGER.debug("Detected language %s", detected)
        return detected
    code = normalize_language_code(lang)
    from ..tts.registry import supported_languages  # here: tts imports text, not the reverse

    supported = supported_languages()
    if code not in supported:
        raise UnsupportedLanguageError(unsupported_message(lang, supported))
    return code


def unsupported_message(lang: str, supported: list[str]) -> str:
    """The message for a language nobody speaks: what is wrong and what to pass instead."""
    examples = [c for c in ("en", "es", "zh", "fr", "de", "pt", "it", "ja") if c in supported]
    more = len(supported) - len(examples)
    listed = ", ".join(examples) + (f" and {more} more" if more > 0 else "")
    return (
        f"Language '{lang}' is not supported. Pass --lang with one of {listed} "
        "(ISO 639-1 codes), or --lang auto to detect it."
    )
