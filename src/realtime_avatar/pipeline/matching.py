"""Choosing the voice matcher for a synthesizer voice and an avatar."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..avatars.registry import Avatar
from ..settings import Settings
from ..tts.base import Synthesizer
from ..voice.base import VoiceMatcher
from ..voice.match import IdentityMatcher, source_profile_for
from ..voice.registry import create_matcher

_lock = threading.Lock()


def build_matcher(
    settings: Settings, avatar: Avatar, synth: Synthesizer, language: str
) -> VoiceMatcher:
    """The configured voice matcher from this synthesizer's voice to the avatar's."""
    if settings.voice_matcher == "identity":
        return IdentityMatcher()  # no need to measure the TTS voice

    def speak(text: str) -> tuple[np.ndarray, int]:
        speech = synth.synthesize(text, language)
        return speech.pcm, speech.sample_rate_hz

    with _lock:  # the TTS voice's profile is measured once; concurrent callers wait for it
        source = source_profile_for(
            synth.name, language, speak, cache_dir=Path(settings.data_dir).expanduser() / "cache"
        )
    return create_matcher(settings.voice_matcher, avatar.voice_profile, source)
