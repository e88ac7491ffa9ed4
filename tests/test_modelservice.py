"""The model service: its protocol, its server, and the runtime using it through the seams.

Fast tests check the wire format and the service's answers in-process (Starlette's test
client, no socket, stand-in renderer and synthesizer). Slow tests start a real
``avatar model-service`` on loopback (mesh2d + Piper, and wav2lip on random weights in the
public checkpoint layout) and run the remote renderer and synthesizer, ``avatar say`` and a
paced, live-style consumer through it: frames paired with audio, barge-in, several
runtimes on one service, a wrong token, and the service killed mid-reply.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realtime_avatar.constants import OUTPUT_RATE_HZ, SAMPLES_PER_FRAME
from realtime_avatar.errors import ConfigurationError
from realtime_avatar.frames import AVFrame, PhonemeTiming, Speech, WordTiming
from realtime_avatar.media.audio import float_to_int16, resample
from realtime_avatar.modelservice import protocol as p
from realtime_avatar.modelservice.client import (
    frame_codec,
    frames_of,
    join_chunks,
    rest_of,
    service_url,
    uses_service,
)
from realtime_avatar.render.base import FaceImage
from realtime_avatar.render.registry import RENDERERS
from realtime_avatar.settings import Settings
from realtime_avatar.tts import registry as tts_registry
from realtime_avatar.tts.base import SynthCapabilities

from .stand_ins import AudioMouthRenderer

AVATAR = [sys.executable, "-m", "realtime_avatar.cli"]


def _speech(seconds: float = 0.5, rate: int = 22_050, turn_id: int = 1) -> Speech:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * np.clip(np.sin(2 * np.pi * 3 * t), 0, 1))
    return Speech(
        turn_id, "ba ba", "en", pcm.astype(np.float32), rate,
        [PhonemeTiming("b", 0.0, 0.1), PhonemeTiming("a", 0.1, seconds)],
        [WordTiming("ba", 0.0, seconds)],
    )


def _frames_audio(speech: Speech) -> np.ndarray:
    """The seam's audio for ``speech``: 48 kHz int16 padded to whole frames."""
    pcm = float_to_int16(resample(speech.pcm, speech.sample_rate_hz, OUTPUT_RATE_HZ))
    out = np.zeros(frames_of(speech) * SAMPLES_PER_FRAME, np.int16)
    out[: len(pcm)] = pcm
    return out


# --- the wire format ------------------------------------------------------------------


def test_binary_messages_round_trip_and_malformed_ones_are_named() -> None:
    data = p.encode_binary({"type": "x", "n": 1}, b"\x01\x02")
    header, payload = p.decode_binary(data)
    assert header == {"type": "x", "n": 1} and bytes(payload) == b"\x01\x02"
    with pytest.raises(p.ProtocolError, match="shorter than its 4-byte header"):
        p.decode_binary(b"\x00")
    with pytest.raises(p.ProtocolError, match="header length"):
        p.decode_binary(b"\x00\x00\x01\x00{}")
    with pytest.raises(p.ProtocolError, match="not JSON"):
        p.decode_binary(b"\x00\x00\x00\x02{x")
    with pytest.raises(p.ProtocolError, match='string "type"'):
        p.decode_text('{"kind": "hello"}')
    with pytest.raises(p.ProtocolError, match="not JSON"):
        p.decode_text("hello")


