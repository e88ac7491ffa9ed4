"""The speech seam: synthesizers built for an avatar, the matcher chosen from their
capabilities, and TTS voice profiles keyed by the voice's content, not its name."""

from __future__ import annotations

import json
import shutil
import threading
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import lfilter

from realtime_avatar.engine.voice import (
    CLAUSE_PAUSE_KEEP_S,
    LEAD_IN_KEEP_S,
    AvatarVoice,
    as_spoken,
    reply_chunker,
)
from realtime_avatar.frames import PhonemeTiming, Speech, WordTiming
from realtime_avatar.settings import Settings
from realtime_avatar.tts import registry
from realtime_avatar.tts.base import ReferenceVoice, SynthCapabilities, Synthesizer
from realtime_avatar.voice import match as match_module
from realtime_avatar.voice.match import IdentityMatcher, WorldVoiceMatcher
from realtime_avatar.voice.profile import VoiceProfile, compute_profile

RATE = 22_050
SILENCE_S = 0.3  # each end of a stand-in's speech, about what Piper leaves after "Sure,"
CALIBRATION_EN = len(match_module.CALIBRATION_SENTENCES["en"])


def voice_pcm(f0_hz: float, seconds: float = 1.4, seed: int = 0) -> np.ndarray:
    """A buzzy vowel 'voice' at ``f0_hz`` with some intonation, between short silences."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    contour = f0_hz * np.exp(0.08 * np.sin(2 * np.pi * (1.3 + 0.2 * seed) * t + seed))
    pulses = np.diff(np.floor(np.cumsum(contour / RATE)), prepend=0.0)
    source = lfilter([1.0], [1.0, -0.96], lfilter([1.0], [1.0, -0.9], pulses))
    r, theta = np.exp(-np.pi * 90 / RATE), 2 * np.pi * 700 / RATE
    vowel = lfilter([1 - r], [1.0, -2 * r * np.cos(theta), r * r], source)
    pad = int(SILENCE_S * RATE)
    vowel[:pad] = 0.0  # lead-in and closing silence, as a synthesizer leaves them
    vowel[-pad:] = 0.0
    return (0.3 * vowel / np.max(np.abs(vowel))).astype(np.float32)


class StandInSynth:
    """A synthesizer with no model: a vowel at a fixed pitch, silence at both ends."""

    sample_rate_hz = RATE

    def __init__(
        self,
        name: str = "standin",
        voice_id: str = "standin:a",
        f0_hz: float = 110.0,
        reference_voice: bool = False,
        reference: ReferenceVoice | None = None,
    ) -> None:
        self.name = name
        self.voice_id = voice_id
        self.f0_hz = f0_hz
        self.reference = reference
        self.capabilities = SynthCapabilities(frozenset({"en"}), True, reference_voice)
        self.calls = 0
        self._lock = threading.Lock()

    def languages(self) -> frozenset[str]:
        return self.capabilities.languages

    def synthesize(self, text: str, language: str, turn_id: int = 0) -> Speech:
        with self._lock:
            self.calls += 1
        pcm = voice_pcm(self.f0_hz, seed=len(text) % 5)
        end_s = len(pcm) / RATE
        return Speech(
            turn_id,
            text,
            language,
            pcm,
            RATE,
            [
                PhonemeTiming("_", 0.0, SILENCE_S),
                PhonemeTiming("a", SILENCE_S, end_s - SILENCE_S),
                PhonemeTiming("_", end_s - SILENCE_S, end_s),
            ],
            [WordTiming(text, SILENCE_S, end_s - SILENCE_S)],
        )


@pytest.fixture(scope="module")
def target() -> VoiceProfile:
    """The avatar's voice: higher than every stand-in."""
    return compute_profile(np.concatenate([voice_pcm(210.0, 1.6, seed) for seed in range(3)]), RATE)


@pytest.fixture
def fresh_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """No synthesizer instance and no TTS voice profile from other tests."""
    monkeypatch.setattr(registry, "_SHARED", {})
    monkeypatch.setattr(registry, "_PER_REFERENCE", {})
    monkeypatch.setattr(match_module, "_source_profiles", {})


def test_stand_in_satisfies_protocol() -> None:
    assert isinstance(StandInSynth(), Synthesizer)


