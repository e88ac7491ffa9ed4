"""The runtime's side of the model service: a ``Renderer`` and a ``Synthesizer`` that run there.

With ``AVATAR_MODEL_SERVICE_URL`` set, the registries build these instead of the local
models (``render/registry.py``, ``tts/registry.py``); they implement the same seams, so
the engine does not know the difference.

``RemoteRenderer``: ``push`` sends the speech at once (a writer thread: the event loop never
waits on the network) and frames come back as the service renders them, each with its
40 ms of audio; ``next_frame`` takes the next one and stamps it with this session's own
frame clock. The service draws up to ``AVATAR_MODEL_SERVICE_AHEAD_FRAMES`` ahead of what
is shown (the client grants a credit per frame shown or dropped). Idle frames drawn ahead
are dropped when speech is pushed, so speech is not queued behind them; ``clear`` tells
the service to drop its queued work for the turn and drops the frames already here.

When the service is unreachable or the connection drops, one warning line names the URL
and what to do, and the session goes on with the local renderer (the configured one, or
``mesh2d`` if that cannot be built here): frames already received play first, then the
rest of the speech that was pushed is spoken by the local renderer. A background thread
reconnects with backoff (0.5 s doubling to 30 s) and rendering moves back to the service
between two replies. A refused token or protocol version is not "down": it is raised as
a ``ModelServiceError`` (one line in the CLI, a 502 in the API).

``RemoteSynthesizer``: one connection per synthesizer handle, shared by every session of
the process like a local synthesizer; requests from several threads are multiplexed by id
and each answer's chunks are joined into the ``Speech`` the seam returns (or yielded one by
one by ``synthesize_stream``). While the service is unreachable the local synthesizer
speaks instead, with the same warning line.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..constants import OUTPUT_RATE_HZ, SAMPLES_PER_FRAME
from ..errors import AvatarError, ConfigurationError
from ..frames import AVFrame, PhonemeTiming, Speech, WordTiming
from ..render.base import FaceImage, Renderer
from ..settings import Settings
from ..tts.base import ReferenceVoice, SynthCapabilities, Synthesizer
from . import protocol as p
from .protocol import is_loopback

log = logging.getLogger(__name__)

STAGES = ("render", "tts")
OPEN_TIMEOUT_S = 120.0  # at least this long for a renderer or synthesizer to load there
IDLE_WAIT_S = 0.2  # no idle frame from the service by then: the last one is shown again
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0
SILENCE = np.zeros(SAMPLES_PER_FRAME, np.int16)


class ModelServiceUnavailable(p.ModelServiceError):
    """The service cannot be reached or the connection dropped: the runtime falls back."""

    status_code = 503

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(down_message(url, reason, "Running here"))
        self.reason = reason


class ModelServiceRefused(p.ModelServiceError):
    """The service answered but refused (token, protocol version, a model it lacks)."""


# --- settings -----------------------------------------------------------------------


def service_url(url: str) -> str:
    """The WebSocket URL of the service's stream from ``AVATAR_MODEL_SERVICE_URL``:
    ``ws://host:port`` (``http``/``https`` accepted), path ``/ws`` unless one is given."""
    raw = url.strip()
    if "://" not in raw:
        raw = f"ws://{raw}"
    parts = urlsplit(raw)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigurationError(
            f"AVATAR_MODEL_SERVICE_URL={url!r} is not a model service address; use "
            "ws://HOST:PORT (as printed by `avatar model-service`)"
        )
    path = parts.path if parts.path not in ("", "/") else p.WS_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def uses_service(settings: Settings, stage: str) -> bool:
    """Whether ``stage`` (``render`` or ``tts``) goes to the model service."""
    if not settings.model_service_url:
        return False
    stages = {s.strip().lower() for s in settings.model_service_stages.split(",") if s.strip()}
    unknown = stages - set(STAGES)
    if unknown:
        raise ConfigurationError(
            f"AVATAR_MODEL_SERVICE_STAGES={settings.model_service_stages!r}: name render "
            "and/or tts, comma separated"
        )
    return stage in stages


