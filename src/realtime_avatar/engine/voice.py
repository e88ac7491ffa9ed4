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
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigurationError, InvalidAudioError
from ..frames import PhonemeTiming, Speech, WordTiming
from ..settings import Settings
from ..text.chunker import SentenceChunker
from ..text.language import normalize_language_code
from ..tts.base import ReferenceVoice, Synthesizer
from ..tts.registry import OPT_IN, SYNTHESIZERS, get_synthesizer

if TYPE_CHECKING:  # avatars (OpenCV) and the matchers (pyworld) load only when used
    from ..avatars.registry import Avatar
    from ..voice.base import VoiceMatcher
    from ..voice.fit import BaseVoice, Progress, VoiceRecipe
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
        self,
        settings: Settings,
        voice_profile: VoiceProfile,
        reference: ReferenceVoice | None,
        recipe: VoiceRecipe | None = None,
    ) -> None:
        """Describe the voice; synthesizers and matchers are built on first use, once.

        ``recipe`` is the avatar's fitted English voice (``voice.fit``): its base voice
        replaces ``AVATAR_TTS_ENGLISH`` and its strengths the matcher's defaults, unless
        that setting names a cloning model the user brought (``xtts``), which it keeps.
        """
        if recipe is not None and settings.tts_english in OPT_IN:
            recipe = None  # the fit chose among DSP base voices; a cloning model needs none
        self.settings = settings
        self.voice_profile = voice_profile
        self.reference = reference
        self.recipe = recipe
        self._english_settings = (
            settings.model_copy(update={"tts_english": recipe.base}) if recipe else settings
        )
        self._matchers: dict[str, VoiceMatcher] = {}
        self._building: dict[str, threading.Lock] = {}  # one per language being built
        self._lock = threading.Lock()

    @classmethod
    def for_avatar(cls, avatar: Avatar, settings: Settings) -> AvatarVoice:
        """The speech stage of a loaded avatar: its voice profile and the voice sample it keeps."""
        reference = ReferenceVoice(sample_path=avatar.voice_path, name=avatar.name)
        return cls(settings, avatar.voice_profile, reference, recipe_of(avatar.manifest))

    def synthesizer(self, language: str) -> Synthesizer:
        """The synthesizer that speaks ``language`` for this avatar (shared where it can be)."""
        code = normalize_language_code(language)
        settings = self._english_settings if code == "en" else self.settings
        return get_synthesizer(language, settings, self.reference)

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
        recipe = self.recipe if language == "en" and self.recipe else None
        if recipe is not None and not recipe.converts:
            return IdentityMatcher()  # the fit found the base voice best as it is

        def speak(text: str) -> tuple[np.ndarray, int]:
            speech = synth.synthesize(text, language)
            return speech.pcm, speech.sample_rate_hz

        source = source_profile_for(
            synth.voice_id,
            language,
            speak,
            cache_dir=Path(self.settings.data_dir).expanduser() / "cache",
        )
        if recipe is not None and self.settings.voice_matcher == "world":
            from ..voice.match import WorldVoiceMatcher

            return WorldVoiceMatcher(self.voice_profile, source, recipe.match_options())
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


def recipe_of(manifest: dict[str, Any]) -> VoiceRecipe | None:
    """The fitted voice recipe stored with an avatar, or ``None`` (not fitted, or unreadable)."""
    from ..voice.fit import VoiceRecipe

    fit = manifest.get("voice_fit")
    if not isinstance(fit, dict) or not isinstance(fit.get("recipe"), dict):
        return None
    try:
        recipe = VoiceRecipe.from_dict(fit["recipe"])
    except (TypeError, ValueError) as exc:
        log.warning("ignoring the stored voice recipe (%s); using the default voice", exc)
        return None
    if recipe.base not in SYNTHESIZERS:
        log.warning("stored voice recipe names unknown voice %r; using the default", recipe.base)
        return None
    return recipe


PAUSE_S = 0.25  # between held-out sentences spoken for the fit


