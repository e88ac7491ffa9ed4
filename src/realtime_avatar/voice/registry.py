"""Voice matchers by settings name (``Settings.voice_matcher``)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigurationError
from .base import VoiceMatcher
from .match import IdentityMatcher, WorldVoiceMatcher
from .profile import VoiceProfile

MatcherFactory = Callable[[VoiceProfile, VoiceProfile], VoiceMatcher]

MATCHERS: dict[str, MatcherFactory] = {
    "world": lambda target, source: WorldVoiceMatcher(target, source),
    "identity": lambda target, source: IdentityMatcher(target, source),
}


def available_matchers() -> list[str]:
    """Names accepted by ``create_matcher``."""
    return sorted(MATCHERS)


def create_matcher(name: str, target: VoiceProfile, source: VoiceProfile) -> VoiceMatcher:
    """The matcher called ``name``, converting from the ``source`` (TTS) voice to ``target``."""
    factory = MATCHERS.get(name)
    if factory is None:
        raise ConfigurationError(
            f"unknown voice matcher {name!r}; set AVATAR_VOICE_MATCHER to one of "
            + ", ".join(available_matchers())
        )
    return factory(target, source)
