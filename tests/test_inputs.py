"""The bad-input catalogue (issue 11): files by content, text, settings, the CLI's one-line
errors, leftovers of a killed ``register``.

Most cases fail before any model loads and run in the fast tier; those that need the face
detector, a voice or a subprocess are marked slow. docs/RELIABILITY.md lists them all.
"""

from __future__ import annotations

import errno
import io
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from realtime_avatar import cli
from realtime_avatar.avatars import registry
from realtime_avatar.avatars.registry import (
    MANIFEST,
    OWNER,
    clean_leftovers,
    list_avatars,
    register,
)
from realtime_avatar.engine.script import MAX_SCRIPT_BYTES, check_script_text
from realtime_avatar.errors import (
    ConfigurationError,
    InvalidAudioError,
    InvalidImageError,
    InvalidTextError,
    OutputPathError,
    UnsupportedLanguageError,
)
from realtime_avatar.media.audio import decode_audio, validate_voice
from realtime_avatar.media.image import load_rgb
from realtime_avatar.media.mp4 import check_output_path
from realtime_avatar.settings import Settings
from realtime_avatar.text.chunker import split_sentences
from realtime_avatar.text.language import detect_language, resolve_language

MAX_PIXELS = 40_000_000
RATE_HZ = 22_050
PYTHON_AVATAR = [sys.executable, "-m", "realtime_avatar.cli"]


# --- images, by content -------------------------------------------------------------------


