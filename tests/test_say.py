"""`avatar say` end to end with the real models: MP4 validity, lip sync, CLI errors, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from realtime_avatar.constants import FPS
from realtime_avatar.engine.script import render_script

from .helpers import audio_envelope, best_lag, decode_av, ffprobe, mouth_darkness

# Every test registers the default avatar (mediapipe) and speaks with Piper or espeak-ng.
pytestmark = pytest.mark.slow

AVATAR = [sys.executable, "-m", "realtime_avatar.cli"]


def _check_mp4(path: Path) -> dict:
    info = ffprobe(path)
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["audio"]["codec_name"] == "aac"
    assert streams["video"]["r_frame_rate"] == "25/1"
    assert int(streams["video"]["width"]) == 512
    video_s = float(streams["video"]["duration"])
    audio_s = float(streams["audio"]["duration"])
    assert abs(video_s - audio_s) <= 1.0 / FPS, (video_s, audio_s)
    return streams


def test_say_english_mouth_follows_audio(default_avatar, tmp_path: Path) -> None:
    out = tmp_path / "hello.mp4"
    text = (
        "Hello! I am a digital avatar, and my lips move with every word I say. "
        "Papa bought a big map of Panama."
    )
    result = render_script(text, out, language="en")
    assert result.languages == ("en",)
    _check_mp4(out)
    frames, audio, rate = decode_av(out)
    mouth = mouth_darkness(frames, default_avatar.landmarks)
    env = audio_envelope(audio, rate, len(frames))
    assert mouth.max() > 50, "the mouth never opened"
    silent = env < 0.1 * env.max()
    assert mouth[:6].max() < 0.2 * mouth.max(), "the mouth moved before any speech"
    assert mouth[silent].mean() < mouth[~silent].mean()
    lag, corr = best_lag(mouth, env)
    # The mouth must follow the audio closely: positive lag under 80 ms (two frames).
    assert corr > 0.5, corr
    assert 0 <= lag < 2, lag


@pytest.mark.parametrize("stage", ["speech", "encoder"])
def test_say_worker_failure_reaches_the_caller(
    default_avatar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """TTS and encoding run on their own threads: a failure there is raised by render_script,
    no file is left behind, and no worker thread outlives the call."""
    from realtime_avatar.media.mp4 import Mp4Writer
    from realtime_avatar.tts.piper import PiperSynthesizer

    if stage == "speech":
        synthesize = PiperSynthesizer.synthesize

        def broken_synthesize(self, text: str, language: str, turn_id: int = 0):  # type: ignore[no-untyped-def]
            if turn_id == 1:
                raise RuntimeError("broken stage")
            return synthesize(self, text, language, turn_id)

        monkeypatch.setattr(PiperSynthesizer, "synthesize", broken_synthesize)
    else:
        encode = Mp4Writer._encode

        def broken_encode(self, rgb, audio):  # type: ignore[no-untyped-def]
            if self._video_pts == 20:
                raise RuntimeError("broken stage")
            encode(self, rgb, audio)

        monkeypatch.setattr(Mp4Writer, "_encode", broken_encode)
    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="broken stage"):
        render_script("The first sentence is fine. The second one is not.", out, language="en")
    assert not list(tmp_path.iterdir())
    assert not [t for t in threading.enumerate() if t.name in ("say-speech", "mp4-encoder")]


@pytest.mark.parametrize(
    ("lang", "text"),
    [
        ("es", "Hola, ¿cómo estás? Me alegro mucho de verte hoy."),
        ("zh", "你好，我是你的数字分身。今天天气很好。"),
    ],
)
def test_say_other_languages(default_avatar, tmp_path: Path, lang: str, text: str) -> None:
    out = tmp_path / f"{lang}.mp4"
    result = render_script(text, out, language=lang)
    assert result.languages == (lang,)
    _check_mp4(out)
    frames, audio, rate = decode_av(out)
    mouth = mouth_darkness(frames, default_avatar.landmarks)
    env = audio_envelope(audio, rate, len(frames))
    assert mouth.max() > 30
    assert best_lag(mouth, env)[1] > 0.3


def _cli(*args: str, env_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, AVATAR_DATA_DIR=str(env_dir))
    return subprocess.run(
        [*AVATAR, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["say", "Hi there.", "--avatar", "nobody", "-o", "{tmp}/a.mp4"],
            "no avatar named 'nobody'",
        ),
        (["say", "   ", "-o", "{tmp}/a.mp4"], "nothing to say"),
        (["say", "Hi there.", "--lang", "xx", "-o", "{tmp}/a.mp4"], "xx"),
        (["say", "Hi there.", "-o", "/nonexistent-dir/a.mp4"], "does not exist"),
        (["say", "Hi there.", "-o", "{tmp}/a.avi"], ".mp4"),
        (["register", "../evil", "--image", "x.jpg", "--voice", "x.wav"], "invalid avatar name"),
    ],
)
def test_cli_errors_are_one_clear_line(
    data_dir: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = _cli(*args, env_dir=data_dir)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr
    assert "error:" in proc.stderr
    assert not list(tmp_path.glob("*.mp4"))


def test_ctrl_c_leaves_no_partial_file(data_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "long.txt"
    script.write_text(" ".join(["This is a long script that takes a while to render."] * 40))
    out = tmp_path / "long.mp4"
    env = dict(os.environ, AVATAR_DATA_DIR=str(data_dir))
    proc = subprocess.Popen(
        [*AVATAR, "say", "--text-file", str(script), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".long-*.mp4.part")):
        time.sleep(0.2)
    assert list(tmp_path.glob(".long-*.mp4.part")), "rendering never started"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr.decode()
    assert "interrupted: nothing was written" in stderr.decode()
    assert not out.exists()
    assert not list(tmp_path.glob("*.part"))


def test_text_file_and_progress(data_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "script.txt"
    script.write_text("First sentence here. Second one follows!\n\nA third, in a new paragraph.")
    out = tmp_path / "script.mp4"
    proc = _cli("say", "--text-file", str(script), "-o", str(out), "--lang", "en", env_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    assert "100%" in proc.stderr and "3 sentence(s)" in proc.stderr
    _check_mp4(out)
    assert float(ffprobe(out)["format"]["duration"]) > 3.0


def test_say_audio_the_user_brings(default_avatar, data_dir: Path, tmp_path: Path) -> None:
    """--audio animates a recording with no phonemes: the mouth follows its loudness."""
    import soundfile as sf

    from realtime_avatar.tts.registry import get_synthesizer

    speech = get_synthesizer("es").synthesize("Hola, esto es una grabación mía.", "es")
    wav = tmp_path / "mine.wav"
    sf.write(wav, speech.pcm, speech.sample_rate_hz)
    out = tmp_path / "mine.mp4"
    proc = _cli("say", "--audio", str(wav), "-o", str(out), env_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    _check_mp4(out)
    frames, audio, rate = decode_av(out)
    mouth = mouth_darkness(frames, default_avatar.landmarks)
    lag, corr = best_lag(mouth, audio_envelope(audio, rate, len(frames)))
    assert corr > 0.4 and 0 <= lag < 2, (lag, corr)
