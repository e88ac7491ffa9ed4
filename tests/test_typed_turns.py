"""Typed messages: a user turn with no audio, answered like a spoken one (fast, stand-ins).

The page sends ``{"type": "text", "text": ...}`` on the data channel; the transport hands
it to ``Conversation.say_text``. These drive the conversation directly with the stand-in
stages of ``test_engine`` and a fake clock.
"""

from __future__ import annotations

import pytest

from realtime_avatar.engine.conversation import ECHO_GUARD_S, typed_language
from realtime_avatar.events import (
    EventError,
    InterruptedEvent,
    InterruptMessage,
    StatusEvent,
    TextMessage,
    TranscriptEvent,
    TurnEvent,
    parse_client_message,
    to_json,
)
from tests.test_engine import Harness

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def h() -> Harness:
    harness = Harness()
    await harness.conv.start()
    yield harness
    await harness.conv.close()


async def test_a_typed_message_is_answered_aloud_with_the_spoken_turns_events(h: Harness) -> None:
    h.conv.say_text("  what is   your name ")
    turn = await h.play_turn()
    finals = [(e.role, e.text) for e in h.of(TranscriptEvent) if e.final]
    assert finals == [
        ("user", "what is your name"),
        ("avatar", "You said what is your name. Right."),
    ]
    states = [e.state for e in h.of(StatusEvent)]
    assert states == ["listening", "thinking", "speaking", "listening"]
    assert h.responder.calls == ["what is your name"]
    assert any(f.speaking for f in h.frames)  # spoken and shown, as a spoken turn is
    assert turn.first_frame_ms is not None and turn.first_frame_ms >= 0
    assert h.turns == [turn.turn_id] and h.conv._turns == {}


async def test_typing_over_the_avatar_interrupts_it(h: Harness) -> None:
    h.responder.reply = lambda text: "This is a long answer. " * 6
    h.conv.say_text("talk to me")
    await h.until(lambda: any(f.speaking for f in h.frames), pull=True)
    h.clock.advance(ECHO_GUARD_S + 0.1)
    h.responder.reply = lambda text: f"You said {text}."
    h.conv.say_text("stop, tell me a joke")
    assert [e.turn_id for e in h.of(InterruptedEvent)] == [1]
    assert not h.conv.next_frame().audio.any()  # the old answer's sound is gone at once
    turn = await h.play_turn()
    while turn.turn_id != 2:
        turn = await h.play_turn()
    assert not turn.interrupted
    finals = [e.text for e in h.of(TranscriptEvent) if e.final]
    assert finals[-1] == "You said stop, tell me a joke."


async def test_starting_to_type_stops_the_avatar_and_it_listens(h: Harness) -> None:
    h.responder.reply = lambda text: "This is a long answer. " * 6
    h.conv.say_text("talk to me")
    await h.until(lambda: any(f.speaking for f in h.frames), pull=True)
    h.conv.interrupt()
    assert [e.turn_id for e in h.of(InterruptedEvent)] == [1]
    assert h.of(StatusEvent)[-1].state == "listening"
    assert not h.renderer.busy
    frame = h.conv.next_frame()
    assert not frame.speaking and not frame.audio.any()
    assert h.of(TurnEvent)[-1].interrupted


async def test_interrupt_with_nothing_playing_changes_nothing(h: Harness) -> None:
    h.conv.interrupt()
    assert not h.of(InterruptedEvent) and h.conv.turn_id == 0


async def test_a_typed_message_replaces_an_utterance_being_heard(h: Harness) -> None:
    h.recognizer.text = "uh"
    await h.mic("start", chunks=2)
    h.conv.say_text("hello there")
    await h.play_turn()
    users = [e.text for e in h.of(TranscriptEvent) if e.final and e.role == "user"]
    assert users == ["hello there"]
    assert h.conv._utterance is None


async def test_blank_text_is_ignored(h: Harness) -> None:
    h.conv.say_text("   \n ")
    assert h.conv.turn_id == 0 and h.responder.calls == []


def test_typed_messages_on_the_wire() -> None:
    message = TextMessage(text="¿Hablas español?")
    assert parse_client_message(to_json(message)) == message
    assert parse_client_message('{"type": "interrupt"}') == InterruptMessage()
    for bad in ('{"type": "text", "text": ""}', '{"type": "text"}', '{"type": "text", "text": 5}'):
        with pytest.raises(EventError):
            parse_client_message(bad)
    with pytest.raises(EventError):
        parse_client_message(to_json(TextMessage(text="x")).replace('"x"', '"' + "y" * 2001 + '"'))


def test_a_typed_messages_language_is_read_from_its_script() -> None:
    assert typed_language("你好，你叫什么名字？") == "zh"
    assert typed_language("Привет") == "en"  # no Russian voice in a conversation: English
    assert typed_language("1234") == "en"
