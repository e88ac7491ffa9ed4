"""Voice fitting at registration (voice/fit.py): the recipe, the search, its guards, the cache.

Fast tests drive the search with stand-in voices (harmonic buzz at a known pitch, through
the real WORLD matcher) and stand-in judges; the slow ones fit real voices from the
shipped real-voice set with Piper, hibari, resemblyzer and Whisper.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from realtime_avatar.voice import fit
from realtime_avatar.voice.fit import (
    BaseVoice,
    CandidateScore,
    FitTools,
    VoiceRecipe,
    fit_voice,
    rejection,
    split_at_pause,
    tracker_median_f0,
)
from realtime_avatar.voice.profile import compute_profile

RATE_HZ = 22_050
VOICES_DIR = Path(__file__).resolve().parents[1] / "src/realtime_avatar/assets/voices"


def buzz(f0_hz: float, seconds: float, formant_hz: float = 700.0, seed: int = 0) -> np.ndarray:
    """A voiced, vowel-like signal: harmonics of a gliding pitch under one formant bump,
    in 0.6 s syllables with short gaps, so trackers and CheapTrick see speech-like input."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    f0 = f0_hz * (1.0 + 0.06 * np.sin(2 * np.pi * 1.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE_HZ
    out = np.zeros_like(t)
    for k in range(1, int(5000 / f0_hz)):
        gain = np.exp(-(((k * f0_hz) - formant_hz) ** 2) / (2 * 400.0**2)) + 0.05
        out += gain * np.sin(k * phase) / k**0.5
    gate = (np.mod(t, 0.7) < 0.6).astype(np.float64)
    out = out * gate + 0.002 * rng.standard_normal(len(t))
    return (0.3 * out / np.max(np.abs(out))).astype(np.float32)


class PitchMeasure:
    """Stand-in speaker measure: closeness of median pitch to the reference's (in octaves)."""

    name = "pitch-stand-in"

    def reference(self, pcm: np.ndarray, rate_hz: int) -> float:
        return tracker_median_f0(pcm, rate_hz)

    def similarity(self, reference: float, pcm: np.ndarray, rate_hz: int) -> float:
        median = tracker_median_f0(pcm, rate_hz)
        return 1.0 - abs(float(np.log2(median / reference)))


@functools.cache
def stand_in_voice(name: str, f0: float) -> BaseVoice:
    """A stand-in base voice at pitch ``f0``: its 'speech' and its measured profile."""
    profile = compute_profile(buzz(f0, 2.5, seed=2), RATE_HZ)
    return BaseVoice(name, buzz(f0, 2.5, seed=1), RATE_HZ, profile, f"stand-in-{name}")


def stand_in_bases(pitches: dict[str, float]) -> dict[str, BaseVoice]:
    return {name: stand_in_voice(name, f0) for name, f0 in pitches.items()}


def tools_for(
    bases: dict[str, BaseVoice], word_error=None, clock=None, measure=None
) -> FitTools:  # type: ignore[no-untyped-def]
    def base_voice(name: str, texts: Sequence[str]) -> BaseVoice:
        return bases[name]

    kwargs = {"clock": clock} if clock is not None else {}
    return FitTools(base_voice, measure or PitchMeasure(), word_error, **kwargs)


@pytest.fixture(scope="module")
def person() -> np.ndarray:
    """A 'person' at 210 Hz: higher than both stand-in base voices."""
    return buzz(210.0, 5.0, formant_hz=800.0, seed=3)


def test_recipe_round_trip_and_words() -> None:
    recipe = VoiceRecipe(base="hibari", f0_strength=1.0, eq_strength=0.5)
    assert VoiceRecipe.from_dict(json.loads(json.dumps(recipe.__dict__))) == recipe
    assert recipe.describe() == "hibari + pitch 1 + EQ 0.5"
    assert recipe.converts and not VoiceRecipe().converts
    assert recipe.with_strength("warp_strength", 0.5).warp_strength == 0.5
    opts = recipe.match_options()
    assert (opts.f0_strength, opts.warp_strength, opts.eq_strength) == (1.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="within 0..1"):
        VoiceRecipe.from_dict({"base": "piper", "f0_strength": 3})
    with pytest.raises(ValueError, match="unknown conversion"):
        recipe.with_strength("speed", 1.0)


