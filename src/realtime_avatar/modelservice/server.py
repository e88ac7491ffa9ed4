"""``avatar model-service``: the configured renderers and synthesizers behind one WebSocket.

The seeds' GPU-service split: a machine with the heavy models (a GPU, the Wav2Lip
checkpoint, a cloning TTS) serves them to one or more runtimes over the protocol in
``protocol.py``. Models load once per process (the registries' caches); each connection
is one session with its own state: a render connection owns one renderer (its queue and
frame clock), a TTS connection one synthesizer handle.

A render session draws frames ahead of the client by at most the credits the client has
granted (it grants one per frame it shows or drops), so the service never runs away from a
live call, yet a GPU can work ahead and batch. Drawing runs on the session's own thread;
``push`` and ``clear`` are applied on the event loop between draws, as the render seam
allows. A clear drops the renderer's queued and playing speech at once, and every frame
says which push or clear it was drawn after, so the client drops frames drawn before it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import tempfile
import threading
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from ..errors import AvatarError, ConfigurationError
from ..frames import Speech
from ..render.base import FaceImage, Renderer
from ..settings import Settings, get_settings
from ..tts.base import ReferenceVoice, Synthesizer
from . import protocol as p
from .protocol import is_loopback

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0
SYNTH_THREADS = 2  # synthesis requests run at once, over all connections


def service_settings(settings: Settings) -> Settings:
    """The service's settings: it renders and speaks here, never through another service."""
    return settings.model_copy(update={"model_service_url": None})


class ServiceState:
    """What the connections share: settings, the synthesis pool, the voice samples."""

    def __init__(self, settings: Settings) -> None:
        self.settings = service_settings(settings)
        self.synth_pool = ThreadPoolExecutor(SYNTH_THREADS, thread_name_prefix="ms-synth")
        self.sessions = {"render": 0, "tts": 0}
        self.frames_sent = 0
        self._references = Path(tempfile.mkdtemp(prefix="avatar-model-service-voices-"))
        self._lock = threading.Lock()

    def reference(self, name: str, suffix: str, data: bytes) -> ReferenceVoice:
        """The avatar's voice sample, kept once per content in a private folder."""
        digest = hashlib.sha256(data).hexdigest()
        clean = "".join(c for c in suffix.lower() if c.isalnum())[:8] or "wav"
        path = self._references / f"{digest}.{clean}"
        with self._lock:
            if not path.exists():
                tmp = path.with_suffix(".part")
                tmp.write_bytes(data)
                tmp.replace(path)
        return ReferenceVoice(sample_path=path, name=name)


def create_service_app(settings: Settings | None = None) -> FastAPI:
    """The model service's ASGI app: ``/ws`` (the protocol) and ``/health``."""
    settings = settings or get_settings()
    if not settings.token and not is_loopback(settings.host):
        raise ConfigurationError(
            f"binding the model service to {settings.host} exposes it to the network; "
            "set AVATAR_TOKEN to a secret first (and the same on the runtime)"
        )
    state = ServiceState(settings)
    app = FastAPI(title="realtime-avatar model service", openapi_url=None, docs_url=None)
    app.state.service = state

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "protocol": p.PROTOCOL_VERSION,
            "sessions": dict(state.sessions),
            "frames_sent": state.frames_sent,
        }

    @app.websocket(p.WS_PATH)
    async def stream(websocket: WebSocket) -> None:
        if settings.token:
            given = websocket.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                await websocket.send_denial_response(
                    JSONResponse({"error": p.AUTH_MESSAGE}, status_code=401)
                )
                return
        await websocket.accept()
        await _serve_connection(websocket, state)

    return app


async def _serve_connection(websocket: WebSocket, state: ServiceState) -> None:
    """One connection: the handshake, then the session of the role it asked for."""
    role = "?"
    try:
        message = await asyncio.wait_for(websocket.receive(), HELLO_TIMEOUT_S)
        role = p.check_hello(_control(message))
        await websocket.send_text(
            p.encode_text(
                {"type": "welcome", "protocol": p.PROTOCOL_VERSION, "role": role,
                 "service": "realtime-avatar model service"}
            )
        )
        state.sessions[role] += 1
        try:
            if role == "render":
                await RenderSession(websocket, state).run()
            else:
                await SynthSession(websocket, state).run()
        finally:
            state.sessions[role] -= 1
    except (WebSocketDisconnect, asyncio.CancelledError):
        return
    except TimeoutError:
        await _close_with(websocket, p.CLOSE_PROTOCOL, "no hello within 10 s")
    except p.VersionMismatch as exc:
        await _close_with(websocket, p.CLOSE_VERSION, exc.message)
    except p.ProtocolError as exc:
        await _close_with(websocket, p.CLOSE_PROTOCOL, exc.message)
    except AvatarError as exc:  # the renderer or synthesizer cannot be built here
        await _close_with(websocket, p.CLOSE_OPEN_FAILED, exc.message)
    except Exception as exc:  # noqa: BLE001 - told to the client, logged here
        log.exception("model service %s session failed", role)
        await _close_with(websocket, 1011, f"the model service failed: {exc.__class__.__name__}: "
                          f"{exc}; see its log")


