"""The wav2lip renderer with random weights of the real architecture, in the public layout.

The checkpoint is saved the way ``wav2lip_gan.pth`` is published (``{"state_dict": ...}``
with ``module.`` prefixes, beside the optimizer state) and loaded through the registry and
the settings, so the loading path, the mel windows, the batching, the paste-back, the
pairing with audio and barge-in are all the real ones; only the mouth it draws is noise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from realtime_avatar.constants import OUTPUT_RATE_HZ, SAMPLES_PER_FRAME
from realtime_avatar.errors import ConfigurationError
from realtime_avatar.frames import Speech
from realtime_avatar.media.audio import float_to_int16, resample
from realtime_avatar.render.base import FaceImage, Renderer, spoken_frames
from realtime_avatar.render.registry import create_renderer
from realtime_avatar.render.wav2lip import (
    MEL_MAX_ABS,
    check_layout,
    face_box,
    load_wav2lip,
    mel_spectrogram,
    mel_windows,
)
from realtime_avatar.settings import Settings

SIZE = 256


def _face() -> FaceImage:
    """A textured photo and 468 'face-mesh' points filling an ellipse in its middle."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    photo = np.stack([xx, yy, (xx + yy) // 2], axis=2).astype(np.uint8)
    photo = np.clip(photo.astype(int) + rng.integers(-20, 20, photo.shape), 0, 255).astype(np.uint8)
    angle = rng.uniform(0, 2 * np.pi, 468)
    radius = np.sqrt(rng.uniform(0, 1, 468))
    points = np.stack([128 + 50 * radius * np.cos(angle), 120 + 70 * radius * np.sin(angle)], 1)
    return FaceImage(photo, points.astype(np.float32))


def _speech(seconds: float = 0.7, rate: int = 24_000, turn_id: int = 1) -> Speech:
    """A voiced-sounding buzz with a syllable rhythm, then a little silence."""
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) * (t < seconds - 0.2)
    pcm = 0.4 * envelope * np.sign(np.sin(2 * np.pi * 140 * t)) * np.sin(2 * np.pi * 700 * t)
    return Speech(turn_id, "ba ba ba", "en", pcm.astype(np.float32), rate)


def _save_public_layout(path: Path, weights: dict) -> Path:
    import torch

    torch.save(
        {
            "state_dict": {f"module.{k}": v for k, v in weights.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.5, 0.999)}]},
            "global_step": 0,
            "global_epoch": 0,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def weights() -> dict:
    pytest.importorskip("torch")
    from realtime_avatar.render.wav2lip_net import random_weights

    return random_weights(seed=0)