def test_split_at_pause_cuts_in_the_gap() -> None:
    loud = np.ones(int(2.5 * RATE_HZ), np.float32)
    pcm = np.concatenate([loud, np.zeros(int(0.3 * RATE_HZ), np.float32), loud])
    first, second = split_at_pause(pcm, RATE_HZ)
    assert len(first) + len(second) == len(pcm)
    assert 2.5 * RATE_HZ <= len(first) <= 2.8 * RATE_HZ  # inside the silence
    with pytest.raises(ValueError, match="at least 4 s"):
        split_at_pause(loud, RATE_HZ)


def _score(similarity: float, f0: float) -> CandidateScore:
    return CandidateScore(VoiceRecipe(), similarity, f0)


def test_rejection_needs_a_gain_and_pitch_toward_the_person() -> None:
    raw = _score(0.50, 120.0)
    assert rejection(_score(0.60, 200.0), raw, raw, 210.0) == ""
    assert "similarity" in rejection(_score(0.502, 200.0), raw, raw, 210.0)
    # Higher similarity bought by moving pitch away from the person: the encoder gamed.
    reason = rejection(_score(0.70, 90.0), raw, raw, 210.0)
    assert "moves away" in reason


def test_fit_keeps_the_pitch_mapping_and_drops_what_does_not_help(person: np.ndarray) -> None:
    bases = stand_in_bases({"piper": 110.0, "hibari": 150.0})
    result = fit_voice(person, RATE_HZ, "fast", tools_for(bases), bases=("piper", "hibari"))
    assert result.raw.recipe == VoiceRecipe(base=result.recipe.base)
    assert result.recipe.f0_strength == 1.0  # the pitch mapping is what this measure rewards
    assert result.fitted.similarity > result.raw.similarity + fit.MIN_GAIN
    # Pitch moved toward the person's.
    assert abs(np.log(result.fitted.median_f0_hz / result.target_median_f0_hz)) < abs(
        np.log(result.raw.median_f0_hz / result.target_median_f0_hz)
    )
    reasons = [c.reason for c in result.tried if not c.accepted]
    assert reasons and all(r.startswith("similarity") for r in reasons)
    assert result.fitted.envelope_db is not None and result.raw.envelope_db is not None
    stored = result.to_dict()
    assert stored["recipe"]["f0_strength"] == 1.0 and stored["measure"] == "pitch-stand-in"
    assert "intelligibility guard was off" in stored["note"]


def test_another_base_voice_at_the_wrong_pitch_is_not_chosen(person: np.ndarray) -> None:
    """A measure fooled into preferring hibari as it is (far above the person's pitch)
    does not get its way: the start must be no further in pitch than Piper's raw."""
    bases = stand_in_bases({"piper": 180.0, "hibari": 300.0})

    class FooledMeasure(PitchMeasure):
        def similarity(self, reference: float, pcm: np.ndarray, rate_hz: int) -> float:
            return 0.9 if np.array_equal(pcm, bases["hibari"].speech) else 0.5

    result = fit_voice(
        person, RATE_HZ, "fast", tools_for(bases, measure=FooledMeasure()),
        bases=("piper", "hibari"),
    )
    assert result.recipe.base == "piper"
    hibari_raw = next(c for c in result.tried if c.recipe == VoiceRecipe(base="hibari"))
    assert not hibari_raw.accepted and "further from" in hibari_raw.reason


def test_fit_refuses_a_conversion_that_hurts_intelligibility(person: np.ndarray) -> None:
    bases = stand_in_bases({"piper": 110.0})

    def word_error(pcm: np.ndarray, rate_hz: int, text: str) -> float:
        return 0.0 if np.array_equal(pcm, bases["piper"].speech) else 0.4

    result = fit_voice(
        person, RATE_HZ, "fast", tools_for(bases, word_error=word_error), bases=("piper",)
    )
    assert result.recipe == VoiceRecipe(base="piper")
    assert any(c.reason.startswith("WER 0.40") for c in result.tried)


def test_fit_stops_at_its_time_budget(person: np.ndarray) -> None:
    bases = stand_in_bases({"piper": 110.0, "hibari": 150.0})
    now = [0.0]

    def clock() -> float:
        now[0] += 8.0  # every look at the clock costs 8 s: the 15 s budget runs out
        return now[0]

    result = fit_voice(
        person, RATE_HZ, "fast", tools_for(bases, clock=clock), bases=("piper", "hibari")
    )
    assert result.stopped_early and "15 s budget" in result.note
    assert result.candidates < 2 * 2 + len(fit.KNOBS)
    with pytest.raises(ValueError, match="fast, full, off"):
        fit_voice(person, RATE_HZ, "slow", tools_for(bases))


