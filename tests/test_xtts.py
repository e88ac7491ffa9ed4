"""The xtts synthesizer on an XTTS-v2 model folder with random weights, in the published layout.

The folder is written the way coqui/XTTS-v2 is downloaded: ``config.json`` (the published
model_args, with a reduced GPT: 2 layers of 256 instead of 30 of 1024, and a short audio
limit, since random weights never choose to stop), ``model.pth`` (``{"config": XttsConfig,
"model": state_dict}`` with the config pickled where the published file has it and the
HiFi-GAN's weight norm as ``weight_g``/``weight_v``, as torch wrote it in 2023),
``vocab.json`` (a BPE tokenizer with XTTS's control and language tokens) and
``speakers_xtts.pth`` (name to latents and speaker embedding). All of it is made with
coqui-tts's own classes (``tts/xtts_random.py``, which the benchmark uses too) and loaded through the synthesizer's real loading path; the
HiFi-GAN decoder and speaker encoder are full size (their size is not configurable).
What it says is noise; loading, conditioning, caching, streaming, languages and the
error paths are real.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime_avatar.errors import ConfigurationError, UnsupportedLanguageError
from realtime_avatar.settings import Settings
from realtime_avatar.tts import registry
from realtime_avatar.tts.base import ReferenceVoice
from realtime_avatar.tts.xtts_random import REDUCED_MAX_AUDIO_TOKENS

HAVE_COQUI = importlib.util.find_spec("TTS") is not None
needs_coqui = pytest.mark.skipif(
    not HAVE_COQUI, reason="coqui-tts is not installed (the xtts extra: pip install -e '.[xtts]')"
)

CHUNK_TOKENS = 10  # streamed pieces of 10 tokens: several pieces per sentence


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from realtime_avatar.tts.xtts_random import write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("xtts") / "XTTS-v2")


def _voice_sample(folder: Path, seconds: float = 4.0, seed: int = 1) -> Path:
    """A voice-like buzz with syllables, as an avatar's voice.wav."""
    rate = 22_050
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.5 * t) + seed
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    pcm = 0.3 * envelope * np.sin(2 * np.pi * np.cumsum(pitch) / rate)
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "voice.wav", pcm.astype(np.float32), rate)
    return folder / "voice.wav"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _settings(model_dir: Path, tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        tts_english="xtts",
        tts_other="xtts",
        xtts_model_dir=model_dir,
        **extra,  # type: ignore[arg-type]
    )


# --- the registry: opt-in, never a fallback ----------------------------------------------------


def test_xtts_is_never_a_fallback_unless_named() -> None:
    assert "xtts" in registry.SYNTHESIZERS
    default = Settings()
    assert "xtts" not in registry._candidates("fr", default)
    assert "xtts" not in registry._candidates("en", default)
    named = Settings(tts_other="xtts")
    assert registry._candidates("es", named)[0] == "xtts"
    assert "xtts" in registry._candidates("en", named)


# --- loading, streaming, caching -------------------------------------------------------------