def test_speech_round_trips_with_its_timings_and_bad_speech_is_refused() -> None:
    speech = _speech()
    header, payload = p.decode_binary(p.encode_speech("push", speech, seq=3))
    assert header["seq"] == 3
    back = p.decode_speech(header, payload)
    assert back.turn_id == 1 and back.text == "ba ba" and back.sample_rate_hz == 22_050
    assert np.array_equal(back.pcm, speech.pcm)
    assert back.phonemes == speech.phonemes and back.words == speech.words

    def broken(**changes: Any) -> dict[str, Any]:
        return {**header, **changes}

    with pytest.raises(p.ProtocolError, match="sample_rate_hz 10 is not"):
        p.decode_speech(broken(sample_rate_hz=10), payload)
    with pytest.raises(p.ProtocolError, match="'sample_rate_hz' must be int"):
        p.decode_speech(broken(sample_rate_hz="fast"), payload)
    with pytest.raises(p.ProtocolError, match="whole float32 samples"):
        p.decode_speech(header, payload[:-1])
    with pytest.raises(p.ProtocolError, match="NaN"):
        p.decode_speech(header, memoryview(np.full(4, np.nan, "<f4").tobytes()))
    with pytest.raises(p.ProtocolError, match=r"\[label, start_s, end_s\]"):
        p.decode_speech(broken(phonemes=[["a", "soon", 1]]), payload)
    with pytest.raises(p.ProtocolError, match="'turn_id' must be int"):
        p.decode_speech(broken(turn_id=True), payload)


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
def test_frames_round_trip_with_their_audio(codec: str) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    rgb = np.stack([xx * 4, yy * 4, (xx + yy) * 2], 2).astype(np.uint8)
    audio = rng.integers(-3000, 3000, SAMPLES_PER_FRAME).astype(np.int16)
    frame = AVFrame(7, 42, rgb, audio, speaking=True)
    header, payload = p.decode_binary(p.encode_frame(frame, seq=5, busy=True, codec=codec))
    got = p.decode_frame(header, payload)
    assert got.seq == 5 and got.busy and got.frame.speaking
    assert got.frame.turn_id == 7 and got.frame.index == 42
    assert np.array_equal(got.frame.audio, audio)  # the audio is never lossy
    if codec == "raw":
        assert np.array_equal(got.frame.rgb, rgb)
    else:
        assert np.abs(got.frame.rgb.astype(int) - rgb).mean() < 3
    with pytest.raises(p.ProtocolError, match="audio_samples must be 1920"):
        p.decode_frame({**header, "audio_samples": 960}, payload)
    with pytest.raises(p.ProtocolError, match="does not match its shape|does not decode"):
        p.decode_frame({**header, "shape": [32, 64, 3]}, payload)


def test_render_open_carries_the_face_and_refuses_bad_shapes() -> None:
    face = np.arange(32 * 32 * 3, dtype=np.uint32).astype(np.uint8).reshape(32, 32, 3)
    points = np.random.default_rng(1).uniform(0, 32, (468, 2)).astype(np.float32)
    header, payload = p.decode_binary(p.encode_render_open("mesh2d", face, points, "jpeg", 8))
    opened = p.decode_render_open(header, payload)
    assert opened.renderer == "mesh2d" and opened.frame_codec == "jpeg" and opened.ahead_frames == 8
    assert np.array_equal(opened.face_rgb, face) and np.array_equal(opened.landmarks, points)
    with pytest.raises(p.ProtocolError, match=r"face_shape must be \[H, W, 3\]"):
        p.decode_render_open({**header, "face_shape": [32, 32, 4]}, payload)
    with pytest.raises(p.ProtocolError, match="payload size"):
        p.decode_render_open(header, payload[:-4])
    with pytest.raises(p.ProtocolError, match="frame_codec must be one of raw, jpeg"):
        p.decode_render_open({**header, "frame_codec": "png"}, payload)
    with pytest.raises(p.ProtocolError, match="ahead_frames must be 1..250"):
        p.decode_render_open({**header, "ahead_frames": 0}, payload)


def test_hello_names_a_version_mismatch() -> None:
    assert p.check_hello(p.hello("render")) == "render"
    with pytest.raises(p.VersionMismatch, match="speaks protocol version 1, the client version 2"):
        p.check_hello({"type": "hello", "protocol": 2, "role": "render"})
    with pytest.raises(p.ProtocolError, match="role must be one of render, tts"):
        p.check_hello({"type": "hello", "protocol": 1, "role": "asr"})
    with pytest.raises(p.ProtocolError, match="expected hello first"):
        p.check_hello({"type": "push"})


def test_settings_name_the_service_and_what_goes_there() -> None:
    assert service_url("ws://gpu:8765") == "ws://gpu:8765/ws"
    assert service_url("http://gpu:8765/") == "ws://gpu:8765/ws"
    assert service_url("https://gpu.example/models/ws") == "wss://gpu.example/models/ws"
    assert service_url("127.0.0.1:8765") == "ws://127.0.0.1:8765/ws"
    with pytest.raises(ConfigurationError, match="AVATAR_MODEL_SERVICE_URL='ftp://x'"):
        service_url("ftp://x")
    assert not uses_service(Settings(), "render")
    on = Settings(model_service_url="ws://h:1", model_service_stages="render")
    assert uses_service(on, "render") and not uses_service(on, "tts")
    with pytest.raises(ConfigurationError, match="AVATAR_MODEL_SERVICE_STAGES"):
        uses_service(Settings(model_service_url="ws://h:1", model_service_stages="asr"), "tts")
    assert frame_codec(Settings(), "ws://127.0.0.1:1/ws") == "raw"
    assert frame_codec(Settings(), "ws://gpu-box:1/ws") == "jpeg"
    with pytest.raises(ConfigurationError, match="use raw, jpeg or auto"):
        frame_codec(Settings(model_service_frame_codec="png"), "ws://h/ws")