def test_dsp_measure_ranks_the_same_pitch_and_timbre_first() -> None:
    """The fall-back measure (no resemblyzer in the runtime install) prefers the voice
    at the person's pitch and formant over one an octave down with another formant."""
    measure = fit.DspMeasure()
    reference = measure.reference(buzz(210.0, 2.5, formant_hz=800.0, seed=4), RATE_HZ)
    same = measure.similarity(reference, buzz(210.0, 2.5, formant_hz=800.0, seed=5), RATE_HZ)
    other = measure.similarity(reference, buzz(105.0, 2.5, formant_hz=500.0, seed=5), RATE_HZ)
    assert same > other
    assert same > 0.8 > other


def test_a_sample_without_voiced_halves_cannot_be_fitted(person: np.ndarray) -> None:
    """Both ways round unprofilable: the error reaches the caller, which keeps the
    default voice (engine/voice.py fit_sample stores 'not fitted' and why)."""
    from realtime_avatar.errors import InvalidAudioError

    bases = stand_in_bases({"piper": 110.0})
    hiss = (0.01 * np.random.default_rng(7).standard_normal(5 * RATE_HZ)).astype(np.float32)
    with pytest.raises(InvalidAudioError):
        fit_voice(hiss, RATE_HZ, "full", tools_for(bases), bases=("piper",))


def test_cache_round_trip(tmp_path: Path) -> None:
    pcm = np.zeros(100, np.float32)
    key = fit.cache_key(pcm, "fast", "resemblyzer", ["a", "b"])
    assert key != fit.cache_key(pcm, "full", "resemblyzer", ["a", "b"])
    assert key != fit.cache_key(pcm, "fast", "dsp", ["a", "b"])
    assert fit.load_cached(tmp_path, key) is None
    fit.save_cached(tmp_path, key, {"version": fit.FIT_VERSION, "recipe": {"base": "piper"}})
    assert fit.load_cached(tmp_path, key) == {"version": fit.FIT_VERSION, "recipe": {"base": "piper"}}
    (tmp_path / f"voicefit-{key}.json").write_text('{"version": 0}')
    assert fit.load_cached(tmp_path, key) is None  # another version: fitted again


def test_stored_recipe_drives_the_speech_stage() -> None:
    from realtime_avatar.engine.voice import AvatarVoice, recipe_of
    from realtime_avatar.settings import Settings

    manifest = {"voice_fit": {"recipe": {"base": "hibari", "f0_strength": 1.0}}}
    recipe = recipe_of(manifest)
    assert recipe == VoiceRecipe(base="hibari", f0_strength=1.0)
    assert recipe_of({}) is None
    assert recipe_of({"voice_fit": {"recipe": {"base": "nope"}}}) is None
    assert recipe_of({"voice_fit": {"recipe": {"base": "piper", "eq_strength": -1}}}) is None
    settings = Settings(tts_english="piper")
    voice = AvatarVoice(settings, None, None, recipe)  # type: ignore[arg-type]
    assert voice._english_settings.tts_english == "hibari"
    assert voice.settings.tts_english == "piper"  # other languages keep the settings


def test_a_sample_too_short_to_split_keeps_the_default_voice(tmp_path: Path) -> None:
    from realtime_avatar.engine.voice import fit_sample, recipe_of
    from realtime_avatar.settings import Settings

    stored = fit_sample(buzz(200.0, 3.5), RATE_HZ, Settings(data_dir=tmp_path), "fast")
    assert stored is not None and stored["recipe"] is None
    assert "3.5 s" in stored["note"] and "4 s" in stored["note"]
    assert recipe_of({"voice_fit": stored}) is None
    assert fit_sample(buzz(200.0, 3.5), RATE_HZ, Settings(data_dir=tmp_path), "off") is None


def test_register_refuses_an_unknown_fit_mode(tmp_path: Path) -> None:
    from realtime_avatar.avatars.registry import register
    from realtime_avatar.errors import ConfigurationError
    from realtime_avatar.settings import Settings

    with pytest.raises(ConfigurationError, match="unknown voice fit 'medium'"):
        register(
            "me", tmp_path / "x.jpg", tmp_path / "v.wav", settings=Settings(data_dir=tmp_path),
            voice_fit="medium",
        )