@pytest.mark.slow
@needs_coqui
def test_streams_in_the_avatars_voice_from_the_published_layout(
    model_dir: Path, tmp_path: Path
) -> None:
    from realtime_avatar.tts.xtts import LATENTS_PREFIX, SAMPLE_RATE_HZ, XttsSynthesizer

    before = {name: _sha(model_dir / name) for name in ("model.pth", "config.json")}
    sample = _voice_sample(tmp_path / "avatars" / "ava")
    reference = ReferenceVoice(sample, "ava")
    synth = registry.get_synthesizer("en", _settings(model_dir, tmp_path), reference)
    assert isinstance(synth, XttsSynthesizer)
    assert synth.capabilities.reference_voice and not synth.capabilities.timings
    assert synth.capabilities.languages == {"en", "es", "zh"}
    synth.stream_chunk_tokens = CHUNK_TOKENS

    pieces = list(synth.synthesize_stream("Hello there, this is a test.", "en", turn_id=7))
    assert len(pieces) >= 2, "a sentence of 24+ tokens streams in pieces of 10"
    assert pieces[0].text == "Hello there, this is a test." and all(p.text == "" for p in pieces[1:])
    for piece in pieces:
        assert piece.turn_id == 7 and piece.language == "en"
        assert piece.sample_rate_hz == SAMPLE_RATE_HZ and piece.pcm.dtype == np.float32
        assert piece.pcm.ndim == 1 and len(piece.pcm) > 0
        assert np.isfinite(piece.pcm).all() and np.abs(piece.pcm).max() <= 1.0
        assert piece.phonemes == [] and piece.words == []
    total_s = sum(len(p.pcm) for p in pieces) / SAMPLE_RATE_HZ
    # Each generated token is 1024 samples at 22.05 kHz; the limit bounds the sentence.
    assert 0.2 < total_s <= REDUCED_MAX_AUDIO_TOKENS * 1024 / 22_050 + 0.1

    # The latents were computed once and saved in the avatar's folder, for this model.
    cached = list(sample.parent.glob(f"{LATENTS_PREFIX}*.pt"))
    assert len(cached) == 1
    import torch

    saved = torch.load(cached[0], weights_only=True)
    assert tuple(saved["gpt_cond_latent"].shape) == (1, 32, 256)
    assert tuple(saved["speaker_embedding"].shape) == (1, 512, 1)
    assert torch.equal(saved["gpt_cond_latent"], synth.latents().gpt_cond_latent)

    # The user's download is never written to (coqui's own reader rewrites a legacy file).
    assert {name: _sha(model_dir / name) for name in before} == before

    # Another avatar is another voice: its own instance, its own latents.
    other = ReferenceVoice(_voice_sample(tmp_path / "avatars" / "bo", seed=40), "bo")
    other_synth = registry.get_synthesizer("en", _settings(model_dir, tmp_path), other)
    assert other_synth is not synth and other_synth.voice_id != synth.voice_id
    assert not torch.equal(
        other_synth.latents().speaker_embedding,  # type: ignore[attr-defined]
        synth.latents().speaker_embedding,
    )
    # A second process finds the cached file instead of computing again.
    fresh = XttsSynthesizer(model_dir, reference)
    assert torch.equal(fresh.latents().gpt_cond_latent, saved["gpt_cond_latent"])


@pytest.mark.slow
@needs_coqui
def test_spanish_and_mandarin_and_the_speech_stage(model_dir: Path, tmp_path: Path) -> None:
    from realtime_avatar.animate.mouth import PhonemeAnimator
    from realtime_avatar.engine.voice import AvatarVoice
    from realtime_avatar.voice.fit import VoiceRecipe
    from realtime_avatar.voice.match import IdentityMatcher
    from realtime_avatar.voice.profile import ENVELOPE_GRID_HZ, VoiceProfile

    sample = _voice_sample(tmp_path / "avatars" / "lin", seed=9)
    profile = VoiceProfile(5.0, 0.2, 150.0, 5.0, 0.2, 0.6, 3.0, np.zeros(len(ENVELOPE_GRID_HZ)))
    # An avatar fitted at registration (hibari + pitch) still speaks English with xtts.
    fitted = VoiceRecipe(base="hibari", f0_strength=1.0)
    voice = AvatarVoice(
        _settings(model_dir, tmp_path), profile, ReferenceVoice(sample, "lin"), fitted
    )
    assert voice.synthesizer("en").name == "xtts" and voice.recipe is None
    for language, text in (("es", "Hola, ¿qué tal?"), ("zh", "你好，世界。")):
        assert voice.synthesizer(language).name == "xtts"
        # It speaks in the avatar's voice already: no DSP matching.
        assert isinstance(voice.matcher(language), IdentityMatcher)
        speech = voice.speak(text, language, turn_id=3, first=True, more=True)
        assert speech.language == language and speech.duration_s > 0.1
        assert np.isfinite(speech.pcm).all()
        # No phoneme timings: the mouth follows the audio's loudness.
        track = PhonemeAnimator().mouth_track(speech, int(np.ceil(speech.duration_s / 0.04)))
        assert track.shape[1] == 4 and np.isfinite(track).all()
        if np.abs(speech.pcm).max() > 0.01:
            assert track[:, 0].max() > 0.0
    with pytest.raises(UnsupportedLanguageError, match="xtts here speaks en, es, zh"):
        voice.synthesizer("es").synthesize("Bonjour", "fr")


# --- what a user gets wrong ------------------------------------------------------------------


@pytest.mark.slow
@needs_coqui
def test_missing_unset_or_misplaced_folder_names_what_to_set(
    model_dir: Path, tmp_path: Path
) -> None:
    from realtime_avatar.tts.xtts import MODEL_FILES, XttsSynthesizer

    with pytest.raises(ConfigurationError, match="needs AVATAR_XTTS_MODEL_DIR"):
        XttsSynthesizer(None)
    with pytest.raises(ConfigurationError, match="is not a folder"):
        XttsSynthesizer(model_dir / "model.pth")
    for name in MODEL_FILES:
        partial = tmp_path / f"without-{name}"
        shutil.copytree(model_dir, partial)
        (partial / name).unlink()
        with pytest.raises(ConfigurationError) as caught:
            XttsSynthesizer(partial)
        message = str(caught.value)
        assert f"{partial / name} is missing" in message and "\n" not in message