def _gradient(width: int = 96, height: int = 64) -> np.ndarray:
    """An RGB test card: mean level mid-grey, so clipping to white or black shows."""
    ramp = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, axis=0)
    return np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 128)], axis=-1).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_image(path: Path, kind: str) -> Path:
    """A photo of one kind; returns the path written (its name may lie about the content)."""
    rgb = _gradient()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text named .jpg":
        path.write_text("this is not a photo")
    elif kind == "truncated JPEG":
        Image.fromarray(rgb).save(path, format="JPEG", quality=95)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif kind == "PNG signature then garbage":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10)
    elif kind == "pixel bomb (60000x60000 header)":
        header = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")
        )
    elif kind == "pixel bomb (9000x9000, small file)":
        Image.new("L", (9000, 9000)).save(path, format="PNG")
    elif kind == "JPEG named .png":
        Image.fromarray(rgb).save(path, format="JPEG", quality=95)
    elif kind == "PNG + ZIP polyglot":
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        path.write_bytes(buffer.getvalue() + b"PK\x03\x04" + b"\x00" * 200)
    elif kind == "HEIC":
        import pillow_heif

        pillow_heif.register_heif_opener()
        Image.fromarray(rgb).save(path, format="HEIF")
    elif kind == "AVIF":
        Image.fromarray(rgb).save(path, format="AVIF")
    elif kind == "WebP":
        Image.fromarray(rgb).save(path, format="WEBP", quality=95)
    elif kind == "animated GIF":
        frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
        frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])
    elif kind == "CMYK JPEG":
        Image.fromarray(rgb).convert("CMYK").save(path, format="JPEG", quality=95)
    elif kind == "16-bit greyscale PNG":
        grey = (rgb[..., 0].astype(np.uint16) * 257).astype(np.uint16)
        Image.fromarray(grey).save(path, format="PNG")
    elif kind == "8-bit greyscale PNG":
        Image.fromarray(rgb[..., 0]).save(path, format="PNG")
    elif kind == "float TIFF":
        Image.fromarray(rgb[..., 0].astype(np.float32) / 255.0).save(path, format="TIFF")
    elif kind == "RGBA, transparent background":
        alpha = np.zeros(rgb.shape[:2], np.uint8)
        alpha[:, : rgb.shape[1] // 2] = 255
        black = rgb.copy()
        black[:, rgb.shape[1] // 2 :] = 0  # hidden pixels are black, as editors leave them
        Image.fromarray(np.dstack([black, alpha])).save(path, format="PNG")
    elif kind == "greyscale + alpha PNG":
        Image.fromarray(rgb[..., 0]).convert("LA").save(path, format="PNG")
    elif kind == "palette with transparency":
        Image.fromarray(rgb).convert("P").save(path, format="PNG", transparency=0)
    elif kind == "TIFF":
        Image.fromarray(rgb).save(path, format="TIFF")
    elif kind == "EXIF rotated JPEG":
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        Image.fromarray(rgb).save(path, format="JPEG", exif=exif, quality=95)
    elif kind == "BMP":
        Image.fromarray(rgb).save(path, format="BMP")
    else:
        raise AssertionError(kind)
    return path


IMAGE_REFUSED = {
    "empty": "not an image",
    "text named .jpg": "not an image",
    "truncated JPEG": "truncated or damaged",
    "PNG signature then garbage": "not an image|damaged",
    "pixel bomb (60000x60000 header)": "too large|MP limit",
    "pixel bomb (9000x9000, small file)": "81 MP, over the 40 MP limit",
}
IMAGE_ACCEPTED = [
    "JPEG named .png",
    "PNG + ZIP polyglot",
    "HEIC",
    "AVIF",
    "WebP",
    "animated GIF",
    "CMYK JPEG",
    "16-bit greyscale PNG",
    "8-bit greyscale PNG",
    "float TIFF",
    "RGBA, transparent background",
    "greyscale + alpha PNG",
    "palette with transparency",
    "TIFF",
    "EXIF rotated JPEG",
    "BMP",
]


@pytest.mark.parametrize(("kind", "message"), sorted(IMAGE_REFUSED.items()))
def test_bad_images_are_refused_by_content(tmp_path: Path, kind: str, message: str) -> None:
    path = _write_image(tmp_path / "photo.png", kind)
    with pytest.raises(InvalidImageError, match=message) as caught:
        load_rgb(path, MAX_PIXELS)
    assert "\n" not in caught.value.message


@pytest.mark.parametrize("kind", IMAGE_ACCEPTED)
def test_images_are_read_by_content(tmp_path: Path, kind: str) -> None:
    name = "photo.jpg" if kind != "JPEG named .png" else "photo.png"
    rgb = load_rgb(_write_image(tmp_path / name, kind), MAX_PIXELS)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    # Neither clipped to white (the 16-bit bug) nor to black.
    assert 60 < float(rgb.mean()) < 200, float(rgb.mean())
    if kind == "EXIF rotated JPEG":
        assert rgb.shape[:2] == (96, 64)  # turned upright
    else:
        assert rgb.shape[:2] == (64, 96)
    if kind == "16-bit greyscale PNG":
        assert rgb[:, 0].max() < 5 and rgb[:, -1].min() > 250  # the full ramp survives
    if kind == "RGBA, transparent background":
        assert np.all(rgb[:, -10:] == 128)  # a neutral backdrop, not the hidden black
    if kind == "CMYK JPEG":
        assert abs(int(rgb[32, 90, 0]) - 245) < 25  # red stays red


def test_missing_image(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="not found"):
        load_rgb(tmp_path / "nope.jpg", MAX_PIXELS)


# --- voice samples, by content ------------------------------------------------------------


def _speechlike(seconds: float, rate: int = RATE_HZ) -> np.ndarray:
    """Bursts of a voiced buzz with pauses: passes the speech checks, no model needed."""
    t = np.arange(int(seconds * rate)) / rate
    buzz = 0.3 * np.sign(np.sin(2 * np.pi * 140 * t)) * np.abs(np.sin(2 * np.pi * 700 * t))
    gate = (np.sin(2 * np.pi * 1.5 * t) > -0.3).astype(np.float64)
    return (buzz * gate).astype(np.float32)


def _video(path: Path, with_audio: bool) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = container.add_stream("aac", rate=RATE_HZ) if with_audio else None
        pcm = _speechlike(4.0)
        for _ in range(100):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        if audio is not None:
            block = 1024
            for start in range(0, len(pcm) - block, block):
                chunk = av.AudioFrame.from_ndarray(
                    pcm[None, start : start + block], format="flt", layout="mono"
                )
                chunk.sample_rate = RATE_HZ
                chunk.pts = start
                for packet in audio.encode(chunk):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)


def _write_voice(path: Path, kind: str) -> Path:
    pcm = _speechlike(6.0)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"RIFF nonsense " * 50)
    elif kind == "photo given as voice":
        _write_image(path, "8-bit greyscale PNG")
    elif kind == "video without sound":
        _video(path, with_audio=False)
    elif kind == "NaN samples":
        bad = pcm.copy()
        bad[5000] = np.nan
        sf.write(path, bad, RATE_HZ, subtype="FLOAT", format="WAV")
    elif kind == "infinite samples":
        bad = pcm.copy()
        bad[5000] = np.inf
        sf.write(path, bad, RATE_HZ, subtype="FLOAT", format="WAV")
    elif kind == "video with sound":
        _video(path, with_audio=True)
    elif kind == "OGG named .wav":
        sf.write(path, pcm, RATE_HZ, format="OGG", subtype="VORBIS")
    elif kind == "FLAC, stereo":
        sf.write(path, np.stack([pcm, pcm], 1), RATE_HZ, format="FLAC")
    elif kind == "WAV + junk appended":
        sf.write(path, pcm, RATE_HZ, format="WAV", subtype="PCM_16")
        path.write_bytes(path.read_bytes() + os.urandom(4096))
    elif kind == "truncated WAV":
        sf.write(path, pcm, RATE_HZ, format="WAV", subtype="PCM_16")
        path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    else:
        raise AssertionError(kind)
    return path