async def _close_with(websocket: WebSocket, code: int, error: str) -> None:
    """Send a fatal ``error`` and close (quietly if the client is gone already)."""
    log.info("closing a model service connection: %s", error)
    try:
        await websocket.send_text(p.encode_text({"type": "error", "error": error, "fatal": True}))
        await websocket.close(code, reason=error[:120])
    except Exception:  # noqa: BLE001 - the client hung up first
        pass


def _control(message: MutableMapping[str, Any]) -> dict[str, Any]:
    """A received text message as a control message."""
    if message.get("type") == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise p.ProtocolError("expected a text (JSON) control message, got binary")
    return p.decode_text(text)


def _binary(message: MutableMapping[str, Any], expected: str) -> tuple[dict[str, Any], memoryview]:
    """A received binary message of type ``expected``."""
    if message.get("type") == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    data = message.get("bytes")
    if data is None:
        raise p.ProtocolError(f"expected a binary {expected} message, got text")
    header, payload = p.decode_binary(data)
    if header["type"] != expected:
        raise p.ProtocolError(f"expected {expected}, got {header['type']!r}")
    return header, payload


class RenderSession:
    """One runtime's renderer: pushes and clears in, frames out as credits allow."""

    def __init__(self, websocket: WebSocket, state: ServiceState) -> None:
        self.websocket = websocket
        self.state = state
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="ms-render")
        self.credits = 0
        self.credit_added = asyncio.Event()
        self.applied_seq = 0  # the last push or clear applied to the renderer
        self.renderer: Renderer | None = None
        self.codec = "raw"

    async def run(self) -> None:
        """Open the renderer, then serve until the client leaves."""
        from ..render.registry import create_renderer

        loop = asyncio.get_running_loop()
        header, payload = _binary(await self.websocket.receive(), "render_open")
        opened = p.decode_render_open(header, payload)
        face = FaceImage(opened.face_rgb, opened.landmarks, None)
        try:
            self.renderer = renderer = await loop.run_in_executor(
                self.pool, create_renderer, opened.renderer, face, self.state.settings
            )
        except AvatarError as exc:
            raise ConfigurationError(f"the model service cannot build renderer "
                                     f"{opened.renderer!r}: {exc.message}") from None
        self.codec = opened.frame_codec
        self.credits = opened.ahead_frames
        await self.websocket.send_text(
            p.encode_text(
                {"type": "render_ready", "renderer": renderer.name, "size_px": renderer.size_px}
            )
        )
        log.info("render session opened: %s, %d px, %s frames", renderer.name,
                 renderer.size_px, self.codec)
        producer = asyncio.create_task(self._produce())
        try:
            await self._receive(renderer, producer)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            renderer.clear()
            self.pool.shutdown(wait=False, cancel_futures=True)

    async def _receive(self, renderer: Renderer, producer: asyncio.Task[None]) -> None:
        while True:
            receive = asyncio.ensure_future(self.websocket.receive())
            done, _ = await asyncio.wait({receive, producer}, return_when=asyncio.FIRST_COMPLETED)
            if producer in done:
                receive.cancel()
                producer.result()  # re-raise what stopped the drawing
                return
            message = receive.result()
            if message.get("type") == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                header, payload = _binary(message, "push")
                speech = p.decode_speech(header, payload)
                renderer.push(speech)
                self.applied_seq = p.field(header, "seq", int)
                continue
            control = _control(message)
            kind = control["type"]
            if kind == "clear":
                renderer.clear()  # the queued and playing speech is dropped here and now
                self.applied_seq = p.field(control, "seq", int)
            elif kind == "credit":
                frames = p.field(control, "frames", int)
                if not 0 < frames <= p.MAX_AHEAD_FRAMES:
                    raise p.ProtocolError(f"credit: frames must be 1..{p.MAX_AHEAD_FRAMES}")
                self.credits = min(self.credits + frames, p.MAX_AHEAD_FRAMES)
                self.credit_added.set()
            elif kind == "close":
                return
            else:
                raise p.ProtocolError(f"render session: unexpected {kind!r} message")

    async def _produce(self) -> None:
        """Draw the next frame whenever the client has room for it, and send it."""
        loop = asyncio.get_running_loop()
        while True:
            while self.credits <= 0:
                self.credit_added.clear()
                await self.credit_added.wait()
            self.credits -= 1
            data = await loop.run_in_executor(self.pool, self._draw)
            await self.websocket.send_bytes(data)
            self.state.frames_sent += 1

    def _draw(self) -> bytes:
        """The renderer's next frame, encoded, tagged with the push or clear before it."""
        assert self.renderer is not None
        seq = self.applied_seq
        frame = self.renderer.next_frame()
        return p.encode_frame(frame, seq=seq, busy=self.renderer.busy, codec=self.codec)


