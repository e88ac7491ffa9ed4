"""Every event that leaves the server, and every message a client may send: one contract.

The live session's data channel carries these as JSON objects with a ``type`` tag. The page
(``server/static/app.js``), the aiortc client toolkit, the evaluator and the benchmarks read
them through this module (the page is checked against the schema by a test), and the
server serves the JSON Schema at ``GET /api/v1/events.schema.json``.

Reading one file tells every kind of thing a client can see: add a kind here, to
``ServerEvent``, and nowhere else.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION = 1

AvatarState = Literal["listening", "thinking", "speaking"]


class _Event(BaseModel):
    # A reader ignores fields it does not know: a newer server may add one (as
    # TurnEvent.end_of_turn was added) without breaking older pages, toolkits and benches.
    model_config = ConfigDict(frozen=True, extra="ignore")


class StatusEvent(_Event):
    """What the avatar is doing now; the page's status pill."""

    type: Literal["status"] = "status"
    state: AvatarState
    turn_id: int
    user_speaking: bool = False  # listening, and the VAD hears the user
    first_frame_index: int | None = None  # speaking: the session frame the answer starts on


class TranscriptEvent(_Event):
    """Words of the user (partials, then one final) or of the avatar (deltas, then the reply)."""

    type: Literal["transcript"] = "transcript"
    role: Literal["user", "avatar"]
    text: str
    final: bool
    turn_id: int
    delta: bool = False  # an avatar piece to append to what came before
    language: str | None = None  # the final user transcript's language


class TurnEvent(_Event):
    """A turn is over: what it cost, stage by stage (ms after the end of the user's speech)."""

    type: Literal["turn"] = "turn"
    turn_id: int
    interrupted: bool = False
    speculative: bool = False  # the reply was prepared during the pause, before the end
    # Monotonic marks let a client on the same machine split the latency.
    speech_end_mono: float = 0.0
    first_frame_mono: float = 0.0
    # The session's frame clock: the transport maps it to what the client sees.
    first_frame_index: int = -1
    last_frame_index: int = -1
    gap_frames: int = 0  # idle frames between the answer's pieces: the next was not ready
    # The last end-of-turn decision: its inputs (words so far, prosody, silence) and verdict.
    end_of_turn: dict[str, Any] | None = None
    asr_final_ms: float | None = None
    first_token_ms: float | None = None
    first_audio_ms: float | None = None
    first_frame_ms: float | None = None
    turn_end_ms: float | None = None


class InterruptedEvent(_Event):
    """The user spoke over the avatar: turn ``turn_id`` was dropped."""

    type: Literal["interrupted"] = "interrupted"
    turn_id: int


class ErrorEvent(_Event):
    """Something failed; the conversation goes on (a fallback line may be spoken)."""

    type: Literal["error"] = "error"
    message: str
    turn_id: int | None = None


class MediaEvent(_Event):
    """The transport's first video frame: which session frame index it carries."""

    type: Literal["media"] = "media"
    video_origin_index: int


class PongEvent(_Event):
    """The answer to a client's ``ping`` (round-trip time on the data channel)."""

    type: Literal["pong"] = "pong"
    t: float | None = None


ServerEvent = Annotated[
    StatusEvent
    | TranscriptEvent
    | TurnEvent
    | InterruptedEvent
    | ErrorEvent
    | MediaEvent
    | PongEvent,
    Field(discriminator="type"),
]


class PingMessage(_Event):
    """A client asks for a ``pong``."""

    type: Literal["ping"] = "ping"
    t: float | None = None


MAX_TYPED_CHARS = 2000  # a typed message: a few paragraphs at most


class TextMessage(_Event):
    """The user typed a message: answered as a spoken turn is (a barge-in if the avatar
    speaks), with the same events."""

    type: Literal["text"] = "text"
    text: str = Field(min_length=1, max_length=MAX_TYPED_CHARS)


class InterruptMessage(_Event):
    """The user started typing over the avatar: it stops speaking, as when talked over."""

    type: Literal["interrupt"] = "interrupt"


ClientMessage = Annotated[PingMessage | TextMessage | InterruptMessage, Field(discriminator="type")]

_SERVER_EVENTS: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)
_CLIENT_MESSAGES: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)

SERVER_EVENT_MODELS: tuple[type[_Event], ...] = get_args(get_args(ServerEvent)[0])
EVENT_TYPES: tuple[str, ...] = tuple(
    model.model_fields["type"].default for model in SERVER_EVENT_MODELS
)


class EventError(ValueError):
    """A message that is not one of the contract's events."""


def to_json(event: _Event) -> str:
    """The wire form of an event: compact JSON with its ``type`` tag, unicode kept."""
    return event.model_dump_json()


def _loads(message: str | bytes | dict[str, Any]) -> Any:
    if isinstance(message, dict):
        return message
    try:
        return json.loads(message)
    except (TypeError, ValueError) as exc:
        raise EventError(f"not JSON: {exc}") from None


def parse_event(message: str | bytes | dict[str, Any]) -> ServerEvent:
    """A server event from its wire form; ``EventError`` says what is wrong."""
    try:
        return _SERVER_EVENTS.validate_python(_loads(message))
    except ValidationError as exc:
        raise EventError(f"not a server event: {exc.errors()[0]['msg']}") from None


def parse_client_message(message: str | bytes | dict[str, Any]) -> ClientMessage:
    """A client message from its wire form; ``EventError`` says what is wrong."""
    try:
        return _CLIENT_MESSAGES.validate_python(_loads(message))
    except ValidationError as exc:
        raise EventError(f"not a client message: {exc.errors()[0]['msg']}") from None


def events_schema() -> dict[str, Any]:
    """The JSON Schema of both directions, as served at ``/api/v1/events.schema.json``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "realtime-avatar data channel events",
        "version": SCHEMA_VERSION,
        "description": (
            "JSON objects on the WebRTC data channel, each tagged by 'type'. "
            "server_event: what the server sends; client_message: what a client may send."
        ),
        "server_event": _SERVER_EVENTS.json_schema(),
        "client_message": _CLIENT_MESSAGES.json_schema(),
    }
