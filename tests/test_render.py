"""The 2D renderer and the animator: the face moves where it should and nowhere else."""

from __future__ import annotations

import numpy as np
import pytest

from realtime_avatar.animate.idle import IdleMotion
from realtime_avatar.animate.mouth import AudioAnimator, PhonemeAnimator
from realtime_avatar.animate.visemes import viseme
from realtime_avatar.face.landmarks import (
    EYE_A_LOWER,
    EYE_A_UPPER,
    LIP_LOWER_OUTER,
    LIP_UPPER_OUTER,
)
from realtime_avatar.frames import FaceParams, PhonemeTiming, Speech
from realtime_avatar.render.mesh2d import Mesh2DRenderer


@pytest.fixture(scope="module")
def renderer(default_avatar) -> Mesh2DRenderer:
    return Mesh2DRenderer(default_avatar.face_rgb, default_avatar.landmarks)


def _box(landmarks: np.ndarray, idx: list[int], pad_x: int, pad_y: int) -> tuple[slice, slice]:
    pts = landmarks[idx]
    x0, y0 = pts.min(axis=0).astype(int) - [pad_x, pad_y]
    x1, y1 = pts.max(axis=0).astype(int) + [pad_x, pad_y]
    return slice(y0, y1), slice(x0, x1)


@pytest.mark.slow  # the default avatar (mediapipe)
def test_open_jaw_darkens_the_mouth_only(renderer: Mesh2DRenderer, default_avatar) -> None:
    rest = renderer.render(FaceParams()).astype(np.int16)
    open_ = renderer.render(FaceParams(jaw_open=0.9)).astype(np.int16)
    mouth = _box(default_avatar.landmarks, LIP_UPPER_OUTER + LIP_LOWER_OUTER, 10, 30)
    dark_rest = np.sum(rest[mouth].mean(axis=2) < 70)
    dark_open = np.sum(open_[mouth].mean(axis=2) < 70)
    assert dark_open > dark_rest + 300
    # Far from the face (the image corners) nothing moves.
    assert np.array_equal(rest[:40, :40], open_[:40, :40])
    assert np.array_equal(rest[-40:, -40:], open_[-40:, -40:])


@pytest.mark.slow  # the default avatar (mediapipe)
def test_rest_face_is_close_lipped(renderer: Mesh2DRenderer, default_avatar) -> None:
    rest = renderer.render(FaceParams())
    mouth = _box(default_avatar.landmarks, LIP_UPPER_OUTER + LIP_LOWER_OUTER, 4, 4)
    assert np.sum(rest[mouth].mean(axis=2) < 70) < 150


@pytest.mark.slow  # the default avatar (mediapipe)
def test_spread_and_round_change_mouth_width(renderer: Mesh2DRenderer, default_avatar) -> None:
    base = renderer.render(FaceParams(jaw_open=0.4)).astype(np.float32)
    wide = renderer.render(FaceParams(jaw_open=0.4, lip_spread=1.0)).astype(np.float32)
    narrow = renderer.render(FaceParams(jaw_open=0.4, lip_round=1.0)).astype(np.float32)

    def dark_width(img: np.ndarray) -> int:
        mouth = _box(default_avatar.landmarks, LIP_UPPER_OUTER + LIP_LOWER_OUTER, 20, 30)
        cols = (img[mouth].mean(axis=2) < 70).any(axis=0)
        return int(np.flatnonzero(cols).ptp()) if cols.any() else 0

    assert dark_width(wide) > dark_width(base) > dark_width(narrow)


@pytest.mark.slow  # the default avatar (mediapipe)
def test_blink_closes_the_eyes(renderer: Mesh2DRenderer, default_avatar) -> None:
    eye = _box(default_avatar.landmarks, EYE_A_UPPER + EYE_A_LOWER, 2, 2)
    open_eye = renderer.render(FaceParams())[eye].astype(np.float32)
    closed = renderer.render(FaceParams(blink=1.0))[eye].astype(np.float32)
    # The dark iris and pupil are covered by the lid; only the lash line stays dark.
    assert np.sum(closed.mean(axis=2) < 80) < 0.5 * np.sum(open_eye.mean(axis=2) < 80)


@pytest.mark.slow  # the default avatar (mediapipe)
def test_head_motion_has_no_seam(renderer: Mesh2DRenderer) -> None:
    rest = renderer.render(FaceParams()).astype(np.float32)
    moved = renderer.render(FaceParams(head_roll_deg=2.5, head_dx_px=4, head_dy_px=3)).astype(
        np.float32
    )
    diff = np.abs(moved - rest).mean(axis=2)
    assert diff.max() > 20  # the head did move
    # No tearing: neighbouring pixels of the warped frame never jump more than the photo does.
    grad_rest = np.abs(np.diff(rest.mean(axis=2), axis=0)).max()
    grad_moved = np.abs(np.diff(moved.mean(axis=2), axis=0)).max()
    assert grad_moved <= grad_rest * 1.1