VOICE_REFUSED = {
    "empty": "cannot decode",
    "garbage": "cannot decode",
    "photo given as voice": "no audio stream|cannot decode",
    "video without sound": "no audio stream",
    "NaN samples": "invalid samples",
    "infinite samples": "invalid samples",
}
VOICE_ACCEPTED = [
    "video with sound",
    "OGG named .wav",
    "FLAC, stereo",
    "WAV + junk appended",
    "truncated WAV",
]


@pytest.mark.parametrize(("kind", "message"), sorted(VOICE_REFUSED.items()))
def test_bad_voices_are_refused_by_content(tmp_path: Path, kind: str, message: str) -> None:
    path = _write_voice(tmp_path / "voice.wav", kind)
    with pytest.raises(InvalidAudioError, match=message) as caught:
        validate_voice(decode_audio(path, RATE_HZ), RATE_HZ, 3.0)
    assert "\n" not in caught.value.message


@pytest.mark.parametrize("kind", VOICE_ACCEPTED)
def test_voices_are_read_by_content(tmp_path: Path, kind: str) -> None:
    pcm = decode_audio(_write_voice(tmp_path / "voice.wav", kind), RATE_HZ)
    check = validate_voice(pcm, RATE_HZ, 3.0)
    assert check.speech_s >= 1.8


@pytest.mark.parametrize(
    ("kind", "message"),
    [("silent", "silent"), ("too short", "at least 3 s"), ("clipped", "clipped")],
)
def test_unusable_voices_say_why(kind: str, message: str) -> None:
    pcm = _speechlike(6.0)
    if kind == "silent":
        pcm = np.zeros_like(pcm)
    elif kind == "too short":
        pcm = pcm[:RATE_HZ]
    else:
        pcm = np.clip(pcm * 30, -1, 1)
    with pytest.raises(InvalidAudioError, match=message):
        validate_voice(pcm, RATE_HZ, 3.0)


def test_long_voice_is_decoded_only_as_far_as_used(tmp_path: Path) -> None:
    """A 10-minute sample: decoding stops at the limit (the rest is never read)."""
    path = tmp_path / "ten-minutes.wav"
    with sf.SoundFile(path, "w", 8000, 1, subtype="PCM_16") as out:
        for _ in range(60):
            out.write(_speechlike(10.0, 8000))
    assert sf.info(path).duration == pytest.approx(600.0)
    pcm = decode_audio(path, RATE_HZ, max_s=registry.VOICE_USED_S)
    assert len(pcm) == int(registry.VOICE_USED_S * RATE_HZ)