def test_the_rest_of_a_piece_and_joined_chunks_keep_their_timings() -> None:
    speech = _speech(1.0)
    assert frames_of(speech) == 25
    rest = rest_of(speech, 10)  # 0.4 s in
    assert abs(rest.duration_s - 0.6) < 1e-3
    assert rest.phonemes == [PhonemeTiming("a", 0.0, pytest.approx(0.6))]
    joined = join_chunks([_speech(0.5), _speech(0.25)], turn_id=4)
    assert joined.turn_id == 4 and abs(joined.duration_s - 0.75) < 1e-3
    assert joined.words[1].start_s == pytest.approx(0.5)
    assert joined.phonemes[-1].end_s == pytest.approx(0.75)


# --- the service, in-process (no socket) --------------------------------------------


@pytest.fixture
def service_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from realtime_avatar.modelservice.server import create_service_app

    monkeypatch.setitem(RENDERERS, "audio-mouth", AudioMouthRenderer)
    monkeypatch.setitem(tts_registry.SYNTHESIZERS, "chunky", lambda s, r: ChunkySynth())
    monkeypatch.setattr(tts_registry, "_SHARED", {})
    monkeypatch.setattr(tts_registry, "_PER_REFERENCE", {})
    app = create_service_app(Settings(token="s3cret", data_dir=tmp_path))
    with TestClient(app) as client:
        yield client


AUTH = {"Authorization": "Bearer s3cret"}


class ChunkySynth:
    """A synthesizer that streams two chunks per request (as a streaming TTS would)."""

    name = "chunky"
    sample_rate_hz = 22_050

    @property
    def capabilities(self) -> SynthCapabilities:
        return SynthCapabilities(frozenset({"en"}), True, False)

    @property
    def voice_id(self) -> str:
        return "chunky-1"

    def languages(self) -> frozenset[str]:
        return frozenset({"en"})

    def synthesize(self, text: str, language: str, turn_id: int = 0) -> Speech:
        return join_chunks(list(self.synthesize_stream(text, language, turn_id)), turn_id)

    def synthesize_stream(self, text: str, language: str, turn_id: int = 0) -> Iterator[Speech]:
        yield _speech(0.5, turn_id=turn_id)
        yield _speech(0.25, turn_id=turn_id)


def _face() -> FaceImage:
    return FaceImage(np.zeros((32, 32, 3), np.uint8), np.zeros((468, 2), np.float32))


def _open_render(ws: Any, ahead: int = 4, renderer: str = "audio-mouth") -> dict[str, Any]:
    ws.send_text(p.encode_text(p.hello("render")))
    assert p.decode_text(ws.receive_text())["type"] == "welcome"
    face = _face()
    ws.send_bytes(p.encode_render_open(renderer, face.face_rgb, face.landmarks, "raw", ahead))
    return p.decode_text(ws.receive_text())


def _frame(ws: Any) -> p.FrameMessage:
    header, payload = p.decode_binary(ws.receive_bytes())
    return p.decode_frame(header, payload)


def test_a_wrong_or_missing_token_is_refused_with_the_servers_wording(service_app: Any) -> None:
    from starlette.testclient import WebSocketDenialResponse

    for headers in ({}, {"Authorization": "Bearer nope"}):
        with pytest.raises(WebSocketDenialResponse) as refused:
            with service_app.websocket_connect(p.WS_PATH, headers=headers):
                pass
        assert refused.value.status_code == 401
        assert refused.value.json() == {"error": p.AUTH_MESSAGE}
        assert "missing or wrong bearer token" in p.AUTH_MESSAGE