@pytest.fixture(scope="module")
def checkpoint(weights: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_public_layout(tmp_path_factory.mktemp("w2l") / "wav2lip_gan.pth", weights)


def _settings(path: Path | None, device: str = "cpu") -> Settings:
    return Settings(renderer="wav2lip", renderer_model_path=path, renderer_device=device)


@pytest.fixture(scope="module")
def face() -> FaceImage:
    return _face()


@pytest.fixture
def renderer(checkpoint: Path, face: FaceImage) -> Renderer:
    return create_renderer("wav2lip", face, _settings(checkpoint))


def test_architecture_matches_the_public_checkpoints() -> None:
    pytest.importorskip("torch")
    from realtime_avatar.render.wav2lip_net import Wav2Lip

    # Names and shapes as wav2lip.pth / wav2lip_gan.pth spell them (36.3 M parameters).
    weights = Wav2Lip().state_dict()
    assert tuple(weights["face_encoder_blocks.0.0.conv_block.0.weight"].shape) == (16, 6, 7, 7)
    assert tuple(weights["audio_encoder.0.conv_block.0.weight"].shape) == (32, 1, 3, 3)
    assert tuple(weights["audio_encoder.12.conv_block.0.weight"].shape) == (512, 512, 1, 1)
    assert tuple(weights["face_decoder_blocks.1.0.conv_block.0.weight"].shape) == (1024, 512, 3, 3)
    assert tuple(weights["face_decoder_blocks.6.0.conv_block.0.weight"].shape) == (160, 64, 3, 3)
    assert tuple(weights["output_block.1.weight"].shape) == (3, 32, 1, 1)
    params = sum(v.numel() for k, v in weights.items() if "running" not in k and "num_b" not in k)
    assert params == 36_298_035
    assert len(weights) == 352


def test_layout_mismatches_name_the_first_key_and_its_shape() -> None:
    pytest.importorskip("torch")
    from realtime_avatar.render.wav2lip_net import Wav2Lip

    expected = Wav2Lip().state_dict()
    path = Path("wav2lip_gan.pth")
    check_layout(dict(expected), expected, path)  # the architecture's own layout passes
    without_counters = {k: v for k, v in expected.items() if "num_batches" not in k}
    check_layout(without_counters, expected, path)

    def message(weights: dict) -> str:
        with pytest.raises(ConfigurationError) as caught:
            check_layout(weights, expected, path)
        return str(caught.value)

    missing = dict(expected)
    del missing["audio_encoder.3.conv_block.0.weight"]
    assert (
        "'audio_encoder.3.conv_block.0.weight' is missing (expected shape (64, 32, 3, 3))"
        in message(missing)
    )
    reshaped = dict(expected)
    reshaped["output_block.1.weight"] = expected["output_block.1.weight"][:1]
    assert "'output_block.1.weight' has shape (1, 32, 1, 1), expected (3, 32, 1, 1)" in message(
        reshaped
    )
    extra = dict(expected)
    extra["lip_sync_head.weight"] = expected["output_block.1.weight"]
    assert "unexpected key 'lip_sync_head.weight'" in message(extra)


@pytest.mark.slow  # the full-size model on CPU: seconds per piece of speech
def test_speech_gives_one_frame_per_40_ms_with_exactly_its_audio(renderer: Renderer) -> None:
    speech = _speech()
    frames = list(spoken_frames(renderer, speech))
    pcm = resample(speech.pcm, speech.sample_rate_hz, OUTPUT_RATE_HZ)
    assert len(frames) == int(np.ceil(len(pcm) / SAMPLES_PER_FRAME))
    expected = np.zeros(len(frames) * SAMPLES_PER_FRAME, np.int16)
    expected[: len(pcm)] = float_to_int16(pcm)
    assert np.array_equal(np.concatenate([f.audio for f in frames]), expected)
    assert all(f.speaking and f.turn_id == 1 and len(f.audio) == SAMPLES_PER_FRAME for f in frames)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert not renderer.busy


@pytest.mark.slow  # the full-size model on CPU: seconds per piece of speech
def test_the_mouth_changes_and_nothing_outside_the_lower_face(
    renderer: Renderer, face: FaceImage
) -> None:
    frames = [f.rgb for f in spoken_frames(renderer, _speech())]
    box = face_box(face.landmarks, SIZE)
    top, bottom = box.y0 + (box.y1 - box.y0) // 2, box.y1
    outside = np.ones((SIZE, SIZE), bool)
    outside[top:bottom, box.x0 : box.x1] = False
    mouth = (slice(top, bottom), slice(box.x0, box.x1))
    for image in frames:
        assert image.shape == face.face_rgb.shape and image.dtype == np.uint8
        assert np.array_equal(image[outside], face.face_rgb[outside])
        assert np.abs(image[mouth].astype(int) - face.face_rgb[mouth]).mean() > 1.0
    # Driven by the audio: the syllables and the pauses between them draw different mouths.
    changes = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames, frames[1:], strict=False)]
    assert max(changes) > 0.5


@pytest.mark.slow  # the full-size model on CPU: seconds per piece of speech
def test_idle_when_silent_and_after_clear(renderer: Renderer, face: FaceImage) -> None:
    idle = renderer.next_frame()
    assert not idle.speaking and np.array_equal(idle.rgb, face.face_rgb)
    assert not idle.audio.any() and len(idle.audio) == SAMPLES_PER_FRAME
    renderer.push(_speech(1.0, turn_id=4))
    renderer.push(_speech(0.5, turn_id=5))
    assert renderer.next_frame().speaking and renderer.busy
    renderer.clear()
    after = renderer.next_frame()
    assert not renderer.busy and not after.speaking and after.turn_id == 0
    assert np.array_equal(after.rgb, face.face_rgb)
    assert after.index == idle.index + 2  # the clock runs on through the barge-in