def test_audio_length_bomb_header(tmp_path: Path) -> None:
    """A WAV header that claims 4 GB of samples over a few seconds: what is there is read."""
    path = tmp_path / "claims-4gb.wav"
    sf.write(path, _speechlike(4.0), RATE_HZ, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 0xFFFFFFF0)
    data[40:44] = struct.pack("<I", 0xFFFFFFC0)
    path.write_bytes(bytes(data))
    pcm = decode_audio(path, RATE_HZ)
    assert len(pcm) <= 5 * RATE_HZ


# --- register: cheap checks first, data directory, leftovers -------------------------------


@pytest.fixture
def no_face_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proof that a case failed before the face detector (mediapipe) was needed."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the face detector ran; this case should fail before it")

    monkeypatch.setattr(registry, "prepare_face", refuse)


def _portrait(tmp_path: Path) -> Path:
    return _write_image(tmp_path / "me.png", "WebP")


@pytest.mark.parametrize("kind", sorted(VOICE_REFUSED))
def test_register_refuses_bad_voice_before_any_model(
    tmp_path: Path, no_face_detection: None, kind: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    voice = _write_voice(tmp_path / "voice.wav", kind)
    with pytest.raises(InvalidAudioError):
        register("me", _portrait(tmp_path), voice, settings=settings)
    assert list((tmp_path / "data" / "avatars").iterdir()) == []


def test_register_refuses_bad_photo_before_any_model(
    tmp_path: Path, no_face_detection: None
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    photo = _write_image(tmp_path / "me.jpg", "truncated JPEG")
    voice = _write_voice(tmp_path / "voice.wav", "OGG named .wav")
    with pytest.raises(InvalidImageError):
        register("me", photo, voice, settings=settings)
    assert list_avatars(settings) == []


def test_data_dir_on_a_file(tmp_path: Path, no_face_detection: None) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("not a folder")
    with pytest.raises(ConfigurationError, match="AVATAR_DATA_DIR=.* is a file"):
        register("me", _portrait(tmp_path), tmp_path / "v.wav", settings=Settings(data_dir=a_file))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_data_dir_that_cannot_be_written(tmp_path: Path, no_face_detection: None) -> None:
    settings = Settings(data_dir=Path("/proc/realtime-avatar-test"))
    with pytest.raises(ConfigurationError, match="set AVATAR_DATA_DIR to a folder you can write"):
        register("me", _portrait(tmp_path), tmp_path / "v.wav", settings=settings)


def _fake_avatar(folder: Path, *, owner: int | None = None, manifest: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "face.png").write_bytes(b"x")
    if manifest:
        (folder / MANIFEST).write_text('{"name": "me"}')
    if owner is not None:
        (folder / OWNER).write_text(str(owner))
    return folder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_register_are_cleaned(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    root = tmp_path / "avatars"
    _fake_avatar(root / "kept")
    dead = _fake_avatar(root / ".me-dead1234", owner=_dead_pid())  # all but the swap done
    alive = _fake_avatar(root / ".me-live5678", owner=os.getppid())  # a register at work
    fresh = _fake_avatar(root / ".me-new00000", manifest=False)  # just created: no owner yet
    old = _fake_avatar(root / ".me-old00000", manifest=False)
    just_died = _fake_avatar(root / ".me-died0000", owner=_dead_pid())  # or another namespace
    stamp = time.time() - 2 * registry.STALE_STAGING_S
    for folder in (dead, old):
        os.utime(folder, (stamp, stamp))
    # Never listed, even with a manifest inside, while still there.
    assert list_avatars(settings) == ["kept"]
    assert not dead.exists() and not old.exists()
    assert alive.exists() and fresh.exists() and just_died.exists()
    assert sorted(p.name for p in root.iterdir()) == [
        ".me-died0000",
        ".me-live5678",
        ".me-new00000",
        "kept",
    ]


def test_replace_killed_between_renames_restores_the_old_avatar(tmp_path: Path) -> None:
    root = tmp_path / "avatars"
    old_ms = int((time.time() - 3600) * 1000)
    _fake_avatar(root / f".trash-me-{old_ms}")  # "me" was moved aside, then the process died
    _fake_avatar(root / f".trash-other-{old_ms}")
    _fake_avatar(root / "other")  # its replacement made it: the trash is only trash
    recent = _fake_avatar(root / f".trash-busy-{int(time.time() * 1000)}")  # a swap under way
    clean_leftovers(root)
    assert (root / "me" / MANIFEST).is_file()
    assert sorted(p.name for p in root.iterdir()) == [recent.name, "me", "other"]


def test_hidden_and_invalid_folders_are_not_avatars(tmp_path: Path) -> None:
    root = tmp_path / "avatars"
    _fake_avatar(root / "ok")
    _fake_avatar(root / ".hidden")
    _fake_avatar(root / "Upper Case")
    _fake_avatar(root / "no-manifest", manifest=False)
    assert list_avatars(Settings(data_dir=tmp_path)) == ["ok"]


# --- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   \n\t  ", "empty"),
        ("\x00\x01\x1b", "empty"),
        ("😀🎉👍", "empty"),
        ("... !!! ???", "no words"),
        ("-- ; : ,,", "no words"),
        ("*** ### ~~~", "empty"),
    ],
)
def test_text_without_words_is_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidTextError, match=message):
        check_script_text(text)