def frame_codec(settings: Settings, url: str) -> str:
    """``raw`` or ``jpeg``: ``auto`` sends raw pixels over loopback and JPEG over a network."""
    codec = settings.model_service_frame_codec.strip().lower()
    if codec == "auto":
        host = urlsplit(url).hostname or ""
        return "raw" if is_loopback(host) else "jpeg"
    if codec not in p.FRAME_CODECS:
        raise ConfigurationError(
            f"AVATAR_MODEL_SERVICE_FRAME_CODEC={settings.model_service_frame_codec!r}: "
            "use raw, jpeg or auto"
        )
    return codec


def local_settings(settings: Settings) -> Settings:
    """The same settings with the service turned off: the fallback's."""
    return settings.model_copy(update={"model_service_url": None})


def down_message(url: str, reason: str, instead: str) -> str:
    """The one line a user sees when the service is down."""
    return (
        f"model service at {url} is unreachable ({reason}); start `avatar model-service` "
        f"there or unset AVATAR_MODEL_SERVICE_URL. {instead} until it is back"
    )


# --- one connection -------------------------------------------------------------------


class Connection:
    """One WebSocket to the service after its handshake, with a writer and a reader thread.

    ``send`` never blocks (the writer sends in order); the reader calls ``on_text`` /
    ``on_binary`` for each message and ``on_closed`` once, with the reason, when the
    connection ends for any reason but ``close``.
    """

    def __init__(self, ws: Any, url: str, ready: dict[str, Any]) -> None:
        self.ws = ws
        self.url = url
        self.ready = ready
        self._outbox: queue.SimpleQueue[str | bytes | None] = queue.SimpleQueue()
        self._closing = False
        self._threads: list[threading.Thread] = []

    @classmethod
    def open(
        cls, settings: Settings, role: str, opening: bytes, ready_type: str
    ) -> Connection:
        """Connect, say hello, send ``opening`` and wait for ``ready_type``."""
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        url = service_url(settings.model_service_url or "")
        token = settings.model_service_token or settings.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = settings.model_service_timeout_s
        try:
            ws = connect(
                url,
                additional_headers=headers,
                open_timeout=timeout,
                max_size=p.MAX_MESSAGE_BYTES,
                compression=None,
                close_timeout=2,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body.decode(errors="replace") if exc.response.body else ""
            if status == 401:
                raise ModelServiceRefused(
                    f"the model service at {url} refused this runtime: {p.AUTH_MESSAGE}; set "
                    "AVATAR_MODEL_SERVICE_TOKEN (or AVATAR_TOKEN) to the service's AVATAR_TOKEN"
                ) from None
            raise ModelServiceUnavailable(url, f"HTTP {status} {body[:80]}".strip()) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            reason = str(exc) or exc.__class__.__name__
            raise ModelServiceUnavailable(url, reason) from None
        try:
            ws.send(p.encode_text(p.hello(role)))
            cls._expect(ws, url, "welcome", timeout)
            ws.send(opening)
            # The service may load a model before it is ready: give that longer.
            ready = cls._expect(ws, url, ready_type, max(timeout, OPEN_TIMEOUT_S))
        except BaseException:
            ws.close()
            raise
        return cls(ws, url, ready)

    @staticmethod
    def _expect(ws: Any, url: str, kind: str, timeout: float) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        try:
            data = ws.recv(timeout=timeout)
        except TimeoutError:
            raise ModelServiceUnavailable(url, f"no {kind} within {timeout:g} s") from None
        except ConnectionClosed as exc:
            raise ModelServiceUnavailable(url, f"closed during the handshake: {exc}") from None
        message = p.decode_text(data) if isinstance(data, str) else p.decode_binary(data)[0]
        if message["type"] == "error":
            raise ModelServiceRefused(f"the model service at {url} refused: {message.get('error')}")
        if message["type"] != kind:
            raise p.ProtocolError(f"the model service at {url} sent {message['type']!r}, "
                                  f"expected {kind!r}")
        return message

    def start(
        self,
        on_text: Callable[[dict[str, Any]], None],
        on_binary: Callable[[dict[str, Any], memoryview], None],
        on_closed: Callable[[str], None],
    ) -> None:
        """Start the reader and writer threads."""
        reader = threading.Thread(
            target=self._read, args=(on_text, on_binary, on_closed), name="ms-reader", daemon=True
        )
        writer = threading.Thread(target=self._write, name="ms-writer", daemon=True)
        self._threads = [reader, writer]
        reader.start()
        writer.start()

    def send(self, data: str | bytes) -> None:
        """Queue a message (sent in order by the writer thread)."""
        if not self._closing:
            self._outbox.put(data)

    def close(self) -> None:
        """Close the connection and stop the threads (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self._outbox.put(None)
        # The closing handshake waits for the peer (up to 2 s when it hangs): not on the
        # caller's thread, which may be a live call's render thread.
        threading.Thread(target=self._close_socket, name="ms-close", daemon=True).start()

    def _close_socket(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing a dead socket
            pass

    @property
    def closed(self) -> bool:
        return self._closing

    def _write(self) -> None:
        while True:
            data = self._outbox.get()
            if data is None:
                return
            try:
                self.ws.send(data)
            except Exception:  # noqa: BLE001 - the reader reports the closed connection
                return

    def _read(
        self,
        on_text: Callable[[dict[str, Any]], None],
        on_binary: Callable[[dict[str, Any], memoryview], None],
        on_closed: Callable[[str], None],
    ) -> None:
        from websockets.exceptions import ConnectionClosed

        reason = "connection closed"
        try:
            while True:
                data = self.ws.recv()
                if isinstance(data, str):
                    message = p.decode_text(data)
                    if message["type"] == "error":
                        reason = str(message.get("error"))
                        if message.get("fatal"):
                            continue  # the close follows
                    on_text(message)
                else:
                    header, payload = p.decode_binary(data)
                    on_binary(header, payload)
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                reason = "connection lost"
            elif reason == "connection closed" and exc.rcvd.reason:
                reason = f"closed by the service: {exc.rcvd.reason}"
        except p.ProtocolError as exc:
            reason = exc.message
        except Exception as exc:  # noqa: BLE001 - whatever ends the reader ends the connection
            log.exception("model service reader failed")
            reason = f"{exc.__class__.__name__}: {exc}"
        finally:
            self._outbox.put(None)
        if not self._closing:
            self._closing = True
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001
                pass
            on_closed(reason)


def _weak(method: Callable[..., Any]) -> Callable[..., Any]:
    """A callback that does not keep its object alive (threads must not pin a session)."""
    ref = weakref.WeakMethod(method)  # type: ignore[arg-type]

    def call(*args: Any) -> Any:
        bound = ref()
        return None if bound is None else bound(*args)

    return call


class _Reconnector:
    """Tries ``attempt`` with backoff on a daemon thread until it succeeds or is stopped."""

    def __init__(self, attempt: Callable[[], bool], what: str) -> None:
        self._attempt = attempt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ms-reconnect-{what}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        delay = BACKOFF_FIRST_S
        while not self._stop.wait(delay):
            try:
                if self._attempt():
                    return
            except Exception:  # noqa: BLE001 - an attempt that fails is tried again later
                log.debug("model service reconnect attempt failed", exc_info=True)
            delay = min(delay * 2, BACKOFF_MAX_S)


@dataclass
class _Links:
    """What a remote renderer holds open, closable without the renderer itself."""

    conn: Connection | None = None
    standby: Connection | None = None
    reconnector: _Reconnector | None = None

    def close(self) -> None:
        if self.reconnector is not None:
            self.reconnector.stop()
        for conn in (self.conn, self.standby):
            if conn is not None:
                conn.close()


# --- the renderer -----------------------------------------------------------------------


@dataclass
class _Pending:
    """Speech pushed and not all received yet, for the fallback to finish if the service
    goes away: its frames as the seam cuts them, and how many have arrived."""

    speech: Speech
    frames: int
    received: int = 0


def frames_of(speech: Speech) -> int:
    """How many 40 ms frames a piece of speech lasts behind the seam (at least one)."""
    samples = len(speech.pcm) * OUTPUT_RATE_HZ / speech.sample_rate_hz
    return max(int(np.ceil(round(samples) / SAMPLES_PER_FRAME)), 1)


def rest_of(speech: Speech, frames_done: int) -> Speech:
    """The part of ``speech`` after its first ``frames_done`` frames, timings shifted."""
    cut_s = frames_done * SAMPLES_PER_FRAME / OUTPUT_RATE_HZ
    cut = min(int(round(cut_s * speech.sample_rate_hz)), len(speech.pcm))
    phonemes = [
        PhonemeTiming(t.phoneme, max(t.start_s - cut_s, 0.0), t.end_s - cut_s)
        for t in speech.phonemes
        if t.end_s > cut_s
    ]
    words = [
        WordTiming(t.word, max(t.start_s - cut_s, 0.0), t.end_s - cut_s)
        for t in speech.words
        if t.end_s > cut_s
    ]
    return replace(speech, pcm=speech.pcm[cut:], phonemes=phonemes, words=words)


class RemoteRenderer:
    """A ``Renderer`` that renders on the model service (see the module's docstring)."""

    def __init__(self, name: str, face: FaceImage, settings: Settings) -> None:
        """Open a render session on the service, or start on the local fallback if it is
        unreachable (a refused token or version raises ``ModelServiceError``)."""
        self.requested = name
        self.name = name
        self.face = face
        self.settings = settings
        self.url = service_url(settings.model_service_url or "")
        self.codec = frame_codec(settings, self.url)
        self.ahead = settings.model_service_ahead_frames
        self.timeout_s = settings.model_service_timeout_s
        self.size_px = int(face.face_rgb.shape[0])
        self._cond = threading.Condition()
        self._buffer: collections.deque[p.FrameMessage] = collections.deque()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._index = 0
        self._idle_rgb = np.ascontiguousarray(face.face_rgb[..., :3], dtype=np.uint8)
        self._conn: Connection | None = None
        self._fallback: Renderer | None = None
        self._standby: Connection | None = None  # reconnected, waiting for a quiet moment
        self._reconnector: _Reconnector | None = None
        self._losing: Connection | None = None  # being replaced by the fallback
        self._links = _Links()
        self._closed = False
        self.fallbacks = 0  # times the service was lost (tests and logs read it)
        self._reset_seqs()
        try:
            self._use(self._connect())
        except ModelServiceUnavailable as exc:
            self._go_local(exc.reason, first=True)
        # A session dropped without close() still hangs up (its threads do not pin it).
        weakref.finalize(self, self._links.close)

    # -- the seam --

    def push(self, speech: Speech) -> None:
        """Queue speech: sent to the service now (or to the local fallback)."""
        with self._cond:
            if self._closed:
                return
            if self._conn is None:
                assert self._fallback is not None
                self._fallback.push(speech)
                return
            self._seq += 1
            self._last_push = self._seq
            self._pending.append(_Pending(speech, frames_of(speech)))
            self._conn.send(p.encode_speech("push", speech, seq=self._seq))
            # Idle frames drawn ahead would delay the speech: drop them.
            self._drop(lambda m: not m.frame.speaking)
            self._cond.notify_all()

    def clear(self) -> None:
        """Barge-in: the service drops the queued and playing speech; so do we."""
        with self._cond:
            if self._fallback is not None:
                self._fallback.clear()
            self._pending.clear()
            self._drop(lambda m: m.frame.speaking)
            if self._conn is not None:
                self._seq += 1
                self._last_clear = self._seq
                self._conn.send(p.encode_text({"type": "clear", "seq": self._seq}))
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """Whether speech is queued, being rendered, or received and not yet shown."""
        with self._cond:
            return self._busy()

    @property
    def frame_index(self) -> int:
        """The index the next frame will carry (this session's clock, not the service's)."""
        return self._index

    def next_frame(self) -> AVFrame:
        """The next frame with its audio: from the service, or the fallback, or idle."""
        with self._cond:
            self._maybe_switch_back()
            waited_from = time.monotonic()
            while not self._buffer and self._conn is not None:
                busy = self._busy()
                limit = self.timeout_s if busy else IDLE_WAIT_S
                left = waited_from + limit - time.monotonic()
                if left <= 0:
                    if busy:
                        conn = self._conn
                        self._cond.release()
                        try:
                            self._lost(conn, f"no frame for {limit:g} s")
                        finally:
                            self._cond.acquire()
                    break
                self._cond.wait(left)
            if self._buffer:
                message = self._buffer.popleft()
                self._credit(1)
                frame = message.frame
                if frame.speaking:
                    self._received_one()
                else:
                    self._idle_rgb = frame.rgb
            else:
                frame = None
            fallback = self._fallback if frame is None else None
            index = self._index
            self._index += 1
        if frame is None:
            if fallback is not None:
                frame = fallback.next_frame()
            else:
                frame = AVFrame(0, index, self._idle_rgb.copy(), SILENCE)
        frame.index = index
        return frame

    def close(self) -> None:
        """End the session on the service and stop reconnecting."""
        with self._cond:
            self._closed = True
            conn, self._conn = self._conn, None
            standby, self._standby = self._standby, None
            if self._reconnector is not None:
                self._reconnector.stop()
        for c in (conn, standby):
            if c is not None:
                c.close()

    @property
    def remote(self) -> bool:
        """Whether frames are coming from the service now."""
        return self._conn is not None

    # -- inside --

    def _reset_seqs(self) -> None:
        self._seq = 0  # the last push or clear sent on this connection
        self._last_push = 0
        self._last_clear = 0
        self._latest_seq = 0  # of the newest frame kept
        self._latest_busy = False

    def _connect(self) -> Connection:
        opening = p.encode_render_open(
            self.requested, self.face.face_rgb, self.face.landmarks, self.codec, self.ahead
        )
        conn = Connection.open(self.settings, "render", opening, "render_ready")
        if conn.ready.get("size_px") != self.size_px:
            conn.close()
            raise ModelServiceRefused(
                f"the model service's renderer draws {conn.ready.get('size_px')} px frames "
                f"for a {self.size_px} px face"
            )
        return conn

    def _use(self, conn: Connection) -> None:
        """Render on ``conn`` from now on (called with the lock held, or before threads)."""
        self._conn = self._links.conn = conn
        self.name = str(conn.ready.get("renderer", self.requested))
        self._reset_seqs()
        self._buffer.clear()
        self._pending.clear()
        conn.start(_weak(self._on_text), _weak(self._on_binary), self._on_closed(conn))

    def _on_closed(self, conn: Connection) -> Callable[[str], None]:
        """The reader's ``on_closed`` for ``conn``, holding this renderer only weakly."""
        self_ref = weakref.ref(self)

        def closed(reason: str) -> None:
            renderer = self_ref()
            if renderer is not None:
                renderer._lost(conn, reason)

        return closed

    def _on_text(self, message: dict[str, Any]) -> None:
        log.debug("model service says %s", message)

    def _on_binary(self, header: dict[str, Any], payload: memoryview) -> None:
        if header["type"] != "frame":
            raise p.ProtocolError(f"render session: unexpected {header['type']!r} message")
        message = p.decode_frame(header, payload)
        with self._cond:
            stale_speech = message.frame.speaking and message.seq < self._last_clear
            stale_idle = not message.frame.speaking and message.seq < self._seq
            if stale_speech or stale_idle:
                self._credit(1)  # drawn before a clear, or idle drawn before a push
                return
            self._buffer.append(message)
            self._latest_seq, self._latest_busy = message.seq, message.busy
            self._cond.notify_all()

    def _busy(self) -> bool:
        if self._conn is None:
            local = self._fallback is not None and self._fallback.busy
            return local or any(m.frame.speaking for m in self._buffer)
        if self._losing is self._conn and self._pending:
            return True  # the fallback is being built to finish this speech
        if any(m.frame.speaking for m in self._buffer):
            return True
        if self._last_push > self._last_clear and self._latest_seq < self._last_push:
            return True  # the service has not drawn since our last push
        return self._latest_busy and self._latest_seq >= self._last_clear

    def _drop(self, which: Callable[[p.FrameMessage], bool]) -> None:
        kept = [m for m in self._buffer if not which(m)]
        dropped = len(self._buffer) - len(kept)
        if dropped:
            self._buffer = collections.deque(kept)
            self._credit(dropped)

    def _credit(self, frames: int) -> None:
        if self._conn is not None:
            self._conn.send(p.encode_text({"type": "credit", "frames": frames}))

    def _received_one(self) -> None:
        if self._pending:
            head = self._pending[0]
            head.received += 1
            if head.received >= head.frames:
                self._pending.popleft()

    def _lost(self, conn: Connection, reason: str) -> None:
        """The connection ``conn`` ended: go on locally (once per connection). Until the
        fallback is ready the renderer stays busy and ``next_frame`` waits for it."""
        with self._cond:
            if self._conn is not conn or self._closed or self._losing is conn:
                return
            self._losing = conn
        conn.close()
        self._go_local(reason, first=False, conn=conn)

    def _go_local(self, reason: str, *, first: bool, conn: Connection | None = None) -> None:
        """Build the fallback, hand it the speech not yet received, start reconnecting."""
        from ..render.registry import create_renderer

        fallback = self._fallback
        if fallback is None:
            local = local_settings(self.settings)
            try:
                fallback = create_renderer(self.requested, self.face, local)
            except AvatarError as exc:
                log.info("renderer %s cannot run here (%s)", self.requested, exc.message)
                fallback = create_renderer("mesh2d", self.face, local)
        with self._cond:
            if not first and (self._conn is not conn or self._closed):
                return
            self._conn = None
            self._fallback = fallback
            self.name = fallback.name
            self.fallbacks += 1
            if not first:
                # Received frames play first; the rest of the speech is the fallback's.
                for item in self._pending:
                    fallback.push(rest_of(item.speech, item.received) if item.received
                                  else item.speech)
                self._pending.clear()
                self._buffer = collections.deque(m for m in self._buffer if m.frame.speaking)
            self._cond.notify_all()
            if not self._closed:
                self._reconnector = self._links.reconnector = _Reconnector(
                    _weak(self._try_reconnect), "render"
                )
        log.warning(down_message(self.url, reason, f"Rendering here with {fallback.name}"))

    def _try_reconnect(self) -> bool:
        conn = self._connect()
        with self._cond:
            if self._closed:
                conn.close()
                return True
            self._standby = self._links.standby = conn
        log.warning("model service at %s is back; rendering there again after this reply",
                    self.url)
        return True

    def _maybe_switch_back(self) -> None:
        """Between replies, move from the fallback to a reconnected service (lock held)."""
        if self._standby is None or self._buffer:
            return
        if self._fallback is not None and self._fallback.busy:
            return
        conn, self._standby = self._standby, None
        self._use(conn)


# --- the synthesizer ----------------------------------------------------------------------


_END = object()


@dataclass
class _Failed:
    error: str
    lost: bool  # the connection dropped (fall back) rather than the request failing


class RemoteSynthesizer:
    """A ``Synthesizer`` that speaks on the model service (see the module's docstring)."""

    def __init__(
        self, name: str, settings: Settings, reference: ReferenceVoice | None = None
    ) -> None:
        """Open a synthesizer handle on the service, or speak locally until it is back."""
        self.requested = name
        self.settings = settings
        self.reference = reference
        self.url = service_url(settings.model_service_url or "")
        self.timeout_s = settings.model_service_timeout_s
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, queue.SimpleQueue[Any]] = {}
        self._conn: Connection | None = None
        self._local: Synthesizer | None = None
        self._reconnector: _Reconnector | None = None
        self.fallbacks = 0
        self.name = name
        self.sample_rate_hz = 0
        self._capabilities = SynthCapabilities(frozenset(), False, False)
        self._voice_id = ""
        try:
            self._use(self._connect())
        except ModelServiceUnavailable as exc:
            self._go_local(exc.reason)

    # -- the seam --

    @property
    def capabilities(self) -> SynthCapabilities:
        """The service's synthesizer's capabilities (the local one's while it is down)."""
        return self._capabilities

    @property
    def voice_id(self) -> str:
        """The service's synthesizer's voice id (its content key)."""
        return self._voice_id

    def languages(self) -> frozenset[str]:
        """Languages the synthesizer speaks."""
        return self._capabilities.languages

    def synthesize(self, text: str, language: str, turn_id: int = 0) -> Speech:
        """``text`` spoken by the service (its chunks joined), or locally while it is down."""
        return join_chunks(list(self.synthesize_stream(text, language, turn_id)), turn_id)

    def synthesize_stream(self, text: str, language: str, turn_id: int = 0) -> Iterator[Speech]:
        """The speech for ``text`` chunk by chunk, as the service makes it."""
        conn = self._conn
        if conn is None:
            yield self._local_synth().synthesize(text, language, turn_id=turn_id)
            return
        request_id = next(self._ids)
        answers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._lock:
            self._waiting[request_id] = answers
        try:
            conn.send(p.encode_text({"type": "synthesize", "id": request_id, "text": text,
                                     "language": language, "turn_id": turn_id}))
            got_any = False
            while True:
                try:
                    item = answers.get(timeout=self.timeout_s)
                except queue.Empty:
                    conn.send(p.encode_text({"type": "cancel", "id": request_id}))
                    item = _Failed(f"no speech for {self.timeout_s:g} s", lost=True)
                    self._lost(conn, item.error)
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    if not item.lost:
                        raise p.ModelServiceError(
                            f"the model service's synthesizer {self.name}: {item.error}"
                        )
                    if got_any:  # half a sentence came: the local voice says it all again
                        log.info("model service lost mid-sentence; saying it again here")
                    yield self._local_synth().synthesize(text, language, turn_id=turn_id)
                    return
                got_any = True
                yield item
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)

    def warm_up(self) -> None:
        """Load the synthesizer on the service (or here) by speaking a word."""
        language = "en" if "en" in self._capabilities.languages else next(
            iter(sorted(self._capabilities.languages)), "en"
        )
        try:
            self.synthesize("Hello.", language)
        except AvatarError as exc:
            log.warning("warming up %s: %s", self.name, exc.message)

    def close(self) -> None:
        """Close the connection and stop reconnecting."""
        conn, self._conn = self._conn, None
        if self._reconnector is not None:
            self._reconnector.stop()
        if conn is not None:
            conn.close()

    @property
    def remote(self) -> bool:
        """Whether speech is made on the service now."""
        return self._conn is not None

    # -- inside --

    def _connect(self) -> Connection:
        header: dict[str, Any] = {"type": "synth_open", "name": self.requested}
        payload = b""
        if self.reference is not None and Path(self.reference.sample_path).is_file():
            payload = Path(self.reference.sample_path).read_bytes()
            header["reference_name"] = self.reference.name
            header["reference_suffix"] = Path(self.reference.sample_path).suffix.lstrip(".")
        return Connection.open(self.settings, "tts", p.encode_binary(header, payload),
                               "synth_ready")

    def _use(self, conn: Connection) -> None:
        ready = conn.ready
        self.name = str(ready.get("name", self.requested))
        self.sample_rate_hz = int(ready.get("sample_rate_hz", 0))
        self._capabilities = SynthCapabilities(
            frozenset(ready.get("languages", [])),
            bool(ready.get("timings")),
            bool(ready.get("reference_voice")),
        )
        self._voice_id = str(ready.get("voice_id", ""))
        self._conn = conn
        conn.start(_weak(self._on_text), _weak(self._on_binary), _weak(self._on_closed))

    def _on_closed(self, reason: str) -> None:
        conn = self._conn
        if conn is not None:
            self._lost(conn, reason)

    def _on_text(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in ("speech_end", "synth_error"):
            answers = self._waiting.get(p.field(message, "id", int))
            if answers is not None:
                answers.put(_END if kind == "speech_end"
                            else _Failed(str(message.get("error")), lost=False))

    def _on_binary(self, header: dict[str, Any], payload: memoryview) -> None:
        if header["type"] != "speech":
            raise p.ProtocolError(f"tts session: unexpected {header['type']!r} message")
        answers = self._waiting.get(p.field(header, "id", int))
        if answers is not None:
            answers.put(p.decode_speech(header, payload))

    def _local_synth(self) -> Synthesizer:
        """The local synthesizer of the same name (espeak if there is none here), built
        from its factory: this may run inside the registry's lock (while the registry is
        building this handle), so it must not go back through the registry."""
        with self._lock:
            if self._local is not None:
                return self._local
        from ..tts.registry import SYNTHESIZERS

        local = local_settings(self.settings)
        factory = SYNTHESIZERS.get(self.requested)
        synth: Synthesizer | None = None
        if factory is not None:
            try:
                synth = factory(local, self.reference)
            except AvatarError as exc:
                log.info("synthesizer %s cannot run here (%s); espeak instead",
                         self.requested, exc.message)
        if synth is None:
            synth = SYNTHESIZERS["espeak"](local, self.reference)
        with self._lock:
            if self._local is None:
                self._local = synth
            return self._local

    def _lost(self, conn: Connection, reason: str) -> None:
        with self._lock:
            if self._conn is not conn:
                return
            self._conn = None
            waiting = list(self._waiting.values())
        conn.close()
        for answers in waiting:
            answers.put(_Failed(reason, lost=True))
        self._go_local(reason)

    def _go_local(self, reason: str) -> None:
        local = self._local_synth()
        self.fallbacks += 1
        log.warning(down_message(self.url, reason, f"Speaking here with {local.name}"))
        if self._conn is None and not self._voice_id:
            # Down from the start: describe the voice that will really speak.
            self.name, self.sample_rate_hz = local.name, local.sample_rate_hz
            self._capabilities, self._voice_id = local.capabilities, local.voice_id
        self._reconnector = _Reconnector(_weak(self._try_reconnect), "tts")

    def _try_reconnect(self) -> bool:
        conn = self._connect()
        self._use(conn)
        log.warning("model service at %s is back; speaking there again", self.url)
        return True


def join_chunks(chunks: list[Speech], turn_id: int) -> Speech:
    """One ``Speech`` from the chunks of one answer, timings shifted to where each starts."""
    if len(chunks) == 1:
        return chunks[0]
    if not chunks:
        raise p.ModelServiceError("the model service answered with no speech")
    rate = chunks[0].sample_rate_hz
    phonemes: list[PhonemeTiming] = []
    words: list[WordTiming] = []
    offset = 0.0
    for chunk in chunks:
        if chunk.sample_rate_hz != rate:
            raise p.ProtocolError("speech chunks of one answer have different sample rates")
        phonemes += [PhonemeTiming(t.phoneme, t.start_s + offset, t.end_s + offset)
                     for t in chunk.phonemes]
        words += [WordTiming(t.word, t.start_s + offset, t.end_s + offset) for t in chunk.words]
        offset += chunk.duration_s
    return Speech(
        turn_id,
        "".join(c.text for c in chunks) if len({c.text for c in chunks}) > 1 else chunks[0].text,
        chunks[0].language,
        np.concatenate([c.pcm for c in chunks]).astype(np.float32),
        rate,
        phonemes,
        words,
    )


def create_remote_renderer(name: str, face: FaceImage, settings: Settings) -> Renderer:
    """The render registry's hook: renderer ``name`` on the service."""
    return RemoteRenderer(name, face, settings)


def create_remote_synthesizer(
    name: str, settings: Settings, reference: ReferenceVoice | None
) -> Synthesizer:
    """The TTS registry's hook: synthesizer ``name`` on the service."""
    return RemoteSynthesizer(name, settings, reference)
