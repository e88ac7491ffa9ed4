"""The turn state machine and the render seam, with stand-in stages and a fake clock.

No models, no servers: each test drives ``Conversation`` by scripted VAD events and pulls
frames as the transport would. Time only moves when a test moves the fake clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from realtime_avatar.constants import SAMPLES_PER_FRAME
from realtime_avatar.engine.clock import FakeClock
from realtime_avatar.engine.conversation import ECHO_GUARD_S, Conversation, Stages
from realtime_avatar.events import (
    ErrorEvent,
    InterruptedEvent,
    ServerEvent,
    StatusEvent,
    TranscriptEvent,
    TurnEvent,
    parse_event,
    to_json,
)
from realtime_avatar.frames import AVFrame, Speech
from realtime_avatar.render.animated import AnimatedRenderer
from realtime_avatar.render.base import FaceImage, Renderer, spoken_frames
from realtime_avatar.render.registry import RENDERERS, create_renderer, register_renderer
from realtime_avatar.settings import Settings
from tests.stand_ins import (
    CHUNK,
    AudioMouthRenderer,
    FlatDrawer,
    ScriptedDecider,
    ScriptedVad,
    StubRecognizer,
    StubResponder,
    StubSpeech,
    bar_height,
    mouth_height,
)

WAIT_S = 5.0  # a guard against a hang, not a speed requirement

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Harness:
    """A conversation with stand-in stages, and what it said."""

    def __init__(
        self,
        renderer: Renderer | None = None,
        decider: ScriptedDecider | None = None,
        **kwargs: object,
    ) -> None:
        self.clock = FakeClock()
        self.vad = ScriptedVad()
        self.recognizer = StubRecognizer()
        self.responder = StubResponder()
        self.speech = StubSpeech()
        self.renderer = renderer or AnimatedRenderer(FlatDrawer())
        self.pushed: list[str] = []  # the text of each piece the renderer was given
        push = self.renderer.push

        def recorded_push(speech: Speech) -> None:
            self.pushed.append(speech.text)
            push(speech)

        self.renderer.push = recorded_push  # type: ignore[method-assign]
        self.events: list[ServerEvent] = []
        self.turns: list[int] = []
        self.frames: list[AVFrame] = []
        self.conv = Conversation(
            Stages(
                vad=self.vad,
                recognizer=self.recognizer,
                responder=self.responder,
                speech=self.speech,
                renderer=self.renderer,
                fallback_lines={"en": "Sorry, I lost my train of thought."},
                turn_decider=decider,
            ),
            language="en",
            on_event=self._on_event,
            on_turn=lambda record: self.turns.append(record.turn_id),
            clock=self.clock,
            **kwargs,  # type: ignore[arg-type]
        )

    def _on_event(self, event: ServerEvent) -> None:
        assert parse_event(to_json(event)) == event  # every event survives the wire
        self.events.append(event)

    async def mic(self, *vad_events: str, chunks: int = 1) -> None:
        self.vad.then(*vad_events)
        for _ in range(chunks):
            await self.conv.push_mic(CHUNK)

    async def quiet(self, chunks: int, *vad_events: str) -> None:
        """Silence, one chunk at a time, each after any end-of-turn decision in flight
        (as real time would allow: a decision takes far less than 20 ms of audio)."""
        self.vad.then(*vad_events)
        for _ in range(chunks):
            await self.until(lambda: not self.conv._deciding)
            if self.conv._utterance is None:
                return
            await self.conv.push_mic(CHUNK)
        await self.until(lambda: not self.conv._deciding)

    async def say(self, text: str, *, pause: bool = True) -> None:
        """The user says ``text``: speech start, (a pause), the end."""
        self.recognizer.text = text
        await self.mic("start", chunks=3)
        if pause:
            await self.mic("pause", chunks=2)
        self.clock.advance(0.3)
        await self.mic("end")

    @staticmethod
    def decider_asked(h: Harness) -> list[tuple[str, float]]:
        decider = h.conv.stages.turn_decider
        return decider.asked if isinstance(decider, ScriptedDecider) else []

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]

    async def until(self, done: Callable[[], bool], pull: bool = False) -> None:
        """Let the loop run until ``done()``; ``pull`` also plays frames as the pump would."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not done():
            assert loop.time() < deadline, "the conversation did not get there"
            if pull:
                self.frames.append(self.conv.next_frame())
                self.clock.advance(0.04)
            await asyncio.sleep(0.001)

    async def play_turn(self) -> TurnEvent:
        """Pull frames until a turn is reported; return it."""
        before = len(self.of(TurnEvent))
        await self.until(lambda: len(self.of(TurnEvent)) > before, pull=True)
        return self.of(TurnEvent)[-1]