def speech_chunks(synth: Synthesizer, text: str, language: str, turn_id: int) -> Iterator[Speech]:
    """A synthesizer's speech for ``text`` as it is made: its own chunks if it streams
    (``synthesize_stream``), else the whole piece at once."""
    stream = getattr(synth, "synthesize_stream", None)
    if callable(stream):
        yield from stream(text, language, turn_id=turn_id)
    else:
        yield synth.synthesize(text, language, turn_id=turn_id)


class SynthSession:
    """One synthesizer handle: requests in, speech chunks out as they are made."""

    def __init__(self, websocket: WebSocket, state: ServiceState) -> None:
        self.websocket = websocket
        self.state = state
        self.cancelled: set[int] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.send_lock = asyncio.Lock()

    async def run(self) -> None:
        """Open the synthesizer, then answer requests until the client leaves."""
        from ..tts.registry import synthesizer_named

        loop = asyncio.get_running_loop()
        header, payload = _binary(await self.websocket.receive(), "synth_open")
        name = p.field(header, "name", str)
        reference = None
        if len(payload):
            if len(payload) > p.MAX_REFERENCE_BYTES:
                raise p.ProtocolError("synth_open: the voice sample is over 64 MiB")
            reference = self.state.reference(
                str(header.get("reference_name") or "avatar"),
                str(header.get("reference_suffix") or "wav"),
                bytes(payload),
            )
        try:
            synth = await loop.run_in_executor(
                self.state.synth_pool, synthesizer_named, name, self.state.settings, reference
            )
        except AvatarError as exc:
            raise ConfigurationError(
                f"the model service cannot build synthesizer {name!r}: {exc.message}"
            ) from None
        caps = synth.capabilities
        await self.websocket.send_text(
            p.encode_text(
                {
                    "type": "synth_ready",
                    "name": synth.name,
                    "sample_rate_hz": synth.sample_rate_hz,
                    "languages": sorted(caps.languages),
                    "timings": caps.timings,
                    "reference_voice": caps.reference_voice,
                    "voice_id": synth.voice_id,
                }
            )
        )
        try:
            while True:
                message = await self.websocket.receive()
                if message.get("type") == "websocket.disconnect":
                    return
                control = _control(message)
                kind = control["type"]
                if kind == "synthesize":
                    request_id = p.field(control, "id", int)
                    task = asyncio.create_task(self._answer(synth, request_id, control))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                elif kind == "cancel":
                    self.cancelled.add(p.field(control, "id", int))
                elif kind == "close":
                    return
                else:
                    raise p.ProtocolError(f"tts session: unexpected {kind!r} message")
        finally:
            for task in list(self.tasks):
                task.cancel()

    async def _answer(self, synth: Synthesizer, request_id: int, request: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        try:
            text = p.field(request, "text", str)
            language = p.field(request, "language", str)
            turn_id = p.field(request, "turn_id", int)
            if len(text) > p.MAX_TEXT_CHARS:
                raise p.ProtocolError(f"synthesize: text over {p.MAX_TEXT_CHARS} characters")
            chunks = speech_chunks(synth, text, language, turn_id)
            done = object()
            seq = 0
            while request_id not in self.cancelled:
                # Each chunk goes out as soon as it is made (a streaming synthesizer's
                # first words do not wait for its last).
                chunk: Any = await loop.run_in_executor(self.state.synth_pool, next, chunks, done)
                if chunk is done:
                    break
                async with self.send_lock:
                    await self.websocket.send_bytes(
                        p.encode_speech("speech", chunk, id=request_id, seq=seq)
                    )
                seq += 1
            async with self.send_lock:
                await self.websocket.send_text(
                    p.encode_text({"type": "speech_end", "id": request_id, "chunks": seq})
                )
        except AvatarError as exc:
            await self._error(request_id, exc.message)
        except Exception as exc:  # noqa: BLE001 - the request fails, the session goes on
            log.exception("synthesis failed")
            await self._error(request_id, f"the service's synthesizer failed: {exc}")
        finally:
            self.cancelled.discard(request_id)

    async def _error(self, request_id: int, error: str) -> None:
        try:
            async with self.send_lock:
                await self.websocket.send_text(
                    p.encode_text({"type": "synth_error", "id": request_id, "error": error})
                )
        except Exception:  # noqa: BLE001 - the client hung up
            pass


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, a port something else already listens on."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); stop what runs "
                "there or pick another --port"
            ) from None


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the model service until stopped (uvicorn, one process)."""
    import uvicorn

    app = create_service_app(settings.model_copy(update={"host": host, "port": port}))
    uvicorn.run(app, host=host, port=port, log_level="warning", ws_max_size=p.MAX_MESSAGE_BYTES)
