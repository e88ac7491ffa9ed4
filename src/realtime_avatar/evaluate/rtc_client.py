"""A scripted WebRTC client (aiortc): speaks WAVs into the server and measures what comes back.

Used by the tests, the evaluator and the benchmarks. It plays a schedule of speech clips as
its microphone in real time, records every event, every received video frame (arrival
time, mouth opening) and audio frame (arrival time, level), and derives the figures that
matter: voice-to-first-frame latency, barge-in stop time, delivered fps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

import av
import httpx
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from .. import rtc_loopback
from ..constants import VIDEO_TICKS_PER_FRAME
from ..events import (
    EventError,
    MediaEvent,
    PingMessage,
    PongEvent,
    ServerEvent,
    TranscriptEvent,
    parse_event,
    to_json,
)
from ..face.landmarks import LIP_LOWER_OUTER, LIP_UPPER_OUTER, face_mesh
from ..rtc_buffers import use_low_latency_buffers

rtc_loopback.enable()

log = logging.getLogger(__name__)

E = TypeVar("E")

MIC_RATE_HZ = 48_000
MIC_FRAME = 960  # 20 ms
DARK_LEVEL = 70  # grey level under which a mouth pixel counts as open-mouth dark


def mic_audio(text: str, language: str = "en") -> np.ndarray:
    """Speech for the client's microphone (48 kHz float32) with 0.3 s of silence after it."""
    from ..media.audio import resample
    from ..tts.registry import get_synthesizer

    speech = get_synthesizer(language).synthesize(text, language)
    pcm = resample(speech.pcm, speech.sample_rate_hz, MIC_RATE_HZ) * 0.8
    return np.concatenate([pcm, np.zeros(int(0.3 * MIC_RATE_HZ), np.float32)]).astype(np.float32)


