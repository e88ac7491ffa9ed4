"""The data channel's one contract (``realtime_avatar.events``): wire round trips, refusals,
the served schema, and the plain-JS page checked against the models. No servers, no models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from realtime_avatar.events import (
    EVENT_TYPES,
    ErrorEvent,
    EventError,
    InterruptedEvent,
    MediaEvent,
    PingMessage,
    PongEvent,
    StatusEvent,
    TranscriptEvent,
    TurnEvent,
    events_schema,
    parse_client_message,
    parse_event,
    to_json,
)

MODELS = (
    StatusEvent,
    TranscriptEvent,
    TurnEvent,
    InterruptedEvent,
    ErrorEvent,
    MediaEvent,
    PongEvent,
)
APP_JS = Path(__file__).parents[1] / "src" / "realtime_avatar" / "server" / "static" / "app.js"

# One of each kind, every optional field set, and one with the defaults.
SAMPLES = [
    StatusEvent(state="listening", turn_id=0),
    StatusEvent(state="speaking", turn_id=3, user_speaking=False, first_frame_index=412),
    TranscriptEvent(role="user", text="Wie heißt du?", final=True, turn_id=2, language="de"),
    TranscriptEvent(role="avatar", text=" I am", final=False, turn_id=2, delta=True),
    TurnEvent(turn_id=2),
    TurnEvent(
        turn_id=4,
        interrupted=True,
        speculative=True,
        speech_end_mono=1234.5,
        first_frame_mono=1235.25,
        first_frame_index=100,
        last_frame_index=180,
        gap_frames=2,
        asr_final_ms=120.5,
        first_token_ms=300.0,
        first_audio_ms=420.0,
        first_frame_ms=480.0,
        turn_end_ms=3900.0,
    ),
    InterruptedEvent(turn_id=5),
    ErrorEvent(message="the dialogue backend at http://127.0.0.1:9/v1 did not answer"),
    ErrorEvent(message="boom", turn_id=6),
    MediaEvent(video_origin_index=17),
    PongEvent(t=12.75),
    PongEvent(),
]


def test_samples_cover_every_type() -> None:
    assert {s.type for s in SAMPLES} == set(EVENT_TYPES)
    assert sorted(EVENT_TYPES) == sorted(c.model_fields["type"].default for c in MODELS)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: f"{e.type}")
def test_round_trip(event: Any) -> None:
    wire = to_json(event)
    data = json.loads(wire)
    assert data["type"] == event.type
    # Every field is on the wire, optional ones as null rather than absent.
    assert set(data) == set(type(event).model_fields)
    for source in (wire, wire.encode(), data):
        back = parse_event(source)
        assert type(back) is type(event)
        assert back == event


def test_wire_keeps_unicode() -> None:
    wire = to_json(TranscriptEvent(role="user", text="你好", final=True, turn_id=1))
    assert "你好" in wire


@pytest.mark.parametrize(
    "message",
    [
        "",
        "not json",
        b"\xff\xfe",
        "[1, 2]",
        "42",
        "null",
        "{}",
        '{"type": "nope"}',
        '{"type": "ping"}',  # a client message, not a server event
        '{"type": "status"}',  # missing fields
        '{"type": "status", "state": "dancing", "turn_id": 1}',
        '{"type": "turn", "turn_id": "x"}',
        {"type": "media"},
    ],
)
def test_parse_event_refuses_garbage(message: Any) -> None:
    with pytest.raises(EventError):
        parse_event(message)


def test_fields_a_newer_server_adds_are_ignored() -> None:
    event = parse_event('{"type": "interrupted", "turn_id": 1, "added_later": true}')
    assert event == InterruptedEvent(turn_id=1)


def test_client_messages() -> None:
    ping = PingMessage(t=1.5)
    assert parse_client_message(to_json(ping)) == ping
    assert parse_client_message('{"type": "ping"}') == PingMessage()
    with pytest.raises(EventError):
        parse_client_message(to_json(PongEvent(t=1.5)))
    with pytest.raises(EventError):
        parse_client_message("garbage")


def test_events_are_frozen() -> None:
    event = InterruptedEvent(turn_id=1)
    with pytest.raises(ValueError):
        event.turn_id = 2  # type: ignore[misc]


def _served_schema(tmp_path: Path) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from realtime_avatar.server.app import create_app
    from realtime_avatar.settings import Settings

    app = create_app(Settings(data_dir=tmp_path), warm_up=False)
    res = TestClient(app, base_url="http://127.0.0.1").get(  # no lifespan: nothing loads
        "/api/v1/events.schema.json"
    )
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("application/json")
    return dict(res.json())


def _schema_types(schema: dict[str, Any], part: str) -> set[str]:
    """The ``type`` tags a part of the schema (server_event / client_message) accepts."""
    section = schema[part]
    defs = section.get("$defs", {})
    models = [section] if "properties" in section else list(defs.values())
    return {m["properties"]["type"]["const"] for m in models if "type" in m.get("properties", {})}


def test_served_schema_lists_every_type(tmp_path: Path) -> None:
    schema = _served_schema(tmp_path)
    assert schema == json.loads(json.dumps(events_schema()))
    assert _schema_types(schema, "server_event") == set(EVENT_TYPES)
    assert _schema_types(schema, "client_message") == {"ping", "text", "interrupt"}
    mapping = schema["server_event"]["discriminator"]["mapping"]
    assert set(mapping) == set(EVENT_TYPES)


def _page_reads() -> tuple[set[str], set[str]]:
    """The event types the page's handler switches on and the ``event.<field>`` it reads."""
    source = APP_JS.read_text(encoding="utf-8")
    handler = re.search(r"function onEvent\(event\)\s*\{(.*?)\n\}", source, re.S)
    assert handler, "app.js has no onEvent(event) handler"
    body = handler.group(1)
    types = set(re.findall(r"""case\s+["']([^"']+)["']\s*:""", body))
    fields = set(re.findall(r"\bevent\.([A-Za-z_]\w*)", body))
    return types, fields