@pytest.fixture
async def h() -> Harness:
    harness = Harness()
    await harness.conv.start()
    yield harness
    await harness.conv.close()


def spoken_audio(frames: list[AVFrame]) -> np.ndarray:
    return np.concatenate([f.audio for f in frames if f.speaking] or [np.zeros(0, np.int16)])


async def test_a_plain_turn_is_heard_answered_spoken_and_reported(h: Harness) -> None:
    await h.say("what is your name", pause=False)
    turn = await h.play_turn()
    finals = [e for e in h.of(TranscriptEvent) if e.final]
    assert [(e.role, e.text) for e in finals] == [
        ("user", "what is your name"),
        ("avatar", "You said what is your name. Right."),
    ]
    states = [e.state for e in h.of(StatusEvent)]
    assert states == ["listening", "thinking", "speaking", "listening"]
    assert not turn.interrupted and not turn.speculative and turn.gap_frames == 0
    assert turn.first_frame_ms is not None and turn.first_frame_ms >= 0
    speaking = [f for f in h.frames if f.speaking]
    assert speaking and all(f.turn_id == turn.turn_id for f in speaking)
    assert np.abs(spoken_audio(h.frames)).max() > 1000  # the voice is in the frames' audio
    assert turn.first_frame_index == speaking[0].index
    assert turn.last_frame_index == speaking[-1].index
    assert h.turns == [turn.turn_id]
    assert h.conv._turns == {}  # a finished turn is not kept


async def test_speculation_prepared_at_the_pause_is_released_at_the_end(h: Harness) -> None:
    h.recognizer.text = "tell me a joke"
    await h.mic("start", chunks=3)
    await h.mic("pause")
    # The reply is prepared during the pause but held: nothing is said or shown yet.
    await h.until(lambda: len(h.speech.spoken) >= 1)
    assert h.responder.calls == ["tell me a joke"]
    assert not [e for e in h.of(TranscriptEvent) if e.final]
    assert not h.renderer.busy
    await h.mic("end")
    turn = await h.play_turn()
    assert turn.speculative
    assert h.responder.calls == ["tell me a joke"]  # not asked twice
    assert h.speech.spoken[0][1] is True  # the first piece is marked first (lead-in trimmed)


async def test_speculation_is_dropped_unheard_when_the_user_goes_on(h: Harness) -> None:
    h.recognizer.heard_at_pause = "I was wondering if"
    h.recognizer.text = "I was wondering if you could help"
    await h.mic("start", chunks=3)
    await h.mic("pause")
    await h.until(lambda: len(h.speech.spoken) >= 1)  # the held reply is voiced already
    await h.mic("resume", chunks=3)
    h.clock.advance(0.3)
    await h.mic("end")
    turn = await h.play_turn()
    assert not turn.speculative
    # The dropped reply's voice was ready before the user went on; it marks nothing.
    assert turn.first_audio_ms is not None and turn.first_audio_ms >= 0
    finals = [e.text for e in h.of(TranscriptEvent) if e.final]
    assert finals == [
        "I was wondering if you could help",
        "You said I was wondering if you could help. Right.",
    ]
    # The held reply to the half question may have been synthesized, but never played.
    assert h.pushed == ["You said I was wondering,", "if you could help.", "Right."]