def _base_voice(settings: Settings, name: str, texts: Sequence[str]) -> BaseVoice:
    """The held-out texts spoken by base voice ``name``, and that voice's measured profile."""
    from ..voice.fit import BaseVoice
    from ..voice.match import source_profile_for

    synth = get_synthesizer("en", settings.model_copy(update={"tts_english": name}))

    def speak(text: str) -> tuple[np.ndarray, int]:
        speech = synth.synthesize(text, "en")
        return speech.pcm, speech.sample_rate_hz

    rate = synth.sample_rate_hz
    pieces: list[np.ndarray] = []
    for text in texts:
        pcm, rate = speak(text)
        pieces += [np.asarray(pcm, np.float32), np.zeros(int(PAUSE_S * rate), np.float32)]
    profile = source_profile_for(
        synth.voice_id, "en", speak, cache_dir=Path(settings.data_dir).expanduser() / "cache"
    )
    return BaseVoice(name, np.concatenate(pieces), rate, profile, synth.voice_id)


def _word_error_judge(settings: Settings) -> Callable[[np.ndarray, int, str], float] | None:
    """ASR round trip with the bundled Whisper tiny.en, or ``None`` when it is missing."""
    try:
        from faster_whisper import WhisperModel

        from ..asr.whisper import default_model_dir

        model_dir = default_model_dir()
    except (ImportError, ConfigurationError) as exc:
        log.warning("voice fit: no speech recognizer (%s); intelligibility not checked", exc)
        return None
    from ..evaluate.intelligibility import error_rate
    from ..media.audio import resample

    loaded: list[Any] = []  # loaded on the first candidate that needs the guard

    def word_error(pcm: np.ndarray, rate_hz: int, text: str) -> float:
        if not loaded:
            loaded.append(
                WhisperModel(
                    str(model_dir),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=2,
                    local_files_only=True,
                )
            )
        model = loaded[0]
        audio = resample(np.asarray(pcm, np.float32), rate_hz, 16_000)
        segments, _info = model.transcribe(
            audio,
            language="en",
            beam_size=5,  # beam 1 misheard converted speech by chance: 0.16 vs 0.02
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        heard = " ".join(s.text.strip() for s in segments)
        return error_rate(text, heard, "en").rate

    return word_error


def fit_sample(
    pcm: np.ndarray,
    rate_hz: int,
    settings: Settings,
    mode: str,
    progress: Progress | None = None,
) -> dict[str, Any] | None:
    """Fit the English voice recipe to a person's sample (``voice.fit``); ``None`` for off.

    The result is cached under ``<data_dir>/cache`` by the sample's content, the mode, the
    measure and the base voices' content keys, so registering the same voice again is
    instant. Without resemblyzer (the runtime install has no torch) the DSP measure
    guides the fit and the result says so.
    """
    from ..voice import fit

    if mode == "off":
        return None
    if mode not in fit.FIT_MODES:
        raise ValueError(f"voice fit mode must be one of {', '.join(fit.FIT_MODES)}; got {mode!r}")
    seconds = len(pcm) / rate_hz
    if seconds < 2 * fit.MIN_PART_S:
        return _not_fitted(
            mode, f"the sample is {seconds:.1f} s; fitting needs {2 * fit.MIN_PART_S:.0f} s or more"
        )
    report = progress or (lambda _done, _total, _what: None)
    report(0, 1, "loading the voices")
    voice_ids = [
        get_synthesizer("en", settings.model_copy(update={"tts_english": name})).voice_id
        for name in fit.BASE_VOICES
    ]
    measure, why = fit.default_measure()
    cache_dir = Path(settings.data_dir).expanduser() / "cache"
    key = fit.cache_key(pcm, mode, measure.name, voice_ids)
    cached = fit.load_cached(cache_dir, key)
    if cached is not None:
        report(1, 1, "fitted earlier (cached)")
        return {**cached, "cached": True}
    tools = fit.FitTools(
        base_voice=lambda name, texts: _base_voice(settings, name, texts),
        measure=measure,
        word_error=_word_error_judge(settings),
    )
    try:
        result = fit.fit_voice(pcm, rate_hz, mode, tools, report).to_dict()
    except InvalidAudioError as exc:  # a half of the sample holds too little voiced speech
        return _not_fitted(mode, f"not fitted: {exc}")
    if why:
        result["note"] = "; ".join(x for x in (why, result["note"]) if x)
    fit.save_cached(cache_dir, key, result)
    return {**result, "cached": False}


def _not_fitted(mode: str, why: str) -> dict[str, Any]:
    """What is stored when a sample cannot be fitted: no recipe (the default voice), why."""
    from ..voice.fit import FIT_VERSION

    log.warning("voice fit skipped: %s", why)
    return {
        "version": FIT_VERSION,
        "mode": mode,
        "measure": None,
        "recipe": None,
        "describe": "default voice (not fitted)",
        "note": why,
        "cached": False,
    }
