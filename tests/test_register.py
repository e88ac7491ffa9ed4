"""Registration with real photos and voices: what is accepted, and every clear refusal."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from realtime_avatar.avatars.registry import (
    default_portrait,
    list_avatars,
    load_avatar,
    register,
    validate_name,
)
from realtime_avatar.errors import (
    AvatarExistsError,
    AvatarNotFoundError,
    InvalidAudioError,
    InvalidImageError,
    InvalidNameError,
)


@pytest.fixture(scope="module")
def portrait_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "me.png"
    Image.fromarray(default_portrait()).save(path)
    return path


@pytest.fixture(scope="module")
def voice_wav(data_dir: Path) -> Path:
    return data_dir / "avatars" / "default" / "voice.wav"


@pytest.mark.slow  # registers the default avatar (mediapipe)
def test_default_avatar_is_complete(default_avatar) -> None:
    assert default_avatar.face_rgb.shape == (512, 512, 3)
    assert default_avatar.landmarks.shape == (478, 2)
    manifest = json.loads((default_avatar.path / "manifest.json").read_text())
    assert manifest["face"]["face_size_px"] >= 120
    assert manifest["voice"]["speech_s"] >= 3
    assert "Ava" in default_avatar.persona
    # The face is centred and sized for head and shoulders.
    centre = default_avatar.landmarks[:468].mean(axis=0)
    assert 200 < centre[0] < 312 and 150 < centre[1] < 300


@pytest.mark.slow  # registers avatars (mediapipe, ffmpeg)
def test_register_heic_with_persona_and_m4a(
    fresh_data_dir: Path, portrait_png: Path, voice_wav: Path, tmp_path: Path
) -> None:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    heic = tmp_path / "photo.jpg"  # wrong extension on purpose: content decides
    Image.open(portrait_png).save(heic, format="HEIF")
    m4a = tmp_path / "voice.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(voice_wav), "-c:a", "aac", str(m4a)], check=True
    )
    persona = tmp_path / "me.md"
    persona.write_text("# Bruce\n- I like sailing.\n", encoding="utf-8")
    avatar = register("bruce", heic, m4a, persona)
    assert avatar.persona.startswith("# Bruce")
    assert "bruce" in list_avatars()
    again = load_avatar("bruce")
    assert np.array_equal(again.face_rgb, avatar.face_rgb)


@pytest.mark.slow  # registers avatars (mediapipe)
def test_exif_rotation_is_honoured(
    fresh_data_dir: Path, portrait_png: Path, voice_wav: Path, tmp_path: Path
) -> None:
    rotated = tmp_path / "rotated.jpg"
    img = Image.open(portrait_png).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the upright face is only found if honoured
    img.save(rotated, exif=exif, quality=92)
    avatar = register("upright", rotated, voice_wav)
    eyes_y = avatar.landmarks[[33, 263], 1]
    assert abs(eyes_y[0] - eyes_y[1]) < 15


@pytest.mark.slow  # registers avatars (mediapipe)
@pytest.mark.parametrize(
    ("maker", "message"),
    [
        ("coffee", "no face found"),
        ("text", "not an image"),
        ("truncated", "truncated or damaged"),
        ("small", "at least 120 px"),
        ("two", "faces of similar size"),
    ],
)
def test_bad_photos_are_refused(
    fresh_data_dir: Path,
    portrait_png: Path,
    voice_wav: Path,
    tmp_path: Path,
    maker: str,
    message: str,
) -> None:
    from skimage import data

    path = tmp_path / "photo.jpg"
    if maker == "coffee":
        Image.fromarray(data.coffee()).save(path)
    elif maker == "text":
        path.write_text("this is not a photo")
    elif maker == "truncated":
        Image.open(portrait_png).save(path, quality=90)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif maker == "small":
        Image.fromarray(data.astronaut()).save(path)  # its face is ~106 px
    elif maker == "two":
        img = cv2.imread(str(portrait_png))
        cv2.imwrite(str(path), np.concatenate([img, img], axis=1))
    with pytest.raises(InvalidImageError, match=message):
        register("photo", path, voice_wav)
    assert "photo" not in list_avatars()


@pytest.mark.slow  # registers the default avatar (mediapipe)
def test_pixel_limit(
    fresh_data_dir: Path, voice_wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(path)
    monkeypatch.setenv("AVATAR_MAX_IMAGE_PIXELS", "5000000")
    with pytest.raises(InvalidImageError, match="over the 5 MP limit"):
        register("big", path, voice_wav)


@pytest.mark.slow  # registers avatars (mediapipe)
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("silent", "silent"),
        ("short", "at least 3 s"),
        ("clipped", "clipped"),
        ("garbage", "cannot decode"),
    ],
)
def test_bad_voices_are_refused(
    fresh_data_dir: Path,
    portrait_png: Path,
    voice_wav: Path,
    tmp_path: Path,
    kind: str,
    message: str,
) -> None:
    pcm, rate = sf.read(voice_wav, dtype="float32")
    path = tmp_path / "voice.wav"
    if kind == "silent":
        sf.write(path, np.zeros(rate * 8, np.float32), rate)
    elif kind == "short":
        sf.write(path, pcm[: int(rate * 1.5)], rate)
    elif kind == "clipped":
        sf.write(path, np.clip(pcm * 30, -1, 1), rate)
    else:
        path.write_bytes(b"RIFF nonsense " * 50)
    with pytest.raises(InvalidAudioError, match=message):
        register("voice", portrait_png, path)


@pytest.mark.slow  # registers avatars (mediapipe)
def test_failed_replace_keeps_the_saved_avatar(
    fresh_data_dir: Path, portrait_png: Path, voice_wav: Path, tmp_path: Path
) -> None:
    register("keep", portrait_png, voice_wav)
    with pytest.raises(AvatarExistsError):
        register("keep", portrait_png, voice_wav)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 5, np.float32), 16000)
    with pytest.raises(InvalidAudioError):
        register("keep", portrait_png, silent, force=True)
    assert load_avatar("keep").face_rgb.shape == (512, 512, 3)
    leftovers = [p.name for p in (fresh_data_dir / "avatars").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 41, "con\x00"])
def test_names_are_validated(name: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_name(name)


@pytest.mark.slow  # registers the default avatar (mediapipe)
def test_unknown_avatar(fresh_data_dir: Path) -> None:
    with pytest.raises(AvatarNotFoundError, match="avatar register"):
        load_avatar("ghost")


@pytest.mark.slow  # registers the default avatar (mediapipe)
def test_outdated_voice_profile_is_rebuilt(fresh_data_dir: Path) -> None:
    profile = fresh_data_dir / "avatars" / "default" / "voice_profile.npz"
    before = load_avatar("default").voice_profile.median_f0_hz
    profile.write_bytes(b"not a profile from this version")
    again = load_avatar("default")
    assert abs(again.voice_profile.median_f0_hz - before) < 0.02 * before  # same voice
    assert load_avatar("default").voice_profile.median_f0_hz == again.voice_profile.median_f0_hz


def test_an_earlier_releases_default_persona_is_brought_up_to_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No model: the default's folder exists (manifest), only its persona is compared.
    import hashlib
    from importlib import resources

    from realtime_avatar.avatars import registry
    from realtime_avatar.settings import Settings

    settings = Settings(data_dir=tmp_path)
    folder = registry.avatars_dir(settings) / "default"
    folder.mkdir(parents=True)
    (folder / registry.MANIFEST).write_text("{}", encoding="utf-8")
    old = b"# Ava\nI am the demo avatar of an earlier release.\n"
    monkeypatch.setattr(
        registry, "_OLD_DEFAULT_PERSONAS", frozenset({hashlib.sha256(old).hexdigest()})
    )
    shipped = (resources.files("realtime_avatar") / "assets/default/persona.md").read_bytes()

    (folder / "persona.md").write_bytes(old)
    registry.ensure_default_avatar(settings)
    assert (folder / "persona.md").read_bytes() == shipped
    assert sorted(p.name for p in folder.iterdir()) == [registry.MANIFEST, "persona.md"]

    edited = b"# Ava\nMy own words about the default avatar.\n"
    (folder / "persona.md").write_bytes(edited)
    registry.ensure_default_avatar(settings)
    assert (folder / "persona.md").read_bytes() == edited  # the user's edit stays
