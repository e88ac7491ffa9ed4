"""Which voice activity detector a session uses: settings names mapped to factories.

Settings read (defaults declared in ``settings.py``): ``vad`` (name), ``vad_threshold``,
``vad_neg_threshold``, ``vad_min_speech_ms``, ``vad_min_silence_ms``, ``vad_pause_ms``.
Detectors hold per-session state, so every call makes a new instance; the model underneath
is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError
from ..settings import Settings, get_settings
from .base import VoiceActivity

DEFAULT_VAD: str = Settings.model_fields["vad"].default

# SileroVad's options, each read from the setting ``vad_<option>`` (pause_ms: None is off).
_OPTIONS = ("threshold", "neg_threshold", "min_speech_ms", "min_silence_ms", "pause_ms")


def _make_silero(settings: Settings, **overrides: Any) -> VoiceActivity:
    from .silero import SileroVad

    options: dict[str, Any] = {option: getattr(settings, f"vad_{option}") for option in _OPTIONS}
    options.update(overrides)
    return SileroVad(**options)


# Add a detector by adding a name here; settings.vad picks by name.
DETECTORS: dict[str, Callable[..., VoiceActivity]] = {
    "silero": _make_silero,
}


def get_vad(
    name: str | None = None, settings: Settings | None = None, **overrides: Any
) -> VoiceActivity:
    """A new detector for one session: ``name`` (default: ``settings.vad``, else Silero).

    ``overrides`` replace settings for this instance, e.g. ``min_silence_ms=250``.
    """
    settings = settings or get_settings()
    chosen = name or getattr(settings, "vad", None) or DEFAULT_VAD
    factory = DETECTORS.get(chosen)
    if factory is None:
        raise ConfigurationError(
            f"Unknown voice activity detector '{chosen}'; set AVATAR_VAD to one of "
            f"{', '.join(sorted(DETECTORS))}."
        )
    return factory(settings, **overrides)