def test_page_reads_only_what_the_events_carry() -> None:
    types, fields = _page_reads()
    assert {"status", "transcript", "interrupted", "error"} <= types  # the parse found them
    assert types <= set(EVENT_TYPES), (
        f"app.js handles unknown event types {types - set(EVENT_TYPES)}"
    )
    known = {name for cls in MODELS for name in cls.model_fields}
    assert {"type", "state", "text", "turn_id"} <= fields
    assert fields <= known, f"app.js reads fields no event has: {sorted(fields - known)}"


def test_client_records_typed_events_and_skips_garbage() -> None:
    from realtime_avatar.evaluate.rtc_client import AvatarCall

    call = AvatarCall("http://127.0.0.1:9", [], measure_mouth=False)
    for event in SAMPLES:
        call.on_message(to_json(event))
    call.on_message("not json")
    call.on_message('{"type": "nope"}')
    call.on_message(b'{"type": "interrupted", "turn_id": 9}')
    events = [e for _, e in call.record.events]
    assert events == [*SAMPLES, InterruptedEvent(turn_id=9)]
    assert call.record.video_origin_index() == 17
    assert call.record.texts("user") == ["Wie heißt du?"]
    assert call.record.texts("avatar") == []  # the avatar's piece was not final
    assert [e.turn_id for _, e in call.record.of_type(TurnEvent)] == [2, 4]


def test_client_ping_is_answered_by_its_pong() -> None:
    import asyncio

    from realtime_avatar.evaluate.rtc_client import AvatarCall

    call = AvatarCall("http://127.0.0.1:9", [], measure_mouth=False)
    sent: list[str] = []

    class Channel:  # answers as the server does
        readyState = "open"

        def send(self, message: str) -> None:
            sent.append(message)
            ping = parse_client_message(message)
            call.on_message(to_json(PongEvent(t=1.0)))  # someone else's pong first
            call.on_message(to_json(PongEvent(t=ping.t)))

    call._channel = Channel()
    rtt = asyncio.run(call.ping(timeout_s=2.0))
    assert 0 <= rtt < 2.0
    assert json.loads(sent[0])["type"] == "ping"