def test_control_characters_are_dropped() -> None:
    assert check_script_text("Hello\x00 wor\x07ld\x1b[31m!") == "Hello world[31m!"
    assert check_script_text("Line one.\nLine two.") == "Line one.\nLine two."


def test_100_kb_of_text_is_accepted_and_over_the_cap_refused() -> None:
    text = "This is one sentence of a long script. " * 2600  # ~100 KB
    assert len(text.encode()) > 100_000
    assert len(split_sentences(check_script_text(text))) >= 2600
    with pytest.raises(InvalidTextError, match="over 1 MB"):
        check_script_text("a" * (MAX_SCRIPT_BYTES + 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello friend.", "en"),
        ("Hello!", "en"),
        ("No problem.", "en"),
        ("Hola, ¿qué tal?", "es"),
        ("Me llamo Ana.", "es"),
        ("Привет, как дела?", "ru"),
        ("مرحبا، كيف حالك؟", "ar"),
        ("שלום, מה שלומך?", "he"),
        ("Γειά σου, τι κάνεις;", "el"),
        ("नमस्ते, आप कैसे हैं?", "hi"),
        ("안녕하세요, 잘 지내세요?", "ko"),
        ("こんにちは、元気ですか？", "ja"),
        ("你好，你好吗？", "zh"),
        ("Hello, Привет Привет Привет!", "ru"),
        ("สวัสดีครับ", "th"),
    ],
)
def test_language_follows_the_writing_system(text: str, expected: str) -> None:
    assert detect_language(text) == expected
    assert resolve_language("auto", text) == expected  # and a voice speaks it


def test_unknown_script_is_refused_with_advice() -> None:
    with pytest.raises(UnsupportedLanguageError, match="pass --lang"):
        resolve_language("auto", "བཀྲ་ཤིས་བདེ་ལེགས།")


@pytest.mark.parametrize("code", ["xx", "klingon", "zz-ZZ", "../en", "en\x00", "e" * 200])
def test_unknown_language_codes(code: str) -> None:
    with pytest.raises(UnsupportedLanguageError, match="--lang"):
        resolve_language(code, "hello")


# --- the CLI: one line, never a traceback ---------------------------------------------------


