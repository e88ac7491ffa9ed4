"""The page as a product, in real headless Chromium: make an avatar from a photo and a
recorded voice, talk to it, type to it, see captions; each bad input shows its message
in the page and leaves nothing on disk.

Chromium's fake microphone plays a WAV: Piper reading the shown text for the voice
sample, a spoken question for the call, silence for the silent recording. Photos are the
public-domain NASA portrait from scikit-image (one face), two of it side by side, and a
plain gradient (no face). Set ``AVATAR_SCREENSHOTS_DIR`` to keep the screenshots
(``docs/img`` holds the ones in the docs).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from realtime_avatar.avatars.registry import default_portrait

from .helpers import CHROMIUM, chromium_args
from .live_server import running_server
from .test_live import spoken

pytestmark = pytest.mark.slow

RATE = 48_000
READING = (
    "Hello! This is my voice. I like long walks, good coffee and talking with friends. "
    "Today the weather is bright and clear."
)
PERSONA = "# Ana\nI am Ana, a pilot from Houston. I love flying, chess and jazz.\n"
WAIT_MS = 60_000  # a guard against a hang, not a speed requirement
# Every progress line the page shows while the avatar is made.
STEPS_SEEN = """() => {
  window.stepsSeen = [];
  const status = document.getElementById('make-status');
  new MutationObserver(() => window.stepsSeen.push(status.textContent))
    .observe(status, {childList: true, characterData: true, subtree: true});
}"""


@pytest.fixture(scope="module")
def home(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own data directory: the default avatar copied in, nothing else."""
    target = tmp_path_factory.mktemp("page-data")
    shutil.copytree(data_dir / "avatars" / "default", target / "avatars" / "default")
    return target


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[str]:
    with running_server(home) as base:
        yield base


def _on_disk(home: Path) -> set[str]:
    """Everything under the avatars folder, hidden staging folders included."""
    root = home / "avatars"
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _wav(path: Path, *parts: np.ndarray) -> Path:
    sf.write(path, np.concatenate(parts).astype(np.float32), RATE, subtype="PCM_16")
    return path


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def _jpeg(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=92)
    return out.getvalue()


def _file(name: str, data: bytes, mime: str) -> dict[str, Any]:
    return {"name": name, "mimeType": mime, "buffer": data}


def _keep(shot: Path, name: str) -> None:
    folder = os.environ.get("AVATAR_SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(folder) / name)


@contextmanager
def _browser(mic_wav: Path, loop: bool = True) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    args = chromium_args(mic_wav, loop)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


def _open(browser: Any, base: str, width: int = 1280, height: int = 800) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base)
    page.wait_for_selector("#avatar option", state="attached", timeout=30_000)
    page.wait_for_selector("#avatar-list li", timeout=30_000)
    return page, errors


def _record(page: Any, seconds: float) -> str:
    """Record the fake microphone for ``seconds``; the page's verdict on it."""
    page.click("#record")
    page.wait_for_function(
        "document.getElementById('record').getAttribute('aria-pressed') === 'true'",
        timeout=10_000,
    )
    page.wait_for_timeout(int(seconds * 1000))
    page.click("#record")
    page.wait_for_selector("#voice-warn:not([hidden])", timeout=10_000)
    return str(page.get_attribute("#voice-warn", "data-kind"))


def _field_error(page: Any, field: str) -> str:
    page.wait_for_selector(f"#err-{field}:not([hidden])", timeout=WAIT_MS)
    return str(page.inner_text(f"#err-{field}"))


