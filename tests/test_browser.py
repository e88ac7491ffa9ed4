"""The page in real headless Chromium with a fake microphone fed from a WAV made by Piper.

Slow (starts a browser and the server); run in CI with the rest. The screenshot is saved
next to the test's data for a person to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime_avatar.face.landmarks import LIP_LOWER_OUTER, LIP_UPPER_OUTER

from .helpers import CHROMIUM, chromium_args
from .live_server import running_server
from .test_live import spoken

pytestmark = pytest.mark.slow

RATE = 48_000

# Collects, in the page, frame timing (requestVideoFrameCallback) and the mouth's darkness
# (canvas readback of the mouth box) ten times a second.
PROBE = """
([box]) => {
  const v = document.getElementById('avatar-video');
  window.probe = {frames: [], mouth: []};
  const tick = (now) => { window.probe.frames.push(now); v.requestVideoFrameCallback(tick); };
  v.requestVideoFrameCallback(tick);
  const c = document.createElement('canvas'); c.width = 512; c.height = 512;
  const g = c.getContext('2d', {willReadFrequently: true});
  setInterval(() => {
    if (!v.videoWidth) return;
    g.drawImage(v, 0, 0, 512, 512);
    const d = g.getImageData(box[0], box[1], box[2] - box[0], box[3] - box[1]).data;
    let dark = 0;
    for (let i = 0; i < d.length; i += 4) if ((d[i] + d[i+1] + d[i+2]) / 3 < 70) dark++;
    window.probe.mouth.push([performance.now(), dark]);
  }, 100);
}
"""


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[str]:
    with running_server(data_dir) as base:
        yield base


def _mic_wav(path: Path) -> tuple[float, float]:
    """Silence, a question, a pause, then a second question that lands mid-answer."""
    q1 = spoken("What is your name?")
    q2 = spoken("Stop. Do you speak Spanish?")
    lead, gap = np.zeros(int(2.5 * RATE), np.float32), np.zeros(int(2.2 * RATE), np.float32)
    audio = np.concatenate([lead, q1, gap, q2, np.zeros(int(8 * RATE), np.float32)])
    sf.write(path, audio, RATE, subtype="PCM_16")
    return len(lead) / RATE, (len(lead) + len(q1) + len(gap)) / RATE


def test_page_conversation_in_chromium(server: str, default_avatar, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    wav = tmp_path / "mic.wav"
    _mic_wav(wav)
    pts = default_avatar.landmarks[LIP_UPPER_OUTER + LIP_LOWER_OUTER]
    box = [
        int(pts[:, 0].min() - 4),
        int(pts[:, 1].min() - 4),
        int(pts[:, 0].max() + 4),
        int(pts[:, 1].max() + 30),
    ]
    args = chromium_args(wav, loop=False)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        page.wait_for_selector("#avatar option", state="attached", timeout=15_000)
        page.click("#mic")
        page.wait_for_function(
            "document.getElementById('status').dataset.state.startsWith('listening')",
            timeout=30_000,
        )
        page.evaluate(PROBE, [box])
        page.wait_for_function(
            "[...document.querySelectorAll('#transcript li.user')].some(li => /name/i.test(li.textContent))",
            timeout=40_000,
        )
        page.wait_for_function(
            "[...document.querySelectorAll('#transcript li.avatar .text')].some(s => s.textContent.length > 3)",
            timeout=30_000,
        )
        page.wait_for_function(
            "document.getElementById('status').dataset.state === 'speaking'", timeout=30_000
        )
        page.wait_for_timeout(1200)
        screenshot = tmp_path / "page.png"
        page.screenshot(path=str(screenshot))
        page.wait_for_function(
            "[...document.querySelectorAll('#transcript li.user')].some(li => /spanish/i.test(li.textContent))",
            timeout=40_000,
        )
        page.wait_for_timeout(1500)
        probe = page.evaluate("window.probe")
        stats = page.evaluate("""async () => {
            const report = await window.avatarPeer.getStats();
            const out = {energy: 0, framesDecoded: 0};
            report.forEach((r) => {
              if (r.type === 'inbound-rtp' && r.kind === 'audio') out.energy = r.totalAudioEnergy || 0;
              if (r.type === 'inbound-rtp' && r.kind === 'video') out.framesDecoded = r.framesDecoded;
            });
            return out; }""")
        audio_ok = page.evaluate("""() => {
            const a = document.getElementById('avatar-audio');
            return !!(a.srcObject && a.srcObject.getAudioTracks().length && a.srcObject.getAudioTracks()[0].readyState === 'live');
        }""")
        interrupted = page.evaluate(
            "document.querySelectorAll('#transcript li.avatar.interrupted').length"
        )
        browser.close()
    shutil.copy(screenshot, Path(default_avatar.path).parent.parent / "page.png")
    assert not errors, errors
    assert stats["energy"] > 0.01, stats  # the avatar's voice arrived
    assert stats["framesDecoded"] > 100, stats
    assert audio_ok
    frames = np.array(probe["frames"])
    span = (frames[-1] - frames[0]) / 1000.0
    fps = (len(frames) - 1) / span
    assert fps >= 24.0, fps
    mouth = np.array(probe["mouth"])
    assert mouth[:, 1].max() > np.percentile(mouth[:5, 1], 95) + 60, mouth[:, 1]
    assert interrupted >= 1


def test_page_shows_a_clear_error_with_retry(data_dir: Path, tmp_path: Path) -> None:
    """A refused call (here: no free session) is an error state with a retry, not a spinner."""
    from playwright.sync_api import sync_playwright

    args = [
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with running_server(data_dir, AVATAR_MAX_SESSIONS="0") as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(base)
        page.wait_for_selector("#avatar option", state="attached", timeout=15_000)
        page.click("#mic")
        page.wait_for_selector("#error:not([hidden])", timeout=15_000)
        assert "busy" in page.inner_text("#error-text")
        assert page.get_attribute("#status", "data-state") == "error"
        assert page.is_visible("#retry") and page.is_enabled("#mic")
        pill = page.locator("#status").bounding_box()
        alert = page.locator("#error").bounding_box()
        assert pill and alert and pill["y"] + pill["height"] < alert["y"]  # no overlap
        page.screenshot(path=str(tmp_path / "error.png"))
        browser.close()