@pytest.mark.slow  # the default avatar (mediapipe)
def test_idle_is_alive_but_calm(renderer: Mesh2DRenderer) -> None:
    idle = IdleMotion(seed=3)
    params = [idle.params(i) for i in range(250)]  # ten seconds
    blinks = sum(
        1 for a, b in zip(params, params[1:], strict=False) if a.blink == 0 and b.blink > 0
    )
    assert 1 <= blinks <= 6
    rolls = np.array([p.head_roll_deg for p in params])
    assert 0.3 < rolls.ptp() < 5.0
    assert all(p.jaw_open == 0 for p in params)
    frames = [renderer.render(p) for p in params[::25]]
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])


def test_visemes() -> None:
    assert viseme("m") == (0.0, 0.0, 0.0, 1.0)
    assert viseme("ˈɑː")[0] > 0.7
    assert viseme("uː")[2] > 0.8
    assert viseme("iː")[1] > 0.6
    assert viseme("aɪ")[0] > viseme("ɪ")[0]
    assert viseme("a1")[0] > 0.7  # tone numbers (Mandarin) are ignored
    assert viseme("") == (0.0, 0.0, 0.0, 0.0)


def test_phoneme_animator_follows_timings() -> None:
    rate = 22050
    t = np.arange(int(rate * 1.2)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    phonemes = [
        PhonemeTiming("m", 0.0, 0.3),
        PhonemeTiming("ɑː", 0.3, 0.7),
        PhonemeTiming("p", 0.7, 0.9),
        PhonemeTiming("uː", 0.9, 1.2),
    ]
    speech = Speech(0, "ma pu", "en", pcm, rate, phonemes)
    track = PhonemeAnimator().mouth_track(speech, 30)
    assert track.shape == (30, 4)
    assert track[12, 0] > 0.4 and track[2, 0] < 0.15  # ɑ open, m closed
    assert track[20, 3] > 0.5  # p pressed
    assert track[27, 2] > 0.5  # u rounded
    fallback = AudioAnimator().mouth_track(Speech(0, "", "en", pcm * (t < 0.6), rate), 30)
    assert fallback[5, 0] > fallback[25, 0] + 0.3


@pytest.mark.slow  # Piper
def test_trim_leading_silence_keeps_timings_aligned() -> None:
    from realtime_avatar.engine.voice import trim_leading_silence
    from realtime_avatar.tts.registry import get_synthesizer

    speech = get_synthesizer("en").synthesize("Hello there.", "en")
    # Piper's durations are sampled (noise_w), so the lead-in varies run to run (23-60 ms):
    # keep half of whatever this run produced.
    lead_in = speech.phonemes[0]
    assert lead_in.phoneme == "_" and lead_in.end_s > 0.01
    keep = lead_in.end_s / 2
    trimmed = trim_leading_silence(speech, keep)
    cut = speech.duration_s - trimmed.duration_s
    assert abs(cut - lead_in.end_s / 2) < 0.001
    assert abs(trimmed.phonemes[0].end_s - keep) < 0.001
    assert abs(trimmed.phonemes[-1].end_s - (speech.phonemes[-1].end_s - cut)) < 0.001
    assert np.array_equal(trimmed.pcm, speech.pcm[len(speech.pcm) - len(trimmed.pcm) :])


@pytest.mark.slow  # Piper
def test_trim_trailing_silence_shortens_only_the_closing_pause() -> None:
    from realtime_avatar.engine.voice import trim_trailing_silence
    from realtime_avatar.tts.registry import get_synthesizer

    speech = get_synthesizer("en").synthesize("Sure,", "en")
    closing = speech.phonemes[-1]
    # Sampled durations (noise_w): the closing pause is 0.22-0.30 s over 40 runs.
    assert closing.phoneme == "_" and closing.end_s - closing.start_s > 0.15
    trimmed = trim_trailing_silence(speech, 0.1)
    assert abs(trimmed.duration_s - (closing.start_s + 0.1)) < 0.001
    assert trimmed.phonemes[:-1] == speech.phonemes[:-1]
    assert abs(trimmed.phonemes[-1].end_s - trimmed.duration_s) < 0.001
    assert np.array_equal(trimmed.pcm, speech.pcm[: len(trimmed.pcm)])
    assert trim_trailing_silence(trimmed, 0.3) is trimmed  # nothing more to cut


@pytest.mark.slow  # the default avatar (mediapipe), Piper
def test_frame_clock_moves_on_when_an_answer_is_cut_off(default_avatar) -> None:  # type: ignore[no-untyped-def]
    # The clock names frames to the client (first/last frame of a turn): a barge-in that
    # abandons an utterance after one frame must not make the next frame reuse its index.
    from realtime_avatar.render.registry import create_renderer
    from realtime_avatar.settings import Settings
    from realtime_avatar.tts.registry import get_synthesizer

    renderer = create_renderer("mesh2d", default_avatar.face, Settings())
    assert renderer.next_frame().index == 0
    renderer.push(get_synthesizer("en").synthesize("Hello there.", "en"))
    assert renderer.next_frame().index == 1
    spoken = renderer.next_frame()
    assert spoken.index == 2 and spoken.speaking
    renderer.clear()  # interrupted
    idle = renderer.next_frame()
    assert idle.index == 3 and not idle.speaking