@pytest.mark.slow
@needs_coqui
def test_cuda_on_a_cpu_machine_is_one_line(model_dir: Path) -> None:
    import torch

    from realtime_avatar.tts.xtts import XttsSynthesizer

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(ConfigurationError, match="AVATAR_XTTS_DEVICE=cuda but this machine has no CUDA GPU"):
        XttsSynthesizer(model_dir, device="cuda")
    with pytest.raises(ConfigurationError, match="is not cpu, cuda or cuda:N"):
        XttsSynthesizer(model_dir, device="tpu")


def _broken_copy(model_dir: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / f"broken-{name}"
    shutil.copytree(model_dir, folder)
    return folder


@pytest.mark.slow
@needs_coqui
def test_broken_files_name_the_file(model_dir: Path, tmp_path: Path) -> None:
    from realtime_avatar.tts.xtts import load_xtts

    cases: list[tuple[str, bytes | None, str]] = []
    data = (model_dir / "model.pth").read_bytes()
    cases.append(("model.pth", data[: len(data) // 3], "cannot read .*model.pth .*truncated"))
    cases.append(("model.pth", b"<html>Not Found</html>", "cannot read .*model.pth"))
    cases.append(("config.json", b'{"model": "xtts", "model_args": ', "cannot read .*config.json"))
    cases.append(("config.json", json.dumps({"model": "vits"}).encode(), "config.json is not an XTTS config"))
    cases.append(("vocab.json", b"[1, 2, 3]", "cannot read .*vocab.json as a tokenizer"))
    speakers = (model_dir / "speakers_xtts.pth").read_bytes()
    cases.append(("speakers_xtts.pth", speakers[:100], "cannot read .*speakers_xtts.pth"))
    for index, (name, content, pattern) in enumerate(cases):
        folder = _broken_copy(model_dir, tmp_path / str(index), name)
        (folder / name).write_bytes(content or b"")
        with pytest.raises(ConfigurationError, match=pattern) as caught:
            load_xtts(folder)
        assert "\n" not in str(caught.value)


@pytest.mark.slow
@needs_coqui
def test_a_checkpoint_of_another_size_names_the_key(model_dir: Path, tmp_path: Path) -> None:
    import torch

    from realtime_avatar.tts.xtts import load_xtts

    folder = _broken_copy(model_dir, tmp_path, "shape")
    checkpoint = torch.load(folder / "model.pth", weights_only=False)
    weights = checkpoint["model"]
    original = weights["gpt.text_embedding.weight"]
    weights["gpt.text_embedding.weight"] = torch.zeros(10, 256)  # another vocabulary's size
    torch.save({"model": weights}, folder / "model.pth")
    with pytest.raises(
        ConfigurationError,
        match=r"model.pth does not fit .*config.json and .*vocab.json: key 'gpt.text_embedding.weight' has shape \(10, 256\)",
    ):
        load_xtts(folder)
    del weights["gpt.final_norm.weight"]
    weights["gpt.text_embedding.weight"] = original
    torch.save({"model": {"xtts." + k: v for k, v in weights.items()}}, folder / "model.pth")
    with pytest.raises(ConfigurationError, match="key 'gpt.final_norm.weight' is missing"):
        load_xtts(folder)


@pytest.mark.slow
@needs_coqui
def test_avatar_say_speaks_with_xtts(model_dir: Path, fresh_data_dir: Path, tmp_path: Path) -> None:
    from realtime_avatar.constants import FPS
    from realtime_avatar.engine.script import render_script
    from realtime_avatar.tts.xtts import LATENTS_PREFIX

    from .helpers import ffprobe

    settings = Settings(
        data_dir=fresh_data_dir, tts_english="xtts", xtts_model_dir=model_dir, voice_fit="off"
    )
    out = tmp_path / "hello.mp4"
    result = render_script("Hello there.", out, language="en", settings=settings)
    assert result.languages == ("en",)
    streams = {s["codec_type"]: s for s in ffprobe(out)["streams"]}
    video_s = float(streams["video"]["duration"])
    audio_s = float(streams["audio"]["duration"])
    assert abs(video_s - audio_s) <= 1.0 / FPS and audio_s > 0.2
    # The default avatar's voice was cloned: its latents now sit in its folder.
    assert list(fresh_data_dir.rglob(f"{LATENTS_PREFIX}*.pt"))
