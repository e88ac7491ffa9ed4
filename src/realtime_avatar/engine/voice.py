"""An avatar's speech stage: text to speech in the avatar's voice, the same for every driver.

Per language, ``AvatarVoice`` holds the synthesizer built for the avatar (it may take the
avatar's reference voice) and the voice matcher that synthesizer's capabilities call for:
none when it already speaks in the avatar's voice, else the configured DSP matcher from
the synthesizer's measured voice to the avatar's. The live conversation, ``avatar say``,
the evaluation and the benchmarks all speak through ``AvatarVoice.speak``, so a measured
figure is the product's figure.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..frames import PhonemeTiming, Speech, WordTiming
from ..settings import Settings
from ..text.chunker import SentenceChunker
from ..text.language import normalize_language_code
from ..tts.base import ReferenceVoice, Synthesizer
from ..tts.registry import get_synthesizer

if TYPE_CHECKING:  # avatars (OpenCV) and the matchers (pyworld) load only when used
    from ..avatars.registry import Avatar
    from ..voice.base import VoiceMatcher
    from ..voice.profile import VoiceProfile

log = logging.getLogger(__name__)

SILENCE_PHONEME = "_"
LEAD_IN_KEEP_S = 0.02  # the first piece of a reply keeps this much of its lead-in silence
CLAUSE_PAUSE_KEEP_S = 0.15  # Piper ends "Sure," with ~0.3 s of silence; the next piece adds 0.05
FIRST_CLAUSE_CHARS = 4  # "Sure," and "Hello there," are worth saying on their own
FIRST_PHRASE_CHARS = 24  # a longer first clause is cut before "and", "with", "from"...


def reply_chunker() -> SentenceChunker:
    """The chunker a streaming reply goes through: a short first piece, longer ones after."""
    return SentenceChunker(
        min_clause_chars=FIRST_CLAUSE_CHARS, first_phrase_chars=FIRST_PHRASE_CHARS
    )


def as_spoken(piece: str, more: bool) -> str:
    """The text to synthesize for ``piece``; ``more``: the reply goes on after it.

    A piece cut inside a sentence is read as a clause that goes on, not as the end of a
    statement: a comma gives it that intonation.
    """
    return f"{piece}," if more and piece[-1:].isalnum() else piece


def trim_leading_silence(speech: Speech, keep_s: float) -> Speech:
    """Drop the synthesizer's lead-in silence beyond ``keep_s``, shifting every timing."""
    if not speech.phonemes or speech.phonemes[0].phoneme != SILENCE_PHONEME:
        return speech
    cut_s = speech.phonemes[0].end_s - keep_s
    if cut_s <= 0:
        return speech
    cut = int(cut_s * speech.sample_rate_hz)
    cut_s = cut / speech.sample_rate_hz
    phonemes = [
        PhonemeTiming(p.phoneme, max(p.start_s - cut_s, 0.0), max(p.end_s - cut_s, 0.0))
        for p in speech.phonemes
    ]
    words = [
        WordTiming(w.word, max(w.start_s - cut_s, 0.0), max(w.end_s - cut_s, 0.0))
        for w in speech.words
    ]
    return replace(speech, pcm=speech.pcm[cut:], phonemes=phonemes, words=words)


def trim_trailing_silence(speech: Speech, keep_s: float) -> Speech:
    """Drop the synthesizer's closing silence beyond ``keep_s`` (timings are unchanged)."""
    if not speech.phonemes or speech.phonemes[-1].phoneme != SILENCE_PHONEME:
        return speech
    end_s = speech.phonemes[-1].start_s + keep_s
    if end_s >= speech.duration_s:
        return speech
    end = int(end_s * speech.sample_rate_hz)
    phonemes = [*speech.phonemes[:-1]]
    last = speech.phonemes[-1]
    phonemes.append(PhonemeTiming(last.phoneme, last.start_s, end / speech.sample_rate_hz))
    return replace(speech, pcm=speech.pcm[:end], phonemes=phonemes)