def _main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Run ``avatar ARGS`` in this process (no models load on these paths)."""
    monkeypatch.setattr(sys, "argv", ["avatar", *args])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as ended:
            cli.main()
    finally:  # main installs its own; pytest keeps its
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    err = capsys.readouterr().err
    code = ended.value.code
    return (code if isinstance(code, int) else 1), err


def _one_clear_line(err: str, expected: str) -> None:
    assert "Traceback" not in err
    # Native libraries may add their own noise (libpng: "Write Error"); ours is one line.
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert expected in lines[0], err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AVATAR_MAX_SESSIONS", "abc"),
        ("AVATAR_PORT", "abc"),
        ("AVATAR_MAX_IMAGE_PIXELS", "lots"),
        ("AVATAR_VAD_THRESHOLD", "high"),
    ],
)
def test_bad_settings_name_their_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv("AVATAR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    code, err = _main(monkeypatch, capsys, "list")
    assert code == 2
    _one_clear_line(err, f"{variable}='{value}'")


def test_port_out_of_range(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _main(monkeypatch, capsys, "serve", "--port", "99999")
    assert code == 2 and "Traceback" not in err and "65535" in err


def _script_files(tmp_path: Path) -> dict[str, Path]:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("¡Hola, señor!".encode("latin-1"))
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"word " * (MAX_SCRIPT_BYTES // 5 + 10))
    return {"a folder": tmp_path, "not UTF-8": latin1, "over 1 MB": huge}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("/dev/zero", "over 1 MB"),
        ("a folder", "is a folder"),
        ("not UTF-8", "not UTF-8"),
        ("over 1 MB", "over 1 MB"),
        ("missing", "not found"),
    ],
)
def test_text_file_errors(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    source: str,
    expected: str,
) -> None:
    files = _script_files(tmp_path)
    path = str(files.get(source, tmp_path / "missing.txt" if source == "missing" else source))
    code, err = _main(monkeypatch, capsys, "say", "--text-file", path, "-o", f"{tmp_path}/a.mp4")
    assert code == 2
    _one_clear_line(err, expected)
    assert not list(tmp_path.glob("*.mp4"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["say", "...!?"], "no words"),
        (["say", "😀 😀"], "nothing to say"),
        (["say", "བཀྲ་ཤིས་བདེ་ལེགས།"], "pass --lang"),
        (["say", "Hello.", "--lang", "klingon"], "klingon"),
        (["say", "Hello.", "-o", "/proc/out.mp4"], "/proc"),
        (["say", "Hello.", "-o", "{tmp}"], "is a folder"),
        (["say", "Hello.", "-o", "{tmp}/file.txt/a.mp4"], "does not exist"),
    ],
)
def test_say_input_errors_before_any_model(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: list[str],
    expected: str,
) -> None:
    (tmp_path / "file.txt").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "a.mp4")]
    monkeypatch.setenv("AVATAR_DATA_DIR", str(tmp_path / "data"))
    code, err = _main(monkeypatch, capsys, *args)
    assert code == 2
    _one_clear_line(err, expected)
    assert not (tmp_path / "data").exists()  # failed before the default avatar was made


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOSPC, "no space left"),
        (errno.EROFS, "read-only"),
        (errno.EFBIG, "too large"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_file_system_errors_in_words(code: int, expected: str) -> None:
    message = cli.os_error_message(OSError(code, os.strerror(code), "/some/file"))
    assert message is not None and expected in message and "/some/file" in message
    assert cli.os_error_message(OSError(errno.ECONNRESET, "reset")) is None  # not ours: raised


def test_output_path_checks_really_write(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "ok.mp4") == tmp_path / "ok.mp4"
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind
    with pytest.raises(OutputPathError, match="pick another path"):
        check_output_path(Path("/proc/self/x.mp4"))


# --- slow: the face detector, the voice, subprocesses -------------------------------------


def _limit_file_size(limit_bytes: int) -> Callable[[], None]:
    """A child that may write files of at most ``limit_bytes`` (EFBIG beyond): a full disk
    that needs no root. SIGXFSZ is ignored so the write fails instead of killing it."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def _cli(
    *args: str, data_dir: Path, preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AVATAR_DATA_DIR=str(data_dir))
    return subprocess.run(
        [*PYTHON_AVATAR, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        preexec_fn=preexec,
    )


@pytest.fixture(scope="module")
def portrait_rgb() -> np.ndarray:
    return registry.default_portrait()


@pytest.fixture(scope="module")
def voice_wav(data_dir: Path) -> Path:
    return data_dir / "avatars" / "default" / "voice.wav"


@pytest.mark.slow  # registers avatars (mediapipe)
def test_16_bit_greyscale_portrait_registers(
    fresh_data_dir: Path, portrait_rgb: np.ndarray, voice_wav: Path, tmp_path: Path
) -> None:
    grey = portrait_rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    path = tmp_path / "grey16.png"
    Image.fromarray((grey * 257).astype(np.uint16)).save(path)
    avatar = register("grey", path, voice_wav)
    assert 60 < avatar.face_rgb.mean() < 200


@pytest.mark.slow  # registers avatars (mediapipe)
def test_small_face_in_a_huge_photo_is_found(
    fresh_data_dir: Path, portrait_rgb: np.ndarray, voice_wav: Path, tmp_path: Path
) -> None:
    """6200x6200 with a ~300 px face: the 1280 px copy misses it, the tiles find it."""
    rng = np.random.default_rng(0)
    big = rng.integers(150, 210, (62, 62, 3), dtype=np.uint8).repeat(100, 0).repeat(100, 1)
    big[3000 : 3000 + 1024, 2500 : 2500 + 1024] = portrait_rgb
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=90)
    avatar = register("far", path, voice_wav)
    assert avatar.manifest["face"]["face_size_px"] > 150
    left, top, _side = avatar.manifest["face"]["crop_box"]
    assert 2400 < left < 3400 and 2900 < top < 3900


