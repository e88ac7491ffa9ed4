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


# Scripts that name their language well enough to pick a voice without a model; Cyrillic
# is most often Russian (``--lang uk``/``bg``/``sr`` pick the others). Ranges are Unicode blocks.
_SCRIPTS: tuple[tuple[str, str, tuple[tuple[int, int], ...]], ...] = (
    ("Latin", "", ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x1E00, 0x1EFF))),
    ("Han", "zh", ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))),
    ("Kana", "ja", ((0x3040, 0x30FF), (0x31F0, 0x31FF))),
    ("Hangul", "ko", ((0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF))),
    ("Cyrillic", "ru", ((0x400, 0x52F),)),
    ("Greek", "el", ((0x370, 0x3FF), (0x1F00, 0x1FFF))),
    ("Armenian", "hy", ((0x530, 0x58F),)),
    ("Hebrew", "he", ((0x590, 0x5FF),)),
    ("Arabic", "ar", ((0x600, 0x6FF), (0x750, 0x77F), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))),
    ("Devanagari", "hi", ((0x900, 0x97F),)),
    ("Bengali", "bn", ((0x980, 0x9FF),)),
    ("Gurmukhi", "pa", ((0xA00, 0xA7F),)),
    ("Gujarati", "gu", ((0xA80, 0xAFF),)),
    ("Tamil", "ta", ((0xB80, 0xBFF),)),
    ("Telugu", "te", ((0xC00, 0xC7F),)),
    ("Kannada", "kn", ((0xC80, 0xCFF),)),
    ("Malayalam", "ml", ((0xD00, 0xD7F),)),
    ("Sinhala", "si", ((0xD80, 0xDFF),)),
    ("Thai", "th", ((0xE00, 0xE7F),)),
    ("Myanmar", "my", ((0x1000, 0x109F),)),
    ("Georgian", "ka", ((0x10A0, 0x10FF),)),
    ("Ethiopic", "am", ((0x1200, 0x139F),)),
)
# Latin-script languages are told apart by lingua; the others by their script alone.
LATIN_DETECTABLE = ("en", "es")
# Short Latin text is ambiguous ("Hello!", "No problem."): English, the default, wins unless
# Spanish is clearly ahead or the text has letters only Spanish uses here.
SPANISH_MIN_CONFIDENCE = 0.65
_SPANISH_MARKS = frozenset("ñÑ¿¡áéíóúÁÉÍÓÚü")


def _script_of(char: str) -> str | None:
    """The writing system of a letter, or None for one outside every block above."""
    code = ord(char)
    for name, _lang, ranges in _SCRIPTS:
        if any(low <= code <= high for low, high in ranges):
            return name
    return None


def script_counts(text: str) -> dict[str, int]:
    """Letters of ``text`` per writing system; letters of unknown scripts count as "other"."""
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            name = _script_of(char) or "other"
            counts[name] = counts.get(name, 0) + 1
    return counts


def _han_share(text: str) -> float:
    """Share of the letters in ``text`` that are Han ideographs."""
    counts = script_counts(text)
    letters = sum(counts.values())
    return counts.get("Han", 0) / letters if letters else 0.0


def _unknown_script_message(text: str) -> str:
    sample = "".join(c for c in text if c.isalpha() and _script_of(c) is None)[:12]
    return (
        f"cannot tell which language to speak {sample!r} in: --lang auto recognises Latin "
        "(English, Spanish), Chinese, Japanese, Korean, Cyrillic, Greek, Hebrew, Arabic, "
        "Indic, Thai, Georgian and Ethiopic scripts; pass --lang with the text's ISO 639-1 "
        "code (espeak-ng speaks over 100 languages)"
    )


def script_language(text: str) -> str | None:
    """The language ``text``'s writing system names (Han -> zh, Cyrillic -> ru, ...), or
    None for Latin text (or none at all), which only a model tells apart. No model loads.

    Raises ``UnsupportedLanguageError`` for a script no voice is mapped to.
    """
    counts = script_counts(text)
    letters = sum(counts.values())
    if not letters:
        return None
    # Han characters settle it: one ideograph counts for a whole word.
    if counts.get("Han", 0) / letters >= 0.2:
        return "ja" if counts.get("Kana", 0) else "zh"
    script = max(counts, key=lambda name: counts[name])
    if script == "other":
        raise UnsupportedLanguageError(_unknown_script_message(text))
    if script == "Latin":
        return None
    return next(lang for name, lang, _ in _SCRIPTS if name == script)


def detect_language(text: str) -> str:
    """The code to speak ``text`` in; ``en`` when there is nothing to go on.

    The writing system decides first (``script_language``); Latin text is English or
    Spanish by lingua, with English favoured when it is short and unclear.
    """
    by_script = script_language(text)
    if by_script is not None:
        return by_script
    if not any(char.isalpha() for char in text):
        return "en"
    values = _lingua_detector().compute_language_confidence_values(text)
    confidence = {v.language.iso_code_639_1.name.lower(): v.value for v in values}
    spanish = confidence.get("es", 0.0)
    if spanish > confidence.get("en", 0.0) and (
        spanish >= SPANISH_MIN_CONFIDENCE or any(c in _SPANISH_MARKS for c in text)
    ):
        return "es"
    return "en"


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
        if detected not in DETECTABLE:  # routed by its script to an espeak-ng voice
            from ..tts.registry import supported_languages

            if detected not in supported_languages():
                raise UnsupportedLanguageError(unsupported_message(detected, supported_languages()))
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
