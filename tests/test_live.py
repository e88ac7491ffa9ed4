"""The live conversation through the real server with a real WebRTC client (aiortc).

A question spoken by Piper goes in as the client's microphone; the test checks what a
person would notice: the words were heard, the avatar answered in sound and with a moving
mouth, the video ran at 25 fps, and talking over the avatar stopped it at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeGuard

import httpx
import numpy as np
import pytest

from realtime_avatar.evaluate.rtc_client import MIC_RATE_HZ, AvatarCall, Clip, mic_audio
from realtime_avatar.events import (
    ErrorEvent,
    InterruptedEvent,
    ServerEvent,
    StatusEvent,
    TranscriptEvent,
    TurnEvent,
)
from realtime_avatar.media.audio import resample
from realtime_avatar.vad.registry import get_vad

from .live_server import running_server

# Every test starts `avatar serve` (Piper, Whisper, Silero VAD) and talks to it over WebRTC.
pytestmark = pytest.mark.slow

BARGE_IN_BUDGET_S = 0.3


spoken = mic_audio  # speech for the client's microphone, with a little silence after it


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[str]:
    with running_server(data_dir) as base:
        yield base


def _user_final(e: ServerEvent) -> TypeGuard[TranscriptEvent]:
    return isinstance(e, TranscriptEvent) and e.role == "user" and e.final


def _speaking(e: ServerEvent) -> TypeGuard[StatusEvent]:
    return isinstance(e, StatusEvent) and e.state == "speaking"


def test_conversation_answers_and_barge_in(server: str) -> None:
    asyncio.run(_conversation(server))


async def _conversation(server: str) -> None:
    call = AvatarCall(server, [Clip(spoken("What is your name?"), at_s=1.5)])
    await call.start()
    try:
        heard = await call.wait_for_event(_user_final, 30)
        assert isinstance(heard, TranscriptEvent) and "name" in heard.text.lower(), heard
        await call.wait_for_event(_speaking, 30)
        first_turn = await call.wait_for_event(
            lambda e: isinstance(e, TurnEvent) and e.turn_id == heard.turn_id, 30
        )
        assert isinstance(first_turn, TurnEvent) and not first_turn.interrupted
        answer = call.record.texts("avatar")[0]
        assert "ava" in answer.lower(), answer

        # Second question, talked over mid-answer by a third.
        await asyncio.sleep(0.5)
        assert call.mic is not None
        call.mic.say_now(spoken("Tell me about yourself and what you can do."))
        second = await call.wait_for_event(
            lambda e: _speaking(e) and e.turn_id > heard.turn_id,
            30,
        )
        assert isinstance(second, StatusEvent)
        await asyncio.sleep(0.6)
        interrupting = call.mic.say_now(spoken("Stop. Do you speak Spanish?"))
        await call.wait_for_event(
            lambda e: isinstance(e, InterruptedEvent) and e.turn_id == second.turn_id, 10
        )
        await call.wait_for_event(
            lambda e: _user_final(e) and "spanish" in e.text.lower(),
            30,
        )
        await asyncio.sleep(0.5)
    finally:
        await call.close()

    record = call.record
    # Video: a steady 25 fps from the first second.
    assert record.fps(since_s=1.0) >= 24.0, record.fps(since_s=1.0)
    # The mouth was still while the avatar listened, and moved while it answered.
    question_end = call.clips[0].speech_end_s
    assert question_end > 0
    listening = [m for t, m in record.video if record.connected_at + 0.5 < t < question_end]
    speaking = [m for t, m in record.video if question_end < t < question_end + 6]
    assert max(speaking) > np.percentile(listening, 95) + 60, (max(speaking), max(listening))
    # Every 20 ms of the avatar's audio track arrives (none lost to packetisation).
    span = record.audio[-1][0] - record.audio[0][0]
    assert len(record.audio) * 0.020 >= 0.95 * span, (len(record.audio) * 0.020, span)
    # The answer was heard: audible audio after the question, none before it.
    assert record.first_answer_audio(question_end) is not None
    assert max(r for t, r in record.audio if t < question_end) < 0.01
    # Barge-in: the old answer's mouth stopped within the budget after the user spoke.
    onset = interrupting.speech_start_s
    last = record.last_mouth_motion(onset - 0.5, onset + 1.2)
    assert last is not None, "the avatar was not talking when interrupted"
    assert last - onset <= BARGE_IN_BUDGET_S, f"mouth moved {1000 * (last - onset):.0f} ms after"


def test_turns_are_recorded_and_exported(server: str) -> None:
    call = AvatarCall(server, [Clip(spoken("Where do you run?"), at_s=1.0)])

    async def talk() -> None:
        await call.start()
        try:
            await call.wait_for_event(lambda e: isinstance(e, TurnEvent), 40)
        finally:
            await call.close()

    asyncio.run(talk())
    turns = httpx.get(f"{server}/api/v1/sessions/{call.record.session_id}/turns").json()["turns"]
    assert turns and "run" in turns[0]["user_text"].lower()
    assert turns[0]["reply_text"]
    for stage in ("asr_final_ms", "first_token_ms", "first_audio_ms", "first_frame_ms"):
        assert turns[0][stage] is not None and turns[0][stage] > 0, (stage, turns[0])
    metrics = httpx.get(f"{server}/metrics").text
    assert 'avatar_turn_stage_seconds_count{stage="first_frame"}' in metrics


def test_busy_and_bad_offers(server: str) -> None:
    async def fill() -> None:
        calls = [AvatarCall(server, [], measure_mouth=False) for _ in range(2)]
        for c in calls:
            await c.start()
        try:
            third = AvatarCall(server, [], measure_mouth=False)
            with pytest.raises(RuntimeError, match="503.*busy"):
                await third.start()
        finally:
            for c in calls:
                await c.close()

    asyncio.run(fill())
    bad = httpx.post(
        f"{server}/api/v1/rtc/offer", json={"sdp": "nonsense", "type": "offer"}, timeout=30
    )
    assert bad.status_code == 400 and "v=0" in bad.json()["error"]
    assert httpx.post(f"{server}/api/v1/rtc/offer", json={"type": "offer"}).status_code == 422
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok"


def test_backend_failure_gives_fallback_and_the_talk_goes_on(data_dir: Path) -> None:
    """An OpenAI-compatible backend that is down: a short fallback line, an error, no hang."""
    from .live_server import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with running_server(data_dir, AVATAR_DIALOGUE="openai", AVATAR_LLM_BASE_URL=dead) as base:
        call = AvatarCall(base, [Clip(spoken("What is your name?"), at_s=1.0)])

        async def talk() -> None:
            await call.start()
            try:
                error = await call.wait_for_event(lambda e: isinstance(e, ErrorEvent), 30)
                assert isinstance(error, ErrorEvent) and "127.0.0.1" in error.message
                await call.wait_for_event(_speaking, 20)
                await call.wait_for_event(lambda e: isinstance(e, TurnEvent), 20)
                # The session is still alive: a second question is heard too.
                assert call.mic is not None
                call.mic.say_now(spoken("Are you there?"))
                await call.wait_for_event(
                    lambda e: _user_final(e) and "there" in e.text.lower(),
                    30,
                )
            finally:
                await call.close()

        asyncio.run(talk())
        fallback = call.record.texts("avatar")[0]
        assert "sorry" in fallback.lower(), fallback
        assert call.record.first_answer_audio(call.clips[0].speech_end_s) is not None
        # The peer hung up: the server lets the session go.
        for _ in range(50):
            if httpx.get(f"{base}/health").json()["sessions"] == 0:
                break
            time.sleep(0.2)
        assert httpx.get(f"{base}/health").json()["sessions"] == 0


def _trimmed(text: str) -> np.ndarray:
    """Speech cut right after its last loud 10 ms, so the gap after it is known."""
    pcm = mic_audio(text)
    hop = MIC_RATE_HZ // 100
    levels = np.sqrt(np.mean(pcm[: len(pcm) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    return pcm[: (int(np.flatnonzero(levels > 0.01)[-1]) + 1) * hop]


def test_a_pause_mid_question_is_not_the_end_of_the_turn(data_dir: Path) -> None:
    # Turns ended by silence (AVATAR_TURN_TAKING=silence). A 350 ms pause: past the VAD's
    # 120 ms "pause" (a reply starts, held back) and short of its 700 ms end here. The held
    # reply must be dropped unheard; one answer to both halves.
    gap = np.zeros(int(0.35 * MIC_RATE_HZ), np.float32)
    pcm = np.concatenate([_trimmed("What is your name"), gap, spoken("and where do you run?")])
    # The same audio through the same VAD settings pauses and resumes in the gap.
    vad = get_vad(min_silence_ms=700, pause_ms=120)
    lead = np.zeros(MIC_RATE_HZ, np.float32)
    kinds = [e.kind for e in vad.feed(resample(np.concatenate([lead, pcm]), MIC_RATE_HZ, 16000))]
    assert kinds[:3] == ["start", "pause", "resume"], kinds
    with running_server(
        data_dir,
        AVATAR_VAD_MIN_SILENCE_MS="700",
        AVATAR_VAD_PAUSE_MS="120",
        AVATAR_TURN_TAKING="silence",
    ) as base:
        asyncio.run(_one_turn_for_two_halves(base, pcm))


def test_an_unfinished_sentence_waits_through_a_long_pause(data_dir: Path) -> None:
    # Turns ended by decision (the default). "I was wondering if" then 800 ms of silence:
    # far past the VAD's 300 ms end, which used to end the turn there. The words say the
    # sentence is not done, so the avatar waits and answers the whole question once.
    gap = np.zeros(int(0.8 * MIC_RATE_HZ), np.float32)
    pcm = np.concatenate(
        [_trimmed("I was wondering if"), gap, spoken("you could tell me your name?")]
    )
    with running_server(data_dir) as base:
        asyncio.run(_one_turn_for_two_halves(base, pcm, words=("wondering", "name")))


async def _one_turn_for_two_halves(
    base: str, pcm: np.ndarray, words: tuple[str, str] = ("name", "run")
) -> None:
    call = AvatarCall(base, [Clip(pcm, at_s=1.0)])
    await call.start()
    try:
        turn = await call.wait_for_event(
            lambda e: isinstance(e, TurnEvent) and not e.interrupted, 40
        )
        assert isinstance(turn, TurnEvent)
        await asyncio.sleep(0.5)
        finals = [e for _, e in call.record.of_type(TranscriptEvent) if _user_final(e)]
        assert len(finals) == 1, finals
        said = finals[0].text.lower()
        assert all(word in said for word in words), said
        # The answer spoke to the whole question, and was prepared during the final pause.
        assert len(call.record.texts("avatar")) == 1
        assert turn.speculative
        assert not call.record.of_type(InterruptedEvent)
    finally:
        await call.close()


def test_a_garbage_llm_stream_gives_the_fallback_and_a_recorded_turn(data_dir: Path) -> None:
    """An OpenAI-compatible endpoint that starts well, then sends bytes that are not JSON."""
    from realtime_avatar.evaluate import server_proc

    from .llm_server import bad_stream_server_thread

    with (
        bad_stream_server_thread("garbage") as url,
        server_proc.running_server(
            data_dir, data_dir / "garbage-llm", AVATAR_DIALOGUE="openai", AVATAR_LLM_BASE_URL=url
        ) as server,
    ):
        call = AvatarCall(server.base_url, [Clip(spoken("What is your name?"), at_s=1.0)])

        async def talk() -> None:
            await call.start()
            try:
                await call.wait_for_event(lambda e: isinstance(e, TurnEvent), 40)
            finally:
                await call.close()

        asyncio.run(talk())
        turns = httpx.get(
            f"{server.base_url}/api/v1/sessions/{call.record.session_id}/turns"
        ).json()["turns"]
        log_text = server.log_path.read_text(errors="replace")
    errors = [e.message for _, e in call.record.of_type(ErrorEvent)]
    assert len(errors) == 1 and "not an OpenAI chat stream" in errors[0], errors
    assert len(errors[0]) < 300
    assert "sorry" in call.record.texts("avatar")[0].lower(), call.record.texts("avatar")
    assert turns and "not an OpenAI chat stream" in (turns[0]["error"] or ""), turns
    assert "Traceback" not in log_text