def test_a_mismatched_protocol_version_is_refused_clearly(service_app: Any) -> None:
    from starlette.websockets import WebSocketDisconnect

    with service_app.websocket_connect(p.WS_PATH, headers=AUTH) as ws:
        ws.send_text(p.encode_text({"type": "hello", "protocol": 99, "role": "render"}))
        error = p.decode_text(ws.receive_text())
        assert error["type"] == "error" and error["fatal"]
        assert "protocol version 1, the client version 99" in error["error"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == p.CLOSE_VERSION


def test_a_renderer_the_service_lacks_is_refused_by_name(service_app: Any) -> None:
    with service_app.websocket_connect(p.WS_PATH, headers=AUTH) as ws:
        error = _open_render(ws, renderer="no-such")
        assert error["type"] == "error"
        assert "cannot build renderer 'no-such'" in error["error"]
        assert "AVATAR_RENDERER" in error["error"]


def test_a_render_session_streams_paired_frames_and_a_clear_drops_the_turn(
    service_app: Any,
) -> None:
    speech = _speech(0.6)
    expected = _frames_audio(speech).reshape(-1, SAMPLES_PER_FRAME)
    with service_app.websocket_connect(p.WS_PATH, headers=AUTH) as ws:
        ready = _open_render(ws, ahead=4)
        assert ready == {"type": "render_ready", "renderer": "audio-mouth", "size_px": 32}
        idle = [_frame(ws) for _ in range(4)]  # the credits granted at open: idle frames
        assert all(not m.frame.speaking and m.seq == 0 for m in idle)
        ws.send_bytes(p.encode_speech("push", speech, seq=1))
        ws.send_text(p.encode_text({"type": "credit", "frames": 8}))
        got = [_frame(ws) for _ in range(8)]
        spoken = [m for m in got if m.seq == 1]
        assert spoken and all(m.frame.speaking for m in spoken)
        for i, message in enumerate(spoken):  # each frame carries exactly its own audio
            assert np.array_equal(message.frame.audio, expected[i])
        assert spoken[0].busy
        ws.send_text(p.encode_text({"type": "clear", "seq": 2}))
        ws.send_text(p.encode_text({"type": "credit", "frames": 6}))
        after = [_frame(ws) for _ in range(6)]
        cleared = [m for m in after if m.seq == 2]
        assert cleared, "frames drawn after the clear"
        # Drawn after the clear: the turn's queued speech was dropped on the service.
        assert all(not m.frame.speaking and not m.busy and not m.frame.audio.any()
                   for m in cleared)
        ws.send_text(p.encode_text({"type": "credit", "frames": -1}))
        error = p.decode_text(ws.receive_text())
        assert "credit: frames must be 1..250" in error["error"]


def test_a_tts_session_streams_chunks_as_they_are_made(service_app: Any) -> None:
    with service_app.websocket_connect(p.WS_PATH, headers=AUTH) as ws:
        ws.send_text(p.encode_text(p.hello("tts")))
        assert p.decode_text(ws.receive_text())["type"] == "welcome"
        ws.send_bytes(p.encode_binary({"type": "synth_open", "name": "chunky"}))
        ready = p.decode_text(ws.receive_text())
        assert ready["type"] == "synth_ready" and ready["voice_id"] == "chunky-1"
        assert ready["languages"] == ["en"] and ready["timings"] and not ready["reference_voice"]
        ws.send_text(p.encode_text({"type": "synthesize", "id": 1, "text": "hi",
                                    "language": "en", "turn_id": 3}))
        chunks = []
        for _ in range(2):
            header, payload = p.decode_binary(ws.receive_bytes())
            assert header["type"] == "speech" and header["id"] == 1
            chunks.append(p.decode_speech(header, payload))
        assert p.decode_text(ws.receive_text()) == {"type": "speech_end", "id": 1, "chunks": 2}
        assert [round(c.duration_s, 2) for c in chunks] == [0.5, 0.25]
        assert join_chunks(chunks, 3).words[1].start_s == pytest.approx(0.5)
        ws.send_text(p.encode_text({"type": "synthesize", "id": 2, "text": "x" * 30_000,
                                    "language": "en", "turn_id": 3}))
        error = p.decode_text(ws.receive_text())
        assert error["type"] == "synth_error" and error["id"] == 2
        assert "over 20000 characters" in error["error"]


class CloneSynth(ChunkySynth):
    """A synthesizer that speaks in the reference voice: its voice id is the sample's hash."""

    name = "clone"

    def __init__(self, reference: Any) -> None:
        import hashlib

        self.reference = reference
        self.sample = Path(reference.sample_path).read_bytes()
        self._voice_id = hashlib.sha256(self.sample).hexdigest()

    @property
    def capabilities(self) -> SynthCapabilities:
        return SynthCapabilities(frozenset({"en"}), False, True)

    @property
    def voice_id(self) -> str:
        return self._voice_id


def test_a_cloning_synthesizer_gets_the_avatars_voice_sample(
    service_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    monkeypatch.setitem(tts_registry.SYNTHESIZERS, "clone", lambda s, r: CloneSynth(r))
    sample = b"RIFF" + bytes(range(256)) * 40  # what the runtime read from voice.wav
    with service_app.websocket_connect(p.WS_PATH, headers=AUTH) as ws:
        ws.send_text(p.encode_text(p.hello("tts")))
        assert p.decode_text(ws.receive_text())["type"] == "welcome"
        ws.send_bytes(p.encode_binary(
            {"type": "synth_open", "name": "clone", "reference_name": "ava",
             "reference_suffix": "wav"}, sample))
        ready = p.decode_text(ws.receive_text())
        assert ready["reference_voice"] and ready["voice_id"] == hashlib.sha256(sample).hexdigest()


def test_the_service_needs_a_token_off_loopback() -> None:
    from realtime_avatar.modelservice.server import create_service_app

    with pytest.raises(ConfigurationError, match="set AVATAR_TOKEN"):
        create_service_app(Settings(host="0.0.0.0"))


# --- a real service on loopback -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``avatar model-service`` in a subprocess on a loopback port."""

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or _free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        import httpx

        self.proc = subprocess.Popen(
            [*AVATAR, "model-service", "--port", str(self.port)],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise AssertionError(f"model service exited: {out}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("model service did not start in 120 s")

    def health(self) -> dict[str, Any]:
        import httpx

        return dict(httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5).json())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVATAR_")}
    env.update(HF_HUB_OFFLINE="1", ORT_DISABLE_TELEMETRY="1",
               AVATAR_DATA_DIR=os.environ.get("AVATAR_DATA_DIR", ""), **extra)
    return env


@pytest.fixture(scope="module")
def service(data_dir: Path) -> Iterator[Service]:
    svc = Service(_env()).start()
    yield svc
    svc.stop()


def _remote(url: str, **changes: Any) -> Settings:
    return Settings(model_service_url=url, model_service_timeout_s=60, **changes)


def _spoken(renderer: Any, speech: Speech, limit: int = 2000) -> list[AVFrame]:
    renderer.push(speech)
    frames = []
    while renderer.busy and len(frames) < limit:
        frames.append(renderer.next_frame())
    return frames


@pytest.fixture(scope="module")
def hello_speech(data_dir: Path) -> Speech:
    from realtime_avatar.tts.registry import get_synthesizer

    return get_synthesizer("en", Settings()).synthesize(
        "Hello there, this is a test of the model service.", "en", turn_id=1
    )


@pytest.mark.slow
def test_remote_mesh2d_frames_arrive_paired_with_their_audio(
    service: Service, default_avatar: Any, hello_speech: Speech
) -> None:
    from realtime_avatar.modelservice.client import RemoteRenderer
    from realtime_avatar.render.registry import create_renderer

    renderer = create_renderer("mesh2d", default_avatar.face, _remote(service.url))
    assert isinstance(renderer, RemoteRenderer) and renderer.remote
    assert renderer.name == "mesh2d" and renderer.size_px == 512
    idle = [renderer.next_frame() for _ in range(3)]
    frames = _spoken(renderer, hello_speech)
    spoken = [f for f in frames if f.speaking]
    expected = _frames_audio(hello_speech)
    assert len(spoken) == len(expected) // SAMPLES_PER_FRAME
    assert np.array_equal(np.concatenate([f.audio for f in spoken]), expected)
    assert [f.index for f in idle + frames] == list(range(len(idle) + len(frames)))
    assert all(f.rgb.shape == (512, 512, 3) for f in frames)
    mouth = [f.rgb[300:420, 180:330].astype(int).mean() for f in spoken]
    assert max(mouth) - min(mouth) > 1.0  # the mouth moves with the speech
    assert not renderer.next_frame().speaking
    renderer.close()


@pytest.mark.slow
def test_barge_in_clears_the_turn_on_the_service(
    service: Service, default_avatar: Any, hello_speech: Speech
) -> None:
    from realtime_avatar.render.registry import create_renderer

    renderer = create_renderer("mesh2d", default_avatar.face, _remote(service.url))
    renderer.push(hello_speech)
    renderer.push(hello_speech)
    first = [renderer.next_frame() for _ in range(5)]
    assert all(f.speaking for f in first)
    renderer.clear()
    assert not renderer.busy
    after = [renderer.next_frame() for _ in range(30)]
    assert not any(f.speaking or f.audio.any() for f in after)
    again = _spoken(renderer, hello_speech)  # the session goes on after a barge-in
    assert sum(f.speaking for f in again) == frames_of(hello_speech)
    renderer.close()


@pytest.mark.slow
def test_several_runtimes_share_one_service(
    service: Service, default_avatar: Any, hello_speech: Speech
) -> None:
    from realtime_avatar.render.registry import create_renderer

    settings = _remote(service.url, model_service_frame_codec="jpeg")
    deadline = time.monotonic() + 20  # earlier tests' sessions hang up in the background
    while service.health()["sessions"]["render"] and time.monotonic() < deadline:
        time.sleep(0.1)
    before = service.health()["sessions"]["render"]
    a: Any = create_renderer("mesh2d", default_avatar.face, settings)
    b: Any = create_renderer("mesh2d", default_avatar.face, settings)
    assert service.health()["sessions"]["render"] == before + 2
    a.push(hello_speech)
    pairs = [(a.next_frame(), b.next_frame()) for _ in range(20)]
    assert all(fa.speaking for fa, _ in pairs)  # each session has its own queue
    assert not any(fb.speaking for _, fb in pairs)
    a.close()
    del b  # a session its owner drops without close() hangs up too
    gc.collect()
    deadline = time.monotonic() + 20
    while service.health()["sessions"]["render"] > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.health()["sessions"]["render"] == before


@pytest.mark.slow
def test_remote_synthesizer_speaks_on_the_service(service: Service, data_dir: Path) -> None:
    from realtime_avatar.modelservice.client import RemoteSynthesizer
    from realtime_avatar.tts.registry import get_synthesizer

    local = get_synthesizer("en", Settings())
    remote = get_synthesizer("en", _remote(service.url))
    assert isinstance(remote, RemoteSynthesizer) and remote.remote
    assert remote.name == "piper" and remote.voice_id == local.voice_id
    assert remote.capabilities == local.capabilities
    results: dict[int, Speech] = {}

    def speak(i: int) -> None:
        results[i] = remote.synthesize(f"Sentence number {i} is spoken remotely.", "en", turn_id=i)

    threads = [threading.Thread(target=speak, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == [0, 1, 2]
    for i, speech in results.items():
        assert speech.turn_id == i and speech.sample_rate_hz == local.sample_rate_hz
        assert speech.duration_s > 1.0
        assert speech.phonemes[-1].end_s == pytest.approx(speech.duration_s, abs=0.05)
    spanish = get_synthesizer("es", _remote(service.url))
    assert spanish.name == "espeak"
    assert spanish.synthesize("Hola, ¿qué tal?", "es").duration_s > 0.3


@pytest.mark.slow
def test_a_wrong_token_is_refused(data_dir: Path, default_avatar: Any) -> None:
    from realtime_avatar.modelservice.client import ModelServiceRefused, RemoteSynthesizer
    from realtime_avatar.render.registry import create_renderer

    svc = Service(_env(AVATAR_TOKEN="s3cret")).start()
    try:
        for token in ("wrong", None):
            settings = _remote(svc.url, model_service_token=token)
            with pytest.raises(ModelServiceRefused, match="missing or wrong bearer token"):
                create_renderer("mesh2d", default_avatar.face, settings)
            with pytest.raises(ModelServiceRefused, match="AVATAR_MODEL_SERVICE_TOKEN"):
                RemoteSynthesizer("piper", settings)
        right = create_renderer("mesh2d", default_avatar.face, _remote(svc.url, token="s3cret"))
        assert right.remote  # type: ignore[attr-defined]
        right.close()  # type: ignore[attr-defined]
    finally:
        svc.stop()


@pytest.mark.slow
def test_killing_the_service_mid_reply_falls_back_and_reconnects(
    data_dir: Path, default_avatar: Any, hello_speech: Speech, caplog: pytest.LogCaptureFixture
) -> None:
    from realtime_avatar.render.registry import create_renderer

    svc = Service(_env()).start()
    try:
        renderer: Any = create_renderer("mesh2d", default_avatar.face, _remote(svc.url))
        renderer.push(hello_speech)
        frames = [renderer.next_frame() for _ in range(10)]
        assert renderer.remote and all(f.speaking for f in frames)
        with caplog.at_level(logging.WARNING, "realtime_avatar.modelservice.client"):
            svc.kill()
            while renderer.busy and len(frames) < 500:
                frames.append(renderer.next_frame())
        assert not renderer.remote and renderer.fallbacks == 1
        lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(lines) == 1
        assert f"model service at {svc.url}/ws is unreachable" in lines[0]
        assert "start `avatar model-service` there or unset AVATAR_MODEL_SERVICE_URL" in lines[0]
        assert "Rendering here with mesh2d" in lines[0]
        # The whole reply was spoken: the service's frames, then the fallback's.
        spoken = [f for f in frames if f.speaking]
        assert abs(len(spoken) - frames_of(hello_speech)) <= 1
        heard = np.concatenate([f.audio for f in spoken]).astype(np.float32)
        want = _frames_audio(hello_speech).astype(np.float32)
        n = min(len(heard), len(want))
        assert np.corrcoef(heard[:n], want[:n])[0, 1] > 0.95
        # A new reply is spoken locally while the service is down.
        assert sum(f.speaking for f in _spoken(renderer, hello_speech)) >= frames_of(hello_speech) - 1
        svc.start()  # back on the same port: the renderer moves back between replies
        deadline = time.monotonic() + 60
        while not renderer.remote and time.monotonic() < deadline:
            renderer.next_frame()
            time.sleep(0.04)
        assert renderer.remote
        again = _spoken(renderer, hello_speech)
        assert sum(f.speaking for f in again) == frames_of(hello_speech)
        renderer.close()
    finally:
        svc.stop()


@pytest.mark.slow
def test_a_service_down_from_the_start_falls_back_at_once(
    default_avatar: Any, hello_speech: Speech, caplog: pytest.LogCaptureFixture
) -> None:
    from realtime_avatar.modelservice.client import RemoteSynthesizer
    from realtime_avatar.render.registry import create_renderer
    from realtime_avatar.tts.registry import get_synthesizer

    url = f"ws://127.0.0.1:{_free_port()}"
    with caplog.at_level(logging.WARNING, "realtime_avatar.modelservice.client"):
        renderer: Any = create_renderer("mesh2d", default_avatar.face, _remote(url))
        # Through the registry (its lock is held while the handle is built and falls back).
        synth: Any = get_synthesizer("en", _remote(url))
    assert isinstance(synth, RemoteSynthesizer)
    assert not renderer.remote and renderer.name == "mesh2d"
    assert not synth.remote and synth.name == "piper" and "en" in synth.languages()
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert f"model service at {url}/ws is unreachable" in messages
    assert "Speaking here with piper" in messages
    spoken = _spoken(renderer, hello_speech)
    assert sum(f.speaking for f in spoken) == frames_of(hello_speech)
    assert synth.synthesize("Still talking.", "en").duration_s > 0.5
    renderer.close()
    synth.close()


@pytest.mark.slow
def test_a_paced_live_style_reader_gets_every_frame_on_time(
    service: Service, default_avatar: Any, hello_speech: Speech
) -> None:
    """25 fps pulls from a render thread while the 'event loop' pushes and barges in."""
    from realtime_avatar.render.registry import create_renderer

    renderer = create_renderer("mesh2d", default_avatar.face, _remote(service.url))
    frames: list[AVFrame] = []
    stop = threading.Event()

    def pump() -> None:
        start = time.monotonic()
        while not stop.is_set():
            frames.append(renderer.next_frame())
            delay = start + len(frames) / 25 - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    thread = threading.Thread(target=pump)
    thread.start()
    time.sleep(0.5)
    renderer.push(hello_speech)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(f.speaking for f in frames) < 20:
        time.sleep(0.04)
    renderer.clear()
    cut_at = len(frames)
    time.sleep(1.0)
    stop.set()
    thread.join(10)
    spoken = [f for f in frames[:cut_at] if f.speaking]
    assert len(spoken) >= 20
    expected = _frames_audio(hello_speech)[: len(spoken) * SAMPLES_PER_FRAME]
    assert np.array_equal(np.concatenate([f.audio for f in spoken]), expected)
    assert not any(f.speaking for f in frames[cut_at + 1 :])  # at most one drawn mid-clear
    assert [f.index for f in frames] == list(range(len(frames)))
    renderer.close()


@pytest.mark.slow
def test_avatar_say_runs_through_the_service(service: Service, tmp_path: Path) -> None:
    before = service.health()["frames_sent"]
    out = tmp_path / "hello.mp4"
    run = subprocess.run(
        [*AVATAR, "say", "Hello from the model service.", "-o", str(out)],
        env=_env(AVATAR_MODEL_SERVICE_URL=service.url), capture_output=True, text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "unreachable" not in run.stderr
    assert service.health()["frames_sent"] > before + 25
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type:format=duration",
         "-of", "csv=p=0", str(out)], capture_output=True, text=True, check=True,
    ).stdout.split()
    assert "video" in probe and "audio" in probe
    assert float(probe[-1]) > 1.0


@pytest.fixture(scope="module")
def wav2lip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from realtime_avatar.render.wav2lip_net import random_weights

    from .test_wav2lip import _save_public_layout

    return _save_public_layout(
        tmp_path_factory.mktemp("w2l") / "wav2lip_gan.pth", random_weights(seed=0)
    )


@pytest.mark.slow
def test_wav2lip_on_the_service_draws_what_it_draws_in_process(
    data_dir: Path, default_avatar: Any, hello_speech: Speech, wav2lip_checkpoint: Path
) -> None:
    from realtime_avatar.render.registry import create_renderer

    svc = Service(_env(AVATAR_WAV2LIP_CHECKPOINT=str(wav2lip_checkpoint))).start()
    try:
        speech = Speech(1, hello_speech.text, "en", hello_speech.pcm[: 22_050], 22_050)
        local = create_renderer(
            "wav2lip", default_avatar.face, Settings(wav2lip_checkpoint=wav2lip_checkpoint)
        )
        remote: Any = create_renderer(
            "wav2lip", default_avatar.face,
            _remote(svc.url, model_service_frame_codec="raw"),
        )
        assert remote.remote and remote.name == "wav2lip"
        want = [f for f in _spoken(local, speech) if f.speaking]
        got = [f for f in _spoken(remote, speech) if f.speaking]
        assert len(got) == len(want) == frames_of(speech)
        for a, b in zip(got, want, strict=True):
            assert np.array_equal(a.audio, b.audio)
            assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).max() <= 1
        remote.close()
    finally:
        svc.stop()



def test_a_port_in_use_is_refused_in_one_line() -> None:
    from realtime_avatar.modelservice.server import check_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_port("127.0.0.1", port)


@pytest.mark.slow
def test_a_hung_service_times_out_to_the_fallback(
    data_dir: Path, default_avatar: Any, hello_speech: Speech, caplog: pytest.LogCaptureFixture
) -> None:
    from realtime_avatar.render.registry import create_renderer

    svc = Service(_env()).start()
    assert svc.proc is not None
    try:
        settings = Settings(model_service_url=svc.url, model_service_timeout_s=3)
        renderer: Any = create_renderer("mesh2d", default_avatar.face, settings)
        for _ in range(3):
            renderer.next_frame()
        with caplog.at_level(logging.WARNING, "realtime_avatar.modelservice.client"):
            svc.proc.send_signal(signal.SIGSTOP)  # alive, connected, and silent
            frames = _spoken(renderer, hello_speech)
        assert not renderer.remote
        assert sum(f.speaking for f in frames) == frames_of(hello_speech)
        lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(lines) == 1 and "(no frame for 3 s)" in lines[0]
        renderer.close()
    finally:
        if svc.proc is not None:
            svc.proc.send_signal(signal.SIGCONT)
        svc.stop()


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_conversation_answers_and_is_barged_in_through_the_service(
    anyio_backend: str, service: Service, default_avatar: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's own turn machinery (stand-in VAD, ASR, dialogue and TTS) with the face
    rendered on the service: the answer plays with its audio, a barge-in silences it."""
    from realtime_avatar.engine.conversation import ECHO_GUARD_S
    from realtime_avatar.render.registry import create_renderer

    from . import test_engine
    from .stand_ins import StubSpeech

    monkeypatch.setattr(test_engine, "WAIT_S", 120.0)  # frames cross processes on a busy machine
    renderer: Any = create_renderer("mesh2d", default_avatar.face, _remote(service.url))
    h = test_engine.Harness(renderer=renderer)
    await h.conv.start()
    try:
        await h.say("what is your name", pause=False)
        turn = await h.play_turn()
        assert not turn.interrupted and renderer.remote
        expected = sum(frames_of(StubSpeech().speak(text, "en")) for text in h.pushed)
        assert sum(f.speaking for f in h.frames) == expected  # every frame, with its audio
        assert all(f.audio.any() for f in h.frames if f.speaking)

        h.responder.reply = lambda text: "This is a long answer. " * 6
        start = len(h.frames)
        await h.say("talk to me")
        await h.until(lambda: any(f.speaking for f in h.frames[start:]), pull=True)
        h.clock.advance(ECHO_GUARD_S + 0.1)
        await h.mic("start")  # the user talks over the avatar
        assert not h.renderer.busy
        after = [h.conv.next_frame() for _ in range(25)]
        assert not any(f.speaking or f.audio.any() for f in after)
        assert h.of(test_engine.InterruptedEvent)
    finally:
        await h.conv.close()
        renderer.close()