async def test_a_final_with_other_words_replaces_the_speculation(h: Harness) -> None:
    h.recognizer.heard_at_pause = "what time"
    h.recognizer.text = "what time is it"
    await h.mic("start", chunks=3)
    await h.mic("pause")
    await h.until(lambda: "what time" in h.responder.calls)
    await h.mic("end")
    turn = await h.play_turn()
    assert not turn.speculative
    assert h.responder.calls[-1] == "what time is it"
    assert [e.text for e in h.of(TranscriptEvent) if e.final and e.role == "user"] == [
        "what time is it"
    ]


async def test_barge_in_stops_mouth_and_sound_on_the_next_frame(h: Harness) -> None:
    h.responder.reply = lambda text: "This is a long answer. " * 6
    await h.say("talk to me")
    await h.until(lambda: any(f.speaking for f in h.frames), pull=True)
    h.clock.advance(ECHO_GUARD_S + 0.1)
    await h.mic("start")  # the user talks over the avatar
    assert not h.renderer.busy  # cleared: nothing of the old answer is left to play
    frame = h.conv.next_frame()
    assert not frame.speaking and not frame.audio.any()
    interrupted = h.of(InterruptedEvent)
    assert [e.turn_id for e in interrupted] == [1]
    assert h.of(TurnEvent)[-1].interrupted
    assert h.conv.turn_id == 2


async def test_the_avatars_own_first_syllable_does_not_interrupt_it(h: Harness) -> None:
    await h.say("hello")
    await h.until(lambda: any(f.speaking for f in h.frames), pull=True)
    h.clock.advance(ECHO_GUARD_S / 3)
    await h.mic("start")  # the avatar's voice leaking back into the mic
    assert not h.of(InterruptedEvent)
    assert h.conv.turn_id == 1
    assert h.renderer.busy


async def test_a_backend_failure_speaks_the_fallback_line_and_goes_on(h: Harness) -> None:
    h.responder.fail_after = 0
    await h.say("are you there")
    turn = await h.play_turn()
    assert [e.message for e in h.of(ErrorEvent)] == ["the backend went away"]
    assert h.speech.spoken[-1][0] == "Sorry, I lost my train of thought."
    assert [e.text for e in h.of(TranscriptEvent) if e.final][-1] == (
        "Sorry, I lost my train of thought."
    )
    assert not turn.interrupted
    h.responder.fail_after = None
    await h.say("and now")
    await h.play_turn()
    assert h.responder.calls[-1] == "and now"


async def test_a_recognizer_failure_reports_the_turn_and_keeps_listening(h: Harness) -> None:
    h.recognizer.fail = True
    await h.say("anything", pause=False)
    await h.until(lambda: bool(h.of(ErrorEvent)))
    assert "recognizer broke" in h.of(ErrorEvent)[0].message
    assert h.turns == [1]
    assert h.of(StatusEvent)[-1].state == "listening"


async def test_the_client_leaving_mid_answer_stops_everything(h: Harness) -> None:
    h.responder.gate = asyncio.Event()
    await h.say("a long question")
    await h.until(lambda: any(e.final and e.role == "user" for e in h.of(TranscriptEvent)))
    await h.conv.close()  # mid-answer: the reply is still being written
    h.responder.gate.set()
    await asyncio.sleep(0.01)
    assert not h.renderer.busy
    await h.conv.push_mic(CHUNK)  # a late packet after close is ignored
    assert h.vad.fed == 6
    # The turn the caller hung up on is reported, cut off, and nothing is kept.
    assert h.turns == [1]
    assert h.of(TurnEvent)[-1].interrupted and h.conv._turns == {}
    await h.conv.close()  # twice is harmless


async def test_what_the_user_said_before_an_unheard_interruption_is_kept(h: Harness) -> None:
    h.responder.gate = asyncio.Event()  # the answer is slow: nothing is heard yet
    await h.say("my name is Ana", pause=False)
    await h.until(lambda: h.responder.calls != [])
    await h.say("and I live in Lima", pause=False)
    h.responder.gate.set()
    await h.play_turn()
    assert h.responder.calls[-1] == "my name is Ana and I live in Lima"