@pytest.mark.slow  # the full-size model on CPU: seconds per piece of speech
def test_the_model_loads_once_per_file_and_device(checkpoint: Path) -> None:
    assert load_wav2lip(checkpoint, "cpu") is load_wav2lip(checkpoint, "cpu")


@pytest.mark.slow  # the full-size model on CPU: seconds per piece of speech
def test_a_bare_state_dict_without_prefixes_loads(weights: dict, tmp_path: Path) -> None:
    import torch

    path = tmp_path / "wav2lip.pth"
    torch.save({k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}, path)
    model = load_wav2lip(path, "cpu")
    key = "audio_encoder.0.conv_block.0.weight"
    assert torch.equal(model.state_dict()[key], weights[key])


def _error(path: Path | None, device: str = "cpu") -> str:
    with pytest.raises(ConfigurationError) as caught:
        create_renderer("wav2lip", _face(), _settings(path, device))
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_or_unreadable_files_get_one_clear_line(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    assert "AVATAR_WAV2LIP_CHECKPOINT" in _error(None)
    assert "does not exist" in _error(tmp_path / "nothing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"<html>404 not found</html>" * 100)
    assert "truncated or not a torch checkpoint" in _error(garbage)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert "truncated or not a torch checkpoint" in _error(empty)


@pytest.mark.slow  # saves and reads full-size checkpoints
def test_bad_checkpoint_files_get_one_clear_line(
    weights: dict, checkpoint: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    assert "truncated or not a torch checkpoint" in _error(truncated)

    missing = dict(weights)
    del missing["audio_encoder.3.conv_block.0.weight"]
    message = _error(_save_public_layout(tmp_path / "missing.pth", missing))
    assert (
        "'audio_encoder.3.conv_block.0.weight' is missing (expected shape (64, 32, 3, 3))"
        in message
    )

    import torch

    torch.save(
        {"state_dict": {"conv.weight": weights["output_block.1.weight"]}}, tmp_path / "s.pth"
    )
    assert "is missing" in _error(tmp_path / "s.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    assert "holds no state_dict" in _error(tmp_path / "list.pth")


def test_cuda_on_a_cpu_only_machine_is_one_line(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    checkpoint = tmp_path / "wav2lip_gan.pth"  # the device is checked before the file

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert "no CUDA GPU" in _error(checkpoint, "cuda")
    assert "not cpu, cuda or cuda:N" in _error(checkpoint, "tpu")


def test_without_torch_one_line_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "wav2lip_gan.pth"
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "realtime_avatar.render.wav2lip_net", None)
    assert "pip install 'realtime-avatar[eval]'" in _error(checkpoint)


def test_mel_windows_are_centred_on_their_frame() -> None:
    rate = 16_000
    pcm = np.zeros(rate, np.float32)  # one second: 25 frames
    frame = 12
    start = frame * 640
    pcm[start : start + 640] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(640) / rate)
    assert mel_spectrogram(pcm).shape == (80, 1 + len(pcm) // 200)
    windows = mel_windows(pcm, 25)
    assert windows.shape == (25, 80, 16) and windows.dtype == np.float32
    assert windows.min() >= -MEL_MAX_ABS and windows.max() <= MEL_MAX_ABS
    loud = windows.max(axis=(1, 2))
    # The burst sits in the middle of its own frame's window; the windows of the frames
    # around it see it too (0.2 s windows, 50 ms STFT), symmetrically, and no others.
    assert set(np.flatnonzero(loud > -MEL_MAX_ABS + 1)) == set(range(frame - 3, frame + 4))
    centre = windows[frame].max(axis=0)
    assert centre[6:10].min() > centre[[0, 15]].max()


def test_avatar_wav2lip_checkpoint_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime_avatar.settings import Settings

    monkeypatch.setenv("AVATAR_WAV2LIP_CHECKPOINT", str(tmp_path / "nope_gan.pth"))
    with pytest.raises(ConfigurationError, match="nope_gan.pth"):
        create_renderer("wav2lip", _face(), Settings())
