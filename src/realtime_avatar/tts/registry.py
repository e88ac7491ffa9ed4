"""Which synthesizer speaks which language: settings names mapped to factories."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigurationError, UnsupportedLanguageError
from ..settings import Settings, get_settings
from ..text.language import normalize_language_code, unsupported_message
from .base import Synthesizer

_LOGGER = logging.getLogger(__name__)


def _make_piper(settings: Settings) -> Synthesizer:
    from .piper import PiperSynthesizer

    return PiperSynthesizer(model_path=settings.piper_model)


def _make_espeak(settings: Settings) -> Synthesizer:
    from .espeak import EspeakSynthesizer

    return EspeakSynthesizer()


# Add a synthesizer by adding a name here; settings.tts_english / tts_other pick by name.
SYNTHESIZERS: dict[str, Callable[[Settings], Synthesizer]] = {
    "piper": _make_piper,
    "espeak": _make_espeak,
}

_INSTANCES: dict[tuple[str, Path | None], Synthesizer] = {}
_INSTANCES_LOCK = threading.Lock()


def _instance(name: str, settings: Settings) -> Synthesizer:
    """The process's one instance of synthesizer ``name`` for these settings."""
    factory = SYNTHESIZERS.get(name)
    if factory is None:
        raise ConfigurationError(
            f"Unknown synthesizer '{name}'; set AVATAR_TTS_ENGLISH / AVATAR_TTS_OTHER "
            f"to one of {', '.join(sorted(SYNTHESIZERS))}."
        )
    key = (name, settings.piper_model if name == "piper" else None)
    with _INSTANCES_LOCK:
        synthesizer = _INSTANCES.get(key)
        if synthesizer is None:
            synthesizer = factory(settings)
            _INSTANCES[key] = synthesizer
        return synthesizer


def _candidates(language: str, settings: Settings) -> list[str]:
    """Synthesizer names to try for ``language``, the configured one first."""
    chosen = settings.tts_english if language == "en" else settings.tts_other
    return [chosen, *(name for name in SYNTHESIZERS if name != chosen)]


def get_synthesizer(language: str, settings: Settings | None = None) -> Synthesizer:
    """The synthesizer for ``language``: Piper for English, espeak-ng for the rest by default.

    When the configured one does not speak the language (e.g. Piper asked for Spanish),
    the next registered synthesizer that does is used, with a warning.
    """
    settings = settings or get_settings()
    code = normalize_language_code(language)
    candidates = _candidates(code, settings)
    for name in candidates:
        synthesizer = _instance(name, settings)
        if code in synthesizer.languages():
            if name != candidates[0]:
                _LOGGER.warning(
                    "Synthesizer %s does not speak '%s'; using %s", candidates[0], code, name
                )
            return synthesizer
    raise UnsupportedLanguageError(unsupported_message(language, supported_languages(settings)))


def supported_languages(settings: Settings | None = None) -> list[str]:
    """Sorted codes of every language some registered synthesizer speaks."""
    settings = settings or get_settings()
    codes: set[str] = set()
    for name in SYNTHESIZERS:
        try:
            codes |= _instance(name, settings).languages()
        except ConfigurationError as error:
            _LOGGER.warning("Synthesizer %s unavailable: %s", name, error)
    return sorted(codes)