def test_make_an_avatar_then_talk_type_and_see_captions(
    server: str, home: Path, tmp_path: Path
) -> None:
    reading = _wav(tmp_path / "reading.wav", _silence(0.5), spoken(READING), _silence(1.0))
    photo = _jpeg(default_portrait())
    # ------------------------------------------------ make it: photo + recorded voice
    with _browser(reading) as browser:
        page, errors = _open(browser, server)
        page.fill("#new-name", "ana")
        page.set_input_files("#photo", files=[_file("me.jpg", photo, "image/jpeg")])
        page.wait_for_selector("#photo-preview:not([hidden])", timeout=10_000)
        verdict = _record(page, 7.0)
        assert verdict == "ok", page.inner_text("#voice-warn")
        page.fill("#persona", PERSONA)
        shot = tmp_path / "make.png"
        page.locator("#make").screenshot(path=str(shot))
        _keep(shot, "page-make-avatar.png")
        page.evaluate(STEPS_SEEN)
        page.click("#create")
        page.wait_for_function(
            "/Made Ana/.test(document.getElementById('make-status').textContent)",
            timeout=WAIT_MS,
        )
        seen = page.evaluate("window.stepsSeen")
        assert any(s.startswith("Uploading") for s in seen), seen  # progress, step by step
        assert "Finding the face…" in seen and "Saving…" in seen, seen
        assert page.input_value("#avatar") == "ana"  # selected at once
        assert page.locator("#avatar-list li[data-name='ana']").count() == 1
        assert not errors, errors
    assert (home / "avatars" / "ana" / "manifest.json").is_file()
    assert not [p for p in (home / "avatars").iterdir() if p.name.startswith(".")]

    # ------------------------------------------------ talk to it, then type over it
    # The question repeats (the fake microphone loops), so one lost while the call was
    # still connecting is asked again; once answered, the microphone is muted.
    question = _wav(
        tmp_path / "question.wav", _silence(3.0), spoken("What is your name?"), _silence(15)
    )
    with _browser(question) as browser:
        page, errors = _open(browser, server)
        page.select_option("#avatar", "ana")
        page.click("#mic")
        page.wait_for_function(
            "[...document.querySelectorAll('#transcript li.user')].some(li => /name/i.test(li.textContent))",
            timeout=2 * WAIT_MS,
        )
        page.wait_for_function(
            "document.getElementById('status').dataset.state === 'speaking'", timeout=WAIT_MS
        )
        page.wait_for_selector("#captions:not([hidden])", timeout=10_000)
        assert page.inner_text("#captions").strip()
        page.click("#mic")  # mute: the looping question is heard no more
        assert "muted" in str(page.get_attribute("#mic", "class"))
        # Typing over the avatar stops it; Enter sends the message as a turn.
        page.fill("#message", "Where are you from?")
        page.wait_for_selector("#transcript li.avatar.interrupted", timeout=10_000)
        page.press("#message", "Enter")
        page.wait_for_function(
            "[...document.querySelectorAll('#transcript li.user')].some(li => /where are you from/i.test(li.textContent))",
            timeout=WAIT_MS,
        )
        page.wait_for_function(
            "[...document.querySelectorAll('#transcript li.avatar:not(.interrupted) .text')].some(s => /houston/i.test(s.textContent))",
            timeout=WAIT_MS,
        )
        page.wait_for_function(
            "document.getElementById('status').dataset.state === 'speaking'", timeout=WAIT_MS
        )
        page.wait_for_selector("#captions:not([hidden])", timeout=10_000)
        page.wait_for_timeout(600)
        shot = tmp_path / "desktop.png"
        page.screenshot(path=str(shot))
        _keep(shot, "page-desktop.png")
        # Captions off: they stay hidden while the avatar speaks.
        page.uncheck("#captions-toggle")
        assert page.is_hidden("#captions")
        page.check("#captions-toggle")
        page.click("#hangup")
        assert not errors, errors

    # ------------------------------------------------ a phone in portrait (a quiet room)
    quiet = _wav(tmp_path / "quiet.wav", _silence(5))
    with _browser(quiet) as browser:
        phone, errors = _open(browser, server, width=390, height=844)
        phone.select_option("#avatar", "ana")
        phone.fill("#message", "Hello! What do you like?")
        phone.press("#message", "Enter")
        phone.wait_for_function(
            "document.getElementById('status').dataset.state === 'speaking'", timeout=WAIT_MS
        )
        phone.wait_for_selector("#captions:not([hidden])", timeout=10_000)
        video = phone.locator(".video-wrap").bounding_box()
        chat = phone.locator(".transcript-pane").bounding_box()
        assert video and chat and video["y"] + video["height"] <= chat["y"]  # video on top
        assert video["width"] <= 390
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
        phone.wait_for_timeout(600)
        shot = tmp_path / "phone.png"
        phone.screenshot(path=str(shot))
        _keep(shot, "page-phone.png")
        assert not errors, errors


def test_each_bad_input_shows_its_message_and_leaves_nothing(
    server: str, home: Path, tmp_path: Path
) -> None:
    silent = _wav(tmp_path / "silent.wav", _silence(12))
    portrait = default_portrait()
    one_face = _file("me.jpg", _jpeg(portrait), "image/jpeg")
    two_faces = _file(
        "us.jpg", _jpeg(np.concatenate([portrait, portrait[:, ::-1]], axis=1)), "image/jpeg"
    )
    ramp = np.linspace(0, 255, 800, dtype=np.float32)
    gradient = np.stack([np.tile(ramp, (800, 1))] * 3, axis=-1).astype(np.uint8)
    no_face = _file("wall.jpg", _jpeg(gradient), "image/jpeg")
    text_jpg = _file("notes.jpg", b"Shopping list: eggs, milk, bread.\n" * 50, "image/jpeg")
    huge = tmp_path / "huge.jpg"  # by path: the browser reads it, nothing is copied over
    huge.write_bytes(b"\xff\xd8\xff" + b"\0" * (30 * 1024 * 1024))
    voice_path = home / "avatars" / "default" / "voice.wav"
    voice = _file("me.wav", voice_path.read_bytes(), "audio/wav")
    before = _on_disk(home)

    with _browser(silent) as browser:
        page, errors = _open(browser, server)

        def attempt(photo: dict[str, Any] | Path, field: str, *, record_s: float = 0.0) -> str:
            page.reload()
            page.wait_for_selector("#avatar-list li", timeout=30_000)
            page.fill("#new-name", "tester")
            page.set_input_files("#photo", files=[photo], timeout=WAIT_MS)
            if record_s:
                verdict = _record(page, record_s)
                assert "silent" in verdict, page.inner_text("#voice-warn")
            else:
                page.set_input_files("#voice-file", files=[voice])
            page.click("#create")
            message = _field_error(page, field)
            assert page.is_enabled("#create")  # ready to try again, entries kept
            assert page.input_value("#new-name") == "tester"
            assert _on_disk(home) == before, "something was left on disk"
            return message

        assert "no face" in attempt(no_face, "image")
        assert "2 faces" in attempt(two_faces, "image")
        message = attempt(text_jpg, "image")
        assert "notes.jpg" in message and "not an image" in message
        message = attempt(huge, "image")
        assert "30.0 MB" in message and "15.0 MB limit" in message
        assert "silent" in attempt(one_face, "voice", record_s=4.0)
        # Nothing chosen at all: every field says what it needs, and nothing is sent.
        page.reload()
        page.wait_for_selector("#avatar-list li", timeout=30_000)
        page.fill("#new-name", "")  # a reload may bring back what was typed
        page.click("#create")
        for field in ("name", "image", "voice"):
            assert _field_error(page, field)
        shot = tmp_path / "errors.png"
        page.locator("#make").screenshot(path=str(shot))
        _keep(shot, "page-make-errors.png")
        assert not errors, errors
    assert _on_disk(home) == before


