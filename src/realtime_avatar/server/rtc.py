"""WebRTC transport (aiortc): mic in, the avatar's paired audio and video out at 25 fps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from .. import rtc_loopback
from ..constants import (
    ASR_RATE_HZ,
    FPS,
    OUTPUT_RATE_HZ,
    VIDEO_CLOCK_HZ,
    VIDEO_TICKS_PER_FRAME,
)
from ..engine.conversation import Conversation
from ..events import (
    EventError,
    InterruptMessage,
    MediaEvent,
    PingMessage,
    PongEvent,
    ServerEvent,
    TextMessage,
    parse_client_message,
    to_json,
)
from ..frames import AVFrame
from ..rtc_buffers import use_low_latency_buffers
from ..settings import get_settings
from .encoders import (
    OpusStream,
    ReferenceTap,
    VideoStream,
    attach_keyframe_requests,
    codec_preferences,
    negotiated_codec,
    video_stream,
)

log = logging.getLogger(__name__)

QUEUE_FRAMES = 3  # frames buffered toward the encoder: enough to absorb jitter, no more
WATCHDOG_EVERY_S = 1.0

rtc_loopback.enable()


class _QueueTrack(MediaStreamTrack):
    """A track whose frames come from the media pump."""

    def __init__(
        self, kind: str, depth: int = QUEUE_FRAMES, on_first: Callable[[Any], None] | None = None
    ) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth)
        self._on_first = on_first

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        if self._on_first is not None:
            on_first, self._on_first = self._on_first, None
            on_first(frame)
        return frame

    def offer(self, frame: Any) -> bool:
        """Queue a frame; if the consumer lags, drop the oldest so latency never builds up.

        Returns whether one was dropped.
        """
        dropped = False
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
                dropped = True
        self.queue.put_nowait(frame)
        return dropped


class RtcSession:
    """One peer connection: owns the conversation session and the 25 fps media pump."""

    def __init__(
        self,
        session: Conversation,
        on_closed: Callable[[RtcSession, str], None],
        *,
        video_kbps: int = 2000,
        video_codecs: str | None = None,
        reference_dir: Path | None = None,
        connect_timeout_s: float = 10.0,
        silent_timeout_s: float = 5.0,
    ) -> None:
        """``video_codecs`` (preference order) and ``reference_dir`` default to the
        ``AVATAR_VIDEO_CODECS`` and ``AVATAR_VIDEO_REFERENCE_DIR`` settings."""
        settings = get_settings() if video_codecs is None or reference_dir is None else None
        self.session = session
        # A browser sends mic packets all the time (silence too, even muted): a call that
        # never connects, or stops sending, holds a slot of a few for nobody.
        self.connect_timeout_s = connect_timeout_s
        self.silent_timeout_s = silent_timeout_s
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        # Receivers count RTP time from the first frame they get; telling the client which
        # frame that was lets it name every frame by the session's frame index.
        self.video = _QueueTrack(
            "video",
            on_first=lambda frame: self.emit(
                MediaEvent(video_origin_index=frame.pts // VIDEO_TICKS_PER_FRAME)
            ),
        )
        self.audio = _QueueTrack("audio", depth=2 * QUEUE_FRAMES)  # two 20 ms frames per tick
        self._on_closed = on_closed
        self._channel: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._render_pool = ThreadPoolExecutor(1, thread_name_prefix="render")
        self._video_kbps = video_kbps
        self._video_codecs = video_codecs or (settings.video_codecs if settings else "")
        self._reference_dir = reference_dir or (settings.video_reference_dir if settings else None)
        # Encoded on the render thread when negotiated (H.264, VP8); others left to aiortc.
        self._video_stream: VideoStream | None = None
        self._opus: OpusStream | None = None
        self._tap: ReferenceTap | None = None  # evaluation only: the frames as drawn
        self.video_codec = ""  # the negotiated video codec's SDP name
        self._closed = False
        self._created = time.monotonic()
        self._last_mic: float | None = None  # set when the peer connects, then by each packet
        self._pending_events: list[ServerEvent] = []
        self.frames_sent = 0
        self.frames_dropped = 0  # encoded frames dropped toward aiortc's sender (it lagged)
        self._pump_started: float | None = None

    # ------------------------------------------------------------------ signalling
    async def answer(self, sdp: str, kind: str) -> RTCSessionDescription:
        """Take the browser's offer, add our tracks, and return the answer."""
        pc = self.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self._tasks.append(asyncio.ensure_future(self._read_mic(track)))

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            self._channel = channel
            for event in self._pending_events:
                self._send(event)
            self._pending_events.clear()

            @channel.on("message")
            def on_message(message: Any) -> None:
                self._on_client_message(message)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected" and self._last_mic is None:
                self._last_mic = time.monotonic()
            if pc.connectionState in ("failed", "closed", "disconnected"):
                await self.close(f"peer {pc.connectionState}")

        video_sender: Any = None
        if "m=video" in sdp:
            # The answer takes the offer's first common codec unless this transceiver,
            # which the offer's video then uses, states a preference (H.264 first).
            transceiver = pc.addTransceiver(self.video, direction="sendonly")
            transceiver.setCodecPreferences(codec_preferences(self._video_codecs))
            video_sender = transceiver.sender
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        use_low_latency_buffers(pc, audio=True)  # the end of the user's speech waits on it
        pc.addTrack(self.audio)
        if video_sender is None:
            video_sender = pc.addTrack(self.video)
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        self.video_codec = negotiated_codec(answer, "video")
        size_px = self.session.renderer.size_px
        self._video_stream = video_stream(self.video_codec, size_px, self._video_kbps)
        if self._video_stream is not None:
            attach_keyframe_requests(video_sender, self._video_stream)
        log.info("video: %s at %d kbit/s", self.video_codec or "none", self._video_kbps)
        if self._reference_dir is not None:
            self._tap = ReferenceTap(Path(self._reference_dir), str(video_sender._ssrc), size_px)
        if negotiated_codec(answer, "audio") == "OPUS":
            self._opus = OpusStream()
        await self.session.start()
        self._tasks.append(asyncio.ensure_future(self._pump()))
        self._tasks.append(asyncio.ensure_future(self._watchdog()))
        return pc.localDescription

    # ------------------------------------------------------------------ events
    def emit(self, event: ServerEvent) -> None:
        """Send an event to the page over the data channel (queued until it opens)."""
        if self._channel is None or self._channel.readyState != "open":
            if len(self._pending_events) < 200:
                self._pending_events.append(event)
            return
        self._send(event)

    def _send(self, event: ServerEvent) -> None:
        with contextlib.suppress(Exception):
            self._channel.send(to_json(event))

    def _on_client_message(self, message: Any) -> None:
        try:
            data = parse_client_message(message)
        except EventError as exc:
            log.debug("ignoring a client message: %s", exc)
            return
        if isinstance(data, PingMessage):
            self._send(PongEvent(t=data.t))
        elif isinstance(data, TextMessage):
            self.session.say_text(data.text)
        elif isinstance(data, InterruptMessage):
            self.session.interrupt()

    # ------------------------------------------------------------------ media
    async def _read_mic(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=ASR_RATE_HZ)
        try:
            while not self._closed:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                if self._last_mic is not None and log.isEnabledFor(logging.DEBUG):
                    gap_s = time.monotonic() - self._last_mic
                    if gap_s > 1.0:
                        log.debug("mic: %.1f s since the last packet", gap_s)
                self._last_mic = time.monotonic()
                for out in resampler.resample(frame):
                    pcm = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    await self.session.push_mic(pcm)
        except MediaStreamError:
            pass
        except Exception:  # noqa: BLE001 - a broken mic ends this session, not the server
            log.exception("mic reader failed")
            await self.close("mic error")

    def _media(self, index: int) -> tuple[AVFrame, list[av.Packet] | None, list[av.Packet] | None]:
        """On the render thread: the next frame, and its video and Opus packets where we encode."""
        frame = self.session.next_frame()
        if self._tap is not None:
            self._tap.write(index, frame.rgb, frame.speaking)
        stream = self._video_stream
        video = None if stream is None else stream.encode(frame.rgb, index)
        audio = None if self._opus is None else self._opus.encode(frame.audio)
        return frame, video, audio

    async def _pump(self) -> None:
        """Produce one paired frame every 40 ms on a steady clock, whatever the turn does."""
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        self._pump_started = start
        index = 0
        audio_pts = 0
        window_start, render_wait = start, 0.0
        try:
            while not self._closed:
                began = time.monotonic()
                frame, packets, voice = await loop.run_in_executor(
                    self._render_pool, self._media, index
                )
                render_wait += time.monotonic() - began
                if packets is None:
                    video = av.VideoFrame.from_ndarray(frame.rgb, format="rgb24")
                    video.pts = index * VIDEO_TICKS_PER_FRAME
                    video.time_base = Fraction(1, VIDEO_CLOCK_HZ)
                    if self.video.offer(video):
                        self.frames_dropped += 1
                else:
                    for packet in packets:
                        if self.video.offer(packet) and self._video_stream is not None:
                            # A dropped packet breaks the chain of frames that follow it.
                            self.frames_dropped += 1
                            self._video_stream.request_keyframe()
                if voice is not None:
                    for packet in voice:
                        self.audio.offer(packet)
                    audio_pts += len(frame.audio)
                # One 20 ms audio frame per Opus packet: aiortc stamps every packet cut
                # from one frame with that frame's timestamp, and a receiver then keeps
                # only one of them (half the voice was lost with 40 ms frames).
                for half in frame.audio.reshape(2, -1) if voice is None else ():
                    audio = av.AudioFrame.from_ndarray(
                        half.reshape(1, -1), format="s16", layout="mono"
                    )
                    audio.sample_rate = OUTPUT_RATE_HZ
                    audio.pts = audio_pts
                    audio.time_base = Fraction(1, OUTPUT_RATE_HZ)
                    audio_pts += len(half)
                    self.audio.offer(audio)
                index += 1
                self.frames_sent = index
                if index % 250 == 0:
                    log.debug(
                        "pump: %.1f fps over the last 250 frames, %.1f ms per frame waiting "
                        "for the render thread",
                        250 / (time.monotonic() - window_start),
                        render_wait * 1000 / 250,
                    )
                    window_start, render_wait = time.monotonic(), 0.0
                # Sleep to the next tick of the steady clock; if rendering fell behind,
                # catch up by skipping the wait rather than drifting.
                delay = start + index / FPS - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -1.0:
                    start = time.monotonic() - index / FPS
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("media pump failed")
            await self.close("render error")

    async def _watchdog(self) -> None:
        """Close a call that never connects, or whose peer stops sending (gone, not quiet)."""
        while not self._closed:
            await asyncio.sleep(WATCHDOG_EVERY_S)
            now = time.monotonic()
            if self._last_mic is None:
                if now - self._created > self.connect_timeout_s:
                    await self.close(f"not connected within {self.connect_timeout_s:g} s")
                    return
            elif now - self._last_mic > self.silent_timeout_s:
                await self.close(f"no packets from the peer for {self.silent_timeout_s:g} s")
                return

    # ------------------------------------------------------------------ teardown
    async def close(self, reason: str) -> None:
        """Tear everything down once: tasks, session, peer connection, threads."""
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self.video.offer(None)
        self.audio.offer(None)
        # Whatever fails on the way, the slot is given back and the threads end.
        try:
            await self.session.close()
        except Exception:  # noqa: BLE001
            log.exception("closing the conversation failed")
        finally:
            with contextlib.suppress(Exception):
                await self.pc.close()
            self._render_pool.shutdown(wait=False, cancel_futures=True)
            if self._tap is not None:
                self._tap.close()
            if self._pump_started is not None:
                elapsed_s = max(time.monotonic() - self._pump_started, 1e-3)
                log.info(
                    "video %s: %d frames in %.1f s (%.2f fps), %d dropped toward the sender",
                    self.video_codec or "-",
                    self.frames_sent,
                    elapsed_s,
                    self.frames_sent / elapsed_s,
                    self.frames_dropped,
                )
            self._on_closed(self, reason)