def test_matcher_follows_capabilities(
    tmp_path: Path, target: VoiceProfile, fresh_caches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[StandInSynth] = []

    def factory(reference_voice: bool):  # type: ignore[no-untyped-def]
        def make(settings: Settings, reference: ReferenceVoice | None) -> StandInSynth:
            synth = StandInSynth(reference_voice=reference_voice, reference=reference)
            built.append(synth)
            return synth

        return make

    monkeypatch.setitem(registry.SYNTHESIZERS, "standin", factory(False))
    monkeypatch.setitem(registry.SYNTHESIZERS, "standin-clone", factory(True))
    ava = ReferenceVoice(tmp_path / "ava.wav", "ava")
    bob = ReferenceVoice(tmp_path / "bob.wav", "bob")

    plain = Settings(tts_english="standin", data_dir=tmp_path)
    voice = AvatarVoice(plain, target, ava)
    matcher = voice.matcher("en")
    assert isinstance(matcher, WorldVoiceMatcher)
    assert matcher.target is target
    assert voice.matcher("EN") is matcher  # built once per language
    # A synthesizer in everyone's voice ignores the reference: one instance for all avatars.
    assert AvatarVoice(plain, target, bob).synthesizer("en") is voice.synthesizer("en")

    cloning = Settings(tts_english="standin-clone", data_dir=tmp_path)
    clone_voice = AvatarVoice(cloning, target, ava)
    clone = clone_voice.synthesizer("en")
    assert isinstance(clone, StandInSynth) and clone.reference == ava
    assert isinstance(clone_voice.matcher("en"), IdentityMatcher)
    assert clone.calls == 0  # nothing measured: it already speaks in the avatar's voice
    # One per reference voice, the same one again for the same reference.
    assert AvatarVoice(cloning, target, ava).synthesizer("en") is clone
    other = AvatarVoice(cloning, target, bob).synthesizer("en")
    assert isinstance(other, StandInSynth) and other is not clone and other.reference == bob

    # The configured identity matcher needs no measurement either.
    configured = Settings(tts_english="standin", voice_matcher="identity", data_dir=tmp_path)
    identity = AvatarVoice(configured, target, ava)
    assert isinstance(identity.matcher("en"), IdentityMatcher)


def test_profile_cache_is_keyed_by_voice_id(
    tmp_path: Path, target: VoiceProfile, fresh_caches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path)
    low = StandInSynth(name="piper", voice_id="piper:low", f0_hz=100.0)
    high = StandInSynth(name="piper", voice_id="piper:high", f0_hz=160.0)  # same name
    low_again = StandInSynth(name="other", voice_id="piper:low", f0_hz=100.0)  # same voice

    def avatar_voice(synth: StandInSynth) -> AvatarVoice:
        voice = AvatarVoice(settings, target, None)
        monkeypatch.setattr(voice, "synthesizer", lambda language: synth)
        return voice

    first = avatar_voice(low).matcher("en")
    second = avatar_voice(high).matcher("en")
    assert isinstance(first, WorldVoiceMatcher) and isinstance(second, WorldVoiceMatcher)
    assert (low.calls, high.calls) == (CALIBRATION_EN, CALIBRATION_EN)  # each measured
    assert second.source is not first.source
    assert second.source.median_f0_hz > first.source.median_f0_hz * 1.3

    third = avatar_voice(low_again).matcher("en")
    assert isinstance(third, WorldVoiceMatcher)
    assert third.source is first.source and low_again.calls == 0  # same voice: reused
    assert len(list((tmp_path / "cache").glob("source-piper_*-en-*.npz"))) == 2


def test_speak_trims_and_matches(
    tmp_path: Path, target: VoiceProfile, fresh_caches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    synth = StandInSynth(voice_id="standin:speak")
    voice = AvatarVoice(Settings(data_dir=tmp_path), target, None)
    monkeypatch.setattr(voice, "synthesizer", lambda language: synth)
    plain = voice.speak("Hello there.", "en", turn_id=4)
    first = voice.speak("Hello there,", "en", turn_id=4, first=True, more=True)
    assert plain.turn_id == first.turn_id == 4
    assert plain.phonemes[0].end_s == pytest.approx(SILENCE_S)
    assert first.phonemes[0].end_s == pytest.approx(LEAD_IN_KEEP_S, abs=1e-3)
    assert first.phonemes[-1].end_s - first.phonemes[-1].start_s == pytest.approx(
        CLAUSE_PAUSE_KEEP_S, abs=1e-3
    )
    assert first.duration_s == pytest.approx(first.phonemes[-1].end_s, abs=1e-3)
    # The matched voice is higher than the stand-in's 110 Hz.
    matched = compute_profile(np.concatenate([plain.pcm] * 3), RATE)
    assert matched.median_f0_hz > 150.0


def test_reply_chunker_and_as_spoken() -> None:
    chunker = reply_chunker()
    pieces = chunker.push("Sure, I can help with that. More")
    assert pieces[0] == "Sure,"
    assert as_spoken("I can help with that", more=True) == "I can help with that,"
    assert as_spoken("Sure,", more=True) == "Sure,"
    assert as_spoken("Done", more=False) == "Done"


@pytest.mark.slow  # loads Piper and measures two voices: ~15 s
def test_a_second_piper_voice_gets_its_own_profile(tmp_path: Path, fresh_caches: None) -> None:
    from realtime_avatar.tts.piper import default_model_path

    joe = default_model_path()
    copy = tmp_path / "voices" / "en_US-joe2-medium.onnx"
    copy.parent.mkdir()
    shutil.copyfile(joe, copy)
    config = json.loads(Path(f"{joe}.json").read_text(encoding="utf-8"))
    config.setdefault("inference", {})["noise_scale"] = 0.5  # another voice, same name
    Path(f"{copy}.json").write_text(json.dumps(config), encoding="utf-8")

    wav = resources.files("realtime_avatar").joinpath("assets/default/voice.wav")
    with resources.as_file(wav) as path:
        pcm, rate = sf.read(path, dtype="float32")
    target = compute_profile(pcm, rate)

    data_dir = tmp_path / "data"
    first = AvatarVoice(Settings(data_dir=data_dir), target, None)
    second = AvatarVoice(Settings(piper_model=copy, data_dir=data_dir), target, None)
    joe_synth, copy_synth = first.synthesizer("en"), second.synthesizer("en")
    assert joe_synth.name == copy_synth.name == "piper"
    assert joe_synth is not copy_synth
    assert copy_synth.voice_id != joe_synth.voice_id

    joe_matcher, copy_matcher = first.matcher("en"), second.matcher("en")
    assert isinstance(joe_matcher, WorldVoiceMatcher)
    assert isinstance(copy_matcher, WorldVoiceMatcher)
    assert copy_matcher.source is not joe_matcher.source  # measured anew, not reused
    assert len(list((data_dir / "cache").glob("source-piper_*-en-*.npz"))) == 2