@pytest.mark.slow  # registers avatars (mediapipe)
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("cut by the border", "no face found|could not be located|turned|tilted"),
        ("tilted 45 degrees", "no face found|tilted"),
        ("upside down", "no face found|tilted|could not be located"),
        ("blank", "no face found"),
    ],
)
def test_unusable_faces_are_refused(
    fresh_data_dir: Path,
    portrait_rgb: np.ndarray,
    voice_wav: Path,
    tmp_path: Path,
    kind: str,
    message: str,
) -> None:
    import cv2

    rgb = portrait_rgb
    if kind == "cut by the border":
        rgb = np.ascontiguousarray(rgb[:, 560:])  # the face's left two thirds are gone
    elif kind == "tilted 45 degrees":
        h, w = rgb.shape[:2]
        turn = cv2.getRotationMatrix2D((w / 2, h / 2), 45, 1.0)
        rgb = cv2.warpAffine(rgb, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
    elif kind == "upside down":
        rgb = np.ascontiguousarray(rgb[::-1])
    else:
        rgb = np.full_like(rgb, 128)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    with pytest.raises(InvalidImageError, match=message):
        register("face", path, voice_wav)
    assert "face" not in list_avatars()


@pytest.mark.slow  # registers avatars (mediapipe) in a subprocess
def test_register_on_a_full_disk_is_one_line(
    data_dir: Path, voice_wav: Path, tmp_path: Path, portrait_rgb: np.ndarray
) -> None:
    photo = tmp_path / "me.png"
    Image.fromarray(portrait_rgb).save(photo)
    store = tmp_path / "store"
    proc = _cli(
        "register",
        "me",
        "--image",
        str(photo),
        "--voice",
        str(voice_wav),
        data_dir=store,
        preexec=_limit_file_size(200_000),  # the 30 s voice.wav is ~1.3 MB
    )
    assert proc.returncode == 2, proc.stderr
    _one_clear_line(proc.stderr, "could not save the avatar")
    assert list((store / "avatars").iterdir()) == []


@pytest.mark.slow  # speaks and renders in a subprocess
def test_say_on_a_full_disk_is_one_line(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    proc = _cli(
        "say",
        "Hello friend, this sentence makes a video too big for the disk.",
        "-o",
        str(out),
        data_dir=data_dir,
        preexec=_limit_file_size(60_000),
    )
    assert proc.returncode == 2, proc.stderr
    _one_clear_line(proc.stderr, "could not write")
    assert list(tmp_path.iterdir()) == []


_SIGNAL_AT_SAVE = """
import os, signal, sys
from realtime_avatar.avatars import registry
from realtime_avatar import cli
write = registry._write_atomically
def at_manifest(path, data):  # every file but the manifest is written: the worst moment
    os.kill(os.getpid(), signal.{signal})
    return write(path, data)
registry._write_atomically = at_manifest
given = sys.argv
sys.argv = ["avatar", "register", "me", "--image", given[1], "--voice", given[2]]
sys.argv += ["--force"] if given[3:] else []
cli.main()
"""


def _age(folder: Path, seconds: float) -> None:
    """Make a folder look ``seconds`` old."""
    stamp = time.time() - seconds
    os.utime(folder, (stamp, stamp))


def _register_signalled(
    sig: str, photo: Path, voice: Path, store: Path, force: bool = False
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AVATAR_DATA_DIR=str(store))
    args = [str(photo), str(voice)] + (["force"] if force else [])
    return subprocess.run(
        [sys.executable, "-c", _SIGNAL_AT_SAVE.replace("{signal}", sig), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.slow  # registers avatars (mediapipe) in subprocesses
def test_signals_during_register_leave_whole_avatars_only(
    data_dir: Path, voice_wav: Path, tmp_path: Path, portrait_rgb: np.ndarray
) -> None:
    photo = tmp_path / "me.png"
    Image.fromarray(portrait_rgb).save(photo)
    store = tmp_path / "store"
    root = store / "avatars"

    # SIGTERM at the save step: cleaned up like Ctrl-C, a clear line, status 143.
    term = _register_signalled("SIGTERM", photo, voice_wav, store)
    assert term.returncode == 143, term.stderr
    assert "terminated" in term.stderr and "Traceback" not in term.stderr
    assert list(root.iterdir()) == []

    # SIGKILL at the same moment: a hidden folder with every file but the manifest is left;
    # it is never listed and the next command removes it.
    kill = _register_signalled("SIGKILL", photo, voice_wav, store)
    assert kill.returncode == -signal.SIGKILL
    left = list(root.iterdir())
    assert [p.name.startswith(".me-") for p in left] == [True]
    _age(left[0], registry.DEAD_OWNER_GRACE_S + 1)  # past the grace for other namespaces
    listed = _cli("list", data_dir=store)
    assert listed.returncode == 0 and "me" not in listed.stdout.split()
    assert list(root.iterdir()) == []

    # A --force replace killed at the save step keeps the old avatar byte-identical.
    done = _cli("register", "me", "--image", str(photo), "--voice", str(voice_wav), data_dir=store)
    assert done.returncode == 0, done.stderr
    before = {p.name: p.read_bytes() for p in (root / "me").iterdir()}
    for sig in ("SIGTERM", "SIGKILL"):
        _register_signalled(sig, photo, voice_wav, store, force=True)
        for folder in root.iterdir():
            _age(folder, registry.DEAD_OWNER_GRACE_S + 1)
        _cli("list", data_dir=store)
        assert sorted(p.name for p in root.iterdir()) == ["me"]
        assert {p.name: p.read_bytes() for p in (root / "me").iterdir()} == before


@pytest.mark.slow  # renders in a subprocess
@pytest.mark.parametrize(
    ("sig", "status", "line"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")]
)
def test_say_stopped_says_so(
    data_dir: Path, tmp_path: Path, sig: str, status: int, line: str
) -> None:
    script = tmp_path / "long.txt"
    script.write_text(" ".join(["This is a long script that takes a while to render."] * 40))
    out = tmp_path / "long.mp4"
    env = dict(os.environ, AVATAR_DATA_DIR=str(data_dir))
    proc = subprocess.Popen(
        [*PYTHON_AVATAR, "say", "--text-file", str(script), "-o", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".long-*.mp4.part")):
        time.sleep(0.1)
    assert list(tmp_path.glob(".long-*.mp4.part")), "rendering never started"
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert f"{line}: nothing was written" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.txt"]


@pytest.mark.slow  # speaks (espeak-ng) and renders
@pytest.mark.parametrize(("text", "lang"), [("Привет, как дела?", "ru"), ("Hello friend.", "en")])
def test_say_auto_speaks_the_script_language(
    default_avatar: object, tmp_path: Path, text: str, lang: str
) -> None:
    from realtime_avatar.engine.script import render_script

    result = render_script(text, tmp_path / "out.mp4", language="auto")
    assert result.languages == (lang,)
    assert result.duration_s < 4.0  # spoken as words, not spelled out letter by letter