class AvatarVoice:
    """An avatar's speech stage: per language, the synthesizer built for this avatar, the
    voice matcher its capabilities call for, and the trims a streaming reply needs."""

    def __init__(
        self, settings: Settings, voice_profile: VoiceProfile, reference: ReferenceVoice | None
    ) -> None:
        """Describe the voice; synthesizers and matchers are built on first use, once."""
        self.settings = settings
        self.voice_profile = voice_profile
        self.reference = reference
        self._matchers: dict[str, VoiceMatcher] = {}
        self._building: dict[str, threading.Lock] = {}  # one per language being built
        self._lock = threading.Lock()

    @classmethod
    def for_avatar(cls, avatar: Avatar, settings: Settings) -> AvatarVoice:
        """The speech stage of a loaded avatar: its voice profile and the voice sample it keeps."""
        reference = ReferenceVoice(sample_path=avatar.voice_path, name=avatar.name)
        return cls(settings, avatar.voice_profile, reference)

    def synthesizer(self, language: str) -> Synthesizer:
        """The synthesizer that speaks ``language`` for this avatar (shared where it can be)."""
        return get_synthesizer(language, self.settings, self.reference)

    def matcher(self, language: str) -> VoiceMatcher:
        """The voice matcher for ``language``, built once (the first call may measure the
        synthesizer's voice, a few seconds; concurrent callers wait for it)."""
        code = normalize_language_code(language)
        with self._lock:
            matcher = self._matchers.get(code)
            if matcher is not None:
                return matcher
            building = self._building.setdefault(code, threading.Lock())
        with building:
            with self._lock:
                matcher = self._matchers.get(code)
            if matcher is None:
                matcher = self._build_matcher(code)
                with self._lock:
                    self._matchers[code] = matcher
                    self._building.pop(code, None)
            return matcher

    def _build_matcher(self, language: str) -> VoiceMatcher:
        """Identity for a synthesizer that speaks in the avatar's voice or when configured;
        else the configured matcher from the synthesizer's own voice to the avatar's."""
        from ..voice.match import IdentityMatcher, source_profile_for
        from ..voice.registry import create_matcher

        synth = self.synthesizer(language)
        if synth.capabilities.reference_voice or self.settings.voice_matcher == "identity":
            return IdentityMatcher()  # nothing to measure

        def speak(text: str) -> tuple[np.ndarray, int]:
            speech = synth.synthesize(text, language)
            return speech.pcm, speech.sample_rate_hz

        source = source_profile_for(
            synth.voice_id,
            language,
            speak,
            cache_dir=Path(self.settings.data_dir).expanduser() / "cache",
        )
        return create_matcher(self.settings.voice_matcher, self.voice_profile, source)

    def speak(
        self,
        text: str,
        language: str,
        turn_id: int = 0,
        *,
        first: bool = False,
        more: bool = False,
    ) -> Speech:
        """``text`` in the avatar's voice. ``first``: the first piece of a reply, whose
        lead-in silence is trimmed; ``more``: the reply goes on, so a clause's closing
        pause is shortened."""
        synth = self.synthesizer(language)
        speech = synth.synthesize(text, language, turn_id=turn_id)
        if first:
            # The answer's first words are the latency the user feels: no lead-in silence.
            speech = trim_leading_silence(speech, LEAD_IN_KEEP_S)
        if more:
            # The pause after a clause, not after a whole statement: the reply goes on.
            speech = trim_trailing_silence(speech, CLAUSE_PAUSE_KEEP_S)
        return self.matcher(language).convert(speech)

    def warm_up(self, language: str = "en") -> None:
        """Load the synthesizer for ``language`` (and run it once) and build its matcher."""
        synth = self.synthesizer(language)
        warm = getattr(synth, "warm_up", None)
        if callable(warm):
            warm()
        self.matcher(language)