def test_delete_asks_first_and_the_default_has_no_delete(
    server: str, home: Path, tmp_path: Path
) -> None:
    folder = home / "avatars" / "doomed"
    shutil.copytree(home / "avatars" / "default", folder)
    quiet = _wav(tmp_path / "quiet.wav", _silence(3))
    with _browser(quiet) as browser:
        page, errors = _open(browser, server)
        assert page.locator("#avatar-list li[data-name='default'] .delete").count() == 0
        item = page.locator("#avatar-list li[data-name='doomed']")
        item.locator(".delete").click()
        assert folder.is_dir()  # asked, not done
        item.get_by_text("Cancel").click()
        assert folder.is_dir()
        item.locator(".delete").click()
        item.locator(".confirm-delete").click()
        page.wait_for_selector("#avatar-list li[data-name='doomed']", state="detached")
        assert not folder.exists()
        assert "doomed" not in page.eval_on_selector_all(
            "#avatar option", "os => os.map(o => o.value)"
        )
        assert not errors, errors


def test_every_control_is_reachable_by_keyboard_with_visible_focus(
    server: str, tmp_path: Path
) -> None:
    quiet = _wav(tmp_path / "quiet.wav", _silence(3))
    with _browser(quiet) as browser:
        page, errors = _open(browser, server)
        reached: dict[str, str] = {}
        for _ in range(40):
            page.keyboard.press("Tab")
            focused = page.evaluate(
                """() => { const el = document.activeElement;
                           const style = getComputedStyle(el);
                           return [el.id || el.className, style.outlineStyle, style.outlineWidth]; }"""
            )
            reached.setdefault(focused[0], f"{focused[1]} {focused[2]}")
        wanted = [
            "mic", "avatar", "language", "dialogue", "captions-toggle", "message", "send",
            "new-name", "photo-pick", "record", "voice-file", "persona", "create",
        ]  # fmt: skip
        missing = [name for name in wanted if name not in reached]
        assert not missing, (missing, list(reached))
        hidden_focus = {k: v for k, v in reached.items() if k in wanted and v.startswith("none")}
        assert not hidden_focus, hidden_focus  # every control shows where the focus is
        assert not errors, errors


# Speech-like bursts (0.3 s of tone, 0.2 s of silence) at 48 kHz: gain and length vary.
VOICE_CHECK = """([gain, seconds, clip]) => {
  const rate = 48000, pcm = new Float32Array(Math.round(seconds * rate));
  for (let i = 0; i < pcm.length; i++) {
    const on = (i / rate) % 0.5 < 0.3;
    const x = on ? gain * Math.sin(2 * Math.PI * 180 * i / rate) : 0.0005 * Math.sin(i);
    pcm[i] = Math.max(-clip, Math.min(clip, x));
  }
  const check = window.avatarVoiceCheck;
  return check.voiceWarnings(check.analyse(pcm, rate)).map(([kind]) => kind);
}"""


def test_the_recording_check_warns_before_sending(server: str, tmp_path: Path) -> None:
    """The page's own measures (as media/audio.py's): quiet, clipped, short, silent."""
    quiet = _wav(tmp_path / "quiet.wav", _silence(3))
    with _browser(quiet) as browser:
        page, errors = _open(browser, server)
        assert page.evaluate(VOICE_CHECK, [0.3, 10, 1]) == []
        assert page.evaluate(VOICE_CHECK, [0.01, 10, 1]) == ["quiet"]
        assert page.evaluate(VOICE_CHECK, [3.0, 10, 1]) == ["clipped"]
        assert page.evaluate(VOICE_CHECK, [0.3, 2, 1]) == ["short"]
        assert page.evaluate(VOICE_CHECK, [0.0, 10, 1]) == ["silent"]
        assert not errors, errors