@dataclass
class Clip:
    """A piece of speech the client says, starting ``at_s`` after the call connects."""

    pcm: np.ndarray  # float32 mono at MIC_RATE_HZ
    at_s: float
    speech_end_s: float = 0.0  # filled in: wall-clock (monotonic) time its speech ended
    speech_start_s: float = 0.0

    def speech_bounds(self) -> tuple[int, int]:
        """First and last sample of actual speech (energy above the clip's floor)."""
        hop = MIC_RATE_HZ // 100
        n = len(self.pcm) // hop
        rms = np.sqrt(np.mean(self.pcm[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
        voiced = np.flatnonzero(rms > 0.05 * rms.max())
        return int(voiced[0] * hop), int((voiced[-1] + 1) * hop)


class ScriptedMic(MediaStreamTrack):
    """An audio track that says the clips at their times and is silent in between."""

    kind = "audio"

    def __init__(self, clips: list[Clip]) -> None:
        super().__init__()
        self.clips = sorted(clips, key=lambda c: c.at_s)
        self._start = 0.0
        self._sent = 0

    @property
    def now_s(self) -> float:
        """How far into its script the microphone is."""
        return self._sent / MIC_RATE_HZ

    def say_now(self, pcm: np.ndarray, lead_s: float = 0.06) -> Clip:
        """Say ``pcm`` starting a moment from now (used to talk over the avatar)."""
        clip = Clip(pcm, self.now_s + lead_s)
        self.clips.append(clip)
        return clip

    async def recv(self) -> av.AudioFrame:
        if self._start == 0.0:
            self._start = time.monotonic()
        # A microphone hands over 20 ms of sound once it has been spoken, not before.
        due = self._start + (self._sent + MIC_FRAME) / MIC_RATE_HZ
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        block = np.zeros(MIC_FRAME, np.float32)
        t0 = self._sent
        for clip in self.clips:
            begin = int(clip.at_s * MIC_RATE_HZ)
            lo, hi = max(t0, begin), min(t0 + MIC_FRAME, begin + len(clip.pcm))
            if lo < hi:
                block[lo - t0 : hi - t0] += clip.pcm[lo - begin : hi - begin]
                first, last = clip.speech_bounds()
                if begin + first >= t0 and begin + first < t0 + MIC_FRAME:
                    clip.speech_start_s = self._start + (begin + first) / MIC_RATE_HZ
                if begin + last > t0 and begin + last <= t0 + MIC_FRAME:
                    clip.speech_end_s = self._start + (begin + last) / MIC_RATE_HZ
        frame = av.AudioFrame.from_ndarray(
            (np.clip(block, -1, 1) * 32767).astype(np.int16).reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = MIC_RATE_HZ
        frame.pts = self._sent
        frame.time_base = Fraction(1, MIC_RATE_HZ)
        self._sent += MIC_FRAME
        return frame


@dataclass
class CallRecord:
    """Everything the client saw during one call."""

    events: list[tuple[float, ServerEvent]] = field(default_factory=list)  # (arrival, event)
    video: list[tuple[float, float]] = field(default_factory=list)  # (arrival, mouth opening)
    # RTP time of each video frame, in frames since the first one received.
    video_ticks: list[int] = field(default_factory=list)
    audio: list[tuple[float, float]] = field(default_factory=list)  # (arrival, rms)
    connected_at: float = 0.0
    session_id: str = ""
    node: str | None = None  # with several nodes: the URL of the node holding the session
    last_frame: np.ndarray | None = None

    def fps(self, since_s: float = 1.0) -> float:
        """Video frames per second received, skipping the first ``since_s`` seconds."""
        times = [t for t, _ in self.video if t >= self.connected_at + since_s]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def mouth_baseline(self, until: float) -> float:
        """The idle mouth opening (before the answer), as a high percentile."""
        idle = [m for t, m in self.video if t < until]
        return float(np.percentile(idle, 95)) if idle else 0.0

    def first_answer_frame(self, after: float, margin: float = 40.0) -> float | None:
        """Arrival time of the first frame after ``after`` whose mouth opens past idle."""
        base = self.mouth_baseline(after)
        for t, m in self.video:
            if t > after and m > base + margin:
                return t
        return None

    def first_answer_audio(self, after: float, level: float = 0.01) -> float | None:
        """Arrival time of the first audible audio frame after ``after``."""
        for t, rms in self.audio:
            if t > after and rms > level:
                return t
        return None

    def last_mouth_motion(self, after: float, until: float, margin: float = 40.0) -> float | None:
        """Arrival of the last frame in (after, until] with the mouth open past idle."""
        base = self.mouth_baseline(after - 5.0) if after > 5 else 0.0
        last = None
        for t, m in self.video:
            if after < t <= until and m > base + margin:
                last = t
        return last

    def video_origin_index(self) -> int | None:
        """The server's frame index of the first video frame received (its "media" event)."""
        for _, event in self.events:
            if isinstance(event, MediaEvent):
                return event.video_origin_index
        return None

    def arrival_of_frame(self, index: int) -> float | None:
        """When the frame with the server's frame ``index`` arrived (None if it did not)."""
        origin = self.video_origin_index()
        if origin is None or index < 0:
            return None
        wanted = index - origin
        for (arrival, _), tick in zip(self.video, self.video_ticks, strict=True):
            if tick == wanted:
                return arrival
        return None

    def texts(self, role: str) -> list[str]:
        """Final transcript texts of one role, in order."""
        return [
            e.text
            for _, e in self.events
            if isinstance(e, TranscriptEvent) and e.role == role and e.final
        ]

    def of_type(self, kind: type[E]) -> list[tuple[float, E]]:
        """Events of one model (``TurnEvent``...), with their arrival times."""
        return [(t, e) for t, e in self.events if isinstance(e, kind)]


class AvatarCall:
    """One call to ``avatar serve``: connect, speak the clips, record, hang up."""

    def __init__(
        self,
        base_url: str,
        clips: list[Clip],
        *,
        token: str | None = None,
        avatar: str = "default",
        language: str | None = None,
        dialogue: str | None = None,
        measure_mouth: bool = True,
        low_latency: bool = True,
        video_codecs: list[str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.clips = clips
        self.token = token
        self.options = {"avatar": avatar, "language": language, "dialogue": dialogue}
        self.measure_mouth = measure_mouth
        # Hand frames over when complete, as a browser does, rather than aiortc's holds
        # (audio 80 ms, video one frame): arrival times then measure the server.
        self.low_latency = low_latency
        # Offer only these video codecs (SDP names: "H264", "VP8"); None: aiortc's list.
        self.video_codecs = video_codecs
        self.record = CallRecord()
        self._mouth_box: tuple[int, int, int, int] | None = None
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None  # the events channel, once started
        self.mic: ScriptedMic | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def _mouth_opening(self, rgb: np.ndarray) -> float:
        if self._mouth_box is None:
            lms = face_mesh(rgb)
            if lms is None:
                return 0.0
            pts = lms[LIP_UPPER_OUTER + LIP_LOWER_OUTER]
            x0, y0 = (pts.min(axis=0) - [4, 4]).astype(int)
            x1, y1 = (pts.max(axis=0) + [4, 30]).astype(int)
            self._mouth_box = (max(y0, 0), y1, max(x0, 0), x1)
        y0, y1, x0, x1 = self._mouth_box
        patch = rgb[y0:y1, x0:x1].mean(axis=2)
        return float(np.sum(patch < DARK_LEVEL))

    def on_video(self, arrival: float, frame: av.VideoFrame) -> None:
        """Record one received video frame (subclasses measure more)."""
        mouth = 0.0
        if self.measure_mouth:
            rgb = frame.to_ndarray(format="rgb24")
            mouth = self._mouth_opening(rgb)
            self.record.last_frame = rgb
        self.record.video.append((arrival, mouth))
        self.record.video_ticks.append(int(frame.pts or 0) // VIDEO_TICKS_PER_FRAME)

    def on_audio(self, arrival: float, frame: av.AudioFrame) -> None:
        """Record one received audio frame's level (subclasses keep the samples)."""
        pcm = frame.to_ndarray().astype(np.float32) / 32768.0
        self.record.audio.append((arrival, float(np.sqrt(np.mean(pcm**2)))))

    async def _read_video(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.VideoFrame)
                self.on_video(time.monotonic(), frame)

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                self.on_audio(time.monotonic(), frame)

    def on_message(self, message: str | bytes) -> None:
        """Record one data channel message as its typed event; skip what is not one."""
        arrival = time.monotonic()
        try:
            event = parse_event(message)
        except EventError as exc:
            log.debug("skipping a data channel message: %s", exc)
            return
        self.record.events.append((arrival, event))

    async def run(self, duration_s: float) -> CallRecord:
        """Connect, run for ``duration_s`` seconds after connecting, hang up."""
        await self.start()
        await asyncio.sleep(duration_s)
        await self.close()
        return self.record

    async def wait_for_event(
        self, predicate: Callable[[ServerEvent], bool], timeout_s: float, since: int = 0
    ) -> ServerEvent:
        """Wait until an event (the ``since``-th or later) satisfies ``predicate``.

        Predicates take the typed events of ``realtime_avatar.events``, e.g.
        ``lambda e: isinstance(e, TurnEvent) and e.turn_id == 3``.
        """
        deadline = time.monotonic() + timeout_s
        seen = since
        while time.monotonic() < deadline:
            for _, event in self.record.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.record.events)
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no matching event within {timeout_s} s; saw {self.record.events[-5:]}")

    async def ping(self, timeout_s: float = 5.0) -> float:
        """Round-trip time (s) of a ``ping`` on the data channel, answered by a ``pong``."""
        if self._channel is None:
            raise RuntimeError("the call is not started")
        if self._channel.readyState != "open":
            opened = asyncio.Event()
            self._channel.once("open", opened.set)
            if self._channel.readyState != "open":
                await asyncio.wait_for(opened.wait(), timeout_s)
        sent = time.monotonic()
        seen = len(self.record.events)
        self._channel.send(to_json(PingMessage(t=sent)))
        await self.wait_for_event(
            lambda e: isinstance(e, PongEvent) and e.t == sent, timeout_s, since=seen
        )
        return time.monotonic() - sent

    async def start(self) -> None:
        """Connect and wait until media flows."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc = pc
        self.mic = ScriptedMic(self.clips)
        pc.addTrack(self.mic)
        video = pc.addTransceiver("video", direction="recvonly")
        if self.video_codecs:
            wanted = [name.upper() for name in self.video_codecs]
            capabilities = RTCRtpReceiver.getCapabilities("video")
            assert capabilities is not None
            video.setCodecPreferences([c for c in capabilities.codecs if c.name.upper() in wanted])
        if self.low_latency:
            use_low_latency_buffers(pc, audio=True, video=True)
        channel = pc.createDataChannel("events")
        self._channel = channel

        channel.on("message", self.on_message)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            reader = self._read_video if track.kind == "video" else self._read_audio
            self._tasks.append(asyncio.ensure_future(reader(track)))

        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.record.connected_at = time.monotonic()
                connected.set()

        await pc.setLocalDescription(await pc.createOffer())
        body = {
            "sdp": pc.localDescription.sdp,
            "type": pc.localDescription.type,
            **{k: v for k, v in self.options.items() if v},
        }
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with httpx.AsyncClient(timeout=60) as http:
            res = await http.post(f"{self.base_url}/api/v1/rtc/offer", json=body, headers=headers)
        if res.status_code != 200:
            await pc.close()
            raise RuntimeError(f"offer refused: {res.status_code} {res.text}")
        answer = res.json()
        self.record.session_id = answer.get("session_id", "")
        self.record.node = answer.get("node")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(connected.wait(), timeout=20)

    async def close(self) -> None:
        """Hang up."""
        for task in self._tasks:
            task.cancel()
        if self._pc is not None:
            await self._pc.close()
