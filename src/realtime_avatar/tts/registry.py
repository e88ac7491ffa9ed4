"""Which synthesizer speaks which language: settings names mapped to factories.

A factory builds a synthesizer for an avatar: it is given the avatar's ``ReferenceVoice``
(or ``None``) and may ignore it. One that ignores it (Piper, espeak-ng) is one shared
instance per process and per model; one whose capabilities say ``reference_voice`` speaks
in that avatar's voice, so it is kept per reference voice.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Hashable

from ..errors import ConfigurationError, UnsupportedLanguageError
from ..settings import Settings, get_settings
from ..text.language import normalize_language_code, unsupported_message
from .base import ReferenceVoice, Synthesizer

_LOGGER = logging.getLogger(__name__)

SynthFactory = Callable[[Settings, ReferenceVoice | None], Synthesizer]


def _make_piper(settings: Settings, reference: ReferenceVoice | None) -> Synthesizer:
    from .piper import PiperSynthesizer

    return PiperSynthesizer(model_path=settings.piper_model)


def _make_espeak(settings: Settings, reference: ReferenceVoice | None) -> Synthesizer:
    from .espeak import EspeakSynthesizer

    return EspeakSynthesizer()


def _make_hibari(settings: Settings, reference: ReferenceVoice | None) -> Synthesizer:
    from .hibari import HibariSynthesizer

    return HibariSynthesizer()


def _make_xtts(settings: Settings, reference: ReferenceVoice | None) -> Synthesizer:
    from .xtts import XttsSynthesizer

    return XttsSynthesizer(settings.xtts_model_dir, reference, device=settings.xtts_device)


# Add a synthesizer by adding a name here; settings.tts_english / tts_other pick by name.
SYNTHESIZERS: dict[str, SynthFactory] = {
    "piper": _make_piper,
    "espeak": _make_espeak,
    "hibari": _make_hibari,
    "xtts": _make_xtts,
}

# Synthesizers that need models the user brings: used only where a setting names them,
# never as another language's fallback (unconfigured, they cannot even be built).
OPT_IN: frozenset[str] = frozenset({"xtts"})

# Which settings a synthesizer's instance depends on (beyond its name).
_SETTINGS_KEYS: dict[str, Callable[[Settings], Hashable]] = {
    "piper": lambda settings: settings.piper_model,
    "xtts": lambda settings: (settings.xtts_model_dir, settings.xtts_device),
}

_SHARED: dict[tuple[str, Hashable], Synthesizer] = {}
_PER_REFERENCE: dict[tuple[str, Hashable, ReferenceVoice | None], Synthesizer] = {}
_INSTANCES_LOCK = threading.Lock()


def _instance(name: str, settings: Settings, reference: ReferenceVoice | None) -> Synthesizer:
    """Synthesizer ``name`` for these settings: the process's one instance, or for a
    synthesizer that speaks in the reference voice, the one built for ``reference``.
    With ``AVATAR_MODEL_SERVICE_URL`` set it is a handle on the model service's."""
    factory = SYNTHESIZERS.get(name)
    settings_key: Hashable
    if settings.model_service_url and _remote_tts(settings):
        from ..modelservice.client import create_remote_synthesizer

        factory = functools.partial(create_remote_synthesizer, name)
        settings_key = ("model-service", settings.model_service_url)
    elif factory is None:
        raise ConfigurationError(
            f"Unknown synthesizer '{name}'; set AVATAR_TTS_ENGLISH / AVATAR_TTS_OTHER "
            f"to one of {', '.join(sorted(SYNTHESIZERS))}."
        )
    else:
        settings_key = _SETTINGS_KEYS.get(name, lambda _settings: None)(settings)
    with _INSTANCES_LOCK:
        synthesizer = _SHARED.get((name, settings_key))
        if synthesizer is None:
            synthesizer = _PER_REFERENCE.get((name, settings_key, reference))
        if synthesizer is None:
            synthesizer = factory(settings, reference)
            # Its own capabilities say whether it is the avatar's voice or everyone's.
            if synthesizer.capabilities.reference_voice:
                _PER_REFERENCE[(name, settings_key, reference)] = synthesizer
            else:
                _SHARED[(name, settings_key)] = synthesizer
        return synthesizer


def _remote_tts(settings: Settings) -> bool:
    from ..modelservice.client import uses_service

    return uses_service(settings, "tts")


def synthesizer_named(
    name: str, settings: Settings, reference: ReferenceVoice | None = None
) -> Synthesizer:
    """Synthesizer ``name`` (whatever languages it speaks): what the model service serves."""
    return _instance(name, settings, reference)


def _candidates(language: str, settings: Settings) -> list[str]:
    """Synthesizer names to try for ``language``, the configured one first."""
    chosen = settings.tts_english if language == "en" else settings.tts_other
    return [chosen, *(name for name in _available(settings) if name != chosen)]


def _available(settings: Settings) -> list[str]:
    """Registered names, less the opt-in ones that no setting names."""
    named = {settings.tts_english, settings.tts_other}
    return [name for name in SYNTHESIZERS if name not in OPT_IN or name in named]


def get_synthesizer(
    language: str, settings: Settings | None = None, reference: ReferenceVoice | None = None
) -> Synthesizer:
    """The synthesizer for ``language``: Piper for English, espeak-ng for the rest by default.

    ``reference`` is the avatar's voice sample, for synthesizers that speak in it. When the
    configured one does not speak the language (e.g. Piper asked for Spanish), the next
    registered synthesizer that does is used, with a warning.
    """
    settings = settings or get_settings()
    code = normalize_language_code(language)
    candidates = _candidates(code, settings)
    for name in candidates:
        synthesizer = _instance(name, settings, reference)
        if code in synthesizer.capabilities.languages:
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
    for name in _available(settings):
        try:
            codes |= _instance(name, settings, None).capabilities.languages
        except ConfigurationError as error:
            _LOGGER.warning("Synthesizer %s unavailable: %s", name, error)
    return sorted(codes)