async def test_silence_heard_as_nothing_makes_no_turn(h: Harness) -> None:
    await h.say("", pause=False)
    await h.until(lambda: h.conv._reply_task is not None and h.conv._reply_task.done())
    assert h.turns == [] and h.responder.calls == [] and h.conv._turns == {}


async def test_a_monologue_is_cut_at_the_utterance_cap() -> None:
    h = Harness(max_utterance_s=1.0)
    await h.conv.start()
    h.recognizer.text = "blah " * 20
    await h.mic("start", chunks=60)  # 1.2 s, no pause
    turn = await h.play_turn()
    assert h.responder.calls and turn.turn_id == 1
    assert sum(u.samples for u in h.recognizer.utterances) <= 1.1 * 16_000
    await h.conv.close()


async def test_many_turns_keep_no_records(h: Harness) -> None:
    for i in range(5):
        await h.say(f"question {i}")
        await h.play_turn()
    assert h.turns == [1, 2, 3, 4, 5]
    assert h.conv._turns == {}


# ---------------------------------------------------------------------------- end of turn


async def _decided(decider: ScriptedDecider) -> Harness:
    h = Harness(decider=decider)
    await h.conv.start()
    return h


async def test_a_finished_question_is_released_at_the_pause_before_the_vad_end() -> None:
    h = await _decided(ScriptedDecider(release_after_ms=0))
    h.recognizer.text = "what is your name"
    await h.mic("start", chunks=3)
    await h.mic("pause")  # no VAD end will come: the decision ends the turn
    await h.until(lambda: bool(h.decider_asked(h)), pull=False)
    turn = await h.play_turn()
    assert turn.speculative and h.responder.calls == ["what is your name"]
    # The decision was on the peek's words with only silence after: no second decode.
    assert h.recognizer.finishes == 0
    assert turn.end_of_turn is not None
    assert turn.end_of_turn["release"] and turn.end_of_turn["transcript"] == "what is your name"
    assert turn.end_of_turn["silence_ms"] == pytest.approx(20.0)  # the chunk after the pause
    await h.conv.close()


async def test_an_unfinished_question_waits_through_the_vad_end_and_hears_the_rest() -> None:
    decider = ScriptedDecider(release_after_ms=10_000)  # never sure: the user goes on first
    h = await _decided(decider)
    h.recognizer.heard_at_pause = "I was wondering if"
    h.recognizer.text = "I was wondering if you could tell me about your job"
    await h.mic("start", chunks=3)
    await h.mic("pause")
    await h.quiet(10)  # 200 ms of silence: asked again and again, still waiting
    await h.quiet(20, "end")  # the VAD's own end is not the end of the turn
    assert len(decider.asked) >= 3
    assert h.turns == [] and not [e for e in h.of(TranscriptEvent) if e.final]
    assert all(t == "I was wondering if" for t, _ in decider.asked)
    silences = [ms for _, ms in decider.asked]
    assert silences == sorted(silences) and silences[-1] >= 300
    await h.mic("start", chunks=5)  # the rest of the question: the same utterance goes on
    assert h.conv.turn_id == 1
    decider.release_after_ms = 0
    h.recognizer.heard_at_pause = None  # a peek now hears the whole sentence
    await h.mic("pause")
    turn = await h.play_turn()
    assert turn.turn_id == 1 and not turn.interrupted
    assert h.responder.calls[-1] == "I was wondering if you could tell me about your job"
    assert [e.text for e in h.of(TranscriptEvent) if e.final and e.role == "user"] == [
        "I was wondering if you could tell me about your job"
    ]
    await h.conv.close()


