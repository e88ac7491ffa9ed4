"""The pipecat face (``realtime_avatar.integrations.pipecat.AvatarVideoService``).

Fast tests drive the service alone with pipecat's own test helper (``run_test``) and a
renderer that reads only audio (``AudioMouthRenderer``: its mouth bar is the frame's
loudness); they run the service's real 25 fps clock for about a second each. The slow test
runs a real pipecat pipeline with the SmallWebRTC transport on loopback, the default
avatar's mesh2d face, and the project's aiortc client on the other end.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="the [pipecat] extra is not installed")

from pipecat.frames.frames import (  # noqa: E402
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection  # noqa: E402
from pipecat.tests.utils import SleepFrame, run_test  # noqa: E402

from realtime_avatar.constants import OUTPUT_RATE_HZ, SAMPLES_PER_FRAME  # noqa: E402
from realtime_avatar.integrations.pipecat import AvatarVideoService, pcm_from_frame  # noqa: E402
from realtime_avatar.media.audio import float_to_int16, resample  # noqa: E402
from realtime_avatar.render.base import FaceImage  # noqa: E402
from realtime_avatar.settings import Settings  # noqa: E402

from .stand_ins import AudioMouthRenderer, bar_height  # noqa: E402

TTS_RATE_HZ = 24_000
ROOT = Path(__file__).resolve().parents[1]


def tone(seconds: float, rate: int = TTS_RATE_HZ, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def tts_frames(pcm: np.ndarray, chunk_s: float = 0.05, rate: int = TTS_RATE_HZ) -> list[Frame]:
    """``pcm`` as a TTS service streams it: small chunks of int16 bytes."""
    data = float_to_int16(pcm)
    step = int(chunk_s * rate)
    frames: list[Frame] = []
    for i in range(0, len(data), step):
        frame = TTSAudioRawFrame(data[i : i + step].tobytes(), rate, 1)
        frame.context_id = "ctx-1"
        frames.append(frame)
    return frames


def service() -> AvatarVideoService:
    face = FaceImage(np.zeros((32, 32, 3), np.uint8), np.zeros((468, 2), np.float32))
    return AvatarVideoService(renderer=AudioMouthRenderer(face, Settings()))


def speech_audio(frames: list[Frame]) -> list[TTSAudioRawFrame]:
    return [f for f in frames if isinstance(f, TTSAudioRawFrame)]


def run(processor: AvatarVideoService, sent: list[Frame], **options: object) -> list[Frame]:
    """The frames that came out downstream of ``processor`` (pipecat's ``run_test``)."""
    down, _ = asyncio.run(run_test(processor, frames_to_send=sent, **options))  # type: ignore[arg-type]
    return list(down)


def test_speech_comes_out_as_paired_frames_at_the_output_rate() -> None:
    pcm = tone(0.3)  # chunks of 50 ms: the service re-cuts them into 40 ms frames
    sent = [TTSStartedFrame(), TextFrame("hello"), *tts_frames(pcm), TTSStoppedFrame()]
    down = run(service(), sent)

    audio = speech_audio(down)
    assert audio, "no speech came out"
    assert all(f.sample_rate == OUTPUT_RATE_HZ and f.num_frames == SAMPLES_PER_FRAME for f in audio)
    assert all(f.context_id == "ctx-1" for f in audio)
    # Exactly the pushed audio, resampled, padded to whole frames: nothing lost or repeated.
    out = np.concatenate([np.frombuffer(f.audio, np.int16) for f in audio])
    expected = float_to_int16(resample(pcm, TTS_RATE_HZ, OUTPUT_RATE_HZ))
    assert len(out) == int(np.ceil(len(expected) / SAMPLES_PER_FRAME)) * SAMPLES_PER_FRAME
    # (pieces are resampled one by one: their edges may differ by a few LSB)
    assert np.corrcoef(out[: len(expected)], expected)[0, 1] > 0.999
    # Each 40 ms of speech comes right after its image, whose mouth is open.
    for i, frame in enumerate(down):
        if isinstance(frame, TTSAudioRawFrame):
            image = down[i - 1]
            assert isinstance(image, OutputImageRawFrame)
            rgb = np.frombuffer(image.image, np.uint8).reshape(image.size[1], image.size[0], 3)
            assert bar_height(rgb) > 0


def test_other_frames_pass_through_untouched_and_in_order() -> None:
    text, started, stopped = TextFrame("hi"), TTSStartedFrame(), TTSStoppedFrame()
    down = run(service(), [started, text, *tts_frames(tone(0.1)), stopped])
    passed = [f for f in down if not isinstance(f, (OutputImageRawFrame, TTSAudioRawFrame))]
    assert passed == [started, text, stopped]
    assert passed[1] is text  # the same object, not a copy
    # TTSStoppedFrame came after the audio, so it leaves after the audio's last frame (the
    # transport reads it as "the bot stopped speaking").
    last_audio = max(i for i, f in enumerate(down) if isinstance(f, TTSAudioRawFrame))
    assert down.index(stopped) > last_audio

    upstream = TextFrame("going up")
    _, up = asyncio.run(
        run_test(
            service(), frames_to_send=[upstream], frames_to_send_direction=FrameDirection.UPSTREAM
        )
    )
    assert list(up) == [upstream]


def test_idle_face_keeps_coming_when_silent() -> None:
    down = run(service(), [SleepFrame(sleep=0.4)])
    images = [f for f in down if isinstance(f, OutputImageRawFrame)]
    assert len(images) >= 5  # 25 fps over 0.4 s, with no speech at all
    assert not speech_audio(down)


@pytest.mark.parametrize("barge_in", [InterruptionFrame, UserStartedSpeakingFrame])
def test_interruption_drops_what_is_held(barge_in: type[Frame]) -> None:
    avatar = service()
    sent = [*tts_frames(tone(3.0)), SleepFrame(sleep=0.3), barge_in(), SleepFrame(sleep=0.3)]
    down = run(avatar, sent)

    cut = next(i for i, f in enumerate(down) if isinstance(f, barge_in))
    before, after = speech_audio(down[:cut]), speech_audio(down[cut:])
    assert before, "speech had not started before the interruption"
    assert len(before) < 75  # 3 s of speech was not all sent
    assert not after, "speech kept coming after the interruption"
    assert any(isinstance(f, OutputImageRawFrame) for f in down[cut:])  # the idle face goes on
    assert not avatar.holding


def test_stereo_frames_are_mixed_to_mono() -> None:
    left = np.full(4, 1000, np.int16)
    right = np.full(4, 3000, np.int16)
    stereo = np.stack([left, right], axis=1).reshape(-1)
    pcm = pcm_from_frame(TTSAudioRawFrame(stereo.tobytes(), 16_000, 2))
    assert pcm.shape == (4,)
    assert np.allclose(pcm, 2000 / 32768)


MOUTH_MARGIN = 40.0  # dark mouth pixels over the idle face's that count as an open mouth


async def talk_and_barge_in(
    bot: Any, question: np.ndarray, barge_in: np.ndarray
) -> tuple[Any, Any, Any]:
    """Ask the bot a question, talk over its answer, listen on: (record, question, barge-in)."""
    from pipecat_call import PipecatCall, wait_until_ready  # examples/

    call = PipecatCall(bot.url, [], measure_mouth=True)
    await call.start()
    try:
        await wait_until_ready(call, face=True)
        await asyncio.sleep(2.0)  # the idle face, before anyone speaks
        assert call.mic is not None
        asked = call.mic.say_now(question)
        deadline = time.monotonic() + 40.0
        while asked.speech_end_s == 0.0 or (
            call.record.first_answer_audio(asked.speech_end_s) is None
        ):
            assert time.monotonic() < deadline, "the bot did not answer within 40 s"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # into the answer (about 4 s long)
        barged = call.mic.say_now(barge_in)
        await asyncio.sleep(4.0)
    finally:
        await call.close()
    return call.record, asked, barged


@pytest.mark.slow
def test_a_pipecat_bot_with_the_face_over_smallwebrtc(data_dir: Path) -> None:
    """Whisper -> rules -> Piper -> AvatarVideoService -> SmallWebRTC -> the aiortc client."""
    sys.path.insert(0, str(ROOT / "examples"))
    from pipecat_call import running_bot

    from realtime_avatar.evaluate.rtc_client import mic_audio

    question = mic_audio("What is your name?")  # answered in about four seconds
    barge_in = mic_audio("Wait, stop please, I have another question.")
    with running_bot(face=True) as bot:
        record, asked, barged = asyncio.run(talk_and_barge_in(bot, question, barge_in))
        interruptions = bot.logged("broadcasting interruption")

    # 25 fps video (a loaded 2-core machine drops a few) and the bot's audio both arrive.
    assert record.fps() > 22
    answer_at = record.first_answer_audio(asked.speech_end_s)
    assert answer_at is not None

    # The mouth moves while the bot speaks and rests while it is silent.
    idle = record.mouth_baseline(asked.speech_start_s)
    talking = [m for t, m in record.video if answer_at < t < barged.speech_start_s]
    silent = [m for t, m in record.video if asked.speech_start_s - 2.0 < t < answer_at - 0.3]
    assert talking and silent
    assert np.mean(np.array(talking) > idle + MOUTH_MARGIN) > 0.3
    assert np.mean(np.array(silent) > idle + MOUTH_MARGIN) < 0.05

    # Talking over it: the bot's interruption (its log) stops the mouth within 300 ms.
    cut = next(t for t in interruptions if t > barged.speech_start_s)
    opened = [t for t, m in record.video if m > idle + MOUTH_MARGIN]
    assert any(cut - 0.5 < t <= cut for t in opened), "it was not talking when interrupted"
    # Until the bot answers the barge-in itself (its next audio): that answer moves the mouth.
    next_answer = record.first_answer_audio(max(barged.speech_end_s, cut + 0.3))
    until = min(cut + 3.0, next_answer - 0.2) if next_answer is not None else cut + 3.0
    last_open = max(t for t in opened if t < until)
    assert last_open - cut < 0.3, f"the mouth moved {1000 * (last_open - cut):.0f} ms on"
