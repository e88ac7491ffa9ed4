"""Language of a reply's text, by lingua over a wider set of languages than the product's.

The product's own detector (``text.language``) chooses only among English, Spanish and
Mandarin and settles Han text by a character count, so it cannot say "this reply is in
Portuguese". The judge asks lingua to choose among ``JUDGED_LANGUAGES``; it is the same
library, a different question.
"""

from __future__ import annotations

import threading
from importlib import metadata
from typing import Any

JUDGED_LANGUAGES = (
    "ENGLISH",
    "SPANISH",
    "CHINESE",
    "PORTUGUESE",
    "FRENCH",
    "ITALIAN",
    "GERMAN",
    "JAPANESE",
    "KOREAN",
    "CATALAN",
)


class TextLanguageJudge:
    """Lingua detector over ``JUDGED_LANGUAGES``, built on first use."""

    def __init__(self) -> None:
        self._detector: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._detector is None:
                from lingua import Language, LanguageDetectorBuilder

                languages = [getattr(Language, name) for name in JUDGED_LANGUAGES]
                self._detector = LanguageDetectorBuilder.from_languages(*languages).build()
            return self._detector

    def detect(self, text: str) -> str | None:
        """ISO 639-1 code of ``text``'s language, or ``None`` when lingua cannot tell."""
        if not text.strip():
            return None
        language = self._build().detect_language_of(text)
        if language is None:
            return None
        return str(language.iso_code_639_1.name.lower())


def instrument_version() -> dict[str, str]:
    """Package version, for the report."""
    return {
        "package": f"lingua-language-detector {metadata.version('lingua-language-detector')}",
        "model": "lingua n-gram models over " + ", ".join(n.title() for n in JUDGED_LANGUAGES),
        "model_sha256": "",
    }