async def test_the_decider_releases_after_enough_silence() -> None:
    decider = ScriptedDecider(release_after_ms=400, recheck_ms=100)
    h = await _decided(decider)
    h.recognizer.text = "and then"
    await h.mic("start", chunks=3)
    await h.mic("pause")
    await h.quiet(40)  # until the decider releases, 800 ms at most
    turn = await h.play_turn()
    assert turn.end_of_turn is not None and turn.end_of_turn["silence_ms"] >= 400
    assert [round(ms / 100) for _, ms in decider.asked] == [0, 1, 2, 3, 4]
    await h.conv.close()


async def test_speech_right_after_an_early_release_is_heard_as_a_new_turn() -> None:
    h = await _decided(ScriptedDecider(release_after_ms=0))
    h.responder.gate = asyncio.Event()  # the answer is not heard yet
    h.recognizer.text = "my name is Ana"
    await h.mic("start", chunks=3)
    await h.mic("pause")
    await h.until(lambda: h.conv._utterance is None)  # released at the pause
    h.recognizer.text = "and I live in Lima"
    await h.mic("resume", chunks=3)  # the VAD never ended its segment: a resume
    assert h.conv.turn_id == 2
    await h.mic("pause")
    h.responder.gate.set()
    await h.play_turn()
    assert h.responder.calls[-1] == "my name is Ana and I live in Lima"
    await h.conv.close()


# ---------------------------------------------------------------------------- render seam


def _speech(seconds: float, turn_id: int = 1, rate: int = 16_000) -> Speech:
    t = np.arange(int(seconds * rate)) / rate
    return Speech(turn_id, "x", "en", (0.5 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), rate)


def test_animated_renderer_pairs_each_frame_with_exactly_its_audio() -> None:
    renderer = AnimatedRenderer(FlatDrawer())
    first, second = _speech(0.5), _speech(0.21)
    frames = list(spoken_frames(renderer, first)) + list(spoken_frames(renderer, second))
    assert len(frames) == 13 + 6  # whole frames, the last padded with silence
    assert all(len(f.audio) == SAMPLES_PER_FRAME and f.speaking for f in frames)
    assert [f.index for f in frames] == list(range(19))
    assert not renderer.busy
    idle = renderer.next_frame()
    assert not idle.speaking and not idle.audio.any() and idle.index == 19


def test_clear_drops_what_is_queued_and_playing() -> None:
    renderer = AnimatedRenderer(FlatDrawer())
    renderer.push(_speech(1.0))
    renderer.push(_speech(1.0))
    assert renderer.next_frame().speaking
    renderer.clear()
    assert not renderer.busy
    assert not renderer.next_frame().speaking


def test_renderers_are_chosen_by_name_with_their_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    face = FaceImage(np.zeros((32, 32, 3), np.uint8), np.zeros((468, 2)))
    register_renderer("audio-mouth", AudioMouthRenderer)
    try:
        settings = Settings(renderer="audio-mouth", renderer_model_path=tmp_path / "w.pth")
        renderer = create_renderer(settings.renderer, face, settings)
        assert isinstance(renderer, AudioMouthRenderer) and isinstance(renderer, Renderer)
        assert renderer.model_path == tmp_path / "w.pth"  # the factory got the settings
    finally:
        RENDERERS.pop("audio-mouth")
    with pytest.raises(Exception, match="AVATAR_RENDERER"):
        create_renderer("no-such", face, Settings())


async def test_a_renderer_that_reads_only_audio_drives_a_conversation() -> None:
    face = FaceImage(np.zeros((32, 32, 3), np.uint8), np.zeros((468, 2)))
    h = Harness(renderer=AudioMouthRenderer(face, Settings()))
    await h.conv.start()
    await h.say("hello")
    turn = await h.play_turn()
    speaking = [f for f in h.frames if f.speaking]
    assert speaking and not turn.interrupted
    # The mouth follows the audio it was given, frame by frame, and nothing else.
    assert [bar_height(f.rgb) for f in speaking] == [mouth_height(f.audio) for f in speaking]
    assert max(bar_height(f.rgb) for f in speaking) > 5
    assert all(bar_height(f.rgb) == 0 for f in h.frames if not f.speaking)
    await h.conv.close()