def test_listing_summary_reads_the_manifest(tmp_path: Path) -> None:
    from realtime_avatar.avatars.registry import voice_fit_summary, voice_fits
    from realtime_avatar.settings import Settings

    manifest = {
        "voice_fit": {
            "mode": "fast", "measure": "resemblyzer", "recipe": {"base": "piper"},
            "describe": "piper + pitch 1", "target_median_f0_hz": 213.0, "seconds": 9.0,
            "raw": {"similarity": 0.47, "median_f0_hz": 150.0, "envelope_db": 14.0, "wer": 0.0},
            "fitted": {"similarity": 0.52, "median_f0_hz": 210.0, "envelope_db": 13.0, "wer": 0.0},
        }
    }
    summary = voice_fit_summary(manifest)
    assert summary is not None
    assert (summary["similarity_raw"], summary["similarity_fitted"]) == (0.47, 0.52)
    assert summary["median_f0_hz"] == {"target": 213.0, "raw": 150.0, "fitted": 210.0}
    assert voice_fit_summary({}) is None
    folder = tmp_path / "avatars" / "me"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    fits = voice_fits(["me", "gone"], Settings(data_dir=tmp_path))
    assert fits["me"]["describe"] == "piper + pitch 1" and fits["gone"] is None


def _real_voice(name: str) -> np.ndarray:
    from realtime_avatar.media.audio import decode_audio

    pcm = decode_audio(VOICES_DIR / f"{name}.flac", RATE_HZ, max_s=30.0)
    return (pcm * 0.9 / np.max(np.abs(pcm))).astype(np.float32)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("voice", ["lj-female-us", "librivox-male-us"])
def test_fit_on_a_real_voice_does_not_lose_to_the_raw_voice(
    voice: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held-out similarity of the fitted voice is at least the raw base voice's, and its
    pitch is no further from the person's; the time budget is lifted so the figure does
    not depend on how loaded this machine is (speed is reported by the bench, not here)."""
    pytest.importorskip("resemblyzer")
    from realtime_avatar.engine.voice import fit_sample
    from realtime_avatar.settings import Settings

    monkeypatch.setitem(fit.TIME_BUDGET_S, "fast", 900.0)
    settings = Settings(data_dir=tmp_path)
    result = fit_sample(_real_voice(voice), RATE_HZ, settings, "fast")
    assert result is not None and result["measure"] == "resemblyzer"
    raw, fitted = result["raw"], result["fitted"]
    assert fitted["similarity"] >= raw["similarity"]
    target = result["target_median_f0_hz"]
    assert abs(np.log(fitted["median_f0_hz"] / target)) <= abs(
        np.log(raw["median_f0_hz"] / target)
    ) + fit.PITCH_SLACK
    expected = 2 * len(fit.BASE_VOICES) + len(fit.KNOBS) * (len(fit.LEVELS["fast"]) - 1)
    assert not result["stopped_early"] and result["candidates"] == expected
    if fitted["wer"] is not None and raw["wer"] is not None:
        assert fitted["wer"] <= raw["wer"] + fit.MAX_WER_RISE
    # The second registration of the same sample is served from the cache.
    again = fit_sample(_real_voice(voice), RATE_HZ, settings, "fast")
    assert again is not None and again["cached"] and again["recipe"] == result["recipe"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_registered_avatar_speaks_with_its_fitted_recipe(
    fresh_data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """register --voice-fit fast stores the recipe; the avatar's speech stage uses it."""
    pytest.importorskip("resemblyzer")
    import soundfile as sf

    from realtime_avatar.avatars.registry import default_portrait, load_avatar, register
    from realtime_avatar.engine.voice import AvatarVoice
    from realtime_avatar.settings import get_settings

    monkeypatch.setitem(fit.TIME_BUDGET_S, "fast", 900.0)
    sample = tmp_path / "me.wav"
    sf.write(sample, _real_voice("lj-female-us"), RATE_HZ)
    steps: list[tuple[int, int, str]] = []
    avatar = register(
        "lj", default_portrait(), sample, voice_fit="fast",
        fit_progress=lambda d, t, w: steps.append((d, t, w)),
    )
    stored = avatar.manifest["voice_fit"]
    assert stored["mode"] == "fast" and steps and steps[-1][2] == "done"
    recipe = VoiceRecipe.from_dict(stored["recipe"])
    voice = AvatarVoice.for_avatar(load_avatar("lj"), get_settings())
    assert voice.recipe == recipe
    assert voice.synthesizer("en").name == recipe.base
    speech = voice.speak("Hello there, how are you today?", "en")
    assert speech.duration_s > 0.5 and np.max(np.abs(speech.pcm)) > 0.05
